// `instances: '0'` (a string, as from an env var): one per CPU; a string
// never makes PM2 pick cluster mode.
module.exports = {
  apps: [{
    name: 'workers',
    script: 'server.js',
    instances: '0',
  }],
};
