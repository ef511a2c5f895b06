//! After a daemon died (even by SIGKILL), its apps may still run, re-parented
//! to init. The next daemon finds them by the spawn mark in their environment
//! (`ECO_SPAWN_ID=<this ECO_HOME's token>.…`), which a reused pid cannot
//! carry, and stops them before restoring the projects: never duplicated.
//! The apps a descriptor holder kept (see `daemon::keeper`) are adopted
//! instead, and spared here.

use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::procfs;
use crate::runtime::spawn::SPAWN_MARK;

/// How long leftovers get to stop after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Stops every process marked with `token` but `spare` (the apps this
/// daemon adopts after a crash, and their process groups); returns how
/// many there were. Blocking (at most `GRACE`): it runs before the daemon
/// serves anything, or from `eco kill` when no daemon runs.
pub fn stop(token: &str, spare: &[i32]) -> usize {
    let found: Vec<i32> = marked(token)
        .into_iter()
        .filter(|pid| {
            let group = nix::unistd::getpgid(Some(Pid::from_raw(*pid))).map(Pid::as_raw);
            !spare.contains(pid) && !group.is_ok_and(|g| spare.contains(&g))
        })
        .collect();
    if found.is_empty() {
        return 0;
    }
    tracing::warn!(
        count = found.len(),
        "stopping processes left by a previous daemon"
    );
    for pid in &found {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGTERM);
        let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + GRACE;
    while std::time::Instant::now() < deadline && found.iter().any(|p| procfs::alive(*p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in &found {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    found.len()
}

/// Every other process whose spawn mark starts with `prefix.`.
fn marked(prefix: &str) -> Vec<i32> {
    let needle = format!("{SPAWN_MARK}={prefix}.");
    procfs::other_pids()
        .filter(|pid| procfs::env_has(*pid, |var| var.starts_with(needle.as_bytes())))
        .collect()
}

/// SIGKILL at once to every process marked with `prefix` (what a killed
/// `up -F` left, when no cgroup holds it).
pub fn kill_marked(prefix: &str) -> usize {
    let found = marked(prefix);
    for pid in &found {
        let _ = killpg(Pid::from_raw(*pid), Signal::SIGKILL);
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    found.len()
}

/// Other `eco daemon` processes serving `home` (its ECO_HOME, or the
/// default home when they have none): a daemon whose home was removed is
/// still stopping its apps while a command wants a new one. A daemon's
/// child between its fork and its exec shows the daemon's command line and
/// environment too: it is left out.
pub fn other_daemons(home: &std::path::Path) -> Vec<i32> {
    let all = daemons_of(home);
    all.iter()
        .copied()
        .filter(|pid| !procfs::parent(*pid).is_some_and(|parent| all.contains(&parent)))
        .collect()
}

/// Every process that looks like an `eco daemon` of `home`.
fn daemons_of(home: &std::path::Path) -> Vec<i32> {
    procfs::other_pids()
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|b| *b == 0);
            let is_eco = args
                .next()
                .is_some_and(|exe| exe.ends_with(b"eco") || exe.ends_with(b"/eco"));
            is_eco && args.next() == Some(b"daemon".as_slice()) && procfs::alive(*pid)
        })
        .filter(|pid| {
            let theirs = procfs::env_value(*pid, "ECO_HOME").map_or_else(
                || {
                    procfs::env_value(*pid, "HOME")
                        .map(|h| std::path::PathBuf::from(h).join(".eco"))
                },
                |h| Some(std::path::PathBuf::from(h)),
            );
            theirs.as_deref() == Some(home)
        })
        .collect()
}

/// Waits (bounded) until the other daemons of `home` are gone; true when
/// they are.
pub fn wait_for_others(home: &std::path::Path, limit: Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if other_daemons(home).is_empty() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
