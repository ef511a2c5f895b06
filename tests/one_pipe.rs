//! One pipe when one will do (issue 25): an instance whose `out_file` and
//! `err_file` are one file gets one pipe for fd 1 and 2, the daemon holds
//! one read end for it, and the descriptor budget counts one.

use std::process::Command;
use std::time::Duration;

use crate::support::tools::tool;
use crate::support::{Home, eco_bin, eventually, stderr};

/// What `/proc/PID/fd/FD` points at (`pipe:[INODE]`, a path).
fn fd_target(pid: i64, fd: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

/// Every descriptor target of a process.
fn fd_targets(pid: i64) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .filter_map(Result::ok)
        .map(|e| fd_target(pid, &e.file_name().to_string_lossy()))
        .collect()
}

fn pid_of(home: &Home, app: &str) -> i64 {
    home.row(app, 0)["pid"].as_i64().expect("a pid")
}

#[test]
fn merged_output_is_one_pipe_read_once_lines_in_order() {
    let home = Home::new();
    let log = home.path().join("both.log");
    home.write(
        "ecosystem.yaml",
        &format!(
            "name: one\napps:\n  merged:\n    cmd: [sh, -c, 'i=0; while [ $i -lt 200 ]; do i=$((i+1)); echo out $i; echo err $i >&2; done; exec sleep 1000']\n    \
             out_file: {log}\n    err_file: {log}\n  split:\n    cmd: [sleep, '1000']\n",
            log = log.display()
        ),
    );
    home.ok(&["up", "--wait"]);
    let merged = pid_of(&home, "merged");
    let (out, err) = (fd_target(merged, "1"), fd_target(merged, "2"));
    assert!(out.starts_with("pipe:"), "{out}");
    assert_eq!(out, err, "fd 1 and 2 are one pipe");
    let split = pid_of(&home, "split");
    assert_ne!(fd_target(split, "1"), fd_target(split, "2"), "two pipes");
    let daemon = i64::from(home.daemon_pid().expect("daemon pid"));
    let held = fd_targets(daemon).iter().filter(|t| **t == out).count();
    assert_eq!(held, 1, "the daemon holds one read end of the merged pipe");
    // Both streams in the one file, in the order they were written.
    eventually("400 lines in the log", Duration::from_secs(20), || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.lines().count() >= 400)
    });
    let text = std::fs::read_to_string(&log).expect("log");
    let expected: Vec<String> = (1..=200)
        .flat_map(|i| [format!("out {i}"), format!("err {i}")])
        .collect();
    assert_eq!(text.lines().collect::<Vec<_>>(), expected);
}

/// `eco up --wait` (the daemon's first start) with 1,024 descriptors, soft
/// and hard, and no CAP_SYS_RESOURCE to raise them.
fn up_under_1024_descriptors(home: &Home) -> std::process::Output {
    Command::new(tool("setpriv"))
        .args(["--bounding-set=-sys_resource", "sh", "-c"])
        .arg(format!(
            "ulimit -Sn 1024 && ulimit -Hn 1024 && exec '{}' up --wait --timeout 120s",
            eco_bin().display()
        ))
        .current_dir(home.path())
        .env("ECO_HOME", home.path())
        .output()
        .expect("setpriv runs")
}

/// 500 merged instances under a hard limit of 1,024: with two pipes each
/// (1,000 ends, plus eco's reserve of 128) they would be refused; with one
/// they fit, run, and the daemon's pipes grow by 500, not 1,000.
#[test]
fn merged_instances_cost_one_descriptor_each() {
    let home = Home::new();
    let log = home.path().join("many.log");
    home.write(
        "ecosystem.yaml",
        &format!(
            "name: many\napps:\n  m:\n    cmd: [sleep, '1000']\n    instances: 500\n    \
             out_file: {log}\n    err_file: {log}\n",
            log = log.display()
        ),
    );
    let out = up_under_1024_descriptors(&home);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows = home.rows();
    assert_eq!(rows.len(), 500);
    assert!(crate::support::all_online(&rows));
    let daemon = i64::from(home.daemon_pid().expect("daemon pid"));
    let pipes = || {
        fd_targets(daemon)
            .iter()
            .filter(|t| t.starts_with("pipe:"))
            .count()
    };
    // While the descriptor holder syncs, the daemon briefly holds the
    // duplicates it is sending (seen: 645 ends); two pipes per instance
    // would never come under 1,000.
    eventually(
        "the daemon holds one pipe end per merged instance (500-559)",
        Duration::from_secs(30),
        || (500..560).contains(&pipes()),
    );
}
