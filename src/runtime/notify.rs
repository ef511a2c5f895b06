//! sd_notify, both ends. The instance's end: a datagram socket per
//! instance in the abstract namespace (`NOTIFY_SOCKET=@eco-…`), open as long
//! as the instance lives, that reads each message with its sender's
//! credentials and any descriptors sent along (SCM_CREDENTIALS,
//! SCM_RIGHTS). The sending end (`send`) serves `eco notify` and the daemon
//! speaking to its own supervisor. Parsing is pure ([`parse`]).

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::socket::{
    ControlMessage, ControlMessageOwned, MsgFlags, UnixCredentials, recvmsg, sendmsg, setsockopt,
    sockopt,
};
use tokio::io::Interest;
use tokio::net::UnixDatagram;

static NOTIFY_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The largest datagram read (systemd accepts up to about 4 KiB of text).
const MAX_DATAGRAM: usize = 8192;

/// The most descriptors read with one datagram.
const MAX_FDS: usize = 16;

/// One instance's notify socket.
pub struct NotifySocket {
    socket: UnixDatagram,
    /// The value for NOTIFY_SOCKET.
    pub env_value: String,
}

/// One datagram: who sent it, what it says, what it carried.
#[derive(Debug)]
pub struct Datagram {
    pub pid: Option<i32>,
    pub messages: Vec<Message>,
    pub fds: Vec<OwnedFd>,
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
    /// Binds `@eco-<pid>-<n>` with SO_PASSCRED (each datagram carries its
    /// sender's pid).
    pub fn bind() -> io::Result<NotifySocket> {
        let n = NOTIFY_COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("eco-{}-{n}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        let std_socket = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
        std_socket.set_nonblocking(true)?;
        setsockopt(&std_socket, sockopt::PassCred, &true).map_err(io::Error::from)?;
        Ok(NotifySocket {
            socket: UnixDatagram::from_std(std_socket)?,
            env_value: format!("@{name}"),
        })
    }

    /// The next datagram.
    pub async fn recv(&self) -> io::Result<Datagram> {
        let fd = self.socket.as_raw_fd();
        self.socket
            .async_io(Interest::READABLE, || receive(fd))
            .await
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
    let mut pid = None;
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        match cmsg {
            ControlMessageOwned::ScmCredentials(creds) => pid = Some(creds.pid()),
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
    let text = String::from_utf8_lossy(&buf[..len]);
    Ok(Datagram {
        pid,
        messages: parse(&text),
        fds,
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
