module.exports = {
  apps : [{
    name      : "api",
    script    : "app.js",
    instances : "max",
    exec_mode : "cluster",
    env: {
      PORT: 31803
    }
  }]
}
