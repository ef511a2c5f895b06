//! Issue 13, hangs, resources and nothing lost: a stuck daemon hangs no
//! command, reads never wait behind stops, kills in parallel agree, the
//! descriptor limit is raised, a bad home fails fast, a failed save is
//! reported and retried, instance stops and damaged states survive a
//! restart honestly, logs are reopened, flushed, and decoded lossily.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::tools::tool;
use crate::support::{Home, all_online, eco_bin, eventually, state_of, stderr, stdout};

/// `eco ARGS` against `home` in the background, output piped.
fn spawn_eco(home: &Path, args: &[&str], envs: &[(&str, &str)]) -> Child {
    Command::new(eco_bin())
        .args(args)
        .current_dir(home)
        .env("ECO_HOME", home)
        .env("NO_COLOR", "1")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("eco starts")
}

/// Waits (bounded) for a background `eco`; returns code, stdout, stderr.
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String, String) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut out = String::new();
            let mut err = String::new();
            child
                .stdout
                .take()
                .expect("stdout")
                .read_to_string(&mut out)
                .expect("read");
            child
                .stderr
                .take()
                .expect("stderr")
                .read_to_string(&mut err)
                .expect("read");
            return (status.code(), out, err);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("eco did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("signal");
}

const STUBBORN: &str = "name: p\napps:\n  stubborn:\n    cmd: [sh, -c, \"trap '' TERM; while :; do sleep 0.1; done\"]\n    stop_timeout: 4s\n";

#[test]
fn a_stopped_daemon_hangs_no_command() {
    let home = Home::new();
    home.write("ecosystem.yaml", "apps:\n  a:\n    cmd: [sleep, '1000']\n");
    home.ok(&["up"]);
    let daemon = home.daemon_pid().expect("pid");
    signal(daemon, nix::sys::signal::Signal::SIGSTOP);
    eventually("stopped", Duration::from_secs(5), || {
        state_of(daemon) == Some('T')
    });
    let started = Instant::now();
    let child = spawn_eco(home.path(), &["ls"], &[("ECO_TIMEOUT", "2s")]);
    let (code, _, err) = finish(child, Duration::from_secs(20));
    signal(daemon, nix::sys::signal::Signal::SIGCONT);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "daemon not responding (pid {daemon}, state stopped)"
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(home.rows().len(), 1, "served again once continued");
}

#[test]
fn long_operations_keep_the_connection_alive() {
    let home = Home::new();
    home.write("ecosystem.yaml", STUBBORN);
    home.ok(&["up"]);
    home.wait_rows("online", all_online);
    // `logs -f` with nothing to say outlives the timeout. (2 s: the
    // heartbeat comes every second, and a 1 s timeout would race it on a
    // busy host; the kill below still outlasts 2 s of silence by far.)
    let mut follow = spawn_eco(
        home.path(),
        &["logs", "-f", "-n", "0"],
        &[("ECO_TIMEOUT", "2s")],
    );
    // A kill that waits out a 4 s stop timeout, with a 2 s client timeout.
    let started = Instant::now();
    let kill = spawn_eco(home.path(), &["kill"], &[("ECO_TIMEOUT", "2s")]);
    let (code, out, err) = finish(kill, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.ends_with("daemon stopped\n"), "{out}");
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "the stop was waited out"
    );
    // The follower stayed connected for those seconds, then saw the end.
    let status = follow.wait().expect("wait");
    let mut err = String::new();
    follow
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(!err.contains("not responding"), "{err}");
    assert_eq!(status.code(), Some(0), "{err}");
}

#[test]
fn reads_answer_at_once_during_a_long_kill() {
    let home = Home::new();
    // A stop long enough for a loaded host to ask during it.
    home.write(
        "ecosystem.yaml",
        &STUBBORN.replace("stop_timeout: 4s", "stop_timeout: 10s"),
    );
    home.ok(&["up"]);
    home.wait_rows("online", all_online);
    let kill = spawn_eco(home.path(), &["kill"], &[]);
    let mut seen_stopping = false;
    // An `ls` that waited behind the stop would see the app stopped, or
    // no daemon: seeing it `stopping` is the answer arriving during it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && !seen_stopping {
        let out = home.eco(&["ls", "--json"]);
        if out.status.code() != Some(0) {
            break;
        }
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
        seen_stopping = rows.iter().any(|r| r["status"] == "stopping");
    }
    assert!(seen_stopping, "ls showed the stopping app");
    let out = home.eco(&["restart", "stubborn"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the daemon is stopping"),
        "{}",
        stderr(&out)
    );
    let (code, out, err) = finish(kill, Duration::from_secs(30));
    assert_eq!(code, Some(0), "{out}{err}");
}

