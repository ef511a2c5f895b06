// `pid` is PM2's alias of pid_file; two instances, one file each.
module.exports = {
  apps: [{
    name: 'pair',
    script: 'server.js',
    exec_mode: 'fork',
    instances: 2,
    pid: './run/pair.pid',
  }],
};
