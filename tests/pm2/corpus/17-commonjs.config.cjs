// A `.cjs` config, with node_args (PM2's old name of interpreter_args).
module.exports = {
  apps: [{ name: 'cjs', script: 'server.js', node_args: '--max-old-space-size=128' }],
};
