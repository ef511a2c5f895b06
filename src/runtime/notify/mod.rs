//! sd_notify, both ends. The instance's end: a datagram socket per run of
//! an instance, at a path in a folder only eco's user can enter ([`place`]),
//! that reads each message with its sender's credentials and any
//! descriptors sent along (SCM_CREDENTIALS, SCM_RIGHTS); who may speak for
//! the instance is decided in [`trust`], what it may store in [`fd_store`].
//! The sending end (`send`, `send_and_wait`) serves `eco notify` and the
//! daemon speaking to its own supervisor. Parsing is pure ([`parse`]).

pub mod fd_store;
pub mod place;
pub mod trust;

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

static NOTIFY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The largest datagram read (systemd accepts up to about 4 KiB of text).
pub const MAX_DATAGRAM: usize = 8192;

/// The most descriptors read with one datagram; a datagram with more is
/// refused whole (the kernel closes those that did not fit).
pub const MAX_FDS: usize = 16;

/// How long `eco notify` waits for eco to have read its message.
pub const BARRIER_WAIT: Duration = Duration::from_secs(5);

/// One instance's notify socket; its file is removed when it is dropped.
pub struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    /// The value for NOTIFY_SOCKET.
    pub env_value: String,
}

/// Who sent a datagram (SCM_CREDENTIALS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    pub pid: i32,
    pub uid: u32,
}

/// One datagram: who sent it, what it says, what it carried.
#[derive(Debug)]
pub struct Datagram {
    pub sender: Option<Sender>,
    pub messages: Vec<Message>,
    pub fds: Vec<OwnedFd>,
    /// Longer than [`MAX_DATAGRAM`] or with more than [`MAX_FDS`]
    /// descriptors: refused whole.
    pub truncated: bool,
}

/// The sd_notify messages eco acts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Ready,
    Reloading,
    Stopping,
    Status(String),
    Watchdog,
    WatchdogTrigger,
    WatchdogUsec(u64),
    MainPid(i32),
    ExtendTimeoutUsec(u64),
    Errno(i32),
    Barrier,
    FdStore,
    FdStoreRemove,
    FdName(String),
}

/// The messages in one datagram (`KEY=VALUE` lines; unknown ones ignored).
pub fn parse(text: &str) -> Vec<Message> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once('=')?;
            Some(match (key, value) {
                ("READY", "1") => Message::Ready,
                ("RELOADING", "1") => Message::Reloading,
                ("STOPPING", "1") => Message::Stopping,
                ("STATUS", text) => Message::Status(text.to_owned()),
                ("WATCHDOG", "1") => Message::Watchdog,
                ("WATCHDOG", "trigger") => Message::WatchdogTrigger,
                ("WATCHDOG_USEC", n) => Message::WatchdogUsec(n.parse().ok()?),
                ("MAINPID", n) => Message::MainPid(n.parse().ok()?),
                ("EXTEND_TIMEOUT_USEC", n) => Message::ExtendTimeoutUsec(n.parse().ok()?),
                ("ERRNO", n) => Message::Errno(n.parse().ok()?),
                ("BARRIER", "1") => Message::Barrier,
                ("FDSTORE", "1") => Message::FdStore,
                ("FDSTOREREMOVE", "1") => Message::FdStoreRemove,
                ("FDNAME", name) => Message::FdName(name.to_owned()),
                _ => return None,
            })
        })
        .collect()
}

