// A Node HTTP server that takes its listening socket from eco (fd 3).
const http = require("http");

const server = http.createServer((req, res) => {
  if (req.url === "/health") {
    res.end("ok\n");
    return;
  }
  res.end(`hello from pid ${process.pid} (instance ${process.env.ECO_INSTANCE})\n`);
});

// LISTEN_FDS is set by eco (and by systemd socket activation); fd 3 is the first socket.
const inherited = process.env.LISTEN_FDS ? { fd: 3 } : { port: 8080, host: "127.0.0.1" };
server.listen(inherited, () => console.log(`listening (pid ${process.pid})`));

// Finish in-flight requests, then exit.
process.on("SIGTERM", () => server.close(() => process.exit(0)));
