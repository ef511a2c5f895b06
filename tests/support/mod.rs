//! Shared helpers: running the real `eco` binary with its own ECO_HOME.

#![allow(dead_code)]

pub(crate) mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The crate's root folder.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built `eco` binary.
pub(crate) fn eco_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_eco"))
}

/// Runs `eco ARGS` in `dir` with `ECO_HOME=home` and returns its output.
pub(crate) fn eco(home: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(eco_bin())
        .args(args)
        .current_dir(dir)
        .env("ECO_HOME", home)
        .env("NO_COLOR", "1")
        .output()
        .expect("eco runs")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Output lines of a running `eco`, both streams, as they arrive.
#[derive(Clone, Default)]
pub(crate) struct Lines {
    inner: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl Lines {
    fn push(&self, line: String) {
        let (lock, cv) = &*self.inner;
        lock.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
        cv.notify_all();
    }

    pub(crate) fn all(&self) -> Vec<String> {
        self.inner
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits until `count` lines satisfy `pred`; panics with the output after `limit`.
    pub(crate) fn wait_count(
        &self,
        what: &str,
        count: usize,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) {
        let (lock, cv) = &*self.inner;
        let deadline = Instant::now() + limit;
        let mut lines = lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (mut scanned, mut matched) = (0, 0);
        loop {
            matched += lines[scanned..].iter().filter(|l| pred(l)).count();
            scanned = lines.len();
            if matched >= count {
                return;
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; output so far:\n{}",
                lines.join("\n")
            );
            lines = cv.wait_timeout(lines, deadline - now).expect("lines").0;
        }
    }

    pub(crate) fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_count(what, 1, limit, &pred);
        self.all().into_iter().find(|l| pred(l)).expect("found")
    }
}

/// `eco up -F` running in the background, its output captured.
pub(crate) struct Foreground {
    pub child: Child,
    pub lines: Lines,
    pub stdout: Lines,
}

impl Foreground {
    pub(crate) fn start(home: &Path, dir: &Path, file: &Path) -> Foreground {
        let mut child = Command::new(eco_bin())
            .args(["up", "-F", "-f"])
            .arg(file)
            .current_dir(dir)
            .env("ECO_HOME", home)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("eco up -F starts");
        let lines = Lines::default();
        let stdout = Lines::default();
        let out = child.stdout.take().expect("stdout");
        let err = child.stderr.take().expect("stderr");
        let (all, only_out) = (lines.clone(), stdout.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                only_out.push(line.clone());
                all.push(line);
            }
        });
        let all = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                all.push(line);
            }
        });
        Foreground {
            child,
            lines,
            stdout,
        }
    }

    pub(crate) fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid")
    }

    pub(crate) fn signal(&self, sig: i32) {
        // SAFETY-free: kill(2) through the nix crate.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid()),
            nix::sys::signal::Signal::try_from(sig).expect("signal"),
        );
    }

    /// Waits for exit (bounded); returns the exit code and how long it took.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> (Option<i32>, Duration) {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return (status.code(), start.elapsed());
            }
            assert!(
                start.elapsed() < limit,
                "eco did not exit within {limit:?}:\n{}",
                self.lines.all().join("\n")
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for an `eco: APP started` line (stderr may lag behind stdout),
    /// then returns the latest pid.
    pub(crate) fn wait_pid(&self, instance: &str) -> i32 {
        let prefix = format!("eco: {instance} started (pid ");
        self.lines
            .wait_for("a started line", Duration::from_secs(10), |l| {
                l.starts_with(&prefix)
            });
        self.latest_pid(instance).expect("pid")
    }

    /// The pid from the latest `eco: APP started (pid N)` line.
    pub(crate) fn latest_pid(&self, instance: &str) -> Option<i32> {
        let prefix = format!("eco: {instance} started (pid ");
        self.lines.all().iter().rev().find_map(|l| {
            l.strip_prefix(&prefix)
                .and_then(|r| r.trim_end_matches(')').parse().ok())
        })
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.signal(libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && self.child.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Direct children of `pid`.
pub(crate) fn children_of(pid: i32) -> Vec<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|c| {
            c.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect()
}

/// Pids of live (non-zombie) processes whose environment contains `KEY=VALUE`.
pub(crate) fn processes_with_env(var: &str) -> Vec<i32> {
    let needle = var.as_bytes();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if env.split(|b| *b == 0).any(|v| v == needle) && state_of(pid).is_some_and(|s| s != 'Z') {
            found.push(pid);
        }
    }
    found
}

/// The one-letter state of a process (`R`, `S`, `Z`, ...).
pub(crate) fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Zombie children of `parent`.
pub(crate) fn zombie_children(parent: i32) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.first() == Some(&"Z")
            && fields.get(1).and_then(|p| p.parse::<i32>().ok()) == Some(parent)
        {
            found.push(pid);
        }
    }
    found
}

