//! The listen broker: how a Node cluster app gets eco's socket for a port
//! no `listen` names (hard-coded, from its own `.env`, `PORT || 3000`).
//!
//! Each run of such an instance gets a stream socket, named to it in
//! `ECO_LISTEN_BROKER`, in the private notify folder ([`place`]: only eco's
//! user can reach it). At `listen(port)` eco's Node shim connects, writes
//! `tcp HOST:PORT`, and eco answers with one line and, on success, the
//! listening socket itself (SCM_RIGHTS), which Node reads as its IPC pipes
//! read handles (the way Node's own cluster passes them). So the socket is
//! the app's own from then on: what eco passes at exec stays fds 0, 1, 2 and
//! `LISTEN_FDS`.
//!
//! eco binds each address once per app ([`Listeners::lend`]), one socket
//! per instance where the kernel allows, and keeps it while any instance
//! holds it: reloads keep it, as they keep `listen` sockets.
//!
//! Trust: only the instance's own process (the one eco started, or one it
//! started) is answered, checked with the connection's credentials; a run
//! holds at most [`MAX_LOANS`] addresses; a request is one short line, read
//! within [`REQUEST_WAIT`].

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::listen::{Listeners, Loan};
use super::notify::place;
use crate::spec::ListenAddr;

/// The environment variable naming the broker's socket to the shim.
pub const BROKER_ENV: &str = "ECO_LISTEN_BROKER";

/// Broker sockets are named like notify sockets (`<eco pid>.<n>`, so a
/// restarted daemon sweeps those of a dead one), numbered from here so
/// that the two never meet.
const NAME_BASE: u64 = 1 << 62;

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The longest request read (`tcp [v6 address]:port` and a newline).
const MAX_REQUEST: usize = 128;

/// How long one connection may take to say what it wants.
pub const REQUEST_WAIT: Duration = Duration::from_secs(5);

/// The most addresses one run of an instance may hold.
pub const MAX_LOANS: usize = 16;

/// One run's broker: its socket file is removed, its serving task ended
/// and the sockets it lent given back when it is dropped (the run ended).
pub struct Broker {
    path: PathBuf,
    /// The value for `ECO_LISTEN_BROKER`.
    pub env_value: String,
    listener: Option<UnixListener>,
    task: Option<JoinHandle<()>>,
    /// The addresses lent to this run. Given back when the broker drops,
    /// not when its task does (an aborted task ends later).
    loans: Loans,
}

type Loans = Arc<Mutex<Vec<(ListenAddr, Loan)>>>;

/// Who the broker lends to: one instance of one app.
pub struct Borrower {
    pub listeners: Arc<Listeners>,
    /// `project/app`: an address lent to one app is refused to others.
    pub owner: String,
    pub slot: u32,
    /// The instance's process: it, or a process it started, may ask.
    pub pid: i32,
}

impl Broker {
    /// Binds `<notify folder>/<eco pid>.<n>`; nothing is answered before
    /// [`Broker::serve`] (connections wait in the backlog).
    pub fn bind() -> io::Result<Broker> {
        let (path, env_value) =
            place::socket_path(NAME_BASE + COUNTER.fetch_add(1, Ordering::Relaxed))?;
        let std_listener = std::os::unix::net::UnixListener::bind(&path)?;
        let listener = std_listener
            .set_nonblocking(true)
            .and_then(|()| UnixListener::from_std(std_listener));
        match listener {
            Ok(listener) => Ok(Broker {
                path,
                env_value,
                listener: Some(listener),
                task: None,
                loans: Loans::default(),
            }),
            Err(err) => {
                let _ = std::fs::remove_file(&path);
                Err(err)
            }
        }
    }

