// The same stand-in, in a sub-folder (for `cwd`).
setInterval(() => {}, 1 << 30);
process.on('SIGINT', () => process.exit(0));
