module.exports = {
  apps : [{
    name: "api",
    script: "app.js",
    max_memory_restart: '1G',
    env: {
      PORT: 31805
    }
  }]
}
