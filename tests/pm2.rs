//! Coming from PM2: PM2's documented ecosystem.config.js files run under
//! `eco up -f` unchanged (tests/pm2/), a PM2 cluster app that calls
//! `listen(PORT)` reloads under load without failing a request, `eco
//! import` gives files `eco validate` accepts, the profile sticks, and
//! `eco start` passes the caller's environment.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::{Home, eco_bin, eventually, root, stderr, stdout};

fn fixture(name: &str) -> PathBuf {
    crate::support::tools::require(&["node"]);
    root().join("tests/pm2").join(name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// One GET on a fresh connection; the body.
fn get(port: u16) -> std::io::Result<String> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    match answer.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200 OK") => Ok(body.to_owned()),
        _ => Err(std::io::Error::other(format!("bad answer: {answer:?}"))),
    }
}

/// Runs a fixture with `eco up -f FILE --wait` and returns the body its
/// app answers on `port`.
fn run_fixture(file: &str, port: u16, extra: &[&str]) -> (Home, String) {
    let home = Home::new();
    let path = fixture(file);
    let mut args = vec![
        "up",
        "-f",
        path.to_str().expect("utf-8"),
        "--wait",
        "--timeout",
        "30s",
    ];
    args.extend_from_slice(extra);
    home.ok(&args);
    // A fork-mode app is online once spawned, maybe before it listens.
    let mut body = String::new();
    eventually(
        &format!("{file}: GET :{port}"),
        Duration::from_secs(10),
        || get(port).map(|b| body = b).is_ok(),
    );
    (home, body)
}

#[test]
fn pm2_basic_runs_unchanged() {
    let (home, body) = run_fixture("basic.config.js", 31801, &[]);
    assert!(body.starts_with("none 0 "), "{body}");
    assert_eq!(home.row("app1", 0)["status"], "online");
}

#[test]
fn pm2_env_production_runs_unchanged() {
    let (_home, body) = run_fixture("env-production.config.js", 31802, &["--env", "production"]);
    assert!(body.starts_with("production 0 "), "{body}");
}

#[test]
fn pm2_cluster_max_runs_unchanged() {
    let (home, _) = run_fixture("cluster.config.js", 31803, &[]);
    let rows = home.rows();
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    assert_eq!(rows.len(), cpus, "{rows:#?}");
    // Every instance serves the one port eco holds.
    let mut seen = std::collections::BTreeSet::new();
    eventually("both instances answer", Duration::from_secs(20), || {
        if let Ok(body) = get(31803) {
            seen.insert(
                body.split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        seen.len() == cpus
    });
}

#[test]
fn pm2_watch_runs_unchanged() {
    let (home, _) = run_fixture("watch.config.js", 31804, &[]);
    let out = home.ok(&["describe", "watched", "--json"]);
    assert!(out.contains("client/img"), "{out}");
}

#[test]
fn pm2_max_memory_restart_runs_unchanged() {
    let (home, _) = run_fixture("memory.config.js", 31805, &[]);
    let out = home.ok(&["describe", "api", "--json"]);
    assert!(out.contains("\"max_memory\": 1073741824"), "{out}");
}

#[test]
fn pm2_cron_restart_runs_unchanged() {
    let (home, _) = run_fixture("cron.config.js", 31806, &[]);
    let out = home.ok(&["describe", "api", "--json"]);
    assert!(out.contains("\"cron_restart\": \"1 0 * * *\""), "{out}");
}

#[test]
fn pm2_wait_ready_is_process_send_ready() {
    let (home, _) = run_fixture("wait-ready.config.js", 31807, &[]);
    let out = home.ok(&["describe", "api", "--json"]);
    assert!(out.contains("\"ready\": \"notify\""), "{out}");
    // `up --wait` returned: the instance was ready, and with `ready:
    // notify` only process.send('ready') (through eco's shim) makes it so.
    // A restart waits for it again.
    let before = home.row("api", 0)["pid"].clone();
    home.ok(&["restart", "api"]);
    home.wait_rows("ready again", |rows| {
        rows.len() == 1 && rows[0]["status"] == "online" && rows[0]["pid"] != before
    });
    eventually("serving again", Duration::from_secs(10), || {
        get(31807).is_ok()
    });
}

/// Requests in a loop on fresh connections, counting outcomes.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        match get(port) {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
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
            failed,
            threads,
        }
    }

    fn wait_for(&self, more: u64) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        eventually("requests flowing", Duration::from_secs(20), || {
            self.ok.load(Ordering::Relaxed) >= target
        });
    }

    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
        let failed = self.failed.lock().expect("failures").clone();
        (self.ok.load(Ordering::Relaxed), failed)
    }
}

