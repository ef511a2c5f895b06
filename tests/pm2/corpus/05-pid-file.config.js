// `pid_file`: PM2 writes the pid there (named app-ID.pid).
module.exports = {
  apps: [{
    name: 'daemonish',
    script: 'server.js',
    pid_file: './run/daemonish.pid',
  }],
};
