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
//!
//! A turn yields to the runtime only once [`SLICE`] of spawning has passed
//! since the last yield, not after every spawn: an `eco ls` polled in a
//! loop then waits at most a slice, instead of being served (and costing a
//! listing and a CLI process) between every two spawns, which made 100
//! apps come online 1.3x slower (bench converge; 10 ms slices: 1.3x,
//! 50 ms: level with the build before turns).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long spawns run back to back before the runtime gets the thread.
pub const SLICE: Duration = Duration::from_millis(50);

/// One engine's turns: one spawn at a time, waiters served in order
/// (tokio's semaphore is fair). Per engine, so that engines on other
/// runtimes (the engine's tests) never wait for each other.
#[derive(Clone)]
pub struct Turns {
    permits: Arc<Semaphore>,
    /// When the runtime last got the thread back from a turn.
    yielded: Arc<Mutex<Instant>>,
}

impl Default for Turns {
    fn default() -> Turns {
        Turns {
            permits: Arc::new(Semaphore::new(1)),
            yielded: Arc::new(Mutex::new(Instant::now())),
        }
    }
}

/// Held while a heavy step runs; [`Turn::pass`] hands it on.
pub struct Turn {
    _permit: Option<OwnedSemaphorePermit>,
    yielded: Arc<Mutex<Instant>>,
}

impl Turns {
    /// Waits for this task's turn.
    pub async fn take(&self) -> Turn {
        // The semaphore is never closed, so acquiring cannot fail.
        Turn {
            _permit: Arc::clone(&self.permits).acquire_owned().await.ok(),
            yielded: Arc::clone(&self.yielded),
        }
    }
}

impl Turn {
    /// Ends the turn. Once a slice has passed, it yields first (the
    /// runtime polls its timers and sockets before this task runs again);
    /// then it lets the next one go.
    pub async fn pass(self) {
        let due = {
            let mut yielded = self.yielded.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let due = now.duration_since(*yielded) >= SLICE;
            if due {
                *yielded = now;
            }
            due
        };
        if due {
            tokio::task::yield_now().await;
        }
        drop(self);
    }
}
