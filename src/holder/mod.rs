//! The descriptor holder (`eco __holder`), as s6-fdholderd: a small process
//! that keeps duplicates of the running apps' output pipes and cluster
//! sockets, with the daemon's last description of its instances, so that
//! a daemon that dies (even by SIGKILL) loses nothing the next one needs.
//! The apps keep writing into pipes someone still holds; the next daemon
//! takes everything back and adopts them (`daemon::keeper`).
//!
//! This module is the wire between the two: one message per datagram on a
//! `SOCK_SEQPACKET` Unix socket (boundaries kept, descriptors attached to
//! the message that names them), JSON headers, bounded sizes, and a peer
//! that must be this very uid (SO_PEERCRED) on both ends: trust fails
//! closed. `server` is the holder process itself.

pub mod server;

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
    UnixAddr, sockopt,
};
use serde::{Deserialize, Serialize};

/// The hidden command that runs the holder (`eco __holder SOCKET`).
pub const COMMAND: &str = "__holder";

/// The largest datagram either side sends or reads: headers stay small,
/// the state travels in parts of at most [`STATE_PART`].
pub const MAX_MESSAGE: usize = 64 * 1024;

/// The state's bytes per [`Message::State`] part (JSON-escaped, it stays
/// under [`MAX_MESSAGE`]).
pub const STATE_PART: usize = 16 * 1024;

/// The most descriptors one message carries (the kernel's SCM_MAX_FD is
/// 253; staying under it means a message is never cut).
pub const MAX_FDS: usize = 200;

/// The most state the holder keeps (a description of 10,000 instances is
/// a few MiB).
pub const MAX_STATE: usize = 64 * 1024 * 1024;

/// How long one send or receive may take before the other side counts as
/// stuck: the daemon never waits longer on its holder.
pub const IO_LIMIT: Duration = Duration::from_secs(2);

/// One datagram's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// Keep these descriptors (attached, in this order) under these keys.
    Put { keys: Vec<String> },
    /// Close what is kept under these keys.
    Forget { keys: Vec<String> },
    /// A part of the daemon's description of its instances; the last part
    /// replaces the one kept.
    State { part: String, last: bool },
    /// (the next daemon) Send everything kept, then [`Message::End`]; the
    /// holder lets go of it all once sent.
    Take,
    /// Everything kept was sent.
    End,
    /// A clean stop (`eco kill`): close everything and exit.
    Quit,
}

/// Why talking to the holder failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {doing} the descriptor holder's socket {path}: {source}")]
    Socket {
        doing: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("cannot {doing} a message to or from the descriptor holder: {source}")]
    Io {
        doing: &'static str,
        source: nix::Error,
    },
    #[error(
        "the descriptor holder's socket is served by uid {theirs}, not this uid ({ours}); it is not trusted"
    )]
    Stranger { theirs: u32, ours: u32 },
    #[error("the descriptor holder sent a message eco cannot read ({0}); it is ignored")]
    Garbled(String),
    #[error("the descriptor holder closed the connection")]
    Closed,
}

/// One end of a connection, either side.
pub struct Conn {
    fd: OwnedFd,
}

impl Conn {
    /// Connects to the holder at `path` (non-blocking connect: a full or
    /// dead backlog fails at once instead of hanging) and checks its uid.
    pub fn connect(path: &Path) -> Result<Conn, Error> {
        let failed = |doing, source| Error::Socket {
            doing,
            path: path.to_path_buf(),
            source,
        };
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(|e| failed("create", e))?;
        let addr = UnixAddr::new(path).map_err(|e| failed("name", e))?;
        socket::connect(fd.as_raw_fd(), &addr).map_err(|e| failed("connect to", e))?;
        let conn = Conn::accepted(fd).map_err(|e| failed("set up", e))?;
        conn.check_peer()?;
        Ok(conn)
    }

