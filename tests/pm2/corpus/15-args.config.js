// `args` as a string (split like a shell) and as a list (kept as is).
module.exports = {
  apps: [
    { name: 'args-string', script: 'server.js', args: '--mode fast "two words"' },
    { name: 'args-list', script: 'server.js', args: ['--mode', 'slow', 'two words'] },
  ],
};
