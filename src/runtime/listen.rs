//! Cluster sockets: eco binds each `listen` address itself and keeps it
//! open across restarts, reloads and edits that keep the address, so
//! connections queue in the kernel while instances come and go; closed when
//! no app lists it any more. Instances get them as fds 3, 4, … with
//! LISTEN_FDS, LISTEN_PID and LISTEN_FDNAMES, as systemd socket activation
//! does.
//!
//! A TCP address is held one of two ways ([`Sharing`]). Shared: one socket
//! that every instance accepts from; the kernel wakes whichever instance
//! waits first, so the split is uneven. Per instance: one SO_REUSEPORT
//! socket per running instance slot, so the kernel spreads connections
//! evenly; this needs `net.ipv4.tcp_migrate_req` (kernel 5.14+), which moves
//! the queue of a socket eco closes to the others, or connections queued on
//! an instance that stops would be reset.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, listen, setsockopt,
    socket, sockopt,
};

use crate::spec::ListenAddr;

/// The sysctl that moves a closed listener's queue to its SO_REUSEPORT
/// siblings.
const MIGRATE_REQ: &str = "/proc/sys/net/ipv4/tcp_migrate_req";

/// `ECO_CLUSTER_SOCKETS=shared` keeps one shared socket per address even
/// where per-instance sockets are possible.
pub const SHARING_ENV: &str = "ECO_CLUSTER_SOCKETS";

/// How the instances of a cluster app share a TCP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sharing {
    /// One socket; every instance accepts from it.
    Shared,
    /// One SO_REUSEPORT socket per running instance.
    PerInstance,
}

impl Sharing {
    pub fn as_str(self) -> &'static str {
        match self {
            Sharing::Shared => "shared",
            Sharing::PerInstance => "per-instance",
        }
    }
}

/// The sockets eco holds.
#[derive(Default)]
pub struct Listeners {
    open: Mutex<BTreeMap<ListenAddr, Bound>>,
    /// Why an address could not be bound (shown when its instances start).
    failed: Mutex<BTreeMap<ListenAddr, String>>,
    /// Decided at the first TCP bind: it may set a sysctl.
    sharing: OnceLock<Sharing>,
    /// Addresses no `listen` names, bound on request of a Node app's
    /// instances (`listen_broker`): the app that asked, and how many
    /// running processes hold them. Kept while any does.
    lent: Mutex<BTreeMap<ListenAddr, (String, u32)>>,
}

/// One address, as eco holds it.
enum Bound {
    Shared(OwnedFd),
    PerInstance(Group),
}

/// The SO_REUSEPORT sockets of one address: one per instance slot with a
/// process running. When none runs, the last one stays open, so that
/// connections queue (as on a shared socket) instead of being refused.
struct Group {
    addr: SocketAddr,
    slots: BTreeMap<u32, Slot>,
}

struct Slot {
    fd: OwnedFd,
    /// Processes started with this socket and not yet ended (two while a
    /// new instance runs beside the one it replaces).
    users: u32,
}

/// The slot of the socket bound before any instance runs.
const ANCHOR: u32 = u32::MAX;

impl Group {
    fn bind(addr: SocketAddr) -> io::Result<Group> {
        // SO_REUSEPORT lets any socket of the same user join the group:
        // check first that nothing else holds the address.
        drop(bind_tcp(addr, false, false)?);
        let fd = bind_tcp(addr, true, true)?;
        Ok(Group {
            addr,
            slots: BTreeMap::from([(ANCHOR, Slot { fd, users: 0 })]),
        })
    }

    /// The socket of `slot` for one more process, bound when it has none.
    fn acquire(&mut self, slot: u32) -> io::Result<&OwnedFd> {
        if !self.slots.contains_key(&slot) {
            let fd = bind_tcp(self.addr, true, true)?;
            self.slots.insert(slot, Slot { fd, users: 0 });
        }
        if let Some(held) = self.slots.get_mut(&slot) {
            held.users += 1;
        }
        // A socket nobody accepts from would keep receiving its share of
        // new connections: close it; its queue moves to the others.
        self.slots.retain(|_, held| held.users > 0);
        self.slots
            .get(&slot)
            .map(|held| &held.fd)
            .ok_or_else(|| io::Error::other("the instance's socket is missing"))
    }

