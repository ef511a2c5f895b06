//! sd_notify as systemd's own tools speak it, watchdog, health checks,
//! readiness that real servers satisfy, the fd store, reload signals,
//! TCP_NODELAY, and the daemon notifying its own supervisor.

use std::time::{Duration, Instant};

use crate::support::{Home, eco_bin, eventually, free_port, stderr};

const LIMIT: Duration = Duration::from_secs(15);

#[test]
fn systemd_notify_ready_with_its_barrier_and_status_long_after() {
    crate::support::tools::require(&["systemd-notify"]);
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  svc:\n    cmd: [sh, -c, 'sleep 1; systemd-notify --ready --status=warming || exit 9; sleep 1.5; systemd-notify --status=serving || exit 8; exec sleep 1000']\n    ready: notify\n",
    );
    let start = Instant::now();
    let out = home.eco(&["up", "--wait", "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        start.elapsed() >= Duration::from_millis(900),
        "--wait returned before READY=1: {:?}",
        start.elapsed()
    );
    eventually("the status", LIMIT, || {
        home.row("svc", 0)["status_text"] == "serving"
    });
    let row = home.row("svc", 0);
    assert_eq!(row["restarts"], 0, "{row}");
    assert!(home.ok(&["ls"]).contains("status: svc:0 serving"));
}

#[test]
fn a_silent_watchdog_restarts_the_app_one_interval_after_its_last_ping() {
    let home = Home::new();
    let pings = home.path().join("pings");
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  dog:\n    cmd: [sh, -c, 'i=0; while [ $i -lt 10 ]; do date +%s%N >> {pings}; {eco} notify WATCHDOG=1; sleep 0.2; i=$((i+1)); done; exec sleep 1000']\n    watchdog: 1s\n",
            eco = eco_bin().display(),
            pings = pings.display()
        ),
    );
    home.ok(&["up"]);
    eventually("restarted by the watchdog", LIMIT, || {
        home.row("dog", 0)["last_restart_reason"] == "watchdog"
    });
    // When eco restarted it (its own record), against the last ping.
    let described: serde_json::Value =
        serde_json::from_str(&home.ok(&["describe", "dog", "--json"])).expect("json");
    let restarted_ms = described[0]["instances"][0]["history"]
        .as_array()
        .expect("history")
        .iter()
        .find(|h| h["reason"] == "watchdog")
        .and_then(|h| h["at_ms"].as_u64())
        .expect("a watchdog restart");
    let text = std::fs::read_to_string(&pings).expect("pings");
    let stamps: Vec<u64> = text
        .lines()
        .filter_map(|l| l.parse::<u64>().ok())
        .map(|ns| ns / 1_000_000)
        .collect();
    assert!(stamps.len() >= 10, "{text}");
    // Stamped just before the ping, so eco got the ping after the stamp:
    // eco's restart comes one `watchdog` (1 s) after the ping at the
    // earliest (less a millisecond of rounding), however slow the host.
    // The upper bound only says the watchdog fired at all, soon.
    let last_ping = stamps[9];
    let late = Duration::from_millis(restarted_ms.saturating_sub(last_ping));
    assert!(
        late >= Duration::from_millis(990),
        "restarted before the interval: {late:?} after the last ping"
    );
    assert!(
        late < Duration::from_secs(10),
        "restarted {late:?} after the last ping"
    );
}

const HTTP_APP: &str = r#"
import http.server, os, sys
flag = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if os.path.exists(flag) else 200
        self.send_response(code); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[2])), H).serve_forever()
"#;

#[test]
fn a_failing_health_check_restarts_after_three_failures_and_a_healthy_one_never() {
    crate::support::tools::require(&["python3"]);
    let home = Home::new();
    home.write("app.py", HTTP_APP);
    let (sick, well) = (free_port(), free_port());
    let flag = home.path().join("sick");
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  sick:\n    cmd: [python3, app.py, {flag}, '{sick}']\n    ready: {{ tcp: '127.0.0.1:{sick}' }}\n    health: {{ http: 'http://127.0.0.1:{sick}/', interval: 200ms, timeout: 1s, failures: 3 }}\n  well:\n    cmd: [python3, app.py, /no/such/flag, '{well}']\n    ready: {{ tcp: '127.0.0.1:{well}' }}\n    health: {{ http: 'http://127.0.0.1:{well}/', interval: 200ms, failures: 3 }}\n",
            flag = flag.display()
        ),
    );
    home.ok(&["up", "--wait"]);
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(home.row("sick", 0)["restarts"], 0, "healthy so far");
    std::fs::write(&flag, "").expect("flag");
    eventually("restarted for health", LIMIT, || {
        home.row("sick", 0)["last_restart_reason"] == "health"
    });
    let well_row = home.row("well", 0);
    assert_eq!(well_row["restarts"], 0, "{well_row}");
    assert_eq!(well_row["last_restart_reason"], serde_json::Value::Null);
}

