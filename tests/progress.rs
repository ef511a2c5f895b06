//! Progress on long work (issue 25): the daemon streams counts while
//! `up --wait` and `kill` run, and a daemon busy for longer than the
//! client's silence timer is not called "not responding".

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::support::{Home, stderr, stdout};

/// One request on the daemon's socket, as the CLI sends it; returns every
/// frame the daemon sent until it closed the connection or sent `last`.
fn frames(home: &Home, request: &serde_json::Value, last: &str) -> Vec<serde_json::Value> {
    let stream = UnixStream::connect(home.path().join("eco.sock")).expect("daemon socket");
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let envelope = serde_json::json!({ "version": 5, "request": request });
    writeln!(writer, "{envelope}").expect("send");
    let mut frames = Vec::new();
    for line in BufReader::new(stream).lines() {
        let frame: serde_json::Value =
            serde_json::from_str(&line.expect("read a frame")).expect("a JSON frame");
        let end = frame["type"] == last;
        frames.push(frame);
        if end {
            break;
        }
    }
    frames
}

/// The progress frames' (done, total), checked: at least one, each count
/// no lower than the one before, one total throughout, and the last one
/// complete.
fn counts(frames: &[serde_json::Value], step: &str) -> Vec<(u64, u64)> {
    let counts: Vec<(u64, u64)> = frames
        .iter()
        .filter(|f| f["type"] == "progress")
        .map(|f| {
            assert_eq!(f["step"], step, "{f}");
            (
                f["done"].as_u64().expect("done"),
                f["total"].as_u64().expect("total"),
            )
        })
        .collect();
    let (last_done, total) = *counts.last().expect("progress frames");
    assert_eq!(last_done, total, "the last frame is complete: {counts:?}");
    for pair in counts.windows(2) {
        assert!(pair[0].0 <= pair[1].0, "counts rise: {counts:?}");
        assert_eq!(pair[0].1, pair[1].1, "one total: {counts:?}");
    }
    counts
}

/// 300 instances that take a moment to be ready (at staggered times) and
/// to stop: `up --wait` and `kill` both stream their counts.
#[test]
fn up_wait_and_kill_stream_rising_counts() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: many\napps:\n  w:\n    cmd: [sh, -c, 'trap \"sleep $((ECO_INSTANCE % 3)); exit 0\" TERM; sleep $((ECO_INSTANCE % 3)); echo ready; sleep 1000 & wait']\n    instances: 300\n    ready: { log: ready }\n    ready_timeout: 60s\n    stop_timeout: 30s\n",
    );
    home.ok(&["up"]);
    let waited = frames(
        &home,
        &serde_json::json!({ "type": "wait", "project": "many", "timeout_ms": 120_000 }),
        "all_online",
    );
    assert_eq!(
        waited.last().map(|f| f["type"].clone()),
        Some("all_online".into()),
        "{waited:?}"
    );
    let online = counts(&waited, "online");
    assert_eq!(online.last(), Some(&(300, 300)));
    assert!(online.len() >= 2, "frames arrive as it goes: {online:?}");
    let killed = frames(&home, &serde_json::json!({ "type": "kill" }), "");
    assert_eq!(
        killed.first().map(|f| f["type"].clone()),
        Some("stopping".into())
    );
    let stopped = counts(&killed, "stopped");
    assert_eq!(stopped.last(), Some(&(300, 300)));
    assert!(stopped.len() >= 2, "frames arrive as it goes: {stopped:?}");
}

/// `up --wait` that takes several times the silence timer (ECO_TIMEOUT at
/// 900 ms, below the old 1 s heartbeat) succeeds, and stderr stays free of
/// "not responding".
#[test]
fn busy_daemon_outlasts_the_silence_timer() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: slow\napps:\n  w:\n    cmd: [sh, -c, 'sleep 3; echo ready; exec sleep 1000']\n    instances: 200\n    ready: { log: ready }\n    ready_timeout: 60s\n",
    );
    let started = Instant::now();
    let out = std::process::Command::new(crate::support::eco_bin())
        .args(["up", "--wait", "--timeout", "120s"])
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .env("ECO_TIMEOUT", "900ms")
        .env("NO_COLOR", "1")
        .output()
        .expect("eco runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {}\nstderr: {}",
        stdout(&out),
        stderr(&out)
    );
    assert!(started.elapsed() > Duration::from_secs(3));
    assert!(stdout(&out).contains("every instance is online"));
    assert!(!stderr(&out).contains("not responding"), "{}", stderr(&out));
    // Not a terminal: plain lines every few seconds on stderr, the last
    // one complete (the wait lasts 3 s at least, so one is due).
    assert!(
        stderr(&out).lines().any(|l| l == "200/200 online"),
        "{}",
        stderr(&out)
    );
}
