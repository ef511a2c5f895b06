//! Cluster mode on loopback: eco holds the socket, instances come and go,
//! no request fails. The app is eco's own `__fixture-http` server, which
//! finishes the request in hand on SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Home, all_online, eco_bin, eventually, stderr};

pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn cluster_file(port: u16, ready: &str, extra_env: &str) -> String {
    format!(
        "name: web\napps:\n  api:\n    cmd: ['{}', __fixture-http]\n    mode: cluster\n    instances: 2\n    \
         listen: ['127.0.0.1:{port}']\n    ready: {ready}\n    ready_timeout: 2s\n    stop_timeout: 5s\n    env: {{ FLAVOUR: '{extra_env}' }}\n",
        eco_bin().display()
    )
}

/// Requests in a loop on fresh connections, counting outcomes.
pub(crate) struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    pub(crate) fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, refused, failed) =
                    (stop.clone(), ok.clone(), refused.clone(), failed.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match request(addr) {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                                refused.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(err) => failed.lock().expect("failures").push(err.to_string()),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            refused,
            failed,
            threads,
        }
    }

    pub(crate) fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops and returns (ok, refused, other failures).
    pub(crate) fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let failed = self.failed.lock().expect("failures").clone();
        (
            self.ok.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
            failed,
        )
    }
}

fn request(addr: SocketAddr) -> std::io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    if answer.starts_with("HTTP/1.1 200 OK") && answer.contains("pid ") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!("bad answer: {answer:?}")))
    }
}

fn pids(home: &Home) -> Vec<i64> {
    home.rows()
        .iter()
        .map(|r| r["pid"].as_i64().unwrap_or(-1))
        .collect()
}

/// SIGKILLs instance `index` of `app` and waits until every instance is
/// online again, that one with a new pid.
pub(crate) fn kill_and_wait_respawn(home: &Home, app: &str, index: u64) {
    let victim = home.row(app, index)["pid"].as_i64().expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(victim).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    home.wait_rows("respawned", |rows| {
        all_online(rows) && rows.iter().all(|r| r["pid"].as_i64() != Some(victim))
    });
}

pub(crate) fn wait_requests(load: &Load, more: u64) {
    let target = load.ok() + more;
    eventually("requests flowing", Duration::from_secs(10), || {
        load.ok() >= target
    });
}

#[test]
fn reloads_and_edits_under_load_fail_no_request() {
    let home = Home::new();
    let port = free_port();
    home.write("ecosystem.yaml", &cluster_file(port, "notify", "plain"));
    home.ok(&["up", "--wait"]);
    let first = pids(&home);
    let load = Load::start(port, 4);
    wait_requests(&load, 50);
    for _ in 0..3 {
        home.ok(&["reload", "api"]);
        wait_requests(&load, 20);
    }
    let after_reloads = pids(&home);
    assert!(
        after_reloads.iter().all(|p| !first.contains(p)),
        "{first:?} → {after_reloads:?}"
    );
    // An env edit in the file rolls the instances too.
    home.write("ecosystem.yaml", &cluster_file(port, "notify", "spicy"));
    let rows = home.wait_rows("edit rolled out", |rows| {
        rows.len() == 2
            && all_online(rows)
            && rows
                .iter()
                .all(|r| !after_reloads.contains(&r["pid"].as_i64().unwrap_or(-1)))
    });
    assert_eq!(rows.len(), 2);
    wait_requests(&load, 20);
    let (ok, refused, failed) = load.finish();
    assert_eq!(refused, 0, "refused connections");
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests");
}

#[test]
fn a_killed_instance_refuses_no_connection() {
    let home = Home::new();
    let port = free_port();
    home.write("ecosystem.yaml", &cluster_file(port, "notify", "plain"));
    home.ok(&["up", "--wait"]);
    let load = Load::start(port, 4);
    wait_requests(&load, 50);
    kill_and_wait_respawn(&home, "api", 0);
    wait_requests(&load, 50);
    let (ok, refused, _failed) = load.finish();
    assert_eq!(refused, 0, "refused connections");
    assert!(ok > 100);
}

#[test]
fn a_rollout_whose_new_instance_never_gets_ready_stops() {
    let home = Home::new();
    let port = free_port();
    let flag = home.path().join("healthy");
    std::fs::write(&flag, "").expect("flag");
    let ready = format!("{{ exec: 'test -f {}' }}", flag.display());
    home.write("ecosystem.yaml", &cluster_file(port, &ready, "plain"));
    home.ok(&["up", "--wait"]);
    let before = pids(&home);
    std::fs::remove_file(&flag).expect("unflag");
    let load = Load::start(port, 2);
    let out = home.eco(&["reload", "api"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("did not become ready") && err.contains("old instances keep serving"),
        "{err}"
    );
    wait_requests(&load, 20);
    let (_, refused, failed) = load.finish();
    assert_eq!(refused, 0);
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(pids(&home), before, "the old instances still serve");
    assert!(all_online(&home.rows()));
}

#[test]
fn instances_receive_systemd_socket_activation_variables() {
    let home = Home::new();
    let port = free_port();
    home.write("ecosystem.yaml", &cluster_file(port, "notify", "plain"));
    home.ok(&["up", "--wait"]);
    let rows = home.rows();
    eventually("both fixture lines", Duration::from_secs(5), || {
        home.ok(&["logs", "api", "--out", "-n", "50"])
            .matches("fixture pid=")
            .count()
            >= 2
    });
    let logs = home.ok(&["logs", "api", "--out", "-n", "50"]);
    for row in rows {
        let pid = row["pid"].as_i64().expect("pid");
        let expected = format!(
            "fixture pid={pid} LISTEN_PID={pid} LISTEN_FDS=1 LISTEN_FDNAMES=tcp-127.0.0.1-{port}"
        );
        assert!(logs.contains(&expected), "{expected:?} not in\n{logs}");
    }
}

#[test]
fn a_stopped_cluster_app_restored_by_a_new_daemon_starts_with_its_socket() {
    let home = Home::new();
    let port = free_port();
    home.write("ecosystem.yaml", &cluster_file(port, "notify", "plain"));
    home.ok(&["up", "--wait"]);
    home.ok(&["stop", "api"]);
    home.kill_daemon_hard();
    let rows = home.rows();
    assert!(rows.iter().all(|r| r["status"] == "stopped"), "{rows:?}");
    home.ok(&["start", "api"]);
    home.wait_rows("online again", |rows| rows.len() == 2 && all_online(rows));
    let load = Load::start(port, 1);
    wait_requests(&load, 10);
    let (_, refused, failed) = load.finish();
    assert_eq!(refused, 0);
    assert!(failed.is_empty(), "{failed:?}");
}
