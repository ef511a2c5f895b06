module.exports = {
  apps : [{
    name   : "app1",
    script : "./app.js",
    env: {
      PORT: 31801
    }
  }]
}
