//! What the descriptor holder must be told about (see `holder` and
//! `daemon::keeper`): the output pipes being read right now, by key, and a
//! signal that something an adoption would need has changed. The runtime
//! only records facts here; the daemon's keeper decides what to send.
//! Off (and free) unless a daemon [`enable`]d it: `up -F` and the tests of
//! the engine hold nothing.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

use tokio::sync::Notify;

use super::{InstanceId, Stream};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Pipe key → its descriptor number and inode (the inode tells a number
/// reused by another file from the pipe).
static PIPES: Mutex<BTreeMap<String, (RawFd, u64)>> = Mutex::new(BTreeMap::new());

static CHANGED: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Turns recording on (the daemon, once its keeper runs).
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

/// Woken whenever something to hold changed.
pub fn changed() -> &'static Notify {
    &CHANGED
}

/// Something an adoption needs changed (an instance's state).
pub(crate) fn touch() {
    if ENABLED.load(Ordering::Relaxed) {
        CHANGED.notify_one();
    }
}

/// The key of one output pipe of one run (`mark` tells runs apart).
pub fn pipe_key(id: &InstanceId, mark: &str, stream: Stream) -> String {
    let stream = if stream == Stream::Out { "out" } else { "err" };
    format!(
        "pipe {}/{}/{} {mark} {stream}",
        id.project, id.app, id.index
    )
}

/// Records a pipe being read until the returned guard drops (hold the
/// guard for as long as the pipe is open).
pub(crate) fn offer_pipe(key: String, pipe: &impl AsFd) -> Option<Offered> {
    if !ENABLED.load(Ordering::Relaxed) {
        return None;
    }
    let inode = nix::sys::stat::fstat(pipe.as_fd()).ok()?.st_ino;
    PIPES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key.clone(), (pipe.as_fd().as_raw_fd(), inode));
    CHANGED.notify_one();
    Some(Offered { key })
}

/// Keeps a pipe listed; unlists it on drop.
pub(crate) struct Offered {
    key: String,
}

impl Drop for Offered {
    fn drop(&mut self) {
        PIPES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        CHANGED.notify_one();
    }
}

/// Duplicates (close-on-exec) of the listed pipes whose key `wanted`
/// accepts, and the keys of every pipe listed. Call it from the runtime's
/// thread: the pipes are closed there, so none closes in between.
pub fn pipes(wanted: impl Fn(&str) -> bool) -> (Vec<(String, std::os::fd::OwnedFd)>, Vec<String>) {
    let pipes = PIPES.lock().unwrap_or_else(PoisonError::into_inner);
    let mut dups = Vec::new();
    for (key, (fd, inode)) in pipes.iter().filter(|(key, _)| wanted(key)) {
        if let Some(dup) = duplicate(*fd, *inode) {
            dups.push((key.clone(), dup));
        }
    }
    (dups, pipes.keys().cloned().collect())
}

/// A close-on-exec duplicate of `fd` if it still is the file `inode`.
pub(crate) fn duplicate(fd: RawFd, inode: u64) -> Option<std::os::fd::OwnedFd> {
    let borrowed = borrow(fd);
    let dup = nix::fcntl::fcntl(borrowed, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).ok()?;
    let dup = crate::holder::owned(dup);
    let same = nix::sys::stat::fstat(&dup).is_ok_and(|s| s.st_ino == inode);
    same.then_some(dup)
}

/// The inode of an open descriptor number.
pub fn inode(fd: RawFd) -> Option<u64> {
    nix::sys::stat::fstat(borrow(fd)).ok().map(|s| s.st_ino)
}

/// A listed descriptor number, borrowed for one `fcntl`.
#[allow(unsafe_code)]
fn borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: only F_DUPFD_CLOEXEC goes through it, which fails cleanly
    // (EBADF) on a closed number; a number reused by another file is told
    // apart by its inode right after.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}
