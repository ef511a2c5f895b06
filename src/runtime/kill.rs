//! Ending an instance for good. With a cgroup: the stop signal to the main
//! process's group, then to whatever else is left in the cgroup once the
//! main process is gone, then `cgroup.kill` after the timeout; stopped
//! means the cgroup is empty. Without one: the same through the process
//! group and the processes that escaped it (found by the spawn mark among
//! the orphans eco adopted as subreaper).

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal as NixSignal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout_at};

use super::cgroup::Cgroup;
use super::reaper::Reaper;
use super::spawn::SPAWN_MARK;
use crate::procfs;
use crate::spec::Signal;
use crate::state::Exit;

/// How often a stop checks whether everything is gone, once the main
/// process exited.
const GROUP_POLL: Duration = Duration::from_millis(5);

/// How long SIGKILLed processes get to disappear.
const KILL_LIMIT: Duration = Duration::from_secs(2);

/// What a stop must reach.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    pub reaper: &'a Reaper,
    /// The supervised process (the spawned one, or the pid a daemonizing
    /// server handed over).
    pub main: i32,
    /// The spawn mark every process of the instance inherits.
    pub mark: &'a str,
    pub cgroup: Option<&'a Cgroup>,
}

impl Scope<'_> {
    /// The main process's group (its own pid until it moved).
    fn group(&self) -> i32 {
        nix::unistd::getpgid(Some(Pid::from_raw(self.main))).map_or(self.main, Pid::as_raw)
    }

    /// Every process of the instance besides the main one's group, as far as
    /// eco can see (exact with a cgroup).
    fn others(&self) -> Vec<i32> {
        match self.cgroup {
            Some(cgroup) => cgroup.procs(),
            None => {
                let mut found = procfs::descendants(self.main);
                found.retain(|p| !self.reaper.is_tracked(*p));
                for stray in strays(self.reaper, self.mark) {
                    if !found.contains(&stray) {
                        found.push(stray);
                    }
                }
                found
            }
        }
    }

    /// True while any process of the instance runs.
    fn anything_left(&self, group: i32, others: &[i32]) -> bool {
        match self.cgroup {
            Some(cgroup) => !cgroup.is_empty(),
            None => group_alive(group) || others.iter().any(|s| procfs::alive(*s)),
        }
    }

    /// SIGKILL to everything at once.
    fn kill_everything(&self, group: i32, others: &[i32]) {
        signal_group(group, libc::SIGKILL);
        match self.cgroup {
            Some(cgroup) => cgroup.kill(),
            None => {
                for other in others {
                    signal_group(*other, libc::SIGKILL);
                    signal_pid(*other, libc::SIGKILL);
                }
            }
        }
    }
}

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

/// Stops a running instance: `signal` to the main process's group (and,
/// without a cgroup, to the processes that escaped it), the same to what is
/// left once the main process exited, SIGKILL to all after `grace`.
/// Returns the main process's exit once nothing of the instance is left.
pub async fn stop(
    scope: Scope<'_>,
    exit: &mut oneshot::Receiver<Exit>,
    signal: Signal,
    grace: Duration,
) -> Exit {
    let deadline = Instant::now() + grace;
    let group = scope.group();
    let mut others = if scope.cgroup.is_some() {
        Vec::new()
    } else {
        scope.others()
    };
    signal_group(group, signal.0);
    for other in &others {
        signal_pid(*other, signal.0);
        signal_group(*other, signal.0);
    }
    let leader = match timeout_at(deadline, &mut *exit).await {
        Ok(Ok(exit)) => Some(exit),
        Ok(Err(_)) => Some(Exit::Signal(libc::SIGKILL)),
        Err(_) => None,
    };
    // What is left once the main process is gone gets the signal too
    // (intermediates that died with it handed their children to eco).
    for other in scope.others() {
        if !others.contains(&other) {
            signal_pid(other, signal.0);
            others.push(other);
        }
    }
    while Instant::now() < deadline && scope.anything_left(group, &others) {
        sleep(GROUP_POLL).await;
    }
    // Only what outlived the grace period: a cgroup that was killed must be
    // replaced before the next start (see `Cgroup::killed`).
    if scope.anything_left(group, &others) {
        scope.kill_everything(group, &others);
    }
    let leader = match leader {
        Some(exit) => exit,
        None => (&mut *exit).await.unwrap_or(Exit::Signal(libc::SIGKILL)),
    };
    wait_gone(&scope, group, &others).await;
    leader
}

/// After the main process exited on its own (and did not hand over to a
/// daemon): whatever it left is killed, so a restart never finds a stale
/// process.
pub async fn clean_up_after(scope: Scope<'_>) {
    let group = scope.group();
    let others = scope.others();
    if scope.anything_left(group, &others) {
        scope.kill_everything(group, &others);
        wait_gone(&scope, group, &others).await;
    }
}

/// SIGKILL to the instance at once (a second Ctrl-C).
pub fn kill_now(scope: Scope<'_>) {
    let group = scope.group();
    let others = scope.others();
    scope.kill_everything(group, &others);
}

/// The processes the main process left running after it exited, oldest
/// first: a server that daemonized itself (systemd's GuessMainPID).
pub fn left_behind(scope: Scope<'_>) -> Vec<i32> {
    let mut left: Vec<i32> = scope
        .others()
        .into_iter()
        .filter(|p| procfs::alive(*p))
        .collect();
    left.sort_by_key(|p| procfs::start_time(*p).unwrap_or(u64::MAX));
    left
}

/// Waits (bounded) until SIGKILLed processes are gone and reaped.
async fn wait_gone(scope: &Scope<'_>, group: i32, others: &[i32]) {
    let limit = Instant::now() + KILL_LIMIT;
    while scope.anything_left(group, others) && Instant::now() < limit {
        sleep(GROUP_POLL).await;
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

/// Orphans adopted by eco that no instance owns (spawned by none, and with
/// no live instance's mark readable in their environment: a process that
/// rewrote its title over its environment looks like this). `owned` says
/// whether a pid or a mark belongs to a live instance.
pub fn unowned(reaper: &Reaper, owned: impl Fn(i32, Option<&str>) -> bool) -> Vec<i32> {
    procfs::own_children()
        .into_iter()
        .filter(|pid| !reaper.is_tracked(*pid) && procfs::alive(*pid))
        .filter(|pid| {
            let mark = procfs::env_value(*pid, SPAWN_MARK);
            !owned(*pid, mark.as_deref())
        })
        .collect()
}

/// SIGKILL to processes and their groups.
pub fn kill_pids(pids: &[i32]) {
    for pid in pids {
        signal_group(*pid, libc::SIGKILL);
        signal_pid(*pid, libc::SIGKILL);
    }
}