#[test]
fn log_readiness_reads_stderr_and_a_never_ready_app_says_not_ready() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  uv:\n    cmd: [sh, -c, 'sleep 0.3; echo \"INFO: Uvicorn running\" >&2; exec sleep 1000']\n    ready: { log: 'Uvicorn running' }\n",
    );
    home.ok(&["up", "--wait"]);
    assert_eq!(home.row("uv", 0)["status"], "online");

    let never = Home::new();
    never.write(
        "ecosystem.yaml",
        "apps:\n  never:\n    cmd: [sleep, '1000']\n    ready: { log: '^listening' }\n    ready_timeout: 1s\n    restart_delay: 50ms\n",
    );
    let out = never.eco(&["up", "--wait", "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("not ready after 1s (waiting for log /^listening/)"),
        "{}",
        stderr(&out)
    );
    eventually("restarted as not ready", LIMIT, || {
        never.row("never", 0)["last_restart_reason"] == "not-ready"
    });
}

const FDSTORE_APP: &str = r#"
import os, socket, subprocess, sys
out = sys.argv[1]
if os.environ.get("LISTEN_FDS"):
    names = os.environ.get("LISTEN_FDNAMES", "")
    with open(out, "a") as f:
        f.write("back %d %s\n" % (os.fstat(3).st_ino, names))
    os.execvp("sleep", ["sleep", "1000"])
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
with open(out, "a") as f:
    f.write("stored %d\n" % os.fstat(s.fileno()).st_ino)
subprocess.run([os.environ["ECO_BIN_FOR_TEST"], "notify", "--fd", str(s.fileno()), "FDSTORE=1", "FDNAME=keep"], pass_fds=[s.fileno()], check=True)
os.execvp("sleep", ["sleep", "1000"])
"#;

#[test]
fn a_stored_fd_comes_back_after_a_crash() {
    crate::support::tools::require(&["python3"]);
    let home = Home::new();
    home.write("keep.py", FDSTORE_APP);
    let out = home.path().join("fds");
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  keeper:\n    cmd: [python3, keep.py, {out}]\n    fd_store: 1\n    restart_delay: 0ms\n    env: {{ ECO_BIN_FOR_TEST: '{eco}' }}\n",
            out = out.display(),
            eco = eco_bin().display()
        ),
    );
    home.ok(&["up", "--wait"]);
    eventually("stored", LIMIT, || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains("stored "))
    });
    // Give eco the moment to take the datagram, then crash the app.
    std::thread::sleep(Duration::from_millis(300));
    let pid = home.row("keeper", 0)["pid"].as_i64().expect("pid");
    crate::support::assert_stored_fd_comes_back(pid, &out, LIMIT);
}

#[test]
fn reload_signal_reloads_in_place() {
    let home = Home::new();
    let seen = home.path().join("seen");
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  web:\n    cmd: [sh, -c, 'trap \"echo hup >> {seen}\" HUP; while :; do sleep 0.05; done']\n    reload_signal: SIGHUP\n",
            seen = seen.display()
        ),
    );
    home.ok(&["up", "--wait"]);
    let pid = home.row("web", 0)["pid"].clone();
    home.ok(&["reload", "web"]);
    eventually("the app saw SIGHUP", LIMIT, || {
        std::fs::read_to_string(&seen).is_ok_and(|t| t.contains("hup"))
    });
    let row = home.row("web", 0);
    assert_eq!(row["pid"], pid, "the same process: {row}");
    assert_eq!(row["restarts"], 0);
}

