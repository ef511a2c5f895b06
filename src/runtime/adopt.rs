//! Handing the running instances from one daemon to the next without
//! touching them (`eco update`): the output readers stop at a line boundary
//! and park their pipes ([`quiesce`]); the engine describes each running
//! process with the descriptors it needs ([`Engine::hand_over`]); the next
//! daemon, the same process after an exec, takes them back
//! ([`Engine::expect`]) and its instances start from the running process
//! instead of spawning one (`instance::adopt`).
//!
//! What is carried: each instance's pid (and its start time, so a reused
//! pid is never taken for it), status, restart count and history, spawn
//! mark, output pipes (with anything not yet written still in them), and
//! every cluster socket eco holds. Descriptors are carried by number: the
//! exec keeps exactly those open.

use std::collections::BTreeMap;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::instance::HistoryEntry;
use super::notify::NotifySocket;
use super::notify::fd_store::FdStore;
use super::{Engine, InstanceId, Stream};
use crate::spec::ListenAddr;
use crate::state::{Exit, Reason, Status};

/// The output readers of this process, and the pipes they parked.
struct Quiesce {
    token: CancellationToken,
    running: AtomicUsize,
    parked: Mutex<Vec<ParkedPipe>>,
}

static QUIESCE: LazyLock<Quiesce> = LazyLock::new(|| Quiesce {
    token: CancellationToken::new(),
    running: AtomicUsize::new(0),
    parked: Mutex::new(Vec::new()),
});

/// A pipe an output reader stopped reading for a handover.
pub struct ParkedPipe {
    pub id: InstanceId,
    pub stream: Stream,
    pub head: std::sync::Arc<super::pipe_head::PipeHead>,
    /// The part of an unfinished line no longer in the pipe (no `\n`).
    pub leftover: Vec<u8>,
}

/// An instance's notify socket and stored descriptors, parked for a handover.
struct ParkedNotify {
    id: InstanceId,
    socket: Option<NotifySocket>,
    store: FdStore,
}

static PARKED_NOTIFY: Mutex<Vec<ParkedNotify>> = Mutex::new(Vec::new());

/// Parks an instance's notify socket and fd store for the next daemon.
pub(crate) fn park_notify(id: &InstanceId, socket: Option<NotifySocket>, store: FdStore) {
    PARKED_NOTIFY
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(ParkedNotify {
            id: id.clone(),
            socket,
            store,
        });
}

/// Counts one running output reader while it lives.
pub(crate) struct PumpRunning;

impl PumpRunning {
    pub(crate) fn new() -> PumpRunning {
        QUIESCE.running.fetch_add(1, Ordering::SeqCst);
        PumpRunning
    }
}

impl Drop for PumpRunning {
    fn drop(&mut self) {
        QUIESCE.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Cancelled once a handover begins: the output readers park.
pub(crate) fn quiesce_token() -> CancellationToken {
    QUIESCE.token.clone()
}

pub(crate) fn park(pipe: ParkedPipe) {
    QUIESCE
        .parked
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(pipe);
}

/// Asks every output reader to stop at a line boundary and park its pipe.
/// Nothing is lost: what they have not read stays in the pipe.
pub fn quiesce() {
    QUIESCE.token.cancel();
}

/// True once a handover has begun.
pub fn quiesced() -> bool {
    QUIESCE.token.is_cancelled()
}

/// Waits until every output reader has parked (or ended), up to `limit`.
pub async fn parked(limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    // One timer tick at least: every instance task woken by the quiesce
    // (they run on this thread, queued before the timer fires) parks its
    // notify socket meanwhile.
    tokio::time::sleep(Duration::from_millis(10)).await;
    while QUIESCE.running.load(Ordering::SeqCst) > 0 {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    true
}

/// Format of [`RuntimeHandover`]; a daemon refuses a handover of another.
pub const FORMAT: u32 = 1;

/// What the engine hands to the next daemon.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RuntimeHandover {
    pub instances: Vec<HeldInstance>,
    pub sockets: Vec<HeldSocket>,
    /// How TCP cluster sockets were held (`shared`/`per-instance`).
    pub sharing: Option<String>,
}

/// One running instance.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldInstance {
    pub project: String,
    pub app: String,
    pub index: u32,
    pub pid: i32,
    /// The pid's start time (`/proc/PID/stat`): a reused pid differs.
    pub start_time: Option<u64>,
    pub started: Option<SystemTime>,
    pub status: Status,
    pub restarts: u32,
    pub last_reason: Option<Reason>,
    pub last_exit: Option<Exit>,
    pub history: Vec<(SystemTime, Reason, Option<Exit>)>,
    pub mark: String,
    pub stdout: Option<HeldPipe>,
    pub stderr: Option<HeldPipe>,
    /// Its notify socket (the app's NOTIFY_SOCKET), if it has one.
    #[serde(default)]
    pub notify: Option<HeldNotify>,
    /// What it stored with FDSTORE=1: names and descriptors.
    #[serde(default)]
    pub fd_store: Vec<(String, RawFd)>,
}

/// A notify socket: where it is bound, and its descriptor.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldNotify {
    pub fd: RawFd,
    pub path: std::path::PathBuf,
    pub env_value: String,
}

