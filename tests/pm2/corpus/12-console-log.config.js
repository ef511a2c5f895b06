// A config that prints while it is evaluated: PM2 starts it all the same.
console.log('loading ecosystem for', process.env.USER || 'someone');
console.error('a warning on stderr');
module.exports = {
  apps: [{ name: 'chatty', script: 'server.js' }],
};
