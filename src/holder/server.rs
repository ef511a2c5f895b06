//! The holder process (`eco __holder SOCKET`): one thread, one `poll` over
//! its listening socket and the daemon's connection. It keeps what the
//! daemon puts, forgets what it forgets, keeps the last whole state, and
//! when the daemon's connection just ends (a crash) it keeps all of it
//! for the next daemon's [`Message::Take`]. It exits on [`Message::Quit`]
//! (`eco kill`), when a daemon leaves it holding nothing, or when its
//! socket file is gone or replaced (the home was removed).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use nix::sys::socket::{self, Backlog, SockFlag, UnixAddr};

use super::{Conn, Error, MAX_FDS, MAX_STATE, Message, state_parts};

/// How often the holder checks that its socket file is still its own when
/// it cannot watch it (no inotify instance left for this user).
const CHECK_EVERY: u16 = 5000;

/// What is kept.
#[derive(Default)]
struct Store {
    fds: BTreeMap<String, OwnedFd>,
    state: String,
    /// State parts received since the last whole state.
    partial: String,
}

/// Runs the holder until it is told to quit or has nothing left to hold.
pub fn run(path: &Path) -> Result<(), Error> {
    // Nothing the daemon had open is the holder's (and nothing of it may
    // reach an app: everything opened from here is close-on-exec).
    crate::fds::close_inherited();
    // Its own session: not in the daemon's process group, no terminal.
    let _ = nix::unistd::setsid();
    let listener = listen(path)?;
    // What it ran to get here (argument parsing, start-up) is not needed
    // again: its code pages go, as the daemon's do.
    crate::daemon::startup::map_only_used_code();
    let inode = std::fs::metadata(path).map(|m| m.ino()).ok();
    let watch = watch(path);
    let result = serve(&listener, path, inode, watch.as_ref());
    // Its socket file goes with it (if it is still its own): the next
    // daemon finds no stale one.
    if std::fs::metadata(path).map(|m| m.ino()).ok() == inode {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// The holder's loop: returns when told to quit, when left with nothing to
/// hold, or when its socket file is gone.
fn serve(
    listener: &OwnedFd,
    path: &Path,
    inode: Option<u64>,
    watch: Option<&Inotify>,
) -> Result<(), Error> {
    let mut store = Store::default();
    let mut daemon: Option<Conn> = None;
    // No timer: the holder runs only when the daemon sends, connects, or
    // the watch fires. It drops the code serving faulted in when the
    // daemon, idle, says so (an empty `Forget`).
    loop {
        let Ready {
            daemon: daemon_ready,
            accept: accept_ready,
            check,
        } = wait(listener, daemon.as_ref(), watch)?;
        if daemon_ready && let Some(conn) = &daemon {
            match serve_one(conn, &mut store) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(_) => {
                    daemon = None;
                    store.partial.clear();
                    if store.fds.is_empty() {
                        return Ok(());
                    }
                }
            }
        }
        if accept_ready && let Some(conn) = accept(listener) {
            // The newest daemon is the one: a previous connection that
            // has not ended yet belongs to a daemon that is gone or going.
            daemon = Some(conn);
            store.partial.clear();
        }
        if check && std::fs::metadata(path).map(|m| m.ino()).ok() != inode {
            return Ok(());
        }
    }
}

/// Binds the socket (mode 0600 before anyone can connect).
fn listen(path: &Path) -> Result<OwnedFd, Error> {
    let failed = |doing, source| Error::Socket {
        doing,
        path: path.to_path_buf(),
        source,
    };
    let fd = super::seqpacket().map_err(|e| failed("create", e))?;
    let _ = std::fs::remove_file(path);
    let addr = UnixAddr::new(path).map_err(|e| failed("name", e))?;
    socket::bind(fd.as_raw_fd(), &addr).map_err(|e| failed("bind", e))?;
    std::fs::set_permissions(
        path,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o600),
    )
    .map_err(|e| {
        failed(
            "restrict",
            nix::Error::from_raw(e.raw_os_error().unwrap_or(0)),
        )
    })?;
    let backlog = Backlog::new(8).map_err(|e| failed("listen on", e))?;
    socket::listen(&fd, backlog).map_err(|e| failed("listen on", e))?;
    Ok(fd)
}