#[test]
fn concurrent_kills_all_succeed_alike() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  a:\n    cmd: [sleep, '1000']\n    instances: 2\n  b:\n    cmd: [sh, -c, \"trap 'sleep 0.5; exit 0' TERM; while :; do sleep 0.1; done\"]\n",
    );
    home.ok(&["up"]);
    home.wait_rows("online", all_online);
    let daemon = home.daemon_pid().expect("pid");
    let kills: Vec<Child> = (0..5)
        .map(|_| spawn_eco(home.path(), &["kill"], &[]))
        .collect();
    for kill in kills {
        let (code, out, err) = finish(kill, Duration::from_secs(30));
        assert_eq!(code, Some(0), "{out}{err}");
        assert!(err.is_empty(), "{err}");
        assert!(
            out.ends_with("daemon stopped\n") || out == "no eco daemon runs\n",
            "{out}"
        );
    }
    assert!(state_of(daemon).is_none_or(|s| s == 'Z'));
    let log = std::fs::read_to_string(home.path().join("daemon.log")).expect("log");
    assert!(!log.contains("another daemon"), "{log}");
}

#[test]
fn the_daemon_raises_its_descriptor_limit() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  many:\n    cmd: [sleep, '1000']\n    instances: 100\n",
    );
    let eco = eco_bin();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ulimit -Sn 64 && exec '{}' up", eco.display()))
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .output()
        .expect("sh");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = home.wait_rows("100 online", |rows| rows.len() == 100 && all_online(rows));
    assert_eq!(rows.len(), 100);
    let daemon = home.daemon_pid().expect("pid");
    let limits = std::fs::read_to_string(format!("/proc/{daemon}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("nofile line");
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "soft == hard: {line}");
    // The apps get the soft limit the caller had.
    let app = rows[0]["pid"].as_i64().expect("pid");
    let limits = std::fs::read_to_string(format!("/proc/{app}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("nofile line");
    assert_eq!(line.split_whitespace().nth(3), Some("64"), "{line}");
}

/// `eco ARGS` (`up`, the daemon's first start) with 1,024 descriptors,
/// soft and hard, and no CAP_SYS_RESOURCE to raise them. Hundreds of
/// starts on a loaded host may keep the daemon silent past the client's
/// default 10 s: what is tested here is the descriptors, so it waits longer.
fn up_under_1024_descriptors(home: &Home, args: &str) -> std::process::Output {
    Command::new(tool("setpriv"))
        .args(["--bounding-set=-sys_resource", "sh", "-c"])
        .arg(format!(
            "ulimit -Sn 1024 && ulimit -Hn 1024 && exec '{}' {args}",
            eco_bin().display()
        ))
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .env("ECO_TIMEOUT", "60s")
        .output()
        .expect("setpriv runs")
}

#[test]
fn more_instances_than_descriptors_are_refused_with_how_many_fit() {
    let home = Home::new();
    // 400 instances hold 800 pipe ends, which would fit in 1024 with
    // eco's reserve of 128, and one socket each for the cluster address,
    // which does not (the suite runs as root: sockets per instance).
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  many:\n    cmd: ['{}', __fixture-http]\n    mode: cluster\n    \
             listen: ['127.0.0.1:{}']\n    instances: 400\n",
            eco_bin().display(),
            crate::support::free_port()
        ),
    );
    // The hard limit is what eco may open; without CAP_SYS_RESOURCE it
    // cannot raise it.
    let out = up_under_1024_descriptors(&home, "up");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("400 instances need about 1200 descriptors")
            && err.contains("fits about 298 instances"),
        "{err}"
    );
    assert!(err.contains("LimitNOFILE"), "{err}");
    assert!(home.rows().is_empty(), "nothing started");
}

