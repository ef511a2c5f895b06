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
//! between runs of spawns: requests are answered and progress is sent while
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

/// How long spawns run back to back, at least, before the runtime gets
/// the thread.
pub const SLICE: Duration = Duration::from_millis(50);

/// The longest run of spawns: a request waits at most about this long,
/// well inside the client's silence timer (ECO_TIMEOUT, at least 1 s).
pub const MAX_SLICE: Duration = Duration::from_millis(500);

/// Spawning gets three quarters of a contended thread: a start is the
/// work the user waits for, a listing meanwhile waits a little.
pub const SPAWN_SHARE: u32 = 3;

/// One engine's turns: one spawn at a time, waiters served in order
/// (tokio's semaphore is fair). Per engine, so that engines on other
/// runtimes (the engine's tests) never wait for each other.
#[derive(Clone)]
pub struct Turns {
    permits: Arc<Semaphore>,
    slices: Arc<Mutex<Slices>>,
}

/// Shares of the thread between spawning and everything else: a slice of
/// spawning lasts [`SPAWN_SHARE`] times as long as the rest took the last
/// time it had the thread (an `ls` of 10,000 instances polled in a loop
/// takes 0.2-0.3 s; with fixed 50 ms slices it had five sixths of the
/// thread, and 10,000 instances came up in 38 s instead of 19 s).
struct Slices {
    /// When the runtime last got the thread back.
    since: Instant,
    /// How long the spawns run before it gets it again.
    length: Duration,
}

impl Default for Turns {
    fn default() -> Turns {
        Turns {
            permits: Arc::new(Semaphore::new(1)),
            slices: Arc::new(Mutex::new(Slices {
                since: Instant::now(),
                length: SLICE,
            })),
        }
    }
}

/// Held while a heavy step runs; [`Turn::pass`] hands it on.
pub struct Turn {
    _permit: Option<OwnedSemaphorePermit>,
    slices: Arc<Mutex<Slices>>,
}

impl Turns {
    /// Waits for this task's turn.
    pub async fn take(&self) -> Turn {
        // The semaphore is never closed, so acquiring cannot fail.
        Turn {
            _permit: Arc::clone(&self.permits).acquire_owned().await.ok(),
            slices: Arc::clone(&self.slices),
        }
    }
}

impl Turn {
    /// Ends the turn. Once the slice has passed, it yields first (the
    /// runtime polls its timers and sockets before this task runs again)
    /// and sizes the next slice by how long that took; then it lets the
    /// next one go.
    pub async fn pass(self) {
        let due = {
            let slices = self.slices.lock().unwrap_or_else(PoisonError::into_inner);
            slices.since.elapsed() >= slices.length
        };
        if due {
            let away = Instant::now();
            tokio::task::yield_now().await;
            let away = away.elapsed();
            let mut slices = self.slices.lock().unwrap_or_else(PoisonError::into_inner);
            slices.since = Instant::now();
            slices.length = (away * SPAWN_SHARE).clamp(SLICE, MAX_SLICE);
        }
        drop(self);
    }
}