/// Watches the socket file (unlinked, replaced, moved) and the home
/// folder (removed, moved): an idle holder then sleeps until something
/// happens instead of checking its socket file every few seconds. None
/// when inotify is not available: the periodic check stays.
fn watch(path: &Path) -> Option<Inotify> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
    inotify
        .add_watch(
            path,
            AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF,
        )
        .ok()?;
    inotify
        .add_watch(
            path.parent()?,
            AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_ONLYDIR,
        )
        .ok()?;
    Some(inotify)
}

/// A replaced state larger than this gives its heap back at once.
const TRIM_AFTER: usize = 256 * 1024;

/// What [`wait`] found.
struct Ready {
    /// The daemon's connection has a message (or ended).
    daemon: bool,
    /// A new connection waits.
    accept: bool,
    /// The socket file is to be checked (the watch fired, or the wait
    /// timed out).
    check: bool,
}

/// Waits for the daemon's next message, a new connection, or an event of
/// the watch (without one, the periodic check).
fn wait(
    listener: &OwnedFd,
    daemon: Option<&Conn>,
    watch: Option<&Inotify>,
) -> Result<Ready, Error> {
    let mut fds = vec![PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    if let Some(conn) = daemon {
        fds.push(PollFd::new(conn.as_fd(), PollFlags::POLLIN));
    }
    if let Some(inotify) = watch {
        fds.push(PollFd::new(inotify.as_fd(), PollFlags::POLLIN));
    }
    let millis = if watch.is_some() {
        PollTimeout::NONE
    } else {
        PollTimeout::from(CHECK_EVERY)
    };
    match poll(&mut fds, millis) {
        Ok(_) | Err(nix::Error::EINTR) => {}
        Err(source) => {
            return Err(Error::Io {
                doing: "wait for",
                source,
            });
        }
    }
    let ready = |fd: &PollFd| fd.revents().is_some_and(|r| !r.is_empty());
    let accept = fds.first().is_some_and(ready);
    let daemon_ready = daemon.is_some() && fds.get(1).is_some_and(ready);
    let watched = watch.is_some() && fds.last().is_some_and(ready);
    if let Some(inotify) = watch.filter(|_| watched) {
        // What woke it is read and dropped: the caller checks the file
        // after this, so nothing that happened before is missed.
        while inotify.read_events().is_ok_and(|events| !events.is_empty()) {}
    }
    Ok(Ready {
        daemon: daemon_ready,
        accept,
        check: watched || (!daemon_ready && !accept),
    })
}

/// A new connection from this uid, or none.
fn accept(listener: &OwnedFd) -> Option<Conn> {
    let fd = socket::accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC).ok()?;
    let conn = Conn::accepted(super::owned(fd)).ok()?;
    conn.check_peer().ok()?;
    Some(conn)
}

/// Handles one message of the daemon: false once told to quit.
fn serve_one(conn: &Conn, store: &mut Store) -> Result<bool, Error> {
    let (message, fds) = conn.receive()?;
    match message {
        Message::Put { keys } => {
            if keys.len() == fds.len() {
                store.fds.extend(keys.into_iter().zip(fds));
            }
        }
        Message::Forget { keys } if keys.is_empty() => {
            // The daemon went idle and dropped its code pages: the holder
            // drops what serving it faulted in, at the same moment (it has
            // no timer of its own).
            crate::daemon::startup::map_only_used_code();
        }
        Message::Forget { keys } => {
            for key in keys {
                store.fds.remove(&key);
            }
        }
        Message::State { part, last } => {
            if store.partial.len() + part.len() > MAX_STATE {
                store.partial.clear();
            } else {
                store.partial.push_str(&part);
            }
            if last {
                let replaced =
                    std::mem::replace(&mut store.state, std::mem::take(&mut store.partial));
                if replaced.len() > TRIM_AFTER {
                    // The state of thousands of instances left megabytes
                    // free in the heap, which glibc would keep.
                    drop(replaced);
                    crate::daemon::startup::trim_heap();
                }
            }
        }
        Message::Take => {
            give(conn, store)?;
            *store = Store::default();
        }
        Message::Quit => return Ok(false),
        Message::End => {}
    }
    Ok(true)
}

