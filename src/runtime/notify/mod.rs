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
    ControlMessage, MsgFlags, UnixCredentials, recvmsg, sendmsg, setsockopt, sockopt,
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
    /// Listed for the descriptor holder while it is open (see [`Self::offer`]).
    offered: Option<crate::runtime::feed::Offered>,
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
        let (path, env_value) = place::socket_path(NOTIFY_COUNTER.fetch_add(1, Ordering::Relaxed))?;
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
                offered: None,
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

/// Handing a notify socket to the next daemon (`eco update`, see
/// `runtime::adopt`): the app keeps sending to the same address.
impl NotifySocket {
    /// The socket's descriptor (a copy), path and NOTIFY_SOCKET value; the
    /// path stays bound.
    pub fn into_held(mut self) -> io::Result<(OwnedFd, PathBuf, String)> {
        self.offered = None;
        let fd = self.socket.as_fd().try_clone_to_owned()?;
        let path = std::mem::take(&mut self.path);
        let env_value = std::mem::take(&mut self.env_value);
        Ok((fd, path, env_value))
    }

    /// A socket handed over by the previous daemon; sockets bound from now
    /// on get other names.
    pub fn from_held(fd: OwnedFd, path: PathBuf, env_value: String) -> io::Result<NotifySocket> {
        if let Some(n) = path
            .file_name()
            .and_then(|name| name.to_str())
            .and_then(|name| name.rsplit_once('.'))
            .and_then(|(_, n)| n.parse::<u64>().ok())
        {
            NOTIFY_COUNTER.fetch_max(n + 1, Ordering::Relaxed);
        }
        nix::fcntl::fcntl(
            &fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )?;
        let std_socket = std::os::unix::net::UnixDatagram::from(fd);
        std_socket.set_nonblocking(true)?;
        Ok(NotifySocket {
            socket: UnixDatagram::from_std(std_socket)?,
            path,
            env_value,
            offered: None,
        })
    }
}

