//! Production: `eco startup`'s unit passes `systemd-analyze verify` and
//! carries what the daemon needs; startup/unstartup on a machine where
//! systemd is not PID 1; `save` and `resurrect`; and `eco up -F` as a real
//! PID 1 (`unshare --pid`): orphans reaped, SIGTERM a graceful stop with
//! exit 0, `--exit-on-error` exit 1 after stopping the others.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::tools::tool;
use crate::support::{
    Home, all_online, children_of, eco_bin, eventually, state_of, stderr, stdout,
};

/// `eco ARGS` with this environment (and nothing of the caller's ECO_HOME).
fn eco_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(eco_bin());
    cmd.args(args).env_remove("ECO_HOME").env("NO_COLOR", "1");
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.output().expect("eco runs")
}

/// `systemd-analyze verify` of one unit file, units loaded from its folder
/// first (then the system's, for network-online.target).
fn verify(unit: &Path, user: bool) -> (bool, String) {
    let dir = unit.parent().expect("unit folder");
    let runtime = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(tool("systemd-analyze"));
    cmd.arg("verify").arg("--man=no");
    if user {
        cmd.arg("--user");
    }
    let out = cmd
        .arg(unit)
        .current_dir(dir)
        .env("SYSTEMD_UNIT_PATH", format!("{}:", dir.display()))
        .env("XDG_RUNTIME_DIR", runtime.path())
        .env("SYSTEMD_LOG_LEVEL", "notice")
        .output()
        .expect("systemd-analyze runs");
    (
        out.status.success(),
        format!("{}{}", stdout(&out), stderr(&out)),
    )
}

#[test]
fn startup_print_passes_systemd_analyze_verify() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let eco_home = tmp.path().join("odd home %h");
    // The caller's PATH, with a folder a unit must quote and escape.
    let path = format!(
        "{}:{}",
        tmp.path().join("my bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for user in [false, true] {
        let mut args = vec!["startup", "--print"];
        if user {
            args.push("--user");
        }
        let out = eco_env(
            &args,
            &[
                ("ECO_HOME", &eco_home.display().to_string()),
                ("PATH", &path),
            ],
        );
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let unit = stdout(&out);
        let file = tmp.path().join(if user {
            "eco.service"
        } else {
            "eco-test.service"
        });
        fs::write(&file, &unit).expect("write unit");
        let (ok, text) = verify(&file, user);
        assert!(ok, "systemd-analyze verify failed:\n{text}\nunit:\n{unit}");
        assert!(!text.contains("eco"), "warnings about the unit:\n{text}");
        let lines: Vec<&str> = unit.lines().collect();
        for line in [
            "Type=notify",
            "Delegate=yes",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "KillMode=mixed",
            "Restart=on-failure",
        ] {
            assert!(lines.contains(&line), "{line:?} missing:\n{unit}");
        }
        let exec = format!(
            "ExecStart={} daemon",
            eco_bin().canonicalize().expect("eco").display()
        );
        assert!(lines.contains(&exec.as_str()), "{exec:?} missing:\n{unit}");
        let home_line =
            format!("Environment=\"ECO_HOME={}\"", eco_home.display()).replace('%', "%%");
        assert!(
            lines.contains(&home_line.as_str()),
            "{home_line:?} missing:\n{unit}"
        );
        let path_line = format!("Environment=\"PATH={path}\"");
        assert!(
            lines.contains(&path_line.as_str()),
            "{path_line:?} missing:\n{unit}"
        );
        for prefix in ["TimeoutStopSec=", "WatchdogSec=", "LimitNOFILE="] {
            assert!(
                lines.iter().any(|l| l.starts_with(prefix)),
                "{prefix} missing:\n{unit}"
            );
        }
        let wanted = if user {
            "WantedBy=default.target"
        } else {
            "WantedBy=multi-user.target"
        };
        assert!(lines.contains(&wanted), "{wanted} missing:\n{unit}");
    }
}