/// One output pipe's read end.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldPipe {
    pub fd: RawFd,
    pub leftover: Vec<u8>,
}

/// One cluster socket eco holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldSocket {
    pub addr: ListenAddr,
    /// `None`: the address's one shared socket; else the instance slot of
    /// a per-instance socket (`u32::MAX`: the one kept while none runs).
    pub slot: Option<u32>,
    pub users: u32,
    pub fd: RawFd,
}

/// An instance for the new daemon to take over, descriptors owned.
pub struct Adoptee {
    pub pid: i32,
    pub started: Option<SystemTime>,
    pub status: Status,
    pub restarts: u32,
    pub last_reason: Option<Reason>,
    pub last_exit: Option<Exit>,
    pub history: Vec<HistoryEntry>,
    pub mark: String,
    pub stdout: Option<(OwnedFd, Vec<u8>)>,
    pub stderr: Option<(OwnedFd, Vec<u8>)>,
    pub notify: Option<NotifySocket>,
    pub fd_store: Vec<(String, OwnedFd)>,
    /// The process ended while no daemon watched it (or its pid now names
    /// another process): nothing is adopted, the run ends at once with its
    /// exit status unknown, and the restart policy decides.
    pub gone: bool,
}

/// Why a handover cannot be taken.
#[derive(Debug, thiserror::Error)]
pub enum AdoptError {
    #[error(
        "descriptor {fd} named in the handover ({what}) is not open; the previous daemon did not pass it"
    )]
    NotOpen { fd: RawFd, what: String },
}

impl Engine {
    /// Describes every running instance with the descriptors to keep, and
    /// every cluster socket. Call after [`quiesce`] and [`parked`]: the
    /// pipes are the parked ones. Every descriptor named is released from
    /// ownership (it must survive until the exec; the caller clears its
    /// close-on-exec flag through [`RuntimeHandover::fds`]).
    pub async fn hand_over(&self) -> RuntimeHandover {
        let mut pipes: BTreeMap<(InstanceId, bool), ParkedPipe> = QUIESCE
            .parked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .map(|p| ((p.id.clone(), p.stream == Stream::Out), p))
            .collect();
        let mut take = |id: &InstanceId, out: bool| {
            let parked = pipes.remove(&(id.clone(), out))?;
            match parked.head.into_fd() {
                Ok(fd) => Some(HeldPipe {
                    fd: fd.into_raw_fd(),
                    leftover: parked.leftover,
                }),
                Err(err) => {
                    tracing::warn!(%err, instance = ?id, "cannot hand over an output pipe");
                    None
                }
            }
        };
        let mut notifies: BTreeMap<InstanceId, ParkedNotify> = PARKED_NOTIFY
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
            .map(|p| (p.id.clone(), p))
            .collect();
        let mut instances = self
            .held_instances(&mut |pid, _| crate::procfs::start_time(pid))
            .await;
        for held in &mut instances {
            let id = InstanceId {
                project: held.project.clone(),
                app: held.app.clone(),
                index: held.index,
            };
            held.stdout = take(&id, true);
            held.stderr = take(&id, false);
            if let Some(parked) = notifies.remove(&id) {
                (held.notify, held.fd_store) = hold_notify(parked);
            }
        }
        // Pipes of processes that are gone: closed here, their output read.
        drop(pipes);
        let sockets = self.listeners.held();
        RuntimeHandover {
            instances,
            sockets,
            sharing: self
                .listeners
                .sharing_decided()
                .map(|s| s.as_str().to_owned()),
        }
    }

