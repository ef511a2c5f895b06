// `script: 'npm run start'` with `args`: PM2 runs the string with bash -c and drops args.
module.exports = {
  apps: [{
    name: 'npm-string',
    script: 'npm run start',
    args: '--port 39109',
  }],
};
