// A built app run as a folder (`script: './dist'`): node loads index.js.
setInterval(() => {}, 1 << 30);
process.on('SIGINT', () => process.exit(0));