/// Output thrown away costs no descriptor: an instance whose `out_file`
/// and `err_file` are /dev/null writes there itself, so 600 instances fit
/// where 600 with pipes (1,200 ends) would not.
#[test]
fn output_to_dev_null_holds_no_pipe_and_fits_more_instances() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  quiet:\n    cmd: [sleep, '1000']\n    instances: 600\n    \
         out_file: /dev/null\n    err_file: /dev/null\n  \
         chatty:\n    cmd: [sleep, '1000']\n    err_file: /dev/null\n",
    );
    let out = up_under_1024_descriptors(&home, "up --wait");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = home.rows();
    assert_eq!(rows.len(), 601);
    assert!(crate::support::all_online(&rows));
    let target = |pid: &serde_json::Value, fd: u32| {
        std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
            .expect("readlink")
            .display()
            .to_string()
    };
    let quiet = &home.row("quiet", 0)["pid"];
    assert_eq!(target(quiet, 1), "/dev/null");
    assert_eq!(target(quiet, 2), "/dev/null");
    let chatty = &home.row("chatty", 0)["pid"];
    assert!(target(chatty, 1).starts_with("pipe:"), "stdout is read");
    assert_eq!(target(chatty, 2), "/dev/null");
}

#[test]
fn a_bad_home_fails_fast_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let long = dir.path().join("h".repeat(110));
    let started = Instant::now();
    let out = crate::support::eco(&long, dir.path(), &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("shorter than 108 bytes"), "{err}");
    assert!(err.contains("shorter folder"), "{err}");
    // Without waiting for a daemon (the client waits 10 s for one).
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(!long.exists(), "nothing was created");
    // A daemon that dies at start: its own words, one attempt.
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    std::fs::create_dir(home.join("daemon.lock")).expect("a folder where the lock goes");
    let out = crate::support::eco(&home, dir.path(), &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("exited at start"), "{err}");
    assert!(err.contains("daemon.lock"), "{err}");
    let log = std::fs::read_to_string(home.join("daemon.log")).expect("log");
    assert_eq!(log.matches("daemon.lock").count(), 1, "one attempt: {log}");
}

/// A small tmpfs mounted for one test (root only), unmounted on drop after
/// its daemon is killed.
pub(crate) struct SmallDisk {
    _dir: tempfile::TempDir,
    pub(crate) mount: PathBuf,
}