    /// A process started with `slot`'s socket has ended.
    fn release(&mut self, slot: u32) {
        if let Some(held) = self.slots.get_mut(&slot) {
            held.users = held.users.saturating_sub(1);
        }
        if self.slots.values().any(|held| held.users > 0) {
            self.slots.retain(|_, held| held.users > 0);
        }
    }
}

/// The name of a socket in LISTEN_FDNAMES (`:` separates names there).
pub fn fd_name(addr: &ListenAddr) -> String {
    let text = match addr {
        ListenAddr::Tcp(a) => format!("tcp-{}-{}", a.ip(), a.port()),
        ListenAddr::Unix(p) => format!("unix-{}", p.display()),
    };
    text.replace(':', "_")
}

/// Per-instance sockets held by one running process: released (and closed
/// when no other process uses them) when it is dropped.
pub struct Lease {
    listeners: Arc<Listeners>,
    addrs: Vec<ListenAddr>,
    slot: u32,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.addrs.is_empty() {
            return;
        }
        let mut open = self.listeners.lock_open();
        for addr in &self.addrs {
            if let Some(Bound::PerInstance(group)) = open.get_mut(addr) {
                group.release(self.slot);
            }
        }
    }
}

/// An address lent to one running process ([`Listeners::lend`]): given
/// back (and its per-instance socket released) when dropped.
pub struct Loan {
    listeners: Arc<Listeners>,
    addr: ListenAddr,
    /// Dropped after `drop` below has counted the loan back.
    _lease: Lease,
}

impl Drop for Loan {
    fn drop(&mut self) {
        let mut lent = self.listeners.lock_lent();
        if let Some((_, users)) = lent.get_mut(&self.addr) {
            *users = users.saturating_sub(1);
        }
    }
}

/// Why an address cannot be lent.
#[derive(Debug, thiserror::Error)]
pub enum LendError {
    #[error("{addr} is held for app `{owner}`: two apps cannot share a port")]
    OtherApp { addr: ListenAddr, owner: String },
    #[error("{addr} is in the `listen` of an app: listen on it from that app")]
    Listed { addr: ListenAddr },
    #[error("cannot listen on {addr}: {err}")]
    Bind { addr: ListenAddr, err: io::Error },
}

impl Listeners {
    fn lock_lent(&self) -> std::sync::MutexGuard<'_, BTreeMap<ListenAddr, (String, u32)>> {
        self.lent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The socket of `addr` for instance `slot` of app `owner`, which asked
    /// for it at `listen()` time: bound on first request (once per app and
    /// address, one socket per instance where the kernel allows, as for
    /// `listen`), kept while a loan is held and until a `sync` finds none.
    /// The fd is a copy for the app (close-on-exec here).
    pub fn lend(
        self: &Arc<Self>,
        addr: &ListenAddr,
        slot: u32,
        owner: &str,
    ) -> Result<(OwnedFd, Loan), LendError> {
        let mut open = self.lock_open();
        let mut lent = self.lock_lent();
        match lent.get(addr) {
            Some((held_by, _)) if held_by != owner => {
                return Err(LendError::OtherApp {
                    addr: addr.clone(),
                    owner: held_by.clone(),
                });
            }
            Some(_) => {}
            None if open.contains_key(addr) => {
                return Err(LendError::Listed { addr: addr.clone() });
            }
            None => {
                let bound = self.bind_one(addr).map_err(|err| LendError::Bind {
                    addr: addr.clone(),
                    err,
                })?;
                tracing::info!(%addr, owner, "listening for a Node cluster app that asked");
                open.insert(addr.clone(), bound);
            }
        }
        let mut lease = Lease {
            listeners: Arc::clone(self),
            addrs: Vec::new(),
            slot,
        };
        let bind_err = |err| LendError::Bind {
            addr: addr.clone(),
            err,
        };
        let fd = match open.get_mut(addr) {
            Some(Bound::Shared(fd)) => fd.try_clone().map_err(bind_err)?,
            Some(Bound::PerInstance(group)) => {
                let fd = group.acquire(slot).and_then(OwnedFd::try_clone);
                lease.addrs.push(addr.clone());
                fd.map_err(bind_err)?
            }
            None => return Err(bind_err(io::Error::other("not bound"))),
        };
        let entry = lent
            .entry(addr.clone())
            .or_insert_with(|| (owner.to_owned(), 0));
        entry.1 += 1;
        drop(lent);
        drop(open);
        Ok((
            fd,
            Loan {
                listeners: Arc::clone(self),
                addr: addr.clone(),
                _lease: lease,
            },
        ))
    }