    /// A connected socket, made blocking with [`IO_LIMIT`] on each call.
    pub fn accepted(fd: OwnedFd) -> nix::Result<Conn> {
        let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL)?;
        let flags = nix::fcntl::OFlag::from_bits_truncate(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
        nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags))?;
        let limit = nix::sys::time::TimeVal::new(i64::try_from(IO_LIMIT.as_secs()).unwrap_or(2), 0);
        socket::setsockopt(&fd, sockopt::ReceiveTimeout, &limit)?;
        socket::setsockopt(&fd, sockopt::SendTimeout, &limit)?;
        Ok(Conn { fd })
    }

    /// Refuses a peer of another uid.
    pub fn check_peer(&self) -> Result<(), Error> {
        let creds =
            socket::getsockopt(&self.fd, sockopt::PeerCredentials).map_err(|source| Error::Io {
                doing: "check the peer of",
                source,
            })?;
        let ours = nix::unistd::geteuid().as_raw();
        if creds.uid() != ours {
            return Err(Error::Stranger {
                theirs: creds.uid(),
                ours,
            });
        }
        Ok(())
    }

    /// Sends one message with `fds` attached (at most [`MAX_FDS`]).
    pub fn send(&self, message: &Message, fds: &[RawFd]) -> Result<(), Error> {
        self.send_with(message, fds, MsgFlags::MSG_NOSIGNAL)
            .map(drop)
    }

    /// [`Conn::send`] that never waits: false, and nothing sent, when the
    /// socket's buffer is full (the holder is behind or stuck). The
    /// daemon's loop sends this way, and hands what is left to a blocking
    /// thread only then.
    pub fn try_send(&self, message: &Message, fds: &[RawFd]) -> Result<bool, Error> {
        self.send_with(
            message,
            fds,
            MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        )
    }

    fn send_with(&self, message: &Message, fds: &[RawFd], flags: MsgFlags) -> Result<bool, Error> {
        let bytes = serde_json::to_vec(message).map_err(|e| Error::Garbled(e.to_string()))?;
        if bytes.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
            return Err(Error::Garbled(format!(
                "a message of {} bytes and {} descriptors is too large (this is a bug in eco, please report)",
                bytes.len(),
                fds.len()
            )));
        }
        let rights = [ControlMessage::ScmRights(fds)];
        let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        loop {
            match socket::sendmsg::<()>(
                self.fd.as_raw_fd(),
                &[IoSlice::new(&bytes)],
                cmsgs,
                flags,
                None,
            ) {
                Ok(_) => return Ok(true),
                Err(nix::Error::EINTR) => {}
                Err(nix::Error::EAGAIN) if flags.contains(MsgFlags::MSG_DONTWAIT) => {
                    return Ok(false);
                }
                Err(source) => {
                    return Err(Error::Io {
                        doing: "send",
                        source,
                    });
                }
            }
        }
    }

    /// Receives one message and the descriptors attached to it (owned,
    /// close-on-exec). [`Error::Closed`] at the end of the connection.
    pub fn receive(&self) -> Result<(Message, Vec<OwnedFd>), Error> {
        // On the stack: a heap buffer this size went back and forth to
        // the system (brk, a fault per page) at each of the holder's
        // messages once its heap had been trimmed.
        let mut buf = [0u8; MAX_MESSAGE];
        let mut space = nix::cmsg_space!([RawFd; 253]);
        let (bytes, flags, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut buf)];
            match socket::recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for cmsg in cmsgs {
                            if let ControlMessageOwned::ScmRights(raw) = cmsg {
                                fds.extend(raw.into_iter().map(owned));
                            }
                        }
                    }
                    break (msg.bytes, msg.flags, fds);
                }
                Err(nix::Error::EINTR) => {}
                Err(source) => {
                    return Err(Error::Io {
                        doing: "receive",
                        source,
                    });
                }
            }
        };
        if bytes == 0 && fds.is_empty() {
            return Err(Error::Closed);
        }
        if flags.intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC) {
            return Err(Error::Garbled("a message was cut short".into()));
        }
        let message = serde_json::from_slice(&buf[..bytes.min(buf.len())])
            .map_err(|e| Error::Garbled(e.to_string()))?;
        Ok((message, fds))
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A close-on-exec `SOCK_SEQPACKET` Unix socket.
pub(crate) fn seqpacket() -> nix::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

/// Owns a descriptor the kernel just installed in this process.
#[allow(unsafe_code)]
pub(crate) fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: `fd` was returned by the kernel a moment ago (accept4, or
    // SCM_RIGHTS in recvmsg) and nothing else in this process knows it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Splits `state` into [`Message::State`] parts (at char boundaries).
pub fn state_parts(state: &str) -> Vec<Message> {
    let mut parts = Vec::new();
    let mut rest = state;
    while rest.len() > STATE_PART {
        let mut cut = STATE_PART;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (part, tail) = rest.split_at(cut);
        parts.push(Message::State {
            part: part.to_owned(),
            last: false,
        });
        rest = tail;
    }
    parts.push(Message::State {
        part: rest.to_owned(),
        last: true,
    });
    parts
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn state_parts_rejoin_and_fit_a_message() {
        let state = "é".repeat(3 * STATE_PART);
        let parts = state_parts(&state);
        let mut joined = String::new();
        for part in &parts {
            let Message::State { part, .. } = part else {
                panic!("not a state part")
            };
            joined.push_str(part);
            assert!(
                serde_json::to_vec(&Message::State {
                    part: part.clone(),
                    last: false
                })
                .unwrap()
                .len()
                    <= MAX_MESSAGE
            );
        }
        assert_eq!(joined, state);
        assert!(matches!(
            parts.last(),
            Some(Message::State { last: true, .. })
        ));
        assert_eq!(parts.len(), 6);
    }

    #[test]
    fn descriptors_travel_with_their_message_and_close_on_exec() {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap();
        let a = Conn::accepted(a).unwrap();
        let b = Conn::accepted(b).unwrap();
        a.check_peer().unwrap();
        let (r, _w) = nix::unistd::pipe().unwrap();
        let keys = vec!["pipe x".to_owned()];
        a.send(&Message::Put { keys: keys.clone() }, &[r.as_raw_fd()])
            .unwrap();
        let (message, fds) = b.receive().unwrap();
        assert_eq!(message, Message::Put { keys });
        assert_eq!(fds.len(), 1);
        let flags = nix::fcntl::fcntl(&fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        drop(a);
        assert!(matches!(b.receive(), Err(Error::Closed)));
    }
}
