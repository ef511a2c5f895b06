// `instances: -1`: one per CPU but one.
module.exports = {
  apps: [{
    name: 'workers',
    script: 'server.js',
    exec_mode: 'fork',
    instances: -1,
  }],
};