impl NotifySocket {
    /// Lists the socket for the descriptor holder under `key`, so a crash
    /// of the daemon does not take the app's address away.
    pub(crate) fn offer(&mut self, key: String) {
        let meta = crate::runtime::feed::Meta::Notify {
            path: self.path.clone(),
            env_value: self.env_value.clone(),
        };
        self.offered = crate::runtime::feed::offer(key, &self.socket, meta);
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        if self.path.as_os_str().is_empty() {
            // Handed over: the next daemon serves this path.
            return;
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The most descriptors the kernel passes with one datagram (SCM_MAX_FD):
/// the control buffer holds them all, so the kernel never cuts a datagram's
/// descriptors short for lack of room, and every one it passed is closed.
const SCM_MAX_FD: usize = 253;

fn receive(fd: RawFd) -> io::Result<Datagram> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut iov = [IoSliceMut::new(&mut buf)];
    // Zeroed: the walk below ends where the kernel stopped writing.
    let mut space = nix::cmsg_space!(UnixCredentials, [RawFd; SCM_MAX_FD]);
    let msg = recvmsg::<()>(
        fd,
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    // MSG_CTRUNC remains possible when eco's descriptor table is full:
    // nix then refuses to list the control messages, so they are read here
    // (the descriptors that did arrive must still be closed).
    let flags = msg.flags;
    let len = msg.bytes;
    let (sender, fds) = control(&space);
    let truncated =
        flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) || fds.len() > MAX_FDS;
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

/// The sender's credentials and the descriptors in a received control
/// buffer, owned (to be closed) from here on.
#[allow(unsafe_code)]
fn control(space: &[u8]) -> (Option<Sender>, Vec<OwnedFd>) {
    let (sender, raw) = control_parts(space);
    let fds = raw
        .into_iter()
        // SAFETY: SCM_RIGHTS gave this process new descriptors that nothing
        // else in it refers to: they are ours to own (and to close).
        .map(|raw| unsafe { OwnedFd::from_raw_fd(raw) })
        .collect();
    (sender, fds)
}

/// The sender's credentials and the descriptor numbers in a control
/// buffer, walked with bounds checks (a cut-short last message included).
/// Pure, so the fuzz target can feed it any bytes.
pub fn control_parts(space: &[u8]) -> (Option<Sender>, Vec<RawFd>) {
    let mut sender = None;
    let mut fds = Vec::new();
    for (level, kind, data) in cmsgs(space) {
        if level != libc::SOL_SOCKET {
            continue;
        }
        if kind == libc::SCM_CREDENTIALS {
            // struct ucred: pid, uid, gid.
            if let (Some(pid), Some(uid)) = (int_at(data, 0), int_at(data, 4)) {
                sender = Some(Sender {
                    pid,
                    uid: u32::from_ne_bytes(uid.to_ne_bytes()),
                });
            }
        } else if kind == libc::SCM_RIGHTS {
            fds.extend(data.chunks_exact(4).filter_map(|c| int_at(c, 0)));
        }
    }
    (sender, fds)
}

/// The control messages in `space`: (level, type, data). The kernel's
/// layout: `size_t cmsg_len; int cmsg_level; int cmsg_type;`, then the data,
/// each message aligned to `size_t`; a zero length ends the list.
fn cmsgs(space: &[u8]) -> impl Iterator<Item = (i32, i32, &[u8])> {
    const WORD: usize = std::mem::size_of::<usize>();
    let header = std::mem::size_of::<libc::cmsghdr>();
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let head = space.get(at..at.checked_add(header)?)?;
        let len = usize::from_ne_bytes(head.get(..WORD)?.try_into().ok()?);
        if len < header {
            return None;
        }
        let level = int_at(head, WORD)?;
        let kind = int_at(head, WORD + 4)?;
        let end = at.checked_add(len)?.min(space.len());
        let data = space.get(at + header..end)?;
        at = at.checked_add(len.checked_next_multiple_of(WORD)?)?;
        Some((level, kind, data))
    })
}

/// The native-endian i32 at `offset`.
fn int_at(bytes: &[u8], offset: usize) -> Option<i32> {
    let four = bytes.get(offset..offset.checked_add(4)?)?;
    Some(i32::from_ne_bytes(four.try_into().ok()?))
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

    /// One control message as the kernel lays it out (64-bit: an 8-byte
    /// length, level, type, the data, padded to 8 bytes).
    fn cmsg(level: i32, kind: i32, data: &[u8], len: usize) -> Vec<u8> {
        let mut out = len.to_ne_bytes().to_vec();
        out.extend(level.to_ne_bytes());
        out.extend(kind.to_ne_bytes());
        out.extend(data);
        out.resize(out.len().next_multiple_of(8), 0);
        out
    }

    #[test]
    fn the_control_buffer_gives_credentials_and_descriptors_and_tolerates_any_bytes() {
        let cred: Vec<u8> = [7i32, 1000, 1000]
            .iter()
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let fds: Vec<u8> = [5i32, 6].iter().flat_map(|v| v.to_ne_bytes()).collect();
        let header = std::mem::size_of::<libc::cmsghdr>();
        let mut space = cmsg(libc::SOL_SOCKET, libc::SCM_CREDENTIALS, &cred, header + 12);
        space.extend(cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &fds, header + 8));
        assert_eq!(
            control_parts(&space),
            (Some(Sender { pid: 7, uid: 1000 }), vec![5, 6])
        );
        // Cut short, a length that overflows, noise: no panic, and
        // nothing taken from beyond the buffer or from a broken header.
        assert_eq!(control_parts(&space[..20]).1, Vec::<RawFd>::new());
        let huge = cmsg(libc::SOL_SOCKET, libc::SCM_RIGHTS, &fds, usize::MAX);
        assert_eq!(control_parts(&huge), (None, Vec::new()));
        assert_eq!(control_parts(&[0xff; 64]), (None, Vec::new()));
    }

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

    #[test]
    fn every_descriptor_that_arrives_is_owned_and_too_many_refuse_the_datagram() {
        let (tx, rx) = std::os::unix::net::UnixDatagram::pair().expect("pair");
        setsockopt(&rx, sockopt::PassCred, &true).expect("SO_PASSCRED");
        let null = std::fs::File::open("/dev/null").expect("/dev/null");
        let send = |text: &str, count: usize| {
            let fds = vec![null.as_raw_fd(); count];
            let rights = [ControlMessage::ScmRights(&fds)];
            sendmsg::<()>(
                tx.as_raw_fd(),
                &[IoSlice::new(text.as_bytes())],
                &rights,
                MsgFlags::empty(),
                None,
            )
            .expect("sendmsg");
        };
        send("FDSTORE=1\nFDNAME=a", 2);
        let two = receive(rx.as_raw_fd()).expect("datagram");
        assert_eq!(
            two.sender,
            Some(Sender {
                pid: i32::try_from(std::process::id()).expect("pid"),
                uid: nix::unistd::geteuid().as_raw(),
            })
        );
        assert_eq!(two.fds.len(), 2);
        assert!(!two.truncated);
        assert_eq!(
            two.messages,
            vec![Message::FdStore, Message::FdName("a".into())]
        );
        // More than eco reads at once: every one is received (and closed
        // with the datagram), the datagram refused whole.
        send("FDSTORE=1", 40);
        let many = receive(rx.as_raw_fd()).expect("datagram");
        assert_eq!(many.fds.len(), 40);
        assert!(many.truncated);
        assert!(many.messages.is_empty());
        let ino = |fd: &OwnedFd| nix::sys::stat::fstat(fd).expect("fstat").st_ino;
        let null_ino = nix::sys::stat::fstat(&null).expect("fstat").st_ino;
        assert!(many.fds.iter().all(|fd| ino(fd) == null_ino));
    }
}
