//! Cluster sockets: eco binds each `listen` address once and keeps it open
//! across restarts, reloads and edits that keep the address, so connections
//! queue in the kernel while instances come and go; closed when no app
//! lists it any more. Instances get them as fds 3, 4, … with LISTEN_FDS,
//! LISTEN_PID and LISTEN_FDNAMES, as systemd socket activation does.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, PoisonError};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, listen, setsockopt,
    socket, sockopt,
};

use crate::spec::ListenAddr;

/// The sockets eco holds.
#[derive(Default)]
pub struct Listeners {
    open: Mutex<BTreeMap<ListenAddr, OwnedFd>>,
    /// Why an address could not be bound (shown when its instances start).
    failed: Mutex<BTreeMap<ListenAddr, String>>,
}

/// The name of a socket in LISTEN_FDNAMES (`:` separates names there).
pub fn fd_name(addr: &ListenAddr) -> String {
    let text = match addr {
        ListenAddr::Tcp(a) => format!("tcp-{}-{}", a.ip(), a.port()),
        ListenAddr::Unix(p) => format!("unix-{}", p.display()),
    };
    text.replace(':', "_")
}

impl Listeners {
    /// Binds what is wanted and not open yet; closes what is no longer wanted.
    pub fn sync(&self, wanted: &BTreeSet<ListenAddr>) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        open.retain(|addr, _| {
            let keep = wanted.contains(addr);
            if !keep {
                tracing::info!(%addr, "closing a cluster socket");
                if let ListenAddr::Unix(path) = addr {
                    let _ = std::fs::remove_file(path);
                }
            }
            keep
        });
        failed.retain(|addr, _| wanted.contains(addr));
        for addr in wanted {
            if open.contains_key(addr) {
                continue;
            }
            match bind_one(addr) {
                Ok(fd) => {
                    tracing::info!(%addr, "listening for a cluster app");
                    failed.remove(addr);
                    open.insert(addr.clone(), fd);
                }
                Err(err) => {
                    tracing::warn!(%addr, %err, "cannot bind a cluster socket");
                    failed.insert(addr.clone(), format!("cannot listen on {addr}: {err}"));
                }
            }
        }
    }

    /// Binds the addresses of `addrs` that are not open yet, before a spec
    /// that lists them is applied: an address another program holds is an
    /// error then, not a crash loop later.
    pub fn bind_new(&self, addrs: &BTreeSet<ListenAddr>) -> Result<(), (ListenAddr, io::Error)> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        for addr in addrs {
            if open.contains_key(addr) {
                continue;
            }
            let fd = bind_one(addr).map_err(|err| (addr.clone(), err))?;
            tracing::info!(%addr, "listening for a cluster app");
            open.insert(addr.clone(), fd);
        }
        Ok(())
    }

    /// Runs `spawn` with the raw fds of `addrs` made inheritable (and back to
    /// close-on-exec afterwards). Spawns all happen on one thread, so no
    /// other child can inherit them meanwhile.
    pub fn with_inheritable<T>(
        &self,
        addrs: &[ListenAddr],
        spawn: impl FnOnce(&[RawFd]) -> io::Result<T>,
    ) -> io::Result<T> {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let mut fds = Vec::with_capacity(addrs.len());
        for addr in addrs {
            match open.get(addr) {
                Some(fd) => fds.push(fd),
                None => {
                    let why = self
                        .failed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(addr)
                        .cloned()
                        .unwrap_or_else(|| format!("{addr} is not bound"));
                    return Err(io::Error::other(why));
                }
            }
        }
        for fd in &fds {
            fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::empty())).map_err(io::Error::from)?;
        }
        let raw: Vec<RawFd> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
        let result = spawn(&raw);
        for fd in &fds {
            let _ = fcntl(fd.as_fd(), FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
        }
        result
    }
}