    /// Starts answering `borrower`'s requests (once its process runs).
    pub fn serve(&mut self, tasks: &tokio_util::task::TaskTracker, borrower: Borrower) {
        if let Some(listener) = self.listener.take() {
            let loans = Arc::clone(&self.loans);
            self.task = Some(tasks.spawn(serve(listener, borrower, loans)));
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.loans
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Answers one connection at a time.
async fn serve(listener: UnixListener, borrower: Borrower, loans: Loans) {
    loop {
        let mut stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                // Out of descriptors, most likely: wait rather than spin.
                tracing::debug!(%err, "cannot accept a listen request");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let answer = match tokio::time::timeout(REQUEST_WAIT, request(&mut stream, &borrower)).await
        {
            Ok(Ok(addr)) => lend(
                &borrower,
                &mut loans.lock().unwrap_or_else(PoisonError::into_inner),
                &addr,
            ),
            Ok(Err(why)) => Err(why),
            Err(_) => Err(format!(
                "no request within {}s: write `tcp HOST:PORT` and a newline",
                REQUEST_WAIT.as_secs()
            )),
        };
        let sent = match &answer {
            Ok(fd) => reply(&stream, "ok\n", Some(fd)).await,
            Err(why) => {
                tracing::info!(owner = %borrower.owner, %why, "listen request refused");
                reply(&stream, &format!("{why}\n"), None).await
            }
        };
        if let Err(err) = sent {
            tracing::debug!(%err, "cannot answer a listen request");
        }
    }
}

/// Reads the request, then checks who sent it (read first: a refusal
/// sent with the request unread would reach the peer as a reset).
async fn request(stream: &mut UnixStream, borrower: &Borrower) -> Result<ListenAddr, String> {
    let mut buf = Vec::with_capacity(MAX_REQUEST);
    let mut byte = [0u8; 1];
    while buf.len() < MAX_REQUEST {
        match stream.read(&mut byte).await {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => buf.push(byte[0]),
            Err(err) => return Err(format!("cannot read the request: {err}")),
        }
    }
    let peer = stream
        .peer_cred()
        .map_err(|err| format!("cannot tell who is asking: {err}"))?;
    let pid = peer.pid().unwrap_or(0);
    if !is_instance_process(pid, borrower.pid) {
        return Err(format!(
            "process {pid} is not instance {} of `{}` (pid {}): only the instance asks for its sockets",
            borrower.slot, borrower.owner, borrower.pid
        ));
    }
    parse_request(&String::from_utf8_lossy(&buf))
}

/// Whether `pid` is the instance's process or a descendant of it.
fn is_instance_process(pid: i32, main: i32) -> bool {
    let mut at = pid;
    // pid 1 and 0 end the walk; the depth bound guards against a loop read
    // while processes come and go.
    for _ in 0..64 {
        if at == main {
            return true;
        }
        match crate::procfs::parent(at) {
            Some(parent) if parent > 1 => at = parent,
            _ => return false,
        }
    }
    false
}

/// `tcp HOST:PORT` (an IP address, v6 in brackets, and a port that is
/// not 0); pure.
pub fn parse_request(text: &str) -> Result<ListenAddr, String> {
    let text = text.trim();
    let Some(addr) = text.strip_prefix("tcp ") else {
        return Err(format!(
            "unknown request {text:?}: expected `tcp HOST:PORT`"
        ));
    };
    let addr: SocketAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address and port, as in `tcp 0.0.0.0:3000`"))?;
    if addr.port() == 0 {
        return Err("port 0 is the app's own: it binds it itself".into());
    }
    Ok(ListenAddr::Tcp(addr))
}

/// The socket for `addr`, lent once per run (a second `listen` on the same
/// address gets another copy of the same socket).
fn lend(
    borrower: &Borrower,
    loans: &mut Vec<(ListenAddr, Loan)>,
    addr: &ListenAddr,
) -> Result<OwnedFd, String> {
    let held = loans.iter().any(|(a, _)| a == addr);
    if !held && loans.len() >= MAX_LOANS {
        return Err(format!(
            "an instance holds at most {MAX_LOANS} addresses from eco; list more in `listen`"
        ));
    }
    let (fd, loan) = borrower
        .listeners
        .lend(addr, borrower.slot, &borrower.owner)
        .map_err(|err| err.to_string())?;
    // Only the first loan of an address per run is kept: one process holds
    // one share of a per-instance socket however often it listens.
    if held {
        drop(loan);
    } else {
        loans.push((addr.clone(), loan));
    }
    Ok(fd)
}

/// Sends `text`, with `fd` when there is one, in one message.
async fn reply(stream: &UnixStream, text: &str, fd: Option<&OwnedFd>) -> io::Result<()> {
    let raw = stream.as_raw_fd();
    let fds: Vec<i32> = fd.iter().map(|fd| fd.as_raw_fd()).collect();
    stream
        .async_io(Interest::WRITABLE, || {
            let iov = [IoSlice::new(text.as_bytes())];
            let cmsg = [ControlMessage::ScmRights(&fds)];
            let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
            sendmsg::<()>(
                raw,
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map(|_| ())
            .map_err(io::Error::from)
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_name_an_ip_address_and_a_port() {
        assert_eq!(
            parse_request("tcp 0.0.0.0:3000\n"),
            Ok(ListenAddr::Tcp("0.0.0.0:3000".parse().expect("addr")))
        );
        assert_eq!(
            parse_request("tcp [::1]:8080"),
            Ok(ListenAddr::Tcp("[::1]:8080".parse().expect("addr")))
        );
        assert!(parse_request("tcp localhost:3000").is_err());
        assert!(parse_request("tcp 127.0.0.1:0").is_err());
        assert!(parse_request("unix /tmp/x").is_err());
        assert!(parse_request("").is_err());
    }

    #[test]
    fn only_the_instance_and_its_children_are_instance_processes() {
        let own = i32::try_from(std::process::id()).expect("pid");
        assert!(is_instance_process(own, own));
        let parent = crate::procfs::parent(own).expect("parent");
        assert!(is_instance_process(own, parent), "a child of the instance");
        assert!(!is_instance_process(parent, own), "the instance's parent");
        assert!(!is_instance_process(1, own));
    }
}
