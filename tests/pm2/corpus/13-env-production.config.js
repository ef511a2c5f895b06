// `env_production`, selected with --env production.
module.exports = {
  apps: [{
    name: 'prod',
    script: 'server.js',
    env: { NODE_ENV: 'development', API_URL: 'http://localhost', SHARED: 'base' },
    env_production: { NODE_ENV: 'production', API_URL: 'https://api.example.com' },
  }],
};
