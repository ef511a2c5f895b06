//! Files an app or a user controls cannot freeze, flood or fool the daemon:
//! a `pid_file` the app turns into a FIFO, a link to /dev/zero, a huge
//! file, one never written; an `ecosystem.config.js` that is slow, never
//! finishes, or leaves a detached child holding node's stdout. Throughout,
//! `eco ls` answers within 1 s and the daemon stays under 30 MB.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Home, eco_bin, eventually, processes_with_env, stderr, stdout};

/// How long `eco ls` may take while a hostile file is in place.
const RESPONSIVE: Duration = Duration::from_secs(5);

/// The daemon's RSS ceiling through every case.
const MAX_RSS_KB: u64 = 30 * 1024;

/// Runs `eco ARGS` in `dir`, killed after `limit` (a frozen daemon must
/// fail the test, not hang it); `None` when it did not finish in time.
fn eco_within(
    home: &Path,
    dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    limit: Duration,
) -> Option<(Output, Duration)> {
    let started = Instant::now();
    let mut command = Command::new(eco_bin());
    command
        .args(args)
        .current_dir(dir)
        .env("ECO_HOME", home)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("eco runs");
    while child.try_wait().expect("try_wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = started.elapsed();
    Some((child.wait_with_output().expect("output"), took))
}

/// `eco ls --json`, asserted to answer within [`RESPONSIVE`].
fn responsive_rows(home: &Home) -> Vec<serde_json::Value> {
    timed_rows(home).0
}

/// [`responsive_rows`], with how long `eco ls` took.
fn timed_rows(home: &Home) -> (Vec<serde_json::Value>, Duration) {
    let (out, took) = eco_within(
        home.path(),
        home.path(),
        &["ls", "--json"],
        &[],
        Duration::from_secs(5),
    )
    .unwrap_or_else(|| panic!("`eco ls` did not answer within 5 s: the daemon is frozen"));
    assert!(took < RESPONSIVE, "`eco ls` took {took:?}");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    (
        serde_json::from_slice(&out.stdout).expect("ls --json is JSON"),
        took,
    )
}

/// The daemon's resident memory, in KiB.
fn daemon_rss_kb(home: &Home) -> u64 {
    let pid = home.daemon_pid().expect("daemon pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
        .expect("VmRSS")
}

fn row<'a>(rows: &'a [serde_json::Value], app: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r["app"] == app)
        .unwrap_or_else(|| panic!("no row for {app}: {rows:#?}"))
}

/// An app whose launcher runs `make` (which spoils its pid file), leaves a
/// `sleep` behind carrying `tag`, and exits 0.
fn forking_app(name: &str, make: &str, tag: &str, max_restarts: u32) -> String {
    format!(
        "  {name}:\n    cmd: [sh, -c, \"echo start >> {name}.starts; {make}; sleep 300 & exit 0\"]\n    \
         pid_file: ./{name}.pid\n    ready_timeout: 2s\n    max_restarts: {max_restarts}\n    \
         restart_delay: 50ms\n    env:\n      ECO_TEST_MARK: {tag}\n"
    )
}

fn starts(home: &Home, app: &str) -> usize {
    std::fs::read_to_string(home.path().join(format!("{app}.starts")))
        .unwrap_or_default()
        .lines()
        .count()
}