/// Polls `check` until it holds or `limit` passes.
pub(crate) fn eventually(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILLs the app `pid`, then checks that the descriptor it stored
/// (`FDSTORE=1`; the fixture writes "stored X" to `record`) comes back at
/// its next start ("back X keep").
pub(crate) fn assert_stored_fd_comes_back(pid: i64, record: &Path, limit: Duration) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    eventually("handed back", limit, || {
        std::fs::read_to_string(record).is_ok_and(|t| t.contains("back "))
    });
    let text = std::fs::read_to_string(record).expect("fds");
    let stored = text
        .lines()
        .find_map(|l| l.strip_prefix("stored "))
        .expect("stored");
    let back = text
        .lines()
        .find_map(|l| l.strip_prefix("back "))
        .expect("back");
    assert_eq!(back, format!("{stored} keep"), "{text}");
}

/// A unique marker for one test's processes.
pub(crate) fn mark(test: &str) -> String {
    format!("ECO_TEST_MARK={test}-{}", std::process::id())
}

/// Writes `text` to `dir/name` and returns the path.
pub(crate) fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// A temp ECO_HOME (also the project folder) whose daemon is killed on drop.
pub(crate) struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub(crate) fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `eco ARGS` against this home, in its folder.
    pub(crate) fn eco(&self, args: &[&str]) -> Output {
        eco(self.path(), self.path(), args)
    }

    /// Runs `eco ARGS`, asserting exit code 0; returns stdout.
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let out = self.eco(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "eco {args:?} failed:\nstdout: {}\nstderr: {}\ndaemon.log:\n{}",
            stdout(&out),
            stderr(&out),
            std::fs::read_to_string(self.path().join("daemon.log")).unwrap_or_default()
        );
        stdout(&out)
    }

    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        write(self.path(), name, text)
    }

    /// `eco ls --json`.
    pub(crate) fn rows(&self) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&["ls", "--json"])).expect("ls --json is JSON")
    }

    /// The row of `app` instance `index`.
    pub(crate) fn row(&self, app: &str, index: u64) -> serde_json::Value {
        self.rows()
            .into_iter()
            .find(|r| r["app"] == app && r["instance"] == index)
            .unwrap_or_else(|| panic!("no row for {app}:{index}"))
    }

    /// Polls `ls --json` until `check` holds for the rows.
    pub(crate) fn wait_rows(
        &self,
        what: &str,
        check: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let rows = self.rows();
            if check(&rows) {
                return rows;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; rows: {rows:#?}\ndaemon.log:\n{}",
                std::fs::read_to_string(self.path().join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9` of the daemon; returns once it is gone.
    pub(crate) fn kill_daemon_hard(&self) {
        let daemon = self.daemon_pid().expect("daemon pid");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(daemon),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill -9");
        eventually("daemon gone", Duration::from_secs(5), || {
            state_of(daemon).is_none_or(|s| s == 'Z')
        });
    }

    pub(crate) fn daemon_pid(&self) -> Option<i32> {
        std::fs::read_to_string(self.path().join("daemon.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = Command::new(eco_bin())
            .arg("kill")
            .env("ECO_HOME", self.path())
            .output();
    }
}

/// Every row is online.
pub(crate) fn all_online(rows: &[serde_json::Value]) -> bool {
    !rows.is_empty() && rows.iter().all(|r| r["status"] == "online")
}

/// A TCP port free on 127.0.0.1 right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}
