//! `eco update`: the daemon replaces itself with the binary on disk while
//! its apps run on. "Another build" is the same binary run through a
//! wrapper that sets ECO_VERSION_SUFFIX (test-only): the daemon that
//! answers afterwards reports the new version, under the same pid.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::cluster::{Load, free_port};
use crate::support::{Home, eco_bin, eventually, stderr, stdout};

/// A copy of eco in the home's `bin/`, so the test can replace it on disk.
fn install(home: &Home) -> PathBuf {
    let bin = home.path().join("bin");
    std::fs::create_dir_all(&bin).expect("bin");
    let exe = bin.join("eco");
    std::fs::copy(eco_bin(), &exe).expect("copy eco");
    settle_exec(&exe);
    exe
}

/// Waits until `exe` can be exec'd: a child that another test thread
/// forked while this one wrote the file holds it open for writing until
/// its own exec ("Text file busy"); once one exec works, nothing can hold
/// it any more (the file is closed here).
fn settle_exec(exe: &Path) {
    let mut tries = 0;
    while Command::new(exe)
        .args(["__check-state", "/nonexistent"])
        .output()
        .is_err_and(|e| e.kind() == std::io::ErrorKind::ExecutableFileBusy)
    {
        tries += 1;
        assert!(tries < 500, "{} stays busy", exe.display());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Replaces the binary at `exe` (by rename, as a package manager does).
fn replace_with_script(exe: &Path, script: &str) {
    let new = exe.with_extension("new");
    std::fs::write(&new, script).expect("write");
    std::fs::set_permissions(
        &new,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )
    .expect("chmod");
    std::fs::rename(&new, exe).expect("rename");
    settle_exec(exe);
}

/// "Another build": eco with another version string.
fn next_build(exe: &Path, suffix: &str) {
    replace_with_script(
        exe,
        &format!(
            "#!/bin/sh\nECO_VERSION_SUFFIX={suffix} exec '{}' \"$@\"\n",
            eco_bin().display()
        ),
    );
}

fn run(exe: &Path, home: &Home, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("eco runs")
}

fn ok(exe: &Path, home: &Home, args: &[&str]) -> String {
    let out = run(exe, home, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "eco {args:?}:\nstdout: {}\nstderr: {}\ndaemon.log:\n{}",
        stdout(&out),
        stderr(&out),
        std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default()
    );
    stdout(&out)
}

/// A writer of about 2,000 numbered lines a second, and a cluster app.
fn project(port: u16) -> String {
    format!(
        "name: up\napps:\n  seq:\n    cmd: ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo \"seq $i\"; case $((i % 20)) in 0) sleep 0.01;; esac; done']\n  \
         web:\n    cmd: ['{}', __fixture-http]\n    mode: cluster\n    instances: 2\n    listen: ['127.0.0.1:{port}']\n    stop_timeout: 5s\n",
        eco_bin().display()
    )
}

/// Every sequence number the writer's log holds, sorted.
pub(crate) fn numbers(home: &Home) -> Vec<u64> {
    let dir = home.path().join("logs/up");
    let mut all = Vec::new();
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("seq.out.log") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        // The file is read while eco appends to it: a last line without
        // its newline is still being written.
        for line in text
            .split_inclusive('\n')
            .filter_map(|l| l.strip_suffix('\n'))
        {
            let n = line
                .strip_prefix("seq ")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or_else(|| panic!("a torn or foreign line in the log: {line:?}"));
            all.push(n);
        }
    }
    all.sort_unstable();
    all
}

fn pids(exe: &Path, home: &Home) -> Vec<(String, i64)> {
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&ok(exe, home, &["ls", "--json"])).expect("ls --json");
    rows.iter()
        .map(|r| {
            (
                format!("{}:{}", r["app"], r["index"]),
                r["pid"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// The daemon line of `eco version`.
fn daemon_line(exe: &Path, home: &Home) -> String {
    ok(exe, home, &["version"])
        .lines()
        .find(|l| l.starts_with("daemon:"))
        .unwrap_or_default()
        .to_owned()
}

fn daemon_pid(home: &Home) -> String {
    std::fs::read_to_string(home.path().join("daemon.pid"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

#[test]
fn update_keeps_every_app_socket_and_line() {
    let home = Home::new();
    let exe = install(&home);
    let port = free_port();
    home.write("ecosystem.yaml", &project(port));
    ok(&exe, &home, &["up", "--wait"]);
    let before = pids(&exe, &home);
    let daemon = daemon_pid(&home);
    assert!(before.iter().all(|(_, pid)| *pid > 0), "{before:?}");
    eventually("the writer's first lines", Duration::from_secs(20), || {
        numbers(&home).len() > 200
    });
    let load = Load::start(port, 4);
    eventually("requests served", Duration::from_secs(20), || {
        load.ok() > 50
    });

    next_build(&exe, "-next");
    let out = ok(&exe, &home, &["update"]);
    assert!(out.contains("-next"), "{out}");
    let served = load.ok();
    eventually(
        "requests served after the update",
        Duration::from_secs(20),
        || load.ok() > served + 50,
    );
    let (done, refused, failed) = load.finish();

    // The new build answers, in the same process, and kept every app.
    let line = daemon_line(&exe, &home);
    assert!(line.contains("-next"), "not the new build: {line}");
    assert!(line.contains("updated in place 1 times"), "{line}");
    assert_eq!(daemon_pid(&home), daemon, "the daemon's pid changed");
    assert!(line.contains(&format!("pid {daemon}")), "{line}");
    let table = ok(&exe, &home, &["ls"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("daemon: eco ") && l.ends_with("-next")),
        "eco ls does not show the new version:\n{table}"
    );
    assert_eq!(pids(&exe, &home), before, "an app was restarted");
    assert_eq!(refused, 0, "refused connections during the update");
    assert!(
        failed.is_empty(),
        "{} of {done} requests failed: {failed:?}",
        failed.len()
    );

    // No line lost or duplicated: the writer's numbers run on without a gap.
    let seen = numbers(&home).last().copied().unwrap_or(0);
    eventually(
        "the writer's lines after the update",
        Duration::from_secs(20),
        || numbers(&home).len() as u64 > seen + 500,
    );
    let all = numbers(&home);
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    if all != expected {
        let missing: Vec<u64> = expected
            .iter()
            .filter(|n| all.binary_search(n).is_err())
            .take(10)
            .copied()
            .collect();
        let dup: Vec<u64> = all
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .take(10)
            .collect();
        panic!(
            "{} lines: missing {missing:?}, duplicated {dup:?}",
            all.len()
        );
    }
}

#[test]
fn a_build_that_cannot_read_the_state_is_refused() {
    let home = Home::new();
    let exe = install(&home);
    home.write(
        "ecosystem.yaml",
        "name: up\napps:\n  sleeper:\n    cmd: ['sleep', '300']\n    instances: 2\n",
    );
    ok(&exe, &home, &["up", "--wait"]);
    let before = pids(&exe, &home);
    let line = daemon_line(&exe, &home);
    // A build that refuses every state it is handed.
    replace_with_script(
        &exe,
        "#!/bin/sh\nif [ \"$1\" = __check-state ]; then echo 'error: the state handed over is format 1; this build reads 2' >&2; exit 1; fi\nexit 99\n",
    );
    let out = Command::new(eco_bin())
        .arg("update")
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .output()
        .expect("eco runs");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let said = stderr(&out);
    assert!(
        said.contains("cannot take over") && said.contains("this build reads 2"),
        "{said}"
    );
    // The old daemon runs on, unchanged, and still acts (its apps' locks
    // were given back).
    let again = Command::new(eco_bin())
        .args(["version"])
        .env("ECO_HOME", home.path())
        .output()
        .expect("eco runs");
    assert!(stdout(&again).contains(&line), "{}", stdout(&again));
    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&home.ok(&["ls", "--json"])).expect("json");
    let now: Vec<(String, i64)> = rows
        .iter()
        .map(|r| {
            (
                format!("{}:{}", r["app"], r["index"]),
                r["pid"].as_i64().unwrap_or(-1),
            )
        })
        .collect();
    assert_eq!(now, before);
    home.ok(&["restart", "sleeper"]);
}

#[test]
fn a_cli_of_another_version_says_so_once() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: up\napps:\n  sleeper:\n    cmd: ['sleep', '300']\n",
    );
    home.ok(&["up", "--wait"]);
    let same = home.eco(&["ls"]);
    assert!(!stderr(&same).contains("eco update"), "{}", stderr(&same));
    let other = Command::new(eco_bin())
        .args(["ls"])
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .env("ECO_VERSION_SUFFIX", "-other")
        .output()
        .expect("eco runs");
    assert_eq!(other.status.code(), Some(0));
    let said = stderr(&other);
    assert_eq!(said.matches("run `eco update`").count(), 1, "{said}");
    assert!(said.contains("-other"), "{said}");
    let version = home.ok(&["version"]);
    assert!(
        version
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("eco ")),
        "{version}"
    );
    assert!(version.contains("daemon: eco "), "{version}");
}

pub(crate) const FDSTORE_APP: &str = r#"
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

pub(crate) fn lines_of(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |t| t.lines().count())
}

#[test]
fn update_keeps_notify_sockets_watchdogs_and_stored_descriptors() {
    crate::support::tools::require(&["python3"]);
    let home = Home::new();
    let exe = install(&home);
    home.write("keep.py", FDSTORE_APP);
    let pings = home.path().join("pings");
    let fds = home.path().join("fds");
    home.write(
        "ecosystem.yaml",
        &format!(
            "name: up\napps:\n  dog:\n    cmd: [sh, -c, 'while :; do {eco} notify WATCHDOG=1 && echo ping >> {pings} || echo notify-failed; sleep 0.1; done']\n    watchdog: 1s\n  \
             keeper:\n    cmd: [python3, keep.py, {fds}]\n    fd_store: 1\n    restart_delay: 0ms\n    env: {{ ECO_BIN_FOR_TEST: '{eco}' }}\n",
            eco = eco_bin().display(),
            pings = pings.display(),
            fds = fds.display(),
        ),
    );
    ok(&exe, &home, &["up", "--wait"]);
    eventually("stored", Duration::from_secs(20), || {
        std::fs::read_to_string(&fds).is_ok_and(|t| t.contains("stored "))
    });
    eventually("pings", Duration::from_secs(20), || lines_of(&pings) > 3);
    let before = pids(&exe, &home);

    next_build(&exe, "-next");
    ok(&exe, &home, &["update"]);
    assert!(daemon_line(&exe, &home).contains("-next"));
    // Pings keep reaching the same socket: well over a watchdog interval
    // of them, and no restart.
    let seen = lines_of(&pings);
    eventually("pings after the update", Duration::from_secs(30), || {
        lines_of(&pings) > seen + 25
    });
    assert_eq!(pids(&exe, &home), before, "restarted (watchdog?)");
    let log = std::fs::read_to_string(home.path().join("logs/up/dog.out.log")).unwrap_or_default();
    assert!(!log.contains("notify-failed"), "{log}");

    // The stored descriptor comes back at the next start.
    let keeper = before
        .iter()
        .find(|(name, _)| name.contains("keeper"))
        .map(|(_, pid)| *pid)
        .expect("keeper");
    crate::support::assert_stored_fd_comes_back(keeper, &fds, Duration::from_secs(20));
}
