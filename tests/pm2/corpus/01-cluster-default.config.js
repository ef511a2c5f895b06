// `instances` without `exec_mode`, a Node script: PM2 runs it in cluster mode.
module.exports = {
  apps: [{
    name: 'web',
    script: 'server.js',
    instances: 2,
    env: { PORT: 39101, NODE_ENV: 'development' },
  }],
};