#[test]
fn pm2_cluster_app_reloads_under_load_without_failing_a_request() {
    crate::support::tools::require(&["node"]);
    let home = Home::new();
    let port = free_port();
    std::fs::copy(fixture("app.js"), home.path().join("app.js")).expect("copy app.js");
    home.write(
        "ecosystem.config.js",
        &format!(
            "module.exports = {{\n  apps: [{{\n    name: 'api',\n    script: 'app.js',\n    \
             instances: 2,\n    exec_mode: 'cluster',\n    env: {{ PORT: {port} }}\n  }}]\n}}\n"
        ),
    );
    home.ok(&[
        "up",
        "-f",
        "ecosystem.config.js",
        "--wait",
        "--timeout",
        "30s",
    ]);
    let load = Load::start(port, 4);
    load.wait_for(50);
    for _ in 0..2 {
        home.ok(&["reload", "api"]);
        load.wait_for(20);
    }
    let (ok, failed) = load.finish();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        ok,
        &failed[..failed.len().min(5)]
    );
    let rows = home.rows();
    assert!(rows.iter().all(|r| r["restarts"] == 2), "{rows:#?}");
}

#[test]
fn pm2_import_gives_files_that_validate() {
    let home = Home::new();
    for file in [
        "basic.config.js",
        "env-production.config.js",
        "cluster.config.js",
        "watch.config.js",
        "memory.config.js",
        "cron.config.js",
        "wait-ready.config.js",
    ] {
        let out = home.ok(&["import", fixture(file).to_str().expect("utf-8")]);
        // The output lives next to the PM2 file, as a user would save it.
        let target = home.path().join(format!("{file}.yaml"));
        std::fs::write(&target, &out).expect("write");
        let check = home.eco(&["validate", "-f", target.to_str().expect("utf-8")]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "{file}:\n{out}\n{}",
            stderr(&check)
        );
    }
    let out = home.ok(&[
        "import",
        fixture("watch.config.js").to_str().expect("utf-8"),
    ]);
    assert!(out.contains("watch_ignore:"), "{out}");
}

#[test]
fn import_comments_what_is_approximated_or_dropped() {
    crate::support::tools::require(&["node"]);
    let home = Home::new();
    home.write(
        "ecosystem.config.js",
        "module.exports = { apps: [{ name: 'api', script: 'server.js', merge_logs: true, \
         log_date_format: 'YYYY-MM-DD', vizion: false, namespace: 'shop' }],\n  \
         deploy: { production: { user: 'node', host: 'h', ref: 'origin/main', repo: 'r', path: '/p' } } }\n",
    );
    let out = home.ok(&["import", "ecosystem.config.js"]);
    for expected in [
        "# PM2 deploy: not supported",
        "# PM2 merge_logs: ignored",
        "# PM2 log_date_format: approximated",
        "# PM2 vizion: ignored",
        "# PM2 namespace: dropped",
        "log_time: true",
    ] {
        assert!(out.contains(expected), "{expected}:\n{out}");
    }
    // `up`/`validate` say the same as warnings.
    let check = home.eco(&["validate", "-f", "ecosystem.config.js"]);
    assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    assert!(
        stderr(&check).contains("eco: warning:"),
        "{}",
        stderr(&check)
    );
    assert!(
        stderr(&check).contains("apps[0].vizion: ignored"),
        "{}",
        stderr(&check)
    );
    // With no ecosystem.yaml, PM2's file name is found without -f.
    let out = home.ok(&["validate"]);
    assert!(out.contains("ecosystem.config.js"), "{out}");
}

