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
    let mut strays = descendants(pid);
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
        && (group_alive(pid) || strays.iter().any(|s| process_alive(*s)))
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
    while (group_alive(pgid) || strays.iter().any(|s| process_alive(*s))) && Instant::now() < limit
    {
        sleep_until(Instant::now() + GROUP_POLL).await;
    }
}

/// A process counts as gone once it is reaped, or is a zombie awaiting the reaper.
fn process_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Orphans adopted by eco (its direct children that it did not spawn itself)
/// that carry `mark` in their environment.
fn strays(reaper: &Reaper, mark: &str) -> Vec<i32> {
    let needle = format!("{SPAWN_MARK}={mark}");
    adopted_children()
        .into_iter()
        .filter(|pid| !reaper.is_tracked(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
        })
        .collect()
}

/// Every process below `pid` (children, their children, ...).
fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for child in children_of(&format!("/proc/{parent}/task")) {
            if !found.contains(&child) && child != pid {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// Direct children of this process.
fn adopted_children() -> Vec<i32> {
    children_of("/proc/self/task")
}

/// Children of every thread under a `/proc/PID/task` folder.
fn children_of(task_dir: &str) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(task_dir) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}
