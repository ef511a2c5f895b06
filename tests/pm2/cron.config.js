module.exports = {
  apps : [{
    name: "api",
    script: "app.js",
    cron_restart: "1 0 * * *",
    env: {
      PORT: 31806
    }
  }]
}
