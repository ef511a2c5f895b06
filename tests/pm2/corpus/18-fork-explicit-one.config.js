// `instances: 1` without exec_mode is cluster mode too in PM2; a bare
// app without `instances` is fork mode.
module.exports = {
  apps: [
    { name: 'one', script: 'server.js', instances: 1, env: { PORT: 39118 } },
    { name: 'bare', script: 'server.js' },
  ],
};
