// `instances: 'max'` with cluster mode.
module.exports = {
  apps: [{
    name: 'api',
    script: 'server.js',
    instances: 'max',
    exec_mode: 'cluster',
    env: { PORT: 39104 },
  }],
};
