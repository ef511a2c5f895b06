//! What the descriptor holder must be told about (see `holder` and
//! `daemon::keeper`): the descriptors an adoption needs that the runtime
//! has open right now (output pipes being read, notify sockets, stored
//! descriptors), by key, and a signal that something an adoption needs
//! has changed. The runtime only records facts here; the daemon's keeper
//! decides what to send. Off (and free) unless a daemon [`enable`]d it:
//! `up -F` and the tests of the engine hold nothing.

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};

use tokio::sync::Notify;

use super::{InstanceId, Stream};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// What a listed descriptor is, beyond its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Meta {
    Pipe,
    /// A notify socket: where it is bound, and the app's NOTIFY_SOCKET.
    Notify {
        path: PathBuf,
        env_value: String,
    },
    /// A descriptor an instance stored (`FDSTORE=1`) under `name`.
    Stored {
        owner: String,
        name: String,
    },
}

/// One listed descriptor: its number, its inode (which tells a number
/// reused by another file from it), and what it is.
struct Listed {
    fd: RawFd,
    inode: u64,
    meta: Meta,
}

static LISTED: Mutex<BTreeMap<String, Listed>> = Mutex::new(BTreeMap::new());

static CHANGED: LazyLock<Notify> = LazyLock::new(Notify::new);

/// Turns recording on (the daemon, once its keeper runs).
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
}

fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Woken whenever something to hold changed.
pub fn changed() -> &'static Notify {
    &CHANGED
}

/// Something an adoption needs changed (an instance's state).
pub(crate) fn touch() {
    if enabled() {
        CHANGED.notify_one();
    }
}

/// An instance as the keys name it.
pub fn owner(id: &InstanceId) -> String {
    format!("{}/{}/{}", id.project, id.app, id.index)
}

/// The key of one output pipe of one run (`mark` tells runs apart).
pub fn pipe_key(id: &InstanceId, mark: &str, stream: Stream) -> String {
    let stream = if stream == Stream::Out { "out" } else { "err" };
    format!("pipe {} {mark} {stream}", owner(id))
}

/// The key of one run's notify socket.
pub fn notify_key(id: &InstanceId, mark: &str) -> String {
    format!("notify {} {mark}", owner(id))
}

/// Lists a descriptor until the returned guard drops (hold the guard for
/// as long as the descriptor is open).
pub(crate) fn offer(key: String, fd: &impl AsFd, meta: Meta) -> Option<Offered> {
    if !enabled() {
        return None;
    }
    let inode = nix::sys::stat::fstat(fd.as_fd()).ok()?.st_ino;
    let listed = Listed {
        fd: fd.as_fd().as_raw_fd(),
        inode,
        meta,
    };
    LISTED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(key.clone(), listed);
    CHANGED.notify_one();
    Some(Offered { key })
}

/// Keeps a descriptor listed; unlists it on drop.
#[derive(Debug)]
pub(crate) struct Offered {
    key: String,
}

impl Drop for Offered {
    fn drop(&mut self) {
        LISTED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.key);
        CHANGED.notify_one();
    }
}

/// Replaces what `owner` has stored with `fds` (name, descriptor): the
/// keys of an instance's store. Nothing (or an empty list) unlists it.
pub(crate) fn list_store(owner: &str, fds: &[(String, OwnedFd)]) {
    if !enabled() {
        return;
    }
    let prefix = format!("store {owner} ");
    let mut listed = LISTED.lock().unwrap_or_else(PoisonError::into_inner);
    listed.retain(|key, _| !key.starts_with(&prefix));
    for (name, fd) in fds {
        let Ok(stat) = nix::sys::stat::fstat(fd) else {
            continue;
        };
        listed.insert(
            format!("{prefix}{name} {}", stat.st_ino),
            Listed {
                fd: fd.as_raw_fd(),
                inode: stat.st_ino,
                meta: Meta::Stored {
                    owner: owner.to_owned(),
                    name: name.clone(),
                },
            },
        );
    }
    drop(listed);
    CHANGED.notify_one();
}

/// Duplicates of the descriptors asked for, and every key listed with
/// what it is.
pub type Listing = (Vec<(String, OwnedFd)>, Vec<(String, Meta)>);

/// Everything listed now: duplicates (close-on-exec) of (at most `most`
/// of) those whose key `wanted` accepts, and every key with what it is. Call it from the
/// runtime's thread: the descriptors close there, so none closes in
/// between.
pub fn listed(wanted: impl Fn(&str) -> bool, most: usize) -> Listing {
    let listed = LISTED.lock().unwrap_or_else(PoisonError::into_inner);
    let mut dups = Vec::new();
    for (key, entry) in listed.iter().filter(|(key, _)| wanted(key)).take(most) {
        if let Some(dup) = duplicate(entry.fd, entry.inode) {
            dups.push((key.clone(), dup));
        }
    }
    let all = listed
        .iter()
        .map(|(key, entry)| (key.clone(), entry.meta.clone()))
        .collect();
    (dups, all)
}

/// A close-on-exec duplicate of `fd` if it still is the file `inode`.
pub(crate) fn duplicate(fd: RawFd, inode: u64) -> Option<OwnedFd> {
    let dup = nix::fcntl::fcntl(borrow(fd), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3)).ok()?;
    let dup = crate::holder::owned(dup);
    let same = nix::sys::stat::fstat(&dup).is_ok_and(|s| s.st_ino == inode);
    same.then_some(dup)
}

/// The inode of an open descriptor number.
pub fn inode(fd: RawFd) -> Option<u64> {
    nix::sys::stat::fstat(borrow(fd)).ok().map(|s| s.st_ino)
}

/// A listed descriptor number, borrowed for one `fcntl` or `fstat`.
#[allow(unsafe_code)]
fn borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: only F_DUPFD_CLOEXEC and fstat go through it, which fail
    // cleanly (EBADF) on a closed number; a number reused by another file
    // is told apart by its inode.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}