impl NotifySocket {
    /// Binds `<folder>/<eco pid>.<n>` with SO_PASSCRED (each datagram
    /// carries its sender's pid and uid).
    pub fn bind() -> io::Result<NotifySocket> {
        let n = NOTIFY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = place::folder()?.join(format!("{}.{n}", std::process::id()));
        let env_value = path
            .to_str()
            .ok_or_else(|| io::Error::other("the notify folder's path is not UTF-8"))?
            .to_owned();
        // A file with this name was left by an earlier process with our pid.
        match std::fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
            _ => {}
        }
        let std_socket = std::os::unix::net::UnixDatagram::bind(&path)?;
        let ready = std_socket
            .set_nonblocking(true)
            .and_then(|()| {
                setsockopt(&std_socket, sockopt::PassCred, &true).map_err(io::Error::from)
            })
            .and_then(|()| UnixDatagram::from_std(std_socket));
        match ready {
            Ok(socket) => Ok(NotifySocket {
                socket,
                path,
                env_value,
            }),
            Err(err) => {
                let _ = std::fs::remove_file(&path);
                Err(err)
            }
        }
    }

    /// The next datagram.
    pub async fn recv(&self) -> io::Result<Datagram> {
        let fd = self.socket.as_raw_fd();
        self.socket
            .async_io(Interest::READABLE, || receive(fd))
            .await
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[allow(unsafe_code)]
fn receive(fd: RawFd) -> io::Result<Datagram> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!(UnixCredentials, [RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    let truncated = msg
        .flags
        .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
    let mut sender = None;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        match cmsg {
            ControlMessageOwned::ScmCredentials(creds) => {
                sender = Some(Sender {
                    pid: creds.pid(),
                    uid: creds.uid(),
                });
            }
            ControlMessageOwned::ScmRights(received) => {
                for raw in received {
                    // SAFETY: SCM_RIGHTS gave this process new descriptors
                    // that nothing else in it refers to: they are ours to own.
                    fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
                }
            }
            _ => {}
        }
    }
    let len = msg.bytes;
    let messages = if truncated {
        Vec::new()
    } else {
        parse(&String::from_utf8_lossy(&buf[..len]))
    };
    Ok(Datagram {
        sender,
        messages,
        fds,
        truncated,
    })
}

/// Sends `text` (and `fds`) to a NOTIFY_SOCKET address (`@abstract` or a
/// path), as `sd_notify` does.
pub fn send(target: &str, text: &str, fds: &[RawFd]) -> io::Result<()> {
    let addr = match target.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?,
        None => std::os::unix::net::SocketAddr::from_pathname(target)?,
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    socket.connect_addr(&addr)?;
    let iov = [IoSlice::new(text.as_bytes())];
    let rights = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage<'_>] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(socket.as_raw_fd(), &iov, cmsgs, MsgFlags::empty(), None)
        .map_err(io::Error::from)?;
    Ok(())
}

/// `send`, then what `sd_notify_barrier` does: `BARRIER=1` with a pipe's
/// write end, and a wait (up to `wait`) until the receiver closes it. The
/// receiver reads datagrams in order, so it has read (and checked) `text`
/// while this process was still alive to be checked.
pub fn send_and_wait(target: &str, text: &str, fds: &[RawFd], wait: Duration) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    send(target, text, fds)?;
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    send(target, "BARRIER=1", &[write.as_raw_fd()])?;
    drop(write);
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut polled = [PollFd::new(read.as_fd(), PollFlags::empty())];
        match poll(&mut polled, timeout) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{target} did not confirm the message within {}s (BARRIER=1)",
                        wait.as_secs()
                    ),
                ));
            }
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_systemd_understands() {
        let text = "READY=1\nSTATUS=serving 3 clients\nWATCHDOG=1\nWATCHDOG_USEC=500000\n\
                    MAINPID=42\nEXTEND_TIMEOUT_USEC=9000000\nERRNO=2\nBARRIER=1\nFDSTORE=1\n\
                    FDNAME=conn\nRELOADING=1\nMONOTONIC_USEC=1\nSTOPPING=1\nWATCHDOG=trigger\nX=1";
        assert_eq!(
            parse(text),
            vec![
                Message::Ready,
                Message::Status("serving 3 clients".into()),
                Message::Watchdog,
                Message::WatchdogUsec(500_000),
                Message::MainPid(42),
                Message::ExtendTimeoutUsec(9_000_000),
                Message::Errno(2),
                Message::Barrier,
                Message::FdStore,
                Message::FdName("conn".into()),
                Message::Reloading,
                Message::Stopping,
                Message::WatchdogTrigger,
            ]
        );
        assert_eq!(parse("MAINPID=x\nREADY=0"), Vec::new());
    }
}
