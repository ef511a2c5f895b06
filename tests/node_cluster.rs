//! Node cluster apps whose port is in no file (issue 22, class 1): they
//! hard-code it, read it from their own `.env`, or compute
//! `process.env.PORT || 3000`. eco's Node shim asks eco for that port at
//! listen() time; eco binds it once, shares it between the instances and
//! keeps it across reloads, as Node's cluster module (and so PM2) does.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use crate::cluster::{Load, wait_requests};
use crate::support::{Home, all_online, eventually, free_port};

/// A server that answers with its pid (header and body) and closes the
/// connection; `listen` is the JavaScript of its listen() call.
fn server(listen: &str) -> String {
    format!(
        "const http = require('http');\n\
         const server = http.createServer((req, res) => {{\n\
           res.setHeader('Connection', 'close');\n\
           res.setHeader('X-Pid', String(process.pid));\n\
           res.end('pid ' + process.pid + '\\n');\n\
         }});\n\
         {listen}\n"
    )
}

/// A PM2 file with one cluster app of 2 instances running `script`.
fn pm2_file(apps: &[(&str, &str)]) -> String {
    let apps: Vec<String> = apps
        .iter()
        .map(|(name, script)| {
            format!("{{ name: '{name}', script: '{script}', exec_mode: 'cluster', instances: 2 }}")
        })
        .collect();
    format!("module.exports = {{ apps: [{}] }};\n", apps.join(", "))
}

/// The X-Pid header of one answer from `port`.
fn answering_pid(port: u16) -> std::io::Result<i64> {
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    answer
        .lines()
        .find_map(|l| l.strip_prefix("X-Pid: "))
        .and_then(|p| p.trim().parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no X-Pid in {answer:?}")))
}

/// Asks until both instances of `app` have answered on `port`.
fn both_instances_answer(home: &Home, app: &str, port: u16) {
    let pids: BTreeSet<i64> = home
        .rows()
        .iter()
        .filter(|r| r["app"] == app)
        .map(|r| r["pid"].as_i64().unwrap_or(-1))
        .collect();
    assert_eq!(pids.len(), 2, "{app}: {pids:?}");
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while seen != pids {
        assert!(
            Instant::now() < deadline,
            "{app}: only {seen:?} of {pids:?} answered on port {port}"
        );
        let pid = answering_pid(port).expect("an answer");
        assert!(pids.contains(&pid), "{app}: pid {pid} is not an instance");
        seen.insert(pid);
    }
}

fn up(home: &Home) {
    home.ok(&["up", "-f", "ecosystem.config.js", "--wait"]);
    home.wait_rows("every instance online", all_online);
}

#[test]
fn a_hard_coded_port_serves_through_both_instances_and_reloads_fail_no_request() {
    crate::support::tools::require(&["node"]);
    let home = Home::new();
    let port = free_port();
    home.write("server.js", &server(&format!("server.listen({port});")));
    home.write("ecosystem.config.js", &pm2_file(&[("web", "server.js")]));
    // No `listen`, no PORT: valid for a Node app.
    home.ok(&["validate", "-f", "ecosystem.config.js"]);
    up(&home);
    both_instances_answer(&home, "web", port);
    let first: Vec<i64> = home
        .rows()
        .iter()
        .filter_map(|r| r["pid"].as_i64())
        .collect();
    let load = Load::start(port, 4);
    wait_requests(&load, 50);
    for _ in 0..3 {
        home.ok(&["reload", "web"]);
        wait_requests(&load, 20);
    }
    let (ok, refused, failed) = load.finish();
    assert_eq!(refused, 0, "refused connections");
    assert!(
        failed.is_empty(),
        "{} failed requests: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(ok > 100, "only {ok} requests");
    let rows = home.wait_rows("reloaded", all_online);
    assert!(
        rows.iter()
            .all(|r| !first.contains(&r["pid"].as_i64().unwrap_or(-1))),
        "{first:?} → {rows:?}"
    );
    both_instances_answer(&home, "web", port);
    // Deleting the app gives the port up.
    home.ok(&["delete", "web"]);
    eventually("port given up", Duration::from_secs(10), || {
        std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
    });
}

#[test]
fn port_or_default_and_a_port_from_the_apps_own_env_file_work() {
    crate::support::tools::require(&["node"]);
    let home = Home::new();
    let (fallback, dotenv) = (free_port(), free_port());
    home.write(
        "fallback.js",
        &server(&format!("server.listen(process.env.PORT || {fallback});")),
    );
    home.write(
        ".env",
        &format!("# the app's own settings\nPORT={dotenv}\n"),
    );
    home.write(
        "dotenv.js",
        &server(
            "const text = require('fs').readFileSync(__dirname + '/.env', 'utf8');\n\
             const port = Number(/^PORT=(\\d+)$/m.exec(text)[1]);\n\
             server.listen(port, '127.0.0.1', () => console.log('listening on', port));",
        ),
    );
    home.write(
        "ecosystem.config.js",
        &pm2_file(&[("fallback", "fallback.js"), ("dotenv", "dotenv.js")]),
    );
    up(&home);
    both_instances_answer(&home, "fallback", fallback);
    both_instances_answer(&home, "dotenv", dotenv);
    // The listen() callback ran: the app saw its server listening.
    eventually("listen callback", Duration::from_secs(10), || {
        let out = home.eco(&["logs", "dotenv", "--lines", "20"]);
        String::from_utf8_lossy(&out.stdout).contains(&format!("listening on {dotenv}"))
    });
}

/// The broker answers the instance's own process only: another process of
/// eco's own user that finds the socket is refused, and nothing is bound.
#[test]
fn only_the_instance_gets_a_socket_from_eco() {
    crate::support::tools::require(&["node"]);
    let home = Home::new();
    let port = free_port();
    home.write("server.js", &server(&format!("server.listen({port});")));
    home.write("ecosystem.config.js", &pm2_file(&[("web", "server.js")]));
    up(&home);
    let pid = home.row("web", 0)["pid"].as_i64().expect("pid");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    let broker = environ
        .split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(b"ECO_LISTEN_BROKER="))
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .expect("the shim removes the variable from node's env, not from /proc");
    assert!(
        broker.starts_with(&home.path().join("notify").display().to_string()),
        "{broker}"
    );
    let wanted = free_port();
    let mut stream = std::os::unix::net::UnixStream::connect(&broker).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    writeln!(stream, "tcp 127.0.0.1:{wanted}").expect("ask");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("answer");
    assert!(answer.contains("only the instance asks"), "{answer:?}");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", wanted)).is_ok(),
        "eco bound a port for a stranger"
    );
    // A user other than eco's cannot even reach it.
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("test -e '{broker}'"))
        .uid(65534)
        .output()
        .expect("sh as nobody");
    assert!(!out.status.success(), "nobody can reach the broker");
    let started = Instant::now();
    home.ok(&["ls"]);
    assert!(started.elapsed() < Duration::from_secs(5), "eco ls is slow");
}