#[test]
fn pm2_yaml_json_and_json5_files_are_read() {
    crate::support::tools::require(&["node"]);
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        // `instances` makes a Node app a cluster app, as in PM2: it needs a
        // PORT until eco's shim takes the app's own listen().
        "apps:\n  - name: web\n    script: app.js\n    instances: \"2\"\n    env: {PORT: 3000}\n",
    );
    let out = home.ok(&["validate"]);
    assert!(out.contains("1 app, 2 instances"), "{out}");
    home.write(
        "process.json",
        "{\"apps\": [{\"name\": \"web\", \"script\": \"app.js\"}]}\n",
    );
    home.ok(&["validate", "-f", "process.json"]);
    home.write(
        "process.json5",
        "// PM2 evaluates JSON as JavaScript\n{ apps: [{ name: 'web', script: 'app.js', }], }\n",
    );
    home.ok(&["validate", "-f", "process.json5"]);
    // Errors in a PM2 YAML file point into it.
    home.write(
        "ecosystem.yaml",
        "apps:\n  - name: web\n    script: app.js\n    max_memory_restart: lots\n",
    );
    let out = home.eco(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("ecosystem.yaml:4:25: apps.web.max_memory: expected a size"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn javascript_errors_name_the_app_and_key() {
    crate::support::tools::require(&["node"]);
    let home = Home::new();
    home.write(
        "ecosystem.config.js",
        "module.exports = { apps: [{ name: 'api', script: 'a.js', kill_timeout: 'soon' }] }\n",
    );
    let out = home.eco(&["validate", "-f", "ecosystem.config.js"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("ecosystem.config.js: apps.api.stop_timeout: expected a duration"),
        "{}",
        stderr(&out)
    );
    home.write("broken.config.js", "module.exports = { apps: [ }\n");
    let out = home.eco(&["validate", "-f", "broken.config.js"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("node could not evaluate the file"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("SyntaxError"), "{}", stderr(&out));
    // No node: a clear error.
    let out = Command::new(eco_bin())
        .args(["validate", "-f", "ecosystem.config.js"])
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .env("ECO_NODE", home.path().join("no-node-here"))
        .output()
        .expect("eco runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("node is needed to read a JavaScript ecosystem file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn javascript_in_a_yaml_file_gets_a_hint() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "module.exports = {\n  apps: [{ name: 'a', script: 'a.js' }]\n}\n",
    );
    let out = home.eco(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("this looks like JavaScript"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn cluster_mode_needs_listen_or_a_port() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  api:\n    cmd: python3 server.py\n    mode: cluster\n",
    );
    let out = home.eco(&["validate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("apps.api.listen: `mode: cluster` needs `listen`"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("only a Node app"), "{}", stderr(&out));
    // A Node app gets the port it listens on from eco.
    home.write(
        "ecosystem.yaml",
        "apps:\n  api:\n    cmd: node server.js\n    mode: cluster\n",
    );
    home.ok(&["validate"]);
    home.write(
        "ecosystem.yaml",
        "apps:\n  api:\n    cmd: python3 server.py\n    mode: cluster\n    env: { PORT: 8080 }\n",
    );
    home.ok(&["validate"]);
}

/// The profile given to `up --env` is saved with the project: a bare
/// `reload` and a daemon restart keep it; a switch is printed.
#[test]
fn the_profile_survives_reload_and_a_daemon_restart() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: shop\nenv: { NODE_ENV: development }\nenv_production: { NODE_ENV: production }\n\
         env_staging: { NODE_ENV: staging }\napps:\n  web:\n    cmd: sleep 60\n",
    );
    let node_env = || {
        let out = home.ok(&["describe", "web", "--json"]);
        let apps: serde_json::Value = serde_json::from_str(&out).expect("json");
        (
            apps[0]["profile"].as_str().unwrap_or("").to_owned(),
            apps[0]["instances"][0]["env"]["NODE_ENV"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )
    };
    home.ok(&["up", "--env", "production", "--wait"]);
    assert_eq!(node_env(), ("production".into(), "production".into()));
    let out = home.eco(&["reload"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("keeps profile `production`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node_env(), ("production".into(), "production".into()));
    home.kill_daemon_hard();
    home.ok(&["ls"]);
    home.ok(&["reload"]);
    assert_eq!(node_env(), ("production".into(), "production".into()));
    home.ok(&["up"]);
    assert_eq!(node_env(), ("production".into(), "production".into()));
    let out = home.eco(&["up", "--env", "staging"]);
    assert!(
        stderr(&out).contains("profile `production` -> `staging`"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node_env(), ("staging".into(), "staging".into()));
    let out = home.eco(&["up", "--env", ""]);
    assert!(
        stderr(&out).contains("profile `staging` -> (none)"),
        "{}",
        stderr(&out)
    );
    assert_eq!(node_env(), (String::new(), "development".into()));
}

/// `PORT=… eco start app.js -i 2`: the apps get the caller's PORT, as
/// with `pm2 start`.
#[test]
fn start_passes_the_callers_environment() {
    crate::support::tools::require(&["node"]);
    let home = Home::new();
    let port = free_port();
    home.write(
        "fork.js",
        "require('http').createServer((q, s) => s.end(`port ${process.env.PORT} ${process.env.NODE_APP_INSTANCE}`))\
         .listen(Number(process.env.PORT) + Number(process.env.NODE_APP_INSTANCE));\n",
    );
    // The daemon starts without PORT: the value must come from the caller.
    home.ok(&["ls"]);
    let out = Command::new(eco_bin())
        .args(["start", "fork.js", "-i", "2"])
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .env("PORT", port.to_string())
        .output()
        .expect("eco runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    for i in 0..2u16 {
        let mut body = String::new();
        eventually("the instance answers", Duration::from_secs(10), || {
            get(port + i).map(|b| body = b).is_ok()
        });
        assert_eq!(body, format!("port {port} {i}"));
    }
}