    /// Every cluster socket held (descriptor numbers borrowed: use them
    /// before the next await), and how TCP addresses are held.
    pub fn held_sockets(&self) -> (Vec<HeldSocket>, Option<String>) {
        (
            self.listeners.held(),
            self.listeners
                .sharing_decided()
                .map(|s| s.as_str().to_owned()),
        )
    }

    /// Every instance with a process, as a handover describes it, without
    /// its descriptors (the descriptor holder keeps those by key).
    /// `start_time` reads a pid's start time (the pid and its run's spawn
    /// mark; a caller that asks often caches it).
    pub async fn held_instances(
        &self,
        start_time: &mut (dyn FnMut(i32, &str) -> Option<u64> + Send),
    ) -> Vec<HeldInstance> {
        let projects = self.projects.lock().await;
        let mut instances = Vec::new();
        for (project, runtime) in projects.iter() {
            for (app, rt) in &runtime.apps {
                for handle in &rt.instances {
                    let state = handle.state.borrow();
                    let Some(pid) = state.pid else { continue };
                    instances.push(HeldInstance {
                        project: project.clone(),
                        app: app.clone(),
                        index: handle.index,
                        pid,
                        start_time: start_time(pid, &state.mark),
                        started: state.started,
                        status: state.status,
                        restarts: state.restarts,
                        last_reason: state.last_reason.clone(),
                        last_exit: state.last_exit,
                        history: state
                            .history
                            .iter()
                            .map(|h| (h.at, h.reason.clone(), h.exit))
                            .collect(),
                        mark: state.mark.clone(),
                        stdout: None,
                        stderr: None,
                        notify: None,
                        fd_store: Vec::new(),
                    });
                }
            }
        }
        instances
    }

    /// Takes what a previous daemon handed over: its cluster sockets now,
    /// its instances when their projects are restored (each launches from
    /// its running process instead of spawning). Instances whose process is
    /// gone, or whose pid now names another process, start afresh.
    pub fn expect(&self, handover: RuntimeHandover) -> Result<usize, AdoptError> {
        for socket in &handover.sockets {
            check_open(socket.fd, &format!("cluster socket {}", socket.addr))?;
        }
        for held in &handover.instances {
            let what = format!("{}/{}:{}", held.project, held.app, held.index);
            for pipe in [&held.stdout, &held.stderr].into_iter().flatten() {
                check_open(pipe.fd, &format!("output of {what}"))?;
            }
            if let Some(notify) = &held.notify {
                check_open(notify.fd, &format!("notify socket of {what}"))?;
            }
            for (name, fd) in &held.fd_store {
                check_open(*fd, &format!("stored descriptor {name} of {what}"))?;
            }
        }
        self.listeners
            .adopt(handover.sockets, handover.sharing.as_deref());
        let mut adoptees = self.lock_adoptees();
        for held in handover.instances {
            let key = (held.project.clone(), held.app.clone(), held.index);
            // Owned (and closed if not adopted) from here on.
            let own = |pipe: Option<HeldPipe>| pipe.map(|p| (cloexec(owned(p.fd)), p.leftover));
            let stdout = own(held.stdout);
            let stderr = own(held.stderr);
            let notify = held.notify.and_then(|n| {
                NotifySocket::from_held(owned(n.fd), n.path, n.env_value)
                    .inspect_err(|err| tracing::warn!(%err, "cannot take a notify socket back"))
                    .ok()
            });
            let fd_store: Vec<(String, OwnedFd)> = held
                .fd_store
                .into_iter()
                .map(|(name, fd)| (name, cloexec(owned(fd))))
                .collect();
            let same =
                held.start_time.is_some() && crate::procfs::start_time(held.pid) == held.start_time;
            if !same {
                tracing::warn!(project = %held.project, app = %held.app, instance = held.index, pid = held.pid, "an instance's process ended while no daemon watched it (its exit status is lost): its restart policy decides");
            }
            adoptees.insert(
                key,
                Adoptee {
                    pid: held.pid,
                    started: held.started,
                    status: held.status,
                    restarts: held.restarts,
                    last_reason: held.last_reason,
                    last_exit: held.last_exit,
                    history: held
                        .history
                        .into_iter()
                        .map(|(at, reason, exit)| HistoryEntry { at, reason, exit })
                        .collect(),
                    mark: held.mark,
                    stdout,
                    stderr,
                    notify,
                    fd_store,
                    gone: !same,
                },
            );
        }
        Ok(adoptees.len())
    }