/// Sends everything kept, then [`Message::End`].
fn give(conn: &Conn, store: &Store) -> Result<(), Error> {
    let all: Vec<(&String, RawFd)> = store
        .fds
        .iter()
        .map(|(key, fd)| (key, fd.as_raw_fd()))
        .collect();
    for batch in all.chunks(MAX_FDS) {
        let keys = batch.iter().map(|(key, _)| (*key).clone()).collect();
        let fds: Vec<RawFd> = batch.iter().map(|(_, fd)| *fd).collect();
        conn.send(&Message::Put { keys }, &fds)?;
    }
    if !store.state.is_empty() {
        for part in state_parts(&store.state) {
            conn.send(&part, &[])?;
        }
    }
    conn.send(&Message::End, &[])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use nix::sys::socket::{AddressFamily, SockType, socketpair};

    fn pair() -> (Conn, Conn) {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        (Conn::accepted(a).unwrap(), Conn::accepted(b).unwrap())
    }

    #[test]
    fn an_empty_forget_is_the_daemon_going_idle_and_keeps_everything() {
        let (daemon, holder) = pair();
        let mut store = Store::default();
        let (r1, _w1) = nix::unistd::pipe().unwrap();
        daemon
            .send(
                &Message::Put {
                    keys: vec!["k1".into()],
                },
                &[r1.as_raw_fd()],
            )
            .unwrap();
        assert!(serve_one(&holder, &mut store).unwrap());
        daemon
            .send(&Message::Forget { keys: Vec::new() }, &[])
            .unwrap();
        assert!(serve_one(&holder, &mut store).unwrap());
        assert_eq!(store.fds.keys().collect::<Vec<_>>(), ["k1"]);
    }

    #[test]
    fn it_keeps_puts_forgets_and_the_last_whole_state_and_gives_them_once() {
        let (daemon, holder) = pair();
        let mut store = Store::default();
        let (r1, _w1) = nix::unistd::pipe().unwrap();
        let (r2, _w2) = nix::unistd::pipe().unwrap();
        let keys = vec!["k1".to_owned(), "k2".to_owned()];
        daemon
            .send(&Message::Put { keys }, &[r1.as_raw_fd(), r2.as_raw_fd()])
            .unwrap();
        assert!(serve_one(&holder, &mut store).unwrap());
        daemon
            .send(
                &Message::Forget {
                    keys: vec!["k1".into()],
                },
                &[],
            )
            .unwrap();
        assert!(serve_one(&holder, &mut store).unwrap());
        for part in state_parts("{\"a\":1}") {
            daemon.send(&part, &[]).unwrap();
            assert!(serve_one(&holder, &mut store).unwrap());
        }
        // A state cut short (the daemon died mid-way) leaves the last whole one.
        daemon
            .send(
                &Message::State {
                    part: "{\"b\"".into(),
                    last: false,
                },
                &[],
            )
            .unwrap();
        assert!(serve_one(&holder, &mut store).unwrap());
        assert_eq!(store.state, "{\"a\":1}");
        assert_eq!(store.fds.keys().collect::<Vec<_>>(), ["k2"]);

        daemon.send(&Message::Take, &[]).unwrap();
        assert!(serve_one(&holder, &mut store).unwrap());
        let (put, fds) = daemon.receive().unwrap();
        assert_eq!(
            put,
            Message::Put {
                keys: vec!["k2".into()]
            }
        );
        assert_eq!(fds.len(), 1);
        let (state, _) = daemon.receive().unwrap();
        assert_eq!(
            state,
            Message::State {
                part: "{\"a\":1}".into(),
                last: true
            }
        );
        assert_eq!(daemon.receive().unwrap().0, Message::End);
        assert!(store.fds.is_empty() && store.state.is_empty(), "given once");

        daemon.send(&Message::Quit, &[]).unwrap();
        assert!(!serve_one(&holder, &mut store).unwrap());
    }
}
