// `cwd`: the script is found, and runs, in that folder.
module.exports = {
  apps: [{
    name: 'in-sub',
    script: 'server.js',
    cwd: './sub',
  }],
};
