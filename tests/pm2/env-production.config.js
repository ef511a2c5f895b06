module.exports = {
  apps : [{
    name   : "app1",
    script : "./app.js",
    env: {
      PORT: 31802
    },
    env_production: {
       NODE_ENV: "production"
    },
    env_development: {
       NODE_ENV: "development"
    }
  }]
}