/// A pid file that the app makes a FIFO, a link to /dev/zero or a 1 MB
/// file: the daemon reads none of them (before, the FIFO froze it for good
/// and /dev/zero grew it to the memory limit). Each start fails with the
/// reason in `last_error`, the launcher's leftovers go, and the instance
/// ends `errored`; `eco ls` answers within 1 s all along.
#[test]
fn a_pid_file_made_a_fifo_a_device_or_huge_fails_the_start_and_never_blocks() {
    let home = Home::new();
    let tag = format!("hostile-pid-{}", std::process::id());
    let mut yaml = String::from("apps:\n");
    yaml += &forking_app("fifo", "rm -f fifo.pid; mkfifo fifo.pid", &tag, 1);
    yaml += &forking_app("zero", "ln -sfn /dev/zero zero.pid", &tag, 1);
    yaml += &forking_app("huge", "head -c 1000000 /dev/zero > huge.pid", &tag, 1);
    home.write("ecosystem.yaml", &yaml);
    home.ok(&["up"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut slowest, mut most) = (Duration::ZERO, 0);
    let rows = loop {
        let (rows, took) = timed_rows(&home);
        let rss = daemon_rss_kb(&home);
        assert!(rss < MAX_RSS_KB, "daemon RSS {rss} KiB");
        (slowest, most) = (slowest.max(took), most.max(rss));
        if rows.len() == 3 && rows.iter().all(|r| r["status"] == "errored") {
            eprintln!(
                "hostile pid files: slowest `eco ls` {slowest:?}, most daemon RSS {most} KiB"
            );
            break rows;
        }
        assert!(Instant::now() < deadline, "never errored: {rows:#?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let expected = [
        ("fifo", "not a regular file (it is a named pipe)"),
        (
            "zero",
            "it is a symbolic link, which eco does not follow here",
        ),
        (
            "huge",
            "file too large (1000000 bytes; the limit is 4096 bytes)",
        ),
    ];
    for (app, why) in expected {
        let row = row(&rows, app);
        let error = row["last_error"].as_str().unwrap_or_default();
        let file = home.path().join(format!("{app}.pid"));
        assert!(
            error.starts_with(&format!("pid file {} refused: {why}", file.display())),
            "{app}: {row}"
        );
        assert_eq!(row["restarts"], 1, "{row}");
        assert_eq!(
            starts(&home, app),
            2,
            "{app}: two starts with max_restarts: 1"
        );
    }
    eventually(
        "the launchers' leftovers are gone",
        Duration::from_secs(5),
        || processes_with_env(&format!("ECO_TEST_MARK={tag}")).is_empty(),
    );
    let rss = daemon_rss_kb(&home);
    assert!(rss < MAX_RSS_KB, "daemon RSS {rss} KiB");
}

/// A launcher that exits 0 and never writes its pid file (or writes one
/// naming a process that is not the app's) is a failed start: with
/// `max_restarts: 2` it runs 3 times and ends `errored`, saying why, with
/// nothing of it left running (before: restarted for ever, `starting`, no
/// `last_error`).
#[test]
fn a_pid_file_never_written_ends_errored_after_max_restarts() {
    let home = Home::new();
    let tag = format!("never-written-{}", std::process::id());
    let mut yaml = String::from("apps:\n");
    yaml += &forking_app("never", "true", &tag, 2);
    yaml += &forking_app("foreign", "echo 1 > foreign.pid", &tag, 2);
    home.write("ecosystem.yaml", &yaml);
    home.ok(&["up"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    let rows = loop {
        let rows = responsive_rows(&home);
        if rows.len() == 2 && rows.iter().all(|r| r["status"] == "errored") {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "never errored ({} and {} starts): {rows:#?}",
            starts(&home, "never"),
            starts(&home, "foreign")
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    for (app, why) in [
        ("never", "never written within 2s".to_owned()),
        (
            "foreign",
            "names no live process of the app (it names 1)".to_owned(),
        ),
    ] {
        let row = row(&rows, app);
        let file = home.path().join(format!("{app}.pid"));
        let error = row["last_error"].as_str().unwrap_or_default();
        assert!(
            error.starts_with(&format!("pid file {} {why}", file.display())),
            "{app}: {row}"
        );
        assert_eq!(row["restarts"], 2, "{row}");
        assert_eq!(row["last_restart_reason"], "not-ready", "{row}");
        assert_eq!(
            starts(&home, app),
            3,
            "{app}: 3 starts with max_restarts: 2"
        );
    }
    eventually(
        "the launchers' leftovers are gone",
        Duration::from_secs(5),
        || processes_with_env(&format!("ECO_TEST_MARK={tag}")).is_empty(),
    );
    // Errored stays errored.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(starts(&home, "never"), 3);
}

/// A config that takes 5 s to evaluate when `slow` exists.
const SLOW_JS: &str = "const fs = require('fs');\n\
if (fs.existsSync(__dirname + '/slow')) {\n\
  fs.writeFileSync(__dirname + '/began', '');\n\
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 5000);\n\
}\n";

fn js_apps(names: &[&str]) -> String {
    let apps: Vec<String> = names
        .iter()
        .map(|n| format!("{{ name: '{n}', script: 'sleep', args: '300', interpreter: 'none' }}"))
        .collect();
    format!("module.exports = {{ apps: [{}] }};\n", apps.join(", "))
}

/// A save of an `ecosystem.config.js` that takes 5 s to evaluate: the
/// daemon evaluates it off its loop, so `eco ls` answers within 1 s
/// meanwhile (before: every command stalled for the 5 s), and the save is
/// applied once node is done.
#[test]
fn a_slow_javascript_config_saved_never_stalls_the_daemon() {
    crate::support::tools::require(&["node"]);
    let home = Home::new();
    home.write(
        "ecosystem.config.js",
        &format!("{SLOW_JS}{}", js_apps(&["a"])),
    );
    home.ok(&["up", "-f", "ecosystem.config.js", "--wait"]);
    home.write("slow", "");
    home.write(
        "ecosystem.config.js",
        &format!("{SLOW_JS}{}", js_apps(&["a", "b"])),
    );
    eventually(
        "the daemon evaluates the saved file",
        Duration::from_secs(10),
        || home.path().join("began").exists(),
    );
    // Node is inside its 5 s wait now: every command answers meanwhile
    // (`timed_rows` bounds each; three answers show none queued behind
    // node, even on a loaded host).
    let began = Instant::now();
    let (mut asked, mut slowest) = (0, Duration::ZERO);
    while began.elapsed() < Duration::from_secs(3) {
        let (rows, took) = timed_rows(&home);
        assert_eq!(rows.len(), 1, "not applied before node is done: {rows:#?}");
        asked += 1;
        slowest = slowest.max(took);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(asked >= 3, "only {asked} answers in 3 s");
    eprintln!("slow config: {asked} answers in 3 s, slowest `eco ls` {slowest:?}");
    home.wait_rows("the saved file applied", |rows| rows.len() == 2);
}

/// `eco validate` of a config that spawns a detached child holding node's
/// stdout: it answers at once with the right result (before: it waited for
/// the pipe's end for ever) and leaves nothing running.
#[test]
fn a_config_whose_detached_child_holds_stdout_is_read_promptly_and_swept() {
    crate::support::tools::require(&["node"]);
    let home = Home::new();
    let tag = format!("detached-{}", std::process::id());
    home.write(
        "ecosystem.config.js",
        &format!(
            "require('child_process').spawn('sleep', ['300'], {{ detached: true, stdio: 'inherit' }}).unref();\n{}",
            js_apps(&["a"])
        ),
    );
    let (out, took) = eco_within(
        home.path(),
        home.path(),
        &["validate", "-f", "ecosystem.config.js"],
        &[("ECO_TEST_MARK", &tag)],
        Duration::from_secs(20),
    )
    .expect("eco validate returns");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).starts_with("ok: "), "{}", stdout(&out));
    // The child sleeps 300 s, and node's own limit is 10 s: well under
    // both is not waiting for the pipe's end.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    eprintln!("detached child holding stdout: eco validate took {took:?}");
    eventually(
        "the detached child is gone",
        Duration::from_secs(10),
        || processes_with_env(&format!("ECO_TEST_MARK={tag}")).is_empty(),
    );
}

/// Live processes whose command line is exactly `args`.
fn processes_running(args: &[&str]) -> Vec<i32> {
    let wanted: Vec<u8> = args
        .iter()
        .flat_map(|a| [a.as_bytes(), b"\0"].concat())
        .collect();
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == wanted))
        .filter(|pid| crate::support::state_of(*pid).is_some_and(|s| s != 'Z'))
        .collect()
}

/// A config that never finishes: an error after 10 s that names the
/// timeout and the file, and nothing node started is left: a child in
/// node's group, a detached one, and a detached one that cleared its
/// environment (so no mark finds it: the CLI adopts it as subreaper).
#[test]
fn a_config_that_never_finishes_times_out_and_leaves_nothing() {
    crate::support::tools::require(&["node"]);
    let home = Home::new();
    let tag = format!("endless-{}", std::process::id());
    let seconds = (1_000_000 + std::process::id()).to_string();
    home.write(
        "ecosystem.config.js",
        &format!(
            "const {{ spawn }} = require('child_process');\n\
             spawn('sleep', ['300'], {{ detached: true, stdio: 'ignore' }}).unref();\n\
             spawn('sleep', ['300'], {{ stdio: 'inherit' }});\n\
             spawn('/bin/sleep', ['{seconds}'], {{ detached: true, stdio: 'ignore', env: {{}} }}).unref();\n\
             while (true) {{}}\n{}",
            js_apps(&["a"])
        ),
    );
    let (out, took) = eco_within(
        home.path(),
        home.path(),
        &["validate", "-f", "ecosystem.config.js"],
        &[("ECO_TEST_MARK", &tag)],
        Duration::from_secs(30),
    )
    .expect("eco validate returns");
    assert_ne!(out.status.code(), Some(0));
    let file = home.path().join("ecosystem.config.js");
    let expected = format!(
        "node did not finish evaluating {} within 10s",
        file.display()
    );
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(20),
        "took {took:?}"
    );
    eventually(
        "everything node started is gone",
        Duration::from_secs(10),
        || {
            processes_with_env(&format!("ECO_TEST_MARK={tag}")).is_empty()
                && processes_running(&["/bin/sleep", &seconds]).is_empty()
        },
    );
}