    /// The process a previous daemon handed over for this slot, if any.
    pub(crate) fn take_adoptee(&self, project: &str, app: &str, index: u32) -> Option<Adoptee> {
        self.lock_adoptees()
            .remove(&(project.to_owned(), app.to_owned(), index))
    }

    /// Handed-over processes no restored project claimed: stopped, as a
    /// dead daemon's leftovers are. Returns their pids (not those gone).
    pub fn unclaimed_adoptees(&self) -> Vec<i32> {
        std::mem::take(&mut *self.lock_adoptees())
            .into_values()
            .filter(|a| !a.gone)
            .map(|a| a.pid)
            .collect()
    }

    fn lock_adoptees(&self) -> std::sync::MutexGuard<'_, BTreeMap<AdopteeKey, Adoptee>> {
        self.adoptees.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) type AdopteeKey = (String, String, u32);

/// A parked notify socket and store as descriptor numbers (owned by
/// nobody from here: they must survive the exec).
fn hold_notify(parked: ParkedNotify) -> (Option<HeldNotify>, Vec<(String, RawFd)>) {
    let notify = parked.socket.and_then(|socket| match socket.into_held() {
        Ok((fd, path, env_value)) => Some(HeldNotify {
            fd: fd.into_raw_fd(),
            path,
            env_value,
        }),
        Err(err) => {
            tracing::warn!(%err, instance = ?parked.id, "cannot hand over a notify socket");
            None
        }
    });
    let store = parked
        .store
        .into_fds()
        .into_iter()
        .map(|(name, fd)| (name, fd.into_raw_fd()))
        .collect();
    (notify, store)
}

impl RuntimeHandover {
    /// Every descriptor the handover names: kept open across the exec.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds: Vec<RawFd> = self.sockets.iter().map(|s| s.fd).collect();
        for held in &self.instances {
            fds.extend(
                [&held.stdout, &held.stderr]
                    .into_iter()
                    .flatten()
                    .map(|p| p.fd),
            );
            fds.extend(held.notify.iter().map(|n| n.fd));
            fds.extend(held.fd_store.iter().map(|(_, fd)| *fd));
        }
        fds
    }
}

fn check_open(fd: RawFd, what: &str) -> Result<(), AdoptError> {
    if nix::fcntl::fcntl(borrow_for_check(fd), nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return Err(AdoptError::NotOpen {
            fd,
            what: what.to_owned(),
        });
    }
    Ok(())
}

/// A descriptor number as a borrowed fd for one `fcntl`.
#[allow(unsafe_code)]
fn borrow_for_check(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: only used for F_GETFD, which fails cleanly (EBADF) on a
    // number that is not open; nothing is read or written through it.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// Owns a descriptor the previous daemon handed over.
#[allow(unsafe_code)]
pub(crate) fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the handover names each descriptor once, the exec kept it
    // open (checked before), and nothing else in this process owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Marks a descriptor handed over close-on-exec again (only what a spawn
/// hands down may reach an app).
fn cloexec(fd: OwnedFd) -> OwnedFd {
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    );
    fd
}