    /// Listeners that hold TCP addresses the given way (tests).
    #[cfg(test)]
    fn with_sharing(sharing: Sharing) -> Listeners {
        let listeners = Listeners::default();
        let _ = listeners.sharing.set(sharing);
        listeners
    }

    fn lock_open(&self) -> std::sync::MutexGuard<'_, BTreeMap<ListenAddr, Bound>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// How TCP addresses are held, decided once.
    pub fn sharing(&self) -> Sharing {
        *self.sharing.get_or_init(decide_sharing)
    }

    /// How TCP addresses would be held, without deciding: for a dry run,
    /// which must not set the system-wide sysctl `sharing` may set.
    pub fn sharing_preview(&self) -> Sharing {
        match self.sharing.get() {
            Some(sharing) => *sharing,
            None => sharing_from(
                std::env::var(SHARING_ENV).ok().as_deref(),
                std::fs::read_to_string(MIGRATE_REQ).ok().as_deref(),
                nix::unistd::geteuid().is_root(),
            ),
        }
    }

    /// Binds what is wanted and not open yet; closes what is no longer wanted.
    pub fn sync(&self, wanted: &BTreeSet<ListenAddr>) {
        let mut open = self.lock_open();
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        let mut lent = self.lock_lent();
        // A lent address no process holds any more is given up here: its
        // app is gone or stopped (a reload holds it throughout).
        lent.retain(|_, (_, users)| *users > 0);
        open.retain(|addr, _| {
            let keep = wanted.contains(addr) || lent.contains_key(addr);
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
            match self.bind_one(addr) {
                Ok(bound) => {
                    tracing::info!(%addr, "listening for a cluster app");
                    failed.remove(addr);
                    open.insert(addr.clone(), bound);
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
        let mut open = self.lock_open();
        for addr in addrs {
            if open.contains_key(addr) {
                continue;
            }
            let bound = self.bind_one(addr).map_err(|err| (addr.clone(), err))?;
            tracing::info!(%addr, "listening for a cluster app");
            open.insert(addr.clone(), bound);
        }
        Ok(())
    }

    fn bind_one(&self, addr: &ListenAddr) -> io::Result<Bound> {
        match addr {
            ListenAddr::Tcp(sa)
                if addr.can_split_per_instance() && self.sharing() == Sharing::PerInstance =>
            {
                Group::bind(*sa).map(Bound::PerInstance)
            }
            ListenAddr::Tcp(sa) => bind_tcp(*sa, false, true).map(Bound::Shared),
            ListenAddr::Unix(path) => bind_unix(path).map(Bound::Shared),
        }
    }

    /// Runs `spawn` for instance `slot` with the raw fds of `addrs` made
    /// inheritable (and back to close-on-exec afterwards). Spawns all
    /// happen on one thread, so no other child can inherit them meanwhile.
    /// The lease keeps the instance's own sockets while its process runs.
    pub fn with_inheritable<T>(
        self: &Arc<Self>,
        addrs: &[ListenAddr],
        slot: u32,
        spawn: impl FnOnce(&[RawFd]) -> io::Result<T>,
    ) -> io::Result<(T, Lease)> {
        let mut lease = Lease {
            listeners: Arc::clone(self),
            addrs: Vec::new(),
            slot,
        };
        // The lock is let go before `lease` can drop: it takes it again.
        let mut open = self.lock_open();
        let result = self.spawn_locked(&mut open, addrs, &mut lease, spawn);
        drop(open);
        result.map(|spawned| (spawned, lease))
    }

    fn spawn_locked<T>(
        &self,
        open: &mut BTreeMap<ListenAddr, Bound>,
        addrs: &[ListenAddr],
        lease: &mut Lease,
        spawn: impl FnOnce(&[RawFd]) -> io::Result<T>,
    ) -> io::Result<T> {
        for addr in addrs {
            match open.get_mut(addr) {
                Some(Bound::Shared(_)) => {}
                Some(Bound::PerInstance(group)) => {
                    group.acquire(lease.slot)?;
                    lease.addrs.push(addr.clone());
                }
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
        let mut fds = Vec::with_capacity(addrs.len());
        for addr in addrs {
            let fd = match open.get(addr) {
                Some(Bound::Shared(fd)) => Some(fd),
                Some(Bound::PerInstance(group)) => {
                    group.slots.get(&lease.slot).map(|held| &held.fd)
                }
                None => None,
            };
            fds.push(fd.ok_or_else(|| io::Error::other(format!("{addr} is not bound")))?);
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

/// Per-instance sockets where the kernel can move a closed socket's queue
/// (setting `net.ipv4.tcp_migrate_req` when eco runs as root and it is
/// off), unless `ECO_CLUSTER_SOCKETS=shared`.
fn decide_sharing() -> Sharing {
    if std::env::var(SHARING_ENV).is_ok_and(|v| v == "shared") {
        tracing::info!("cluster sockets: shared ({SHARING_ENV}=shared)");
        return Sharing::Shared;
    }
    let current = std::fs::read_to_string(MIGRATE_REQ);
    let sharing = match current {
        Ok(value) if value.trim() == "1" => Sharing::PerInstance,
        Ok(_) if nix::unistd::geteuid().is_root() => match std::fs::write(MIGRATE_REQ, "1\n") {
            Ok(()) => {
                tracing::info!(
                    "set net.ipv4.tcp_migrate_req=1 (system-wide) for per-instance cluster sockets"
                );
                Sharing::PerInstance
            }
            Err(err) => {
                tracing::info!(%err, "cannot set net.ipv4.tcp_migrate_req");
                Sharing::Shared
            }
        },
        _ => Sharing::Shared,
    };
    tracing::info!("cluster sockets: {}", sharing.as_str());
    sharing
}

/// What [`decide_sharing`] would choose, from the environment's choice,
/// the sysctl's value and whether eco may set it; pure.
fn sharing_from(env: Option<&str>, migrate_req: Option<&str>, root: bool) -> Sharing {
    match (env, migrate_req.map(str::trim)) {
        (Some("shared"), _) => Sharing::Shared,
        (_, Some("1")) => Sharing::PerInstance,
        (_, Some(_)) if root => Sharing::PerInstance,
        _ => Sharing::Shared,
    }
}

/// A TCP socket bound to `addr` (listening when asked); `reuse_port` for a
/// per-instance group.
fn bind_tcp(addr: SocketAddr, reuse_port: bool, listening: bool) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    if reuse_port {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    // Accepted sockets inherit it: apps that wrap the fd (uvicorn --fd)
    // never set it themselves, and small answers would wait for Nagle's
    // algorithm.
    setsockopt(&fd, sockopt::TcpNoDelay, &true)?;
    match addr {
        SocketAddr::V4(v4) => bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?,
        SocketAddr::V6(v6) => {
            setsockopt(&fd, sockopt::Ipv6V6Only, &true)?;
            bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?;
        }
    }
    if listening {
        listen(&fd, Backlog::MAXCONN)?;
    }
    Ok(fd)
}

fn bind_unix(path: &std::path::Path) -> io::Result<OwnedFd> {
    // A socket file left by an earlier run is stale: eco owned it.
    if std::fs::symlink_metadata(path)
        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
    {
        std::fs::remove_file(path)?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)?;
    Ok(OwnedFd::from(listener))
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
    // Anything else this step inherited is not the app's.
    crate::fds::cloexec_all_but(3 + count, &[]);
    std::process::Command::new(program)
        .args(args)
        .env("LISTEN_FDS", count.to_string())
        .env("LISTEN_FDNAMES", names)
        .env("LISTEN_PID", std::process::id().to_string())
        .exec()
}

/// Handing the sockets to the next daemon (`eco update`, see `adopt`).
impl Listeners {
    /// Every socket held, with its descriptor number (kept open by the
    /// caller until its exec).
    pub fn held(&self) -> Vec<super::adopt::HeldSocket> {
        let open = self.lock_open();
        let mut held = Vec::new();
        for (addr, bound) in open.iter() {
            match bound {
                Bound::Shared(fd) => held.push(super::adopt::HeldSocket {
                    addr: addr.clone(),
                    slot: None,
                    users: 0,
                    fd: fd.as_raw_fd(),
                }),
                Bound::PerInstance(group) => {
                    held.extend(
                        group
                            .slots
                            .iter()
                            .map(|(slot, s)| super::adopt::HeldSocket {
                                addr: addr.clone(),
                                slot: Some(*slot),
                                users: s.users,
                                fd: s.fd.as_raw_fd(),
                            }),
                    );
                }
            }
        }
        held
    }

    /// How TCP addresses are held, if decided yet.
    pub fn sharing_decided(&self) -> Option<Sharing> {
        self.sharing.get().copied()
    }

    /// Takes the sockets a previous daemon held, and its way of holding them.
    pub fn adopt(&self, held: Vec<super::adopt::HeldSocket>, sharing: Option<&str>) {
        match sharing {
            Some("shared") => drop(self.sharing.set(Sharing::Shared)),
            Some("per-instance") => drop(self.sharing.set(Sharing::PerInstance)),
            _ => {}
        }
        let mut open = self.lock_open();
        for socket in held {
            let fd = super::adopt::owned(socket.fd);
            let _ = fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
            match socket.slot {
                None => {
                    open.insert(socket.addr, Bound::Shared(fd));
                }
                Some(slot) => {
                    let ListenAddr::Tcp(addr) = &socket.addr else {
                        continue;
                    };
                    let entry = open.entry(socket.addr.clone()).or_insert_with(|| {
                        Bound::PerInstance(Group {
                            addr: *addr,
                            slots: BTreeMap::new(),
                        })
                    });
                    if let Bound::PerInstance(group) = entry {
                        group.slots.insert(
                            slot,
                            Slot {
                                fd,
                                users: socket.users,
                            },
                        );
                    }
                }
            }
        }
    }

    /// The lease of a running process the previous daemon started with its
    /// per-instance sockets (already counted in their users).
    pub fn lease_held(self: &Arc<Self>, addrs: &[ListenAddr], slot: u32) -> Lease {
        let open = self.lock_open();
        let addrs = addrs
            .iter()
            .filter(|a| matches!(open.get(a), Some(Bound::PerInstance(g)) if g.slots.contains_key(&slot)))
            .cloned()
            .collect();
        Lease {
            listeners: Arc::clone(self),
            addrs,
            slot,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preview_of_the_sharing_matches_the_decision_without_setting_anything() {
        assert_eq!(
            sharing_from(Some("shared"), Some("1"), true),
            Sharing::Shared
        );
        assert_eq!(sharing_from(None, Some("1\n"), false), Sharing::PerInstance);
        assert_eq!(sharing_from(None, Some("0\n"), true), Sharing::PerInstance);
        assert_eq!(sharing_from(None, Some("0\n"), false), Sharing::Shared);
        assert_eq!(sharing_from(None, None, true), Sharing::Shared);
    }

    #[test]
    fn names_never_contain_the_separator() {
        let tcp = ListenAddr::Tcp("[::1]:8080".parse().expect("addr"));
        assert_eq!(fd_name(&tcp), "tcp-__1-8080");
        let v4 = ListenAddr::Tcp("127.0.0.1:80".parse().expect("addr"));
        assert_eq!(fd_name(&v4), "tcp-127.0.0.1-80");
    }

    fn free_addr() -> SocketAddr {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("probe");
        probe.local_addr().expect("addr")
    }

    /// Accepts what is queued on `slot`'s socket now.
    fn queued(listeners: &Listeners, addr: &ListenAddr, slot: u32) -> usize {
        let copy = match listeners.lock_open().get(addr) {
            Some(Bound::PerInstance(group)) => group.slots[&slot].fd.try_clone().expect("dup"),
            _ => panic!("no group"),
        };
        let listener = std::net::TcpListener::from(copy);
        listener.set_nonblocking(true).expect("nonblocking");
        std::iter::from_fn(|| listener.accept().ok()).count()
    }

    #[test]
    fn per_instance_sockets_split_connections_and_close_with_their_last_user() {
        let listeners = Arc::new(Listeners::with_sharing(Sharing::PerInstance));
        let addr = free_addr();
        let addrs = [ListenAddr::Tcp(addr)];
        // A group is not joined to a socket that another program holds,
        // even one with SO_REUSEPORT that the kernel would let it join.
        let other = bind_tcp(addr, true, true).expect("another program's socket");
        let taken = listeners.bind_new(&addrs.iter().cloned().collect());
        assert!(taken.is_err(), "joined another program's group");
        drop(other);
        listeners
            .bind_new(&addrs.iter().cloned().collect())
            .expect("bound");
        let (first, lease0) = listeners
            .with_inheritable(&addrs, 0, |fds| Ok(fds[0]))
            .expect("slot 0");
        let (second, lease1) = listeners
            .with_inheritable(&addrs, 1, |fds| Ok(fds[0]))
            .expect("slot 1");
        assert_ne!(first, second);
        let clients: Vec<_> = (0..200)
            .map(|_| std::net::TcpStream::connect(addr).expect("connect"))
            .collect();
        let (a, b) = (
            queued(&listeners, &addrs[0], 0),
            queued(&listeners, &addrs[0], 1),
        );
        assert_eq!(a + b, clients.len());
        assert!(a.max(b) <= 140, "uneven split: {a} and {b}");
        // A replacement beside slot 0's process shares its socket.
        let (again, lease0_new) = listeners
            .with_inheritable(&addrs, 0, |fds| Ok(fds[0]))
            .expect("slot 0 again");
        assert_eq!(again, first);
        drop(lease0);
        assert_eq!(
            slots(&listeners, &addrs[0]),
            [0, 1],
            "used by the replacement"
        );
        drop(lease0_new);
        assert_eq!(
            slots(&listeners, &addrs[0]),
            [1],
            "closed with its last user"
        );
        // The last socket stays, so connections queue rather than fail.
        drop(lease1);
        assert_eq!(slots(&listeners, &addrs[0]), [1]);
        std::net::TcpStream::connect(addr).expect("queued while none runs");
        listeners.sync(&BTreeSet::new());
        assert!(std::net::TcpStream::connect(addr).is_err(), "closed");
    }

    /// The slots with a socket open.
    fn slots(listeners: &Listeners, addr: &ListenAddr) -> Vec<u32> {
        match listeners.lock_open().get(addr) {
            Some(Bound::PerInstance(group)) => group.slots.keys().copied().collect(),
            _ => Vec::new(),
        }
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
