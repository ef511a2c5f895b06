// A folder as `script`: PM2 runs node on it (node loads dist/index.js).
module.exports = {
  apps: [{
    name: 'built',
    script: './dist',
  }],
};