impl SmallDisk {
    pub(crate) fn mount() -> Option<SmallDisk> {
        if !nix::unistd::getuid().is_root() {
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mount = dir.path().join("home");
        std::fs::create_dir(&mount).expect("mkdir");
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs"])
            .arg(&mount)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(SmallDisk { _dir: dir, mount })
    }

    /// Fills the disk; returns the filler to remove.
    pub(crate) fn fill(&self) -> PathBuf {
        let filler = self.mount.join("filler");
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=64k"])
            .arg(format!("of={}", filler.display()))
            .stderr(Stdio::null())
            .status();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new(eco_bin())
            .arg("kill")
            .env("ECO_HOME", &self.mount)
            .output();
        let _ = Command::new("umount").arg("-l").arg(&self.mount).status();
    }
}

/// The saved user stops of the (one) project in a state file.
fn user_stopped(state: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(state) else {
        return Vec::new();
    };
    let Ok(json) = serde_json::from_str::<serde_json::Value>(&text) else {
        return Vec::new();
    };
    json["projects"][0]["user_stopped"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_failed_save_is_reported_and_retried_until_it_succeeds() {
    let Some(disk) = SmallDisk::mount() else {
        eprintln!("skipped: needs root to mount a small tmpfs");
        return;
    };
    let home = &disk.mount;
    let eco = |args: &[&str]| crate::support::eco(home, home, args);
    std::fs::write(
        home.join("ecosystem.yaml"),
        "name: p\napps:\n  quiet:\n    cmd: [sleep, '1000']\n  other:\n    cmd: [sleep, '1000']\n",
    )
    .expect("write");
    assert_eq!(eco(&["up"]).status.code(), Some(0));
    let filler = disk.fill();
    let out = eco(&["stop", "quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("stopped quiet\n"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains("stopped, but the state could not be saved")
            && stderr(&out).contains("No space left on device")
            && stderr(&out).contains("retrying"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_file(&filler).expect("room again");
    eventually("the retry saved it", Duration::from_secs(5), || {
        user_stopped(&home.join("state.json")) == ["quiet"]
    });
    let out = eco(&["ls"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    // The stop survives a new daemon.
    let daemon: i32 = std::fs::read_to_string(home.join("daemon.pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    signal(daemon, nix::sys::signal::Signal::SIGKILL);
    eventually("gone", Duration::from_secs(5), || {
        state_of(daemon).is_none_or(|s| s == 'Z')
    });
    let out = eco(&["ls", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("json");
    let quiet = rows.iter().find(|r| r["app"] == "quiet").expect("quiet");
    assert_eq!(quiet["status"], "stopped");
}

#[test]
fn instance_stops_survive_a_daemon_restart() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: p\napps:\n  a:\n    cmd: [sleep, '1000']\n    instances: 2\n",
    );
    home.ok(&["up"]);
    home.wait_rows("online", all_online);
    home.ok(&["stop", "a:1"]);
    assert_eq!(user_stopped(&home.path().join("state.json")), ["a:1"]);
    home.kill_daemon_hard();
    let rows = home.wait_rows("back", |rows| {
        rows.len() == 2 && rows.iter().any(|r| r["status"] == "online")
    });
    let status = |i: u64| {
        rows.iter()
            .find(|r| r["instance"] == i)
            .map(|r| r["status"].clone())
    };
    assert_eq!(status(0), Some("online".into()));
    assert_eq!(status(1), Some("stopped".into()));
    // `start a:1` clears it.
    home.ok(&["start", "a:1"]);
    home.wait_rows("both online", |r| r.len() == 2 && all_online(r));
    assert!(user_stopped(&home.path().join("state.json")).is_empty());
}

#[test]
fn a_damaged_state_is_told_to_the_next_commands() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: p\napps:\n  a:\n    cmd: [sleep, '1000']\n",
    );
    home.ok(&["up"]);
    home.kill_daemon_hard();
    std::fs::write(home.path().join("state.json"), "{\"version\": 1, \"proj").expect("damage");
    for _ in 0..2 {
        let out = home.eco(&["ls"]);
        let err = stderr(&out);
        assert!(err.contains("damaged"), "{err}");
        assert!(
            err.contains(&home.path().join("state.json.damaged").display().to_string()),
            "{err}"
        );
    }
    assert!(home.path().join("state.json.damaged").exists());
    // Heard once the projects are applied again.
    home.ok(&["up"]);
    let out = home.eco(&["ls"]);
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn deleted_logs_are_reopened_and_flush_empties_them() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: p\napps:\n  talk:\n    cmd: [sh, -c, 'i=0; while :; do i=$((i+1)); echo line $i; sleep 0.05; done']\n",
    );
    home.ok(&["up"]);
    let log = home.path().join("logs/p/talk.out.log");
    eventually("output", Duration::from_secs(5), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("line 3"))
    });
    // Removed while writing (logrotate's move-and-create without a signal).
    std::fs::rename(&log, home.path().join("moved.log")).expect("move");
    eventually("the file is back", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 2)
    });
    // Removed, then a restart: back at once.
    std::fs::remove_file(&log).expect("rm");
    home.ok(&["restart", "talk"]);
    eventually("back after restart", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("line 1\n"))
    });
    let out = home.ok(&["flush", "talk"]);
    assert!(out.starts_with("emptied 2 log files:"), "{out}");
    let after = std::fs::read_to_string(&log).expect("read");
    assert!(!after.contains("line 1\n"), "emptied: {after}");
    eventually("new lines after the flush", Duration::from_secs(10), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 2)
    });
}

#[test]
fn invalid_utf8_hides_no_log_line() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: p\napps:\n  bytes:\n    cmd: [sh, -c, \"printf 'first\\\\nbad\\\\377line\\\\nlater\\\\n'; exec sleep 1000\"]\n",
    );
    home.ok(&["up"]);
    eventually("every line shown", Duration::from_secs(5), || {
        let out = home.ok(&["logs", "bytes", "-n", "3", "--out"]);
        out.contains("first") && out.contains("bad\u{fffd}line") && out.contains("later")
    });
}

