//! Readiness checks (CONTRACT section 4): tcp, http, exec, log (notify is
//! read by the instance from its notify socket), and liveness probes.
//! Each returns once the instance is ready; the caller bounds it with
//! `ready_timeout`. Probes retry with a short, growing interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::sleep;

use super::cgroup::Cgroup;
use super::spawn::spawn_quiet;
use super::spawner::Spawner;
use crate::spec::{InstanceSpec, Probe, Ready};

/// The first and the longest pause between two probes.
const FIRST_RETRY: Duration = Duration::from_millis(10);
const MAX_RETRY: Duration = Duration::from_millis(250);

/// What a check may need besides the spec.
pub struct Probes {
    pub log_line: Option<oneshot::Receiver<()>>,
    /// Where exec probes run (contained like the instance), if cgroups are used.
    pub cgroup: Option<Cgroup>,
}

/// A running exec probe: killed, with everything it started, when dropped
/// (the readiness check timed out or the instance stopped meanwhile).
struct ProbeRun<'a> {
    spawner: &'a dyn Spawner,
    pid: i32,
    cgroup: Option<&'a Cgroup>,
}

impl Drop for ProbeRun<'_> {
    fn drop(&mut self) {
        self.spawner.signal_group(self.pid, libc::SIGKILL);
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
    spawner: &Arc<dyn Spawner>,
    spec: &InstanceSpec,
) -> Result<(), String> {
    match ready {
        // Decided by the instance from its notify socket.
        Ready::Notify => std::future::pending().await,
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
                match spawn_quiet(&**spawner, cmd, spec, cgroup) {
                    Ok((pid, exit)) => {
                        let _run = ProbeRun {
                            spawner: &**spawner,
                            pid,
                            cgroup,
                        };
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

/// One liveness probe (`health`), bounded by `limit`; its processes (an
/// exec probe and what it started) are killed when it ends or times out.
pub async fn probe_once(
    probe: Probe,
    limit: Duration,
    spawner: Arc<dyn Spawner>,
    spec: InstanceSpec,
    cgroup: Option<Cgroup>,
) -> bool {
    let check = async {
        match &probe {
            Probe::Tcp(addr) => TcpStream::connect(addr.as_str()).await.is_ok(),
            Probe::Http(url) => http_ok(url).await,
            Probe::Exec(cmd) => match spawn_quiet(&*spawner, cmd, &spec, cgroup.as_ref()) {
                Ok((pid, exit)) => {
                    let _run = ProbeRun {
                        spawner: &*spawner,
                        pid,
                        cgroup: cgroup.as_ref(),
                    };
                    exit.await.is_ok_and(crate::state::Exit::success)
                }
                Err(_) => false,
            },
        }
    };
    tokio::time::timeout(limit, check).await.unwrap_or(false)
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
