//! The descriptors apps keep in eco with `FDSTORE=1`, bounded twice: per
//! instance by `fd_store`, and for the whole daemon by a budget, so apps
//! cannot fill eco's descriptor table (then no client could connect and no
//! app could start). The budget: all stores together hold at most a
//! quarter of `RLIMIT_NOFILE`, and a store never leaves fewer than
//! [`KEEP_FREE`] descriptors free. What does not fit is closed at once.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Descriptors held by every instance's store in this process.
static STORED: AtomicUsize = AtomicUsize::new(0);

/// Descriptors a store always leaves free, for clients, spawns and logs
/// (eco's own reserve; see `reconcile`'s descriptor check).
pub const KEEP_FREE: usize = 128;

/// One instance's stored descriptors, with their `FDNAME`s, handed back at
/// its next start.
#[derive(Debug, Default)]
pub struct FdStore {
    fds: Vec<(String, OwnedFd)>,
    /// The instance, as the descriptor holder's keys name it (its store is
    /// kept there too, so it outlives a crash of the daemon).
    owner: Option<String>,
}

impl FdStore {
    /// The store of the instance `owner` (see `runtime::feed::owner`).
    pub fn owned_by(owner: String) -> FdStore {
        FdStore {
            fds: Vec::new(),
            owner: Some(owner),
        }
    }

    pub fn fds(&self) -> &[(String, OwnedFd)] {
        &self.fds
    }

    /// `FDSTOREREMOVE=1`: closes the descriptors named `name`.
    pub fn remove(&mut self, name: &str) {
        let before = self.fds.len();
        self.fds.retain(|(n, _)| n != name);
        STORED.fetch_sub(before - self.fds.len(), Ordering::Relaxed);
        self.relist();
    }

    /// Tells the descriptor holder's feed what is stored now.
    fn relist(&self) {
        if let Some(owner) = &self.owner {
            crate::runtime::feed::list_store(owner, &self.fds);
        }
    }

    /// Keeps what fits of `fds` under `name`; returns how many were closed
    /// and why.
    pub fn store(
        &mut self,
        name: &str,
        fds: Vec<OwnedFd>,
        cap: usize,
    ) -> Result<(), (usize, &'static str)> {
        let offered = fds.len();
        let own_room = cap.saturating_sub(self.fds.len());
        let room = if own_room == 0 {
            0
        } else {
            budget().map_or(0, |b| room(b, STORED.load(Ordering::Relaxed), offered))
        };
        let kept = offered.min(own_room).min(room);
        STORED.fetch_add(kept, Ordering::Relaxed);
        self.fds
            .extend(fds.into_iter().take(kept).map(|fd| (name.to_owned(), fd)));
        if kept > 0 {
            self.relist();
        }
        if kept == offered {
            return Ok(());
        }
        let why = if kept == own_room {
            "the app's `fd_store` is full"
        } else {
            "eco's descriptor budget for stored descriptors is spent"
        };
        Err((offered - kept, why))
    }
}

impl FdStore {
    /// Every stored descriptor, with its name, out of the store (`eco update`).
    pub fn into_fds(mut self) -> Vec<(String, OwnedFd)> {
        let fds = std::mem::take(&mut self.fds);
        STORED.fetch_sub(fds.len(), Ordering::Relaxed);
        self.relist();
        fds
    }
}

impl Drop for FdStore {
    fn drop(&mut self) {
        STORED.fetch_sub(self.fds.len(), Ordering::Relaxed);
        if !self.fds.is_empty() {
            self.fds.clear();
            self.relist();
        }
    }
}

/// The process's descriptor limit and how many it has open now.
#[derive(Clone, Copy, Debug)]
struct Budget {
    limit: usize,
    open: usize,
}

fn budget() -> Option<Budget> {
    use nix::sys::resource::{Resource, getrlimit};
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    // The listing's own descriptor is counted too: one more kept free.
    let open = std::fs::read_dir("/proc/self/fd").ok()?.count();
    Some(Budget {
        limit: usize::try_from(soft).unwrap_or(usize::MAX),
        open,
    })
}

/// How many of `offered` descriptors (open already, so counted in
/// `budget.open`) the stores may keep, with `stored` kept now: all stores
/// together hold at most a quarter of the limit, and once the rest are
/// closed, [`KEEP_FREE`] descriptors stay free.
fn room(budget: Budget, stored: usize, offered: usize) -> usize {
    let share = (budget.limit / 4).saturating_sub(stored);
    let without = budget.open.saturating_sub(offered);
    let free = budget
        .limit
        .saturating_sub(KEEP_FREE)
        .saturating_sub(without);
    share.min(free).min(offered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_hold_a_quarter_of_the_limit_and_leave_room_free() {
        let b = |limit, open| Budget { limit, open };
        assert_eq!(room(b(1024, 36), 0, 16), 16);
        assert_eq!(room(b(1024, 36), 250, 16), 6);
        assert_eq!(room(b(1024, 36), 256, 16), 0);
        assert_eq!(room(b(1024, 36), 300, 16), 0);
        assert_eq!(room(b(1_048_576, 20), 0, 1_000_000), 262_144);
        // Other descriptors (pipes, clients) fill the table: what keeps
        // KEEP_FREE free is all that is kept.
        assert_eq!(room(b(1024, 900), 0, 16), 16 - 4);
        assert_eq!(room(b(1024, 1000), 0, 16), 0);
    }
}