#[test]
fn cluster_listen_sockets_have_tcp_nodelay() {
    crate::support::tools::require(&["python3"]);
    let home = Home::new();
    let port = free_port();
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  web:\n    cmd: [python3, -c, 'import socket; s = socket.socket(fileno=3); print(\"nodelay\", s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), flush=True); import time; time.sleep(1000)']\n    mode: cluster\n    listen: ['127.0.0.1:{port}']\n"
        ),
    );
    home.ok(&["up", "--wait"]);
    eventually("the app read it", LIMIT, || {
        home.ok(&["logs", "web", "--out"]).contains("nodelay 1")
    });
}

#[test]
fn the_daemon_notifies_its_supervisor() {
    let home = Home::new();
    home.write("ecosystem.yaml", "apps:\n  a:\n    cmd: [sleep, '1000']\n");
    home.ok(&["up", "--wait"]);
    // A saved project to restore: stop this daemon (SIGTERM keeps the state).
    let old = home.daemon_pid().expect("daemon");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(old),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("term");
    eventually("old daemon gone", LIMIT, || {
        crate::support::state_of(old).is_none_or(|s| s == 'Z')
    });
    let socket_path = home.path().join("supervisor.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let daemon = std::process::Command::new(eco_bin())
        .arg("daemon")
        .env("ECO_HOME", home.path())
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "400000")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("eco daemon");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        let Ok(n) = socket.recv(&mut buf) else { break };
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        if got.iter().any(|m| m.contains("READY=1"))
            && got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2
        {
            break;
        }
    }
    let ready = got
        .iter()
        .find(|m| m.contains("READY=1"))
        .cloned()
        .unwrap_or_default();
    assert!(ready.contains("STATUS=1 projects, 1 instances"), "{got:?}");
    assert!(
        got.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 2,
        "{got:?}\ndaemon.log:\n{}",
        std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default()
    );
    // The restored app runs, and the app did not inherit the supervisor's socket.
    let pid = home.row("a", 0)["pid"].as_i64().expect("pid");
    let env = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    assert!(!String::from_utf8_lossy(&env).contains("supervisor.sock"));
    // Reap the daemon as its parent (a supervisor) would, while it stops.
    let reaper = std::thread::spawn(move || {
        let mut daemon = daemon;
        daemon.wait()
    });
    home.ok(&["kill"]);
    let _ = reaper.join();
    let mut stopping = false;
    while let Ok(n) = socket.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "STOPPING=1 at shutdown");
}

/// The next datagram on `socket`, with the descriptors it carried.
fn recv_with_fds(socket: &std::os::unix::net::UnixDatagram) -> (String, Vec<std::os::fd::OwnedFd>) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 4]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("recvmsg");
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().expect("cmsgs") {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            // SAFETY: new descriptors from SCM_RIGHTS, owned by nothing else.
            #[allow(unsafe_code)]
            fds.extend(
                raw.into_iter()
                    .map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    let n = msg.bytes;
    (String::from_utf8_lossy(&buf[..n]).into_owned(), fds)
}

/// eco trusts only a sender still alive when it reads the message, so
/// `eco notify` waits, as systemd-notify does, until the receiver has read
/// it: BARRIER=1 with a pipe's write end, and the wait for its close.
#[test]
fn eco_notify_waits_until_its_message_was_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind");
    socket.set_read_timeout(Some(LIMIT)).expect("timeout");
    let mut child = std::process::Command::new(eco_bin())
        .args(["notify", "READY=1", "STATUS=up"])
        .env("NOTIFY_SOCKET", &path)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("eco notify");
    let (text, fds) = recv_with_fds(&socket);
    assert_eq!(text, "READY=1\nSTATUS=up");
    assert!(fds.is_empty());
    let (barrier, fds) = recv_with_fds(&socket);
    assert_eq!(barrier, "BARRIER=1");
    assert_eq!(fds.len(), 1, "the pipe's write end");
    // Still there while the receiver holds the pipe.
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.try_wait().expect("wait").is_none(),
        "eco notify left before its message was read"
    );
    drop(fds);
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "eco notify did not end");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());

    // A receiver that never confirms: an error after the wait, not a hang.
    let start = Instant::now();
    let out = std::process::Command::new(eco_bin())
        .args(["notify", "WATCHDOG=1"])
        .env("NOTIFY_SOCKET", &path)
        .output()
        .expect("eco notify");
    let held: Vec<_> = (0..2).map(|_| recv_with_fds(&socket)).collect();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("did not confirm the message within 5s"),
        "{}",
        stderr(&out)
    );
    assert!(
        start.elapsed() >= Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    drop(held);
}
