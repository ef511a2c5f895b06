// `instances: '0'` (a string, as from an env var): one per CPU, and, as a
// number once parsed, cluster mode for a Node app with no exec_mode.
// (PORT: eco's cluster mode needs it until its Node shim takes listen().)
module.exports = {
  apps: [{
    name: 'workers',
    script: 'server.js',
    instances: '0',
    env: { PORT: 39103 },
  }],
};
