// A script with no extension that is not a binary: PM2 runs it with node.
module.exports = {
  apps: [{
    name: 'www',
    script: './bin/tool',
  }],
};