fn bind_one(addr: &ListenAddr) -> io::Result<OwnedFd> {
    match addr {
        ListenAddr::Tcp(sa) => {
            let family = if sa.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
            setsockopt(&fd, sockopt::ReuseAddr, &true)?;
            // Accepted sockets inherit it: apps that wrap the fd (uvicorn
            // --fd) never set it themselves, and small answers would wait
            // for Nagle's algorithm.
            setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
            match sa {
                std::net::SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(*v4))?,
                std::net::SocketAddr::V6(v6) => {
                    setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
                    bind(fd.as_raw_fd(), &SockaddrIn6::from(*v6))?;
                }
            }
            listen(&fd, Backlog::MAXCONN)?;
            Ok(fd)
        }
        ListenAddr::Unix(path) => {
            // A socket file left by an earlier run is stale: eco owned it.
            if std::fs::symlink_metadata(path)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            {
                std::fs::remove_file(path)?;
            }
            let listener = std::os::unix::net::UnixListener::bind(path)?;
            Ok(OwnedFd::from(listener))
        }
    }
}

/// `eco __listen --fds 9,11 --names a:b -- CMD…`: the step between eco and
/// a cluster instance. It moves the sockets to fds 3, 4, …, sets LISTEN_FDS,
/// LISTEN_FDNAMES and LISTEN_PID (its own pid, which `exec` keeps) and
/// becomes the app. std applies a Command's env after `pre_exec`, so the
/// child's own pid cannot be put into its env any other way without unsafe
/// work between fork and exec.
#[allow(unsafe_code)]
pub fn exec_with_fds(fds: &[RawFd], names: &str, argv: &[String]) -> io::Error {
    use std::os::unix::process::CommandExt;
    let Some((program, args)) = argv.split_first() else {
        return io::Error::other("no command given");
    };
    let count = i32::try_from(fds.len()).unwrap_or(0);
    // Move the fds out of the way first, so that moving them to 3.. never
    // overwrites one not yet moved.
    let mut parked = Vec::new();
    for fd in fds {
        // SAFETY: the fds were handed to this process by eco for this purpose;
        // fcntl(F_DUPFD) and close take and return plain descriptors.
        let high = unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 3 + count + 64) };
        if high < 0 {
            return io::Error::last_os_error();
        }
        // SAFETY: as above; the original is no longer used.
        unsafe { libc::close(*fd) };
        parked.push(high);
    }
    for (i, high) in parked.iter().enumerate() {
        let target = 3 + i32::try_from(i).unwrap_or(0);
        // SAFETY: dup2 onto a descriptor number this process does not use
        // otherwise; the result is checked. dup2 clears close-on-exec.
        let got = unsafe { libc::dup2(*high, target) };
        if got != target {
            return io::Error::last_os_error();
        }
        // SAFETY: the parked copy is no longer used.
        unsafe { libc::close(*high) };
    }
    std::process::Command::new(program)
        .args(args)
        .env("LISTEN_FDS", count.to_string())
        .env("LISTEN_FDNAMES", names)
        .env("LISTEN_PID", std::process::id().to_string())
        .exec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_contain_the_separator() {
        let tcp = ListenAddr::Tcp("[::1]:8080".parse().expect("addr"));
        assert_eq!(fd_name(&tcp), "tcp-__1-8080");
        let v4 = ListenAddr::Tcp("127.0.0.1:80".parse().expect("addr"));
        assert_eq!(fd_name(&v4), "tcp-127.0.0.1-80");
    }

    #[test]
    fn sockets_stay_bound_until_unwanted() {
        let listeners = Listeners::default();
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        let addr = probe.local_addr().expect("addr");
        drop(probe);
        let wanted = BTreeSet::from([ListenAddr::Tcp(addr)]);
        listeners.sync(&wanted);
        assert!(
            std::net::TcpStream::connect(addr).is_ok(),
            "bound and listening"
        );
        listeners.sync(&wanted);
        assert!(
            std::net::TcpStream::connect(addr).is_ok(),
            "still the same socket"
        );
        listeners.sync(&BTreeSet::new());
        assert!(std::net::TcpStream::connect(addr).is_err(), "closed");
    }
}
