//! The one place that waits for children. eco is a child subreaper, so
//! orphans of its apps are re-parented to it; a single `waitpid(-1)` loop on
//! SIGCHLD reaps every child (no zombie ever remains) and hands each exit to
//! whoever spawned that pid. Nothing else in the process may wait on children.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex, PoisonError};

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::state::Exit;

/// Spawns children and delivers their exits.
pub struct Reaper {
    /// pid → who wants its exit. Held across `spawn` and the reaping loop,
    /// so a child that exits at once is never reaped before it is registered.
    waiters: Mutex<HashMap<i32, oneshot::Sender<Exit>>>,
    /// Exits of adopted orphans nobody asked for yet (bounded), so that
    /// `adopt` after the fact still gets the exit.
    unclaimed: Mutex<std::collections::VecDeque<(i32, Exit)>>,
    /// Spawns under way on any thread: while there are some, no unclaimed
    /// exit is dropped (it may be a child whose pid is not registered yet).
    in_flight: std::sync::atomic::AtomicUsize,
}

/// Unclaimed exits kept for `adopt`.
const UNCLAIMED: usize = 256;

impl Reaper {
    /// Becomes a child subreaper and starts reaping, in a task of `tasks`
    /// that ends with `stop` (once every child is gone). Needs a tokio runtime.
    pub fn start(tasks: &TaskTracker, stop: CancellationToken) -> io::Result<Arc<Reaper>> {
        // Orphaned grandchildren come to us instead of init, so a stop can
        // find and end them and nothing is left unreaped.
        nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)?;
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Reaper {
            waiters: Mutex::new(HashMap::new()),
            unclaimed: Mutex::default(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        });
        let task_reaper = Arc::clone(&reaper);
        tasks.spawn(async move {
            task_reaper.reap();
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    received = sigchld.recv() => {
                        if received.is_none() {
                            return;
                        }
                        task_reaper.reap();
                    }
                }
            }
        });
        Ok(reaper)
    }

    /// A reaper that never reaps: whoever uses it waits for its own
    /// children by pid (a test that shares its process with others, where
    /// a `waitpid(-1)` would take their children's exits).
    pub fn unstarted() -> Arc<Reaper> {
        Arc::new(Reaper {
            waiters: Mutex::new(HashMap::new()),
            unclaimed: Mutex::default(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    /// Runs `start`, which starts a child and returns its pid, and returns
    /// the pid with a receiver for its exit. Spawns on several threads run
    /// at once: a child that exits before its pid is registered here is
    /// kept among the unclaimed exits until it is.
    pub fn spawn_with(
        &self,
        start: impl FnOnce() -> io::Result<i32>,
    ) -> io::Result<(i32, oneshot::Receiver<Exit>)> {
        use std::sync::atomic::Ordering;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let started = start().map(|pid| (pid, self.adopt(pid)));
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        started
    }

    /// Spawns `command` and returns the child with a receiver for its exit.
    pub fn spawn(&self, command: &mut Command) -> io::Result<(Child, oneshot::Receiver<Exit>)> {
        let mut started = None;
        let (_, exit) = self.spawn_with(|| {
            let child = command.spawn()?;
            let pid = pid_of(&child);
            started = Some(child);
            Ok(pid)
        })?;
        let child = started.ok_or_else(|| io::Error::other("this is a bug in eco: no child"))?;
        Ok((child, exit))
    }

    /// The exit of `pid`, an orphan eco adopted as subreaper (a server that
    /// daemonized itself): delivered when it is reaped, or at once if it
    /// already was.
    pub fn adopt(&self, pid: i32) -> oneshot::Receiver<Exit> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        let mut unclaimed = self
            .unclaimed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = unclaimed.iter().position(|(p, _)| *p == pid) {
            if let Some((_, exit)) = unclaimed.remove(i) {
                let _ = tx.send(exit);
            }
        } else {
            waiters.insert(pid, tx);
        }
        rx
    }

    /// True when `pid` is a child spawned through this reaper and not yet exited.
    pub fn is_tracked(&self, pid: i32) -> bool {
        self.waiters
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&pid)
    }

    /// Reaps every child that has exited.
    fn reap(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let (pid, exit) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, Exit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, Exit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Err(Errno::EINTR) | Ok(_) => continue,
                Err(err) => {
                    tracing::warn!(%err, "waitpid failed");
                    return;
                }
            };
            if let Some(tx) = waiters.remove(&pid.as_raw()) {
                let _ = tx.send(exit);
            } else {
                let mut unclaimed = self
                    .unclaimed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                while unclaimed.len() >= UNCLAIMED
                    && self.in_flight.load(std::sync::atomic::Ordering::SeqCst) == 0
                {
                    unclaimed.pop_front();
                }
                unclaimed.push_back((pid.as_raw(), exit));
            }
        }
    }
}

/// A child's pid as the signed type the syscalls use.
pub fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).unwrap_or(i32::MAX)
}
