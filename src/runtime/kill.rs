//! Ending an instance for good: the stop signal to its whole process group,
//! SIGKILL after the timeout, and the same for any process that escaped the
//! group (found through the spawn mark among the orphans eco adopted).

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal as NixSignal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, sleep_until, timeout_at};

use super::reaper::Reaper;
use super::spawn::SPAWN_MARK;
use crate::procfs;
use crate::spec::Signal;
use crate::state::Exit;

/// How often a stop checks whether the group is gone, once the leader exited.
const GROUP_POLL: Duration = Duration::from_millis(5);

fn signal_group(pgid: i32, sig: i32) {
    if let Ok(sig) = NixSignal::try_from(sig) {
        let _ = killpg(Pid::from_raw(pgid), sig);
    }
}

fn signal_pid(pid: i32, sig: i32) {
    if let Ok(sig) = NixSignal::try_from(sig) {
        let _ = kill(Pid::from_raw(pid), sig);
    }
}

fn group_alive(pgid: i32) -> bool {
    !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// Stops a running instance whose leader is `pid` (= its pgid): `signal` to
/// the group and escaped processes, SIGKILL to all after `grace`. Returns
/// the leader's exit once the group and its strays are gone.
pub async fn stop(
    reaper: &Reaper,
    pid: i32,
    mark: &str,
    exit: &mut oneshot::Receiver<Exit>,
    signal: Signal,
    grace: Duration,
) -> Exit {
    let deadline = Instant::now() + grace;
    // Escapees still below the leader now, and those already adopted by eco.
    let mut strays = procfs::descendants(pid);
    strays.retain(|p| !reaper.is_tracked(*p));
    strays.extend(self::strays(reaper, mark));
    signal_group(pid, signal.0);
    for stray in &strays {
        signal_pid(*stray, signal.0);
        signal_group(*stray, signal.0);
    }
    let leader = match timeout_at(deadline, &mut *exit).await {
        Ok(Ok(exit)) => Some(exit),
        Ok(Err(_)) => Some(Exit::Signal(libc::SIGKILL)),
        Err(_) => None,
    };
    // Intermediates that died with the leader handed their children to eco.
    for stray in self::strays(reaper, mark) {
        if !strays.contains(&stray) {
            signal_pid(stray, signal.0);
            strays.push(stray);
        }
    }
    // Wait for the rest of the group (and the strays) until the deadline.
    while Instant::now() < deadline
        && (group_alive(pid) || strays.iter().any(|s| procfs::alive(*s)))
    {
        sleep(GROUP_POLL).await;
    }
    signal_group(pid, libc::SIGKILL);
    for stray in &strays {
        signal_group(*stray, libc::SIGKILL);
        signal_pid(*stray, libc::SIGKILL);
    }
    let leader = match leader {
        Some(exit) => exit,
        None => (&mut *exit).await.unwrap_or(Exit::Signal(libc::SIGKILL)),
    };
    wait_gone(pid, &strays).await;
    leader
}

/// After the leader exited on its own: whatever it left in its group or
/// escaped from it is killed, so a restart never finds a stale process.
pub async fn clean_up_after(reaper: &Reaper, pid: i32, mark: &str) {
    signal_group(pid, libc::SIGKILL);
    let strays = strays(reaper, mark);
    for stray in &strays {
        signal_group(*stray, libc::SIGKILL);
        signal_pid(*stray, libc::SIGKILL);
    }
    if group_alive(pid) || !strays.is_empty() {
        wait_gone(pid, &strays).await;
    }
}

/// SIGKILL to the group at once (a second Ctrl-C).
pub fn kill_now(reaper: &Reaper, pid: i32, mark: &str) {
    signal_group(pid, libc::SIGKILL);
    for stray in strays(reaper, mark) {
        signal_group(stray, libc::SIGKILL);
        signal_pid(stray, libc::SIGKILL);
    }
}

/// Waits (bounded) until SIGKILLed processes are gone and reaped.
async fn wait_gone(pgid: i32, strays: &[i32]) {
    let limit = Instant::now() + Duration::from_secs(2);
    while (group_alive(pgid) || strays.iter().any(|s| procfs::alive(*s))) && Instant::now() < limit
    {
        sleep_until(Instant::now() + GROUP_POLL).await;
    }
}

/// Orphans adopted by eco (its direct children that it did not spawn itself)
/// that carry `mark` in their environment.
fn strays(reaper: &Reaper, mark: &str) -> Vec<i32> {
    let needle = format!("{SPAWN_MARK}={mark}");
    procfs::own_children()
        .into_iter()
        .filter(|pid| !reaper.is_tracked(*pid))
        .filter(|pid| procfs::env_has(*pid, |var| var == needle.as_bytes()))
        .collect()
}