#[test]
fn startup_stop_timeout_covers_the_applied_projects() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  slow:\n    cmd: sleep 30\n    stop_timeout: 90s\n",
    );
    home.ok(&["up"]);
    let out = eco_env(
        &["startup", "--print"],
        &[("ECO_HOME", &home.path().display().to_string())],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let unit = stdout(&out);
    let stop = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|s| s.strip_suffix('s'))
        .and_then(|s| s.parse::<u64>().ok())
        .expect("TimeoutStopSec in seconds");
    assert!(
        stop > 90,
        "TimeoutStopSec={stop}s is not above stop_timeout 90s"
    );
}

#[test]
fn startup_without_systemd_writes_the_unit_and_says_what_to_run() {
    if Path::new("/run/systemd/system").exists() {
        // Never enable units on a machine that really runs systemd.
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = tmp.path().join("config");
    let env = [
        ("HOME", tmp.path().to_str().expect("utf-8")),
        ("XDG_CONFIG_HOME", config.to_str().expect("utf-8")),
    ];
    let out = eco_env(&["startup", "--user"], &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let unit = config.join("systemd/user/eco.service");
    assert!(unit.is_file(), "no unit written: {text}");
    assert!(
        fs::read_to_string(&unit)
            .expect("unit")
            .contains("Type=notify")
    );
    assert!(text.contains("systemd is not running here"), "{text}");
    assert!(
        text.contains(
            "systemctl --user daemon-reload && systemctl --user enable --now eco.service"
        ),
        "{text}"
    );
    assert!(text.contains("loginctl enable-linger"), "{text}");

    let out = eco_env(&["unstartup", "--user"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!unit.exists(), "unstartup left the unit");
    assert!(stdout(&out).starts_with("removed "), "{}", stdout(&out));
    let out = eco_env(&["unstartup", "--user"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("nothing to remove"),
        "{}",
        stdout(&out)
    );

    let out = eco_env(&["startup", "--user-name", "no-such-user-eco"], &env);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn save_is_a_no_op_and_resurrect_restores() {
    let home = Home::new();
    let out = home.eco(&["save"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("nothing to save"), "{}", stdout(&out));
    assert!(home.daemon_pid().is_none(), "save started a daemon");

    home.write("ecosystem.yaml", "apps:\n  api:\n    cmd: sleep 30\n");
    home.ok(&["up", "--wait"]);
    home.kill_daemon_hard();
    let out = home.eco(&["resurrect"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("api"), "{}", stdout(&out));
    home.wait_rows("api back online", all_online);

    // systemd stops the daemon at shutdown with SIGTERM: its apps stop, the
    // state stays, and the next boot's daemon restores it.
    let daemon = home.daemon_pid().expect("daemon pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    eventually("daemon stopped", Duration::from_secs(20), || {
        state_of(daemon).is_none_or(|s| s == 'Z')
    });
    let out = home.eco(&["resurrect"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    home.wait_rows("api restored after SIGTERM", all_online);
}

/// `eco up -F` as PID 1 of a new pid namespace, its output collected.
struct Pid1 {
    child: Child,
    out: PathBuf,
}

impl Pid1 {
    fn start(dir: &Path, args: &[&str]) -> Pid1 {
        let out = dir.join("eco.out");
        let log = fs::File::create(&out).expect("log");
        let child = Command::new(tool("unshare"))
            .args(["--pid", "--fork", "--mount-proc"])
            .arg(eco_bin())
            .args(["up", "-F"])
            .args(args)
            .current_dir(dir)
            .env("ECO_HOME", dir.join("home"))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("unshare runs");
        Pid1 { child, out }
    }

    /// eco's pid on the host (unshare's child).
    fn eco_pid(&self) -> i32 {
        let unshare = i32::try_from(self.child.id()).expect("pid");
        let mut pid = None;
        eventually("eco under unshare", Duration::from_secs(5), || {
            pid = children_of(unshare).first().copied();
            pid.is_some()
        });
        pid.expect("eco pid")
    }

    fn output(&self) -> String {
        fs::read_to_string(&self.out).unwrap_or_default()
    }

    fn wait(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Host pids of every process in `pid`'s pid namespace.
fn namespace_members(pid: i32) -> Vec<i32> {
    let Ok(ns) = fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return Vec::new();
    };
    fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|p| fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|n| n == ns))
        .collect()
}

fn zombies_in_namespace(pid: i32) -> Vec<i32> {
    namespace_members(pid)
        .into_iter()
        .filter(|p| state_of(*p) == Some('Z'))
        .collect()
}

#[test]
fn pid1_reaps_orphans_and_stops_gracefully_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // `orphans` double-forks a short-lived grandchild every 100 ms: each
    // one's parent is gone before it exits, so PID 1 (eco) must reap it.
    fs::write(
        dir.join("ecosystem.yaml"),
        r#"apps:
  orphans:
    cmd: ["sh", "-c", "while true; do (sh -c 'sleep 0.05; echo x >> orphans.done' &); sleep 0.1; done"]
  trap:
    cmd: ["sh", "-c", "trap 'echo term > trap.term; exit 0' TERM; echo up > trap.up; while true; do sleep 0.1; done"]
"#,
    )
    .expect("write");
    let mut eco = Pid1::start(dir, &[]);
    let pid = eco.eco_pid();
    assert_eq!(
        fs::read_to_string(format!("/proc/{pid}/status"))
            .expect("status")
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .and_then(|l| l.split_whitespace().last())
            .map(str::to_owned),
        Some("1".to_owned()),
        "eco is not PID 1 in its namespace"
    );
    eventually("orphans came and went", Duration::from_secs(10), || {
        fs::read_to_string(dir.join("orphans.done")).is_ok_and(|t| t.lines().count() >= 10)
    });
    assert!(dir.join("trap.up").exists(), "{}", eco.output());
    // Orphans keep dying; none stays a zombie longer than a moment.
    for _ in 0..20 {
        let zombies = zombies_in_namespace(pid);
        if !zombies.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
            let still: Vec<i32> = zombies_in_namespace(pid)
                .into_iter()
                .filter(|z| zombies.contains(z))
                .collect();
            assert!(
                still.is_empty(),
                "zombies not reaped: {still:?}\n{}",
                eco.output()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let members = namespace_members(pid);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let code = eco.wait(Duration::from_secs(20));
    assert_eq!(code, Some(0), "exit after SIGTERM:\n{}", eco.output());
    // The app got its stop signal from eco, not a SIGKILL from the
    // namespace's end.
    assert_eq!(
        fs::read_to_string(dir.join("trap.term")).unwrap_or_default(),
        "term\n",
        "the app was not stopped gracefully:\n{}",
        eco.output()
    );
    let left: Vec<i32> = members
        .into_iter()
        .filter(|p| state_of(*p).is_some())
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn pid1_exit_on_error_exits_1_after_stopping_the_others() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    fs::write(
        dir.join("ecosystem.yaml"),
        r#"apps:
  bad:
    cmd: ["sh", "-c", "sleep 0.5; exit 3"]
    restart: never
  trap:
    cmd: ["sh", "-c", "trap 'echo term > trap.term; exit 0' TERM; while true; do sleep 0.1; done"]
"#,
    )
    .expect("write");
    let mut eco = Pid1::start(dir, &["--exit-on-error"]);
    let code = eco.wait(Duration::from_secs(20));
    assert_eq!(code, Some(1), "{}", eco.output());
    assert_eq!(
        fs::read_to_string(dir.join("trap.term")).unwrap_or_default(),
        "term\n",
        "the other app was not stopped gracefully:\n{}",
        eco.output()
    );
    assert!(eco.output().contains("--exit-on-error"), "{}", eco.output());

    // Without the flag an errored app does not end `up -F`.
    fs::remove_file(dir.join("trap.term")).expect("rm");
    let mut eco = Pid1::start(dir, &[]);
    let pid = eco.eco_pid();
    eventually("bad errored", Duration::from_secs(10), || {
        eco.output().contains("bad.0 errored")
    });
    assert_eq!(
        eco.wait(Duration::from_millis(500)),
        None,
        "{}",
        eco.output()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    assert_eq!(
        eco.wait(Duration::from_secs(20)),
        Some(0),
        "{}",
        eco.output()
    );
}

#[test]
fn exit_on_error_needs_foreground() {
    let out = eco_env(&["up", "--exit-on-error"], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
