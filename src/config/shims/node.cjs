// eco's Node shim, preloaded with NODE_OPTIONS=--require for Node apps in
// cluster mode or with `ready: notify`, so that PM2 apps run unchanged:
// - server.listen(PORT) on a port eco holds (LISTEN_FDS/LISTEN_FDNAMES)
//   takes the inherited socket (fd 3, 4, ...) instead of binding;
// - process.send('ready') (PM2's wait_ready) sends READY=1 to NOTIFY_SOCKET
//   (node has no unix datagram sockets: `$ECO_BIN notify READY=1` does it,
//   and returns once eco has read it: eco trusts only a live sender);
//   with ECO_READY_ON_LISTEN=1 the first such listen() is the readiness;
// - on SIGINT/SIGTERM, if the app has no handler of its own, the servers
//   stop accepting and the process exits once in-flight requests are done;
// - ECO_INSTANCE_VAR names a variable that receives ECO_INSTANCE (PM2's
//   instance_var).
'use strict';
(function ecoShim() {
  const env = process.env;
  if (env.ECO_INSTANCE_VAR && env.ECO_INSTANCE !== undefined) {
    env[env.ECO_INSTANCE_VAR] = env.ECO_INSTANCE;
  }
  let notified = false;
  function ready() {
    if (notified || !env.NOTIFY_SOCKET || !env.ECO_BIN) return;
    notified = true;
    try {
      require('child_process').execFileSync(env.ECO_BIN, ['notify', 'READY=1'], { stdio: 'ignore' });
    } catch (e) {
      process.emitWarning('eco: could not send READY=1: ' + e.message);
    }
  }
  // PM2 gives every Node app an IPC channel, so apps call process.send
  // unguarded; eco gives them one that understands 'ready'.
  if (env.NOTIFY_SOCKET || typeof process.send !== 'function') {
    const send = process.send;
    process.send = function (message, ...rest) {
      if (message === 'ready') ready();
      if (typeof send === 'function') return send.call(process, message, ...rest);
      const done = rest.find((a) => typeof a === 'function');
      if (done) process.nextTick(done, null);
      return true;
    };
  }
  const count = parseInt(env.LISTEN_FDS || '0', 10);
  if (!(count > 0) || String(env.LISTEN_PID) !== String(process.pid)) return;
  const byPort = new Map();
  (env.LISTEN_FDNAMES || '').split(':').forEach((name, i) => {
    const m = /^tcp-.*-(\d+)$/.exec(name);
    if (m && i < count && !byPort.has(Number(m[1]))) byPort.set(Number(m[1]), 3 + i);
  });
  const net = require('net');
  const listen = net.Server.prototype.listen;
  const servers = new Set();
  net.Server.prototype.listen = function (...args) {
    const first = args[0];
    let port;
    if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
      port = Number(first);
    } else if (first && typeof first === 'object' && first.port !== undefined &&
               first.fd === undefined && first.handle === undefined && first.path === undefined) {
      port = Number(first.port);
    }
    const fd = port === undefined ? undefined : byPort.get(port);
    if (fd === undefined) return listen.apply(this, args);
    servers.add(this);
    this.once('close', () => servers.delete(this));
    if (env.ECO_READY_ON_LISTEN === '1') this.once('listening', ready);
    const done = args.find((a) => typeof a === 'function');
    return done ? listen.call(this, { fd }, done) : listen.call(this, { fd });
  };
  const graceful = (signal) => {
    // The app handles the signal itself: leave it alone.
    if (process.listenerCount(signal) > 0) return;
    if (servers.size === 0) {
      process.kill(process.pid, signal);
      return;
    }
    let open = servers.size;
    for (const server of servers) {
      server.close(() => { if (--open === 0) process.exit(0); });
      if (typeof server.closeIdleConnections === 'function') server.closeIdleConnections();
    }
  };
  process.once('SIGTERM', () => graceful('SIGTERM'));
  process.once('SIGINT', () => graceful('SIGINT'));
})();
