//! Turns for the engine's heavy synchronous steps (a spawn: cgroup, clone,
//! exec), so that thousands of instances starting at once never starve the
//! rest of the daemon.
//!
//! The daemon runs on one thread. Without turns, `up` of 8,000 instances
//! queues 8,000 instance tasks that each spawn on their first poll; a
//! request that arrives meanwhile (or a heartbeat timer that fires) is
//! queued behind all of them, and the client hears nothing for the whole
//! spawn (issue 25: "daemon not responding" after 10 s). With turns, one
//! instance spawns at a time, and the thread polls its timers and sockets
//! between two spawns: requests are answered and progress is sent while
//! the instances start. The spawns themselves were serial already (one
//! thread), so nothing is slower.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// One engine's turns: one spawn at a time, waiters served in order
/// (tokio's semaphore is fair). Per engine, so that engines on other
/// runtimes (the engine's tests) never wait for each other.
#[derive(Clone)]
pub struct Turns(Arc<Semaphore>);

impl Default for Turns {
    fn default() -> Turns {
        Turns(Arc::new(Semaphore::new(1)))
    }
}

/// Held while a heavy step runs; [`Turn::pass`] hands it on.
pub struct Turn {
    _permit: Option<OwnedSemaphorePermit>,
}

impl Turns {
    /// Waits for this task's turn.
    pub async fn take(&self) -> Turn {
        // The semaphore is never closed, so acquiring cannot fail.
        Turn {
            _permit: Arc::clone(&self.0).acquire_owned().await.ok(),
        }
    }
}

impl Turn {
    /// Ends the turn: yields first (the runtime polls its timers and
    /// sockets before this task runs again), then lets the next one go.
    pub async fn pass(self) {
        tokio::task::yield_now().await;
        drop(self);
    }
}
