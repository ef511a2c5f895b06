// A command line as `script`, with `exec_interpreter: 'none'`: PM2 runs it with bash -c.
module.exports = {
  apps: [{
    name: 'shell',
    script: 'node server.js',
    exec_interpreter: 'none',
  }],
};
