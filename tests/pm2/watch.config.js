module.exports = {
  apps : [{
    name: "watched",
    script: "app.js",
    watch: ["server", "client"],
    // Delay between restart
    watch_delay: 1000,
    ignore_watch : ["node_modules", "client/img"],
    env: {
      PORT: 31804
    }
  }]
}