#[test]
fn monit_without_a_terminal_says_so() {
    let home = Home::new();
    let out = home.eco(&["monit"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("eco monit needs a terminal"),
        "{}",
        stderr(&out)
    );
}

/// The folders above an applied file's folder are watched only for entries
/// created, removed or renamed: a file written or opened in them (a busy
/// /tmp) must not wake the daemon. Read from the daemon's inotify watches
/// in /proc/PID/fdinfo.
#[test]
fn folders_above_an_applied_file_are_watched_for_renames_only() {
    use std::os::unix::fs::MetadataExt;
    let home = Home::new();
    let project = home.path().join("site/current");
    std::fs::create_dir_all(&project).expect("mkdir");
    let file = project.join("ecosystem.yaml");
    std::fs::write(
        &file,
        "name: above\napps:\n  a:\n    cmd: [sleep, '1000']\n",
    )
    .expect("write");
    home.ok(&["up", "-f", file.to_str().expect("utf-8")]);
    home.wait_rows("online", all_online);
    let daemon = home.daemon_pid().expect("daemon pid");
    let masks_of = |folder: &std::path::Path| -> Vec<u32> {
        let ino = format!("ino:{:x} ", std::fs::metadata(folder).expect("stat").ino());
        let mut masks = Vec::new();
        for entry in std::fs::read_dir(format!("/proc/{daemon}/fdinfo")).expect("fdinfo") {
            let info = std::fs::read_to_string(entry.expect("entry").path()).unwrap_or_default();
            for line in info
                .lines()
                .filter(|l| l.starts_with("inotify ") && l.contains(&ino))
            {
                let mask = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("mask:"))
                    .expect("mask");
                masks.push(u32::from_str_radix(mask, 16).expect("hex"));
            }
        }
        masks
    };
    let (modify, attrib, close_write, open) = (0x2, 0x4, 0x8, 0x20);
    let (moved_to, create) = (0x80, 0x100);
    let above = masks_of(&home.path().join("site"));
    assert!(!above.is_empty(), "the folder above is watched");
    for mask in &above {
        assert_eq!(
            mask & (modify | attrib | close_write | open),
            0,
            "mask {mask:x}"
        );
        assert_eq!(
            mask & (moved_to | create),
            moved_to | create,
            "mask {mask:x}"
        );
    }
    // The file's own folder still sees saves.
    let own = masks_of(&project);
    assert!(own.iter().any(|m| m & close_write != 0), "{own:x?}");
}

#[test]
fn deploys_that_replace_the_folder_are_applied() {
    let home = Home::new();
    let site = home.path().join("site");
    let release = |n: u32| {
        let dir = site.join(format!("releases/{n}"));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("ecosystem.yaml"),
            format!("name: deploy\napps:\n  a:\n    cmd: [sleep, '1000']\n    env: {{ RELEASE: '{n}' }}\n"),
        )
        .expect("write");
    };
    let release_of = |home: &Home| {
        let pid = home.row("a", 0)["pid"].as_i64()?;
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        env.split(|b| *b == 0)
            .find_map(|v| v.strip_prefix(b"RELEASE="))
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    release(1);
    std::os::unix::fs::symlink("releases/1", site.join("current")).expect("link");
    let file = site.join("current/ecosystem.yaml");
    home.ok(&["up", "-f", file.to_str().expect("utf-8")]);
    home.wait_rows("online", all_online);
    assert_eq!(release_of(&home).as_deref(), Some("1"));
    // Capistrano's swap: ln -sfn releases/2 current.tmp && mv -T current.tmp current
    release(2);
    std::os::unix::fs::symlink("releases/2", site.join("current.tmp")).expect("link");
    std::fs::rename(site.join("current.tmp"), site.join("current")).expect("mv -T");
    eventually("release 2 applied", Duration::from_secs(10), || {
        release_of(&home).as_deref() == Some("2")
    });
    // And again, through the re-resolved watches.
    release(3);
    std::os::unix::fs::symlink("releases/3", site.join("current.tmp")).expect("link");
    std::fs::rename(site.join("current.tmp"), site.join("current")).expect("mv -T");
    eventually("release 3 applied", Duration::from_secs(10), || {
        release_of(&home).as_deref() == Some("3")
    });
    // The folder deleted and recreated.
    std::fs::remove_file(site.join("current")).expect("rm");
    std::fs::create_dir(site.join("current")).expect("mkdir");
    std::fs::write(
        &file,
        "name: deploy\napps:\n  a:\n    cmd: [sleep, '1000']\n    env: { RELEASE: '4' }\n",
    )
    .expect("write");
    eventually("release 4 applied", Duration::from_secs(10), || {
        release_of(&home).as_deref() == Some("4")
    });
}
