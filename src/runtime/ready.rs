//! Readiness checks (CONTRACT section 4): notify, tcp, http, exec, log.
//! Each returns once the instance is ready; the caller bounds it with
//! `ready_timeout`. Probes retry with a short, growing interval.

use std::os::linux::net::SocketAddrExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixDatagram};
use tokio::sync::oneshot;
use tokio::time::sleep;

use super::cgroup::Cgroup;
use super::reaper::Reaper;
use super::spawn::spawn_quiet;
use crate::spec::{InstanceSpec, Ready};

/// The first and the longest pause between two probes.
const FIRST_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_millis(250);

static NOTIFY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A per-instance sd_notify socket in the abstract namespace (no file to
/// clean up, no path-length limit), named `@eco-<pid>-<n>` in NOTIFY_SOCKET.
pub struct NotifySocket {
    pub socket: UnixDatagram,
    /// The value for NOTIFY_SOCKET.
    pub env_value: String,
}

impl NotifySocket {
    pub fn bind() -> std::io::Result<NotifySocket> {
        let n = NOTIFY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("eco-{}-{n}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let std_socket = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
        std_socket.set_nonblocking(true)?;
        Ok(NotifySocket {
            socket: UnixDatagram::from_std(std_socket)?,
            env_value: format!("@{name}"),
        })
    }
}

/// What a check may need besides the spec.
pub struct Probes {
    pub notify: Option<NotifySocket>,
    pub log_line: Option<oneshot::Receiver<()>>,
    /// Where exec probes run (contained like the instance), if cgroups are used.
    pub cgroup: Option<Cgroup>,
}

/// A running exec probe: killed, with everything it started, when dropped
/// (the readiness check timed out or the instance stopped meanwhile).
struct ProbeRun<'a> {
    pid: i32,
    cgroup: Option<&'a Cgroup>,
}

impl Drop for ProbeRun<'_> {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        if let Some(cgroup) = self.cgroup {
            cgroup.kill();
        }
    }
}

/// Resolves once the instance is ready. An error means it never can be
/// (e.g. its output closed before the awaited log line).
pub async fn wait(
    ready: &Ready,
    probes: Probes,
    reaper: &Arc<Reaper>,
    spec: &InstanceSpec,
) -> Result<(), String> {
    match ready {
        Ready::Notify => {
            let Some(notify) = probes.notify else {
                return Err("no notify socket".into());
            };
            let mut buf = vec![0u8; 4096];
            loop {
                let n = notify
                    .socket
                    .recv(&mut buf)
                    .await
                    .map_err(|e| format!("notify socket: {e}"))?;
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.lines().any(|l| l.trim() == "READY=1") {
                    return Ok(());
                }
            }
        }
        Ready::Log(_) => match probes.log_line {
            Some(rx) => rx
                .await
                .map_err(|_| "output ended before a matching line".to_owned()),
            None => Err("no log matcher".into()),
        },
        Ready::Tcp(addr) => {
            retry(|| async { TcpStream::connect(addr.as_str()).await.is_ok() }).await;
            Ok(())
        }
        Ready::Http(url) => {
            retry(|| async { http_ok(url).await }).await;
            Ok(())
        }
        Ready::Exec(cmd) => {
            let cgroup = probes.cgroup.as_ref();
            retry(|| async {
                match spawn_quiet(reaper, cmd, spec, cgroup) {
                    Ok((pid, exit)) => {
                        let _run = ProbeRun { pid, cgroup };
                        exit.await.is_ok_and(crate::state::Exit::success)
                    }
                    Err(_) => false,
                }
            })
            .await;
            Ok(())
        }
    }
}

async fn retry<F, Fut>(mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut pause = FIRST_RETRY;
    while !probe().await {
        sleep(pause).await;
        pause = (pause * 2).min(MAX_RETRY);
    }
}

/// A plain HTTP/1.1 GET; true on a 2xx status.
async fn http_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:80")
    };
    let Ok(mut stream) = TcpStream::connect(&target).await else {
        return false;
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: eco\r\n\r\n"
    );
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 64];
    let mut got = 0;
    while got < 12 {
        match stream.read(&mut head[got..]).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => got += n,
        }
    }
    let status = String::from_utf8_lossy(&head[..got]);
    status
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2') && code.len() == 3)
}
