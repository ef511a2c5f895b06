//! Ending an instance for good. With a cgroup: the stop signal to the main
//! process's group, then to whatever else is left in the cgroup once the
//! main process is gone, then `cgroup.kill` after the timeout; stopped
//! means the cgroup is empty. Without one: the same through the process
//! group and the processes that escaped it (found by the spawn mark among
//! the orphans eco adopted as subreaper).

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, sleep, timeout_at};

use super::cgroup::Cgroup;
use super::spawner::Spawner;
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
    /// Who started the processes: every signal and /proc read goes through it.
    pub spawner: &'a dyn Spawner,
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
        self.spawner.group_of(self.main).unwrap_or(self.main)
    }

    /// Every process of the instance besides the main one's group, as far as
    /// eco can see (exact with a cgroup).
    fn others(&self) -> Vec<i32> {
        match self.cgroup {
            Some(cgroup) => cgroup.procs(),
            None => {
                let mut found = self.spawner.descendants(self.main);
                for stray in self.spawner.strays(self.mark) {
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
            None => {
                self.spawner.group_alive(group) || others.iter().any(|s| self.spawner.alive(*s))
            }
        }
    }

    /// SIGKILL to everything at once.
    fn kill_everything(&self, group: i32, others: &[i32]) {
        self.spawner.signal_group(group, libc::SIGKILL);
        match self.cgroup {
            Some(cgroup) => cgroup.kill(),
            None => kill_pids(self.spawner, others),
        }
    }
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
    scope.spawner.signal_group(group, signal.0);
    for other in &others {
        scope.spawner.signal(*other, signal.0);
        scope.spawner.signal_group(*other, signal.0);
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
            scope.spawner.signal(other, signal.0);
            others.push(other);
        }
    }
    // Each check reads the cgroup (or /proc): one per step, as 10,000
    // stops at once each paid five.
    let mut left = scope.anything_left(group, &others);
    while left && Instant::now() < deadline {
        sleep(GROUP_POLL).await;
        left = scope.anything_left(group, &others);
    }
    // Only what outlived the grace period: a cgroup that was killed must be
    // replaced before the next start (see `Cgroup::killed`).
    if left {
        scope.kill_everything(group, &others);
    }
    let leader = match leader {
        Some(exit) => exit,
        None => (&mut *exit).await.unwrap_or(Exit::Signal(libc::SIGKILL)),
    };
    if left {
        wait_gone(&scope, group, &others).await;
    }
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
        .filter(|p| scope.spawner.alive(*p))
        .collect();
    left.sort_by_key(|p| scope.spawner.start_time(*p).unwrap_or(u64::MAX));
    left
}

/// Waits (bounded) until SIGKILLed processes are gone and reaped.
async fn wait_gone(scope: &Scope<'_>, group: i32, others: &[i32]) {
    let limit = Instant::now() + KILL_LIMIT;
    while scope.anything_left(group, others) && Instant::now() < limit {
        sleep(GROUP_POLL).await;
    }
}

/// SIGKILL to processes and their groups.
pub fn kill_pids(spawner: &dyn Spawner, pids: &[i32]) {
    for pid in pids {
        spawner.signal_group(*pid, libc::SIGKILL);
        spawner.signal(*pid, libc::SIGKILL);
    }
}
