// The HTTP app of the cluster and reload scenarios: answers every request
// with a short body.
//
//   node http_server.js PORT
//
// Under eco or shep with a listen table the manager has bound the port and
// hands it down as fd 3 (LISTEN_FDS); otherwise (direct, PM2's cluster
// module) the server binds 127.0.0.1:PORT itself. It prints a line starting
// "listening" once it listens (eco's `ready: { log: "^listening" }`) and, when
// shep gives it a channel (SHEP_CHANNEL_FD, `wait_ready = true`), sends shep's
// ready message there too.
//
// On SIGTERM (eco's and shep's stop signal) and SIGINT (PM2's) it stops
// accepting, answers every further request on an open connection with
// `Connection: close` and exits once every connection is gone:
// server.close(() => process.exit(0)).
"use strict";
const fs = require("fs");
const http = require("http");

const port = Number(process.argv[2] || process.env.PORT || 0);
const body = "hello from " + process.pid + "\n";
let closing = false;

const server = http.createServer((req, res) => {
  const headers = { "Content-Type": "text/plain", "Content-Length": Buffer.byteLength(body) };
  // Once stopping, every answer ends its keep-alive connection, so a client
  // that keeps its connections busy (wrk) cannot hold the process open.
  if (closing) headers.Connection = "close";
  res.writeHead(200, headers);
  res.end(body);
});

function ready() {
  console.log("listening pid=%d on %s", process.pid,
    process.env.LISTEN_FDS ? "fd 3 (LISTEN_FDS=" + process.env.LISTEN_FDS + ")" : "127.0.0.1:" + port);
  const ch = process.env.SHEP_CHANNEL_FD;
  if (ch) fs.writeSync(Number(ch), '{"kind":"ready"}\n');
}

if (process.env.LISTEN_FDS) {
  server.listen({ fd: 3 }, ready);
} else {
  server.listen(port, "127.0.0.1", ready);
}

function stop(sig) {
  if (closing) return;
  closing = true;
  console.log("%s: closing pid=%d", sig, process.pid);
  // node >= 19 makes close() drop the idle keep-alive connections at once;
  // a client may be writing its next request on one at that very moment (a
  // read error for wrk, an app artefact, not the manager's). Left open, each
  // gets its answer with `Connection: close` above, or the keep-alive timeout.
  server.closeIdleConnections = () => {};
  server.close(() => process.exit(0));
}
process.on("SIGTERM", () => stop("SIGTERM"));
process.on("SIGINT", () => stop("SIGINT"));
