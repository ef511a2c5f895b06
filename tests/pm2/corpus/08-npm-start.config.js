// `npm start` as PM2 users write it: script npm, args 'run start'.
module.exports = {
  apps: [{
    name: 'npm-app',
    script: 'npm',
    args: 'run start',
  }],
};
