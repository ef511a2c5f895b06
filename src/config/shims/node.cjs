// eco's Node shim, preloaded with NODE_OPTIONS=--require for Node apps in
// cluster mode or with `ready: notify`, so that PM2 apps run unchanged:
// - server.listen(PORT) on a port eco holds (LISTEN_FDS/LISTEN_FDNAMES)
//   takes the inherited socket (fd 3, 4, ...) instead of binding;
// - in cluster mode, listen(port) on any other port asks eco for its
//   socket (ECO_LISTEN_BROKER), so every instance shares it, as under PM2;
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
  const inherited = count > 0 && String(env.LISTEN_PID) === String(process.pid);
  // A path only while eco runs the instance (the spec says `1`: eco names
  // the socket at each start).
  const broker = env.ECO_LISTEN_BROKER && env.ECO_LISTEN_BROKER !== '1' ? env.ECO_LISTEN_BROKER : '';
  // Not for the app's own children (node's cluster workers, scripts).
  delete env.ECO_LISTEN_BROKER;
  if (!inherited && !broker) return;
  const byPort = new Map();
  (inherited ? env.LISTEN_FDNAMES || '' : '').split(':').forEach((name, i) => {
    const m = /^tcp-.*-(\d+)$/.exec(name);
    if (m && i < count && !byPort.has(Number(m[1]))) byPort.set(Number(m[1]), 3 + i);
  });
  const net = require('net');
  const listen = net.Server.prototype.listen;
  const servers = new Set();
  // listen(port[, host][, backlog][, cb]) or listen({port, host, backlog}[, cb]):
  // the port and host, when the app listens on a TCP port.
  function target(args) {
    const first = args[0];
    if (typeof first === 'number' || (typeof first === 'string' && /^\d+$/.test(first))) {
      return { port: Number(first), host: typeof args[1] === 'string' ? args[1] : undefined };
    }
    if (first && typeof first === 'object' && first.port !== undefined &&
        first.fd === undefined && first.handle === undefined && first.path === undefined &&
        first._handle === undefined && !first.exclusive) {
      return { port: Number(first.port), host: typeof first.host === 'string' ? first.host : undefined };
    }
    return undefined;
  }
  // The address eco binds for it: the host as an IP address (`localhost`
  // is 127.0.0.1; no host is 0.0.0.0), or undefined for a name.
  function address(port, host) {
    if (!(port > 0 && port < 65536)) return undefined;
    if (host === undefined || host === '' || host === '0.0.0.0') return '0.0.0.0:' + port;
    if (host === 'localhost') return '127.0.0.1:' + port;
    const family = net.isIP(host);
    if (family === 4) return host + ':' + port;
    if (family === 6) return '[' + host + ']:' + port;
    return undefined;
  }
  // Asks eco for the listening socket of `addr` over an IPC pipe, which
  // receives descriptors as Node's own cluster does (the handle arrives
  // with eco's answer); `done(error, handle)`.
  function ask(addr, done) {
    const { Pipe, PipeConnectWrap, constants } = process.binding('pipe_wrap');
    const { WriteWrap, streamBaseState, kReadBytesOrError, kArrayBufferOffset } =
      process.binding('stream_wrap');
    const pipe = new Pipe(constants.IPC);
    let text = '';
    let finished = false;
    const timer = setTimeout(() => finish(new Error('eco did not answer within 10s')), 10000);
    function finish(err, handle) {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      pipe.close();
      done(err, handle);
    }
    const connect = new PipeConnectWrap();
    connect.oncomplete = (status) => {
      if (status < 0) return finish(new Error('cannot reach eco (' + require('util').getSystemErrorName(status) + ')'));
      const write = new WriteWrap();
      write.handle = pipe;
      write.oncomplete = () => {};
      write.async = false;
      const failed = pipe.writeUtf8String(write, 'tcp ' + addr + '\n');
      if (failed) return finish(new Error('cannot write to eco (' + require('util').getSystemErrorName(failed) + ')'));
      pipe.onread = (buffer) => {
        const nread = streamBaseState[kReadBytesOrError];
        if (nread < 0) return finish(new Error(text.trim() || 'eco closed the connection'));
        text += Buffer.from(buffer, streamBaseState[kArrayBufferOffset], nread).toString();
        const handle = pipe.pendingHandle;
        pipe.pendingHandle = null;
        if (handle) finish(null, handle);
      };
      pipe.readStart();
    };
    const failed = pipe.connect(connect, broker);
    if (failed) finish(new Error('cannot reach eco (' + require('util').getSystemErrorName(failed) + ')'));
  }
  net.Server.prototype.listen = function (...args) {
    const wanted = target(args);
    const fd = wanted === undefined ? undefined : byPort.get(wanted.port);
    const addr = wanted === undefined || fd !== undefined || !broker
      ? undefined : address(wanted.port, wanted.host);
    if (fd === undefined && addr === undefined) return listen.apply(this, args);
    servers.add(this);
    this.once('close', () => servers.delete(this));
    if (env.ECO_READY_ON_LISTEN === '1') this.once('listening', ready);
    const done = args.find((a) => typeof a === 'function');
    if (fd !== undefined) return done ? listen.call(this, { fd }, done) : listen.call(this, { fd });
    // eco's socket for a port no `listen` names: the same socket for every
    // instance of the app, kept across reloads. Listening completes when
    // it arrives (as listen() on a host name completes after the lookup).
    ask(addr, (err, handle) => {
      if (err) {
        process.emitWarning('eco: cannot get the socket of ' + addr + ' from eco: ' + err.message +
          '; listening by itself');
        listen.apply(this, args);
        return;
      }
      if (done) listen.call(this, handle, done); else listen.call(this, handle);
    });
    return this;
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
