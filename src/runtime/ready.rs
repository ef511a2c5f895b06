//! Readiness checks (CONTRACT section 4): tcp, http, exec, log (notify is
//! read by the instance from its notify socket), and liveness probes.
//! [`start`] sets up one run's check: a task bounded by `ready_timeout`, or
//! the deadline by which `READY=1` must arrive. Probes retry with a short,
//! growing interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use tokio_util::task::TaskTracker;

use super::cgroup::Cgroup;
use super::output::LineMatcher;
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

/// How one run of an instance learns that it is ready.
pub enum Awaiting {
    /// No check: ready once started (or, for a forking server, handed over).
    Nothing,
    /// `ready: notify`: `READY=1` on the notify socket by `deadline`.
    Notify { deadline: Instant },
    /// Any other check, running in its own task.
    Check(Check),
}

/// A readiness check running in its own task, bounded by `ready_timeout`;
/// aborted when dropped (the run ended first).
pub struct Check {
    task: JoinHandle<()>,
    result: oneshot::Receiver<Result<(), String>>,
}

impl Check {
    /// The check's verdict: an error says why the instance never became
    /// ready. Cancel-safe.
    pub async fn verdict(&mut self) -> Result<(), String> {
        match (&mut self.result).await {
            Ok(result) => result,
            Err(_) => Err("the readiness check ended".to_owned()),
        }
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What one run needs to check readiness.
pub struct Setup<'a> {
    pub ready: Option<&'a Ready>,
    pub limit: Duration,
    pub probes: Probes,
    pub spawner: &'a Arc<dyn Spawner>,
    pub spec: &'a InstanceSpec,
    pub tasks: &'a TaskTracker,
}

/// Starts the readiness check of one run, just after its process started.
pub fn start(setup: Setup<'_>) -> Awaiting {
    let Setup {
        ready,
        limit,
        probes,
        spawner,
        spec,
        tasks,
    } = setup;
    let kind = match ready {
        None => return Awaiting::Nothing,
        Some(Ready::Notify) => {
            return Awaiting::Notify {
                deadline: Instant::now() + limit,
            };
        }
        Some(kind) => kind.clone(),
    };
    let (tx, result) = oneshot::channel();
    let spawner = Arc::clone(spawner);
    let spec = spec.clone();
    let task = tasks.spawn(async move {
        let result = match timeout(limit, wait(&kind, probes, &spawner, &spec)).await {
            Ok(result) => result,
            Err(_) => Err(not_ready(limit, &kind)),
        };
        let _ = tx.send(result);
    });
    Awaiting::Check(Check { task, result })
}

/// The matcher the output readers run for `ready: log`, and the receiver
/// its first matching line fires; none for other checks.
pub fn log_matcher(ready: Option<&Ready>) -> (Option<LineMatcher>, Option<oneshot::Receiver<()>>) {
    let Some(Ready::Log(pattern)) = ready else {
        return (None, None);
    };
    let Ok(regex) = regex::Regex::new(pattern) else {
        return (None, None);
    };
    let (found, rx) = oneshot::channel();
    let found = Arc::new(std::sync::Mutex::new(Some(found)));
    (Some(LineMatcher { regex, found }), Some(rx))
}

/// "not ready after 30s (waiting for log /^listening/)".
pub fn not_ready(limit: Duration, kind: &Ready) -> String {
    let waiting = match kind {
        Ready::Notify => "READY=1 on NOTIFY_SOCKET".to_owned(),
        Ready::Tcp(addr) => format!("a TCP connect to {addr}"),
        Ready::Http(url) => format!("a 2xx from {url}"),
        Ready::Exec(cmd) => format!("`{cmd}` to exit 0"),
        Ready::Log(re) => format!("log /{re}/"),
    };
    format!(
        "not ready after {} (waiting for {waiting})",
        humantime::format_duration(limit)
    )
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
