//! The end of a process that is not eco's child: an app adopted after the
//! daemon that started it died (it was re-parented, so no `waitpid` of
//! this daemon sees it). A pidfd (`pidfd_open`) becomes readable when it
//! exits; its exit status belongs to its new parent, so the end is
//! reported as [`Exit::Unknown`] (a failure for the restart policy).

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use crate::state::Exit;

/// How often a process is looked for where pidfds are missing (Linux < 5.3).
const POLL: Duration = Duration::from_millis(200);

/// Resolves (with [`Exit::Unknown`]) when `pid` has ended.
pub(crate) fn exit_of(tasks: &TaskTracker, pid: i32) -> oneshot::Receiver<Exit> {
    let (tx, rx) = oneshot::channel();
    let pidfd = open(pid);
    tasks.spawn(async move {
        match pidfd {
            Ok(fd) => match watch(fd) {
                Ok(watched) => {
                    let _ = watched.readable().await;
                }
                Err(_) => poll_until_gone(pid).await,
            },
            // Already gone.
            Err(nix::Error::ESRCH) => {}
            Err(_) => poll_until_gone(pid).await,
        }
        let _ = tx.send(Exit::Unknown);
    });
    rx
}

async fn poll_until_gone(pid: i32) {
    while crate::procfs::alive(pid) {
        tokio::time::sleep(POLL).await;
    }
}

/// A pidfd that tokio can wait on.
#[allow(unsafe_code)]
fn watch(fd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns the pidfd, which stays open and the same
    // until the AsyncFd (its only owner) drops.
    unsafe { AsyncFd::register(fd) }.map_err(|err| err.into_parts().1)
}

/// `pidfd_open(pid, 0)`: a close-on-exec descriptor readable once `pid` exits.
#[allow(unsafe_code)]
fn open(pid: i32) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new
    // descriptor or -1; nothing is borrowed.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(nix::Error::last());
    }
    let fd = i32::try_from(fd).map_err(|_| nix::Error::EBADF)?;
    // SAFETY: the kernel just returned this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
