//! After a daemon died (even by SIGKILL), its apps may still run, re-parented
//! to init. The next daemon finds them by the spawn mark in their environment
//! (`ECO_SPAWN_ID=<this ECO_HOME's token>.…`), which a reused pid cannot
//! carry, and stops them before restoring the projects: never duplicated.

use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use crate::procfs;
use crate::runtime::spawn::SPAWN_MARK;

/// How long leftovers get to stop after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

/// Stops every process marked with `token`; returns how many there were.
/// Blocking (at most `GRACE`): it runs before the daemon serves anything,
/// or from `eco kill` when no daemon runs.
pub fn stop(token: &str) -> usize {
    let needle = format!("{SPAWN_MARK}={token}.");
    let own = std::process::id();
    let found: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| u32::try_from(*pid).is_ok_and(|p| p != own))
        .filter(|pid| procfs::env_has(*pid, |var| var.starts_with(needle.as_bytes())))
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
