//! Low descriptor numbers eco keeps for handing descriptors to a child, so
//! that a spawn costs the same with 20,000 descriptors open as with 20.
//!
//! A clone copies eco's whole descriptor table into the child, and the
//! child's exec then closes every copy (they are close-on-exec): two passes
//! over the table per spawn. With one pipe per instance the table grows with
//! the instances, so starting N instances cost O(N²): 10,000 merged-output
//! instances took 43 s, a third of it the children closing eco's table.
//!
//! Instead the child shares eco's table (`CLONE_FILES`, nothing copied) and
//! its first act is `close_range(first, ~0, CLOSE_RANGE_UNSHARE)`, which
//! gives it a table of its own holding only the descriptors below `first`
//! (Linux 5.9+). Everything the child needs must therefore sit below
//! `first` at the clone: eco reserves [`COUNT`] low numbers once, early,
//! holding /dev/null; before a clone it puts the child's pipes and handed
//! down descriptors on them (`dup3`, close-on-exec, so nothing else ever
//! inherits them), and after the clone puts /dev/null back, so eco holds no
//! extra reference to a pipe's write end (whose reader would never see EOF).
//!
//! There are [`SETS`] sets per process, each taken under a lock for the
//! whole clone, so that as many spawns can wait for their children's exec
//! at once (`spawner::system`); a spawn finding every set taken waits.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Descriptors a child can get through slots: stdout, stderr and six
/// handed down ones (LISTEN_FDS); a request needing more takes the copying
/// path.
pub const COUNT: usize = 8;

/// The reserved numbers and what they hold between spawns.
pub struct Slots {
    numbers: [RawFd; COUNT],
    /// /dev/null, put back on each slot after a spawn.
    placeholder: OwnedFd,
    /// The lowest number above every slot: the child keeps what is below.
    below: RawFd,
}

/// How many spawns can hold slots at once.
pub const SETS: usize = 3;

/// None until [`reserve`] ran (or when it failed: spawns copy the table).
static SLOTS: [Mutex<Option<Slots>>; SETS] = [const { Mutex::new(None) }; SETS];

/// Reserves the slots, once. Call it early (the engine's start): the slots
/// are the lowest free numbers at that time, and a child copies every
/// descriptor below them.
pub fn reserve() {
    for set in &SLOTS {
        let mut slots = set.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.is_none() {
            match Slots::open() {
                Ok(opened) => *slots = Some(opened),
                Err(err) => {
                    tracing::warn!(%err, "no descriptor slots: each spawn copies eco's descriptor table");
                    return;
                }
            }
        }
    }
}

impl Slots {
    fn open() -> io::Result<Slots> {
        let placeholder = nix::fcntl::open(
            "/dev/null",
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        let mut numbers = [-1; COUNT];
        let mut opened = Vec::with_capacity(COUNT);
        for number in &mut numbers {
            // The lowest free number from 3 up; owned until `forget` below.
            let fd = nix::fcntl::fcntl(&placeholder, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3))?;
            opened.push(owned(fd));
            *number = fd;
        }
        // The slots stay open for the life of the process.
        opened.into_iter().for_each(std::mem::forget);
        let below = numbers.iter().copied().max().unwrap_or(2) + 1;
        Ok(Slots {
            numbers,
            placeholder,
            below,
        })
    }
}

#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: `fd` was just returned by F_DUPFD_CLOEXEC and nothing else owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// The slots, held for one spawn: [`Lease::place`] puts descriptors on
/// them; dropping the lease puts /dev/null back.
pub struct Lease {
    guard: MutexGuard<'static, Option<Slots>>,
    used: usize,
}

impl Lease {
    /// A set of slots, if reserved: a free one, or else the first once
    /// another thread's spawn ends with it.
    pub fn take() -> Option<Lease> {
        let free = SLOTS.iter().find_map(|set| match set.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        });
        let guard = free.unwrap_or_else(|| SLOTS[0].lock().unwrap_or_else(PoisonError::into_inner));
        guard.is_some().then_some(Lease { guard, used: 0 })
    }

    /// The number the child keeps everything below.
    pub fn below(&self) -> RawFd {
        self.guard.as_ref().map_or(3, |s| s.below)
    }

    /// Puts a copy of each of `fds` on a slot and returns the slots'
    /// numbers, in order; None when there are more than the slots.
    pub fn place(&mut self, fds: &[RawFd]) -> io::Result<Option<Vec<RawFd>>> {
        let Some(slots) = self.guard.as_ref() else {
            return Ok(None);
        };
        if fds.len() > COUNT {
            return Ok(None);
        }
        let mut numbers = Vec::with_capacity(fds.len());
        for (fd, slot) in fds.iter().zip(slots.numbers) {
            dup3(*fd, slot)?;
            self.used += 1;
            numbers.push(slot);
        }
        Ok(Some(numbers))
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(slots) = self.guard.as_ref() {
            let null = slots.placeholder.as_raw_fd();
            for slot in &slots.numbers[..self.used] {
                if let Err(err) = dup3(null, *slot) {
                    // The slot keeps a reference to a child's pipe: that
                    // pipe's reader sees EOF only when eco's next spawn
                    // reuses the slot. Logged; nothing else is affected.
                    tracing::warn!(%err, slot, "cannot reset a descriptor slot");
                }
            }
        }
    }
}

/// `dup3(fd, slot, O_CLOEXEC)`: replaces what the slot held, atomically.
#[allow(unsafe_code)]
fn dup3(fd: RawFd, slot: RawFd) -> io::Result<()> {
    // SAFETY: the slot is a number this module owns (see `Slots::open`);
    // dup3 replaces its open file atomically and leaves `fd` untouched.
    let rc = unsafe { libc::dup3(fd, slot, libc::O_CLOEXEC) };
    if rc == slot {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_hold_copies_during_a_lease_and_dev_null_after() {
        reserve();
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let placed = {
            let mut lease = Lease::take().expect("reserved");
            let numbers = lease
                .place(&[write.as_raw_fd()])
                .expect("place")
                .expect("fits");
            assert!(numbers[0] < lease.below());
            let target = std::fs::read_link(format!("/proc/self/fd/{}", numbers[0])).expect("link");
            let pipe =
                std::fs::read_link(format!("/proc/self/fd/{}", write.as_raw_fd())).expect("link");
            assert_eq!(target, pipe);
            numbers[0]
        };
        let target = std::fs::read_link(format!("/proc/self/fd/{placed}")).expect("link");
        assert_eq!(target, std::path::Path::new("/dev/null"));
        // Only the test's own write end is left: the reader sees EOF.
        drop(write);
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(&read, &mut buf).expect("read"), 0);
    }

    #[test]
    fn more_descriptors_than_slots_are_refused() {
        reserve();
        let mut lease = Lease::take().expect("reserved");
        let too_many = vec![0; COUNT + 1];
        assert!(lease.place(&too_many).expect("no error").is_none());
    }
}
