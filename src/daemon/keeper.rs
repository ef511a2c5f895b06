//! The daemon's side of the descriptor holder (`holder`): at start, take
//! back what a crashed daemon's holder kept ([`take`]) so its apps are
//! adopted instead of stopped; while running, keep a holder current
//! ([`Keeper`]): a duplicate of each output pipe and cluster socket by key,
//! "forget" when they close, and the instances' description whenever it
//! changes (debounced). The holder is never waited on by the daemon's
//! loop: its I/O runs on a blocking thread with a time limit, and a holder
//! that is slow or gone is logged and replaced, never a reason to stop.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::holder::{self, Conn, MAX_FDS, Message};
use crate::paths::Paths;
use crate::runtime::adopt::{HeldInstance, HeldNotify, HeldPipe, HeldSocket, RuntimeHandover};
use crate::runtime::feed::{self, Meta};
use crate::runtime::{Engine, InstanceId, Stream};

/// Changes closer together than this go to the holder in one send.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// How long a holder gets to hand everything over to the next daemon
/// (each message also within [`holder::IO_LIMIT`]).
const TAKE_LIMIT: Duration = Duration::from_secs(30);

/// How long a new holder gets to listen.
const START_LIMIT: Duration = Duration::from_secs(3);

/// After a holder failed, how long until another is started (doubling
/// after each failure, up to [`RETRY_MOST`]).
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// The longest wait between two holders that failed.
const RETRY_MOST: Duration = Duration::from_secs(300);

/// The most duplicates one sync opens (the daemon may run near its
/// descriptor limit: 10,000 instances hold 20,000 pipes); the rest go in
/// the syncs that follow at once.
const MAX_DUPS: usize = 1000;

/// The keys per [`Message::Forget`] (keys are short; this stays far under
/// the message limit).
const FORGET_BATCH: usize = 200;

/// What the holder keeps as the state: the running instances and cluster
/// sockets, each descriptor named by its key.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Kept {
    instances: Vec<HeldInstance>,
    sockets: Vec<(HeldSocket, String)>,
    sharing: Option<String>,
    /// Notify sockets: key → where bound, the app's NOTIFY_SOCKET.
    #[serde(default)]
    notifies: BTreeMap<String, (PathBuf, String)>,
    /// Stored descriptors: (instance, FDNAME, key).
    #[serde(default)]
    stores: Vec<(String, String, String)>,
}

/// What a crashed daemon's holder gave back.
pub struct Taken {
    /// The connection, kept: this daemon feeds the same holder.
    pub conn: Conn,
    /// Its instances and sockets, descriptors owned by this process (by
    /// number, as `Engine::expect` takes them).
    pub runtime: RuntimeHandover,
}

impl Taken {
    /// The adopted instances' notify sockets: the sweep of a dead daemon's
    /// sockets spares their files (the apps send to those addresses).
    pub fn notify_paths(&self) -> Vec<PathBuf> {
        self.runtime
            .instances
            .iter()
            .filter_map(|i| Some(i.notify.as_ref()?.path.clone()))
            .collect()
    }

    /// The pids of instances still running as described (a reused pid has
    /// another start time): the leftovers step spares them.
    pub fn live_pids(&self) -> Vec<i32> {
        self.runtime
            .instances
            .iter()
            .filter(|i| i.start_time.is_some() && crate::procfs::start_time(i.pid) == i.start_time)
            .map(|i| i.pid)
            .collect()
    }
}

/// Takes everything a holder at this home keeps, if one answers (and is
/// this uid's). A stale socket file (no holder) is removed. Blocking,
/// bounded by [`holder::IO_LIMIT`] per message: it runs before the daemon
/// serves anything.
pub fn take(paths: &Paths) -> Option<Taken> {
    let path = paths.holder();
    if std::fs::symlink_metadata(&path).is_err() {
        return None;
    }
    let conn = match Conn::connect(&path) {
        Ok(conn) => conn,
        Err(holder::Error::Socket {
            source: nix::Error::ECONNREFUSED | nix::Error::ENOENT,
            ..
        }) => {
            tracing::info!(socket = %path.display(), "removed a stale descriptor holder socket (no holder runs)");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        Err(err) => {
            tracing::warn!(%err, socket = %path.display(), "no descriptor holder to take the apps from; the previous daemon's apps are stopped as leftovers");
            let _ = std::fs::remove_file(&path);
            return None;
        }
    };
    let (mut fds, state) = match receive_all(&conn) {
        Ok(all) => all,
        Err(err) => {
            tracing::warn!(%err, "the descriptor holder did not hand everything over; the previous daemon's apps are stopped as leftovers");
            return None;
        }
    };
    let kept: Kept = if state.is_empty() {
        Kept::default()
    } else {
        match serde_json::from_str(&state) {
            Ok(kept) => kept,
            Err(err) => {
                tracing::warn!(%err, "the descriptor holder's state is not one this build reads; the previous daemon's apps are stopped as leftovers");
                return Some(Taken {
                    conn,
                    runtime: RuntimeHandover::default(),
                });
            }
        }
    };
    let runtime = runtime_of(kept, &mut fds);
    // Whatever no instance or socket named is closed here.
    drop(fds);
    Some(Taken { conn, runtime })
}

/// Sends [`Message::Take`] and gathers the answer.
fn receive_all(conn: &Conn) -> Result<(BTreeMap<String, OwnedFd>, String), holder::Error> {
    conn.send(&Message::Take, &[])?;
    let deadline = std::time::Instant::now() + TAKE_LIMIT;
    let mut fds = BTreeMap::new();
    let mut state = String::new();
    loop {
        if std::time::Instant::now() >= deadline {
            return Err(holder::Error::Garbled(format!(
                "it took over {}s to hand everything over",
                TAKE_LIMIT.as_secs()
            )));
        }
        let (message, received) = conn.receive()?;
        match message {
            Message::Put { keys } if keys.len() == received.len() => {
                fds.extend(keys.into_iter().zip(received));
            }
            Message::State { part, .. } => {
                if state.len() + part.len() > holder::MAX_STATE {
                    return Err(holder::Error::Garbled("the state is too large".into()));
                }
                state.push_str(&part);
            }
            Message::End => return Ok((fds, state)),
            other => {
                return Err(holder::Error::Garbled(format!("unexpected {other:?}")));
            }
        }
    }
}

/// The holder's description with its descriptors put back by number:
/// instances whose pipes are missing lose just those pipes; sockets whose
/// descriptor is missing are left out.
fn runtime_of(kept: Kept, fds: &mut BTreeMap<String, OwnedFd>) -> RuntimeHandover {
    let id_of = |held: &HeldInstance| InstanceId {
        project: held.project.clone(),
        app: held.app.clone(),
        index: held.index,
    };
    // An instance whose output pipe the holder lacks cannot be adopted: its
    // writes would fail. It is stopped as a leftover, and started again.
    let mut instances: Vec<HeldInstance> = kept
        .instances
        .into_iter()
        .filter(|held| {
            let id = id_of(held);
            let has = |stream| fds.contains_key(&feed::pipe_key(&id, &held.mark, stream));
            (held.stdout.is_none() || has(Stream::Out))
                && (held.stderr.is_none() || has(Stream::Err))
        })
        .collect();
    for held in &mut instances {
        let id = id_of(held);
        let mut pipe = |stream| {
            fds.remove(&feed::pipe_key(&id, &held.mark, stream))
                .map(|fd| HeldPipe {
                    fd: fd.into_raw_fd(),
                    leftover: Vec::new(),
                })
        };
        held.stdout = pipe(Stream::Out);
        held.stderr = pipe(Stream::Err);
        let key = feed::notify_key(&id, &held.mark);
        held.notify = kept.notifies.get(&key).and_then(|(path, env_value)| {
            Some(HeldNotify {
                fd: fds.remove(&key)?.into_raw_fd(),
                path: path.clone(),
                env_value: env_value.clone(),
            })
        });
        let owner = feed::owner(&id);
        held.fd_store = kept
            .stores
            .iter()
            .filter(|(of, _, _)| *of == owner)
            .filter_map(|(_, name, key)| Some((name.clone(), fds.remove(key)?.into_raw_fd())))
            .collect();
    }
    let sockets = kept
        .sockets
        .into_iter()
        .filter_map(|(mut socket, key)| {
            socket.fd = fds.remove(&key)?.into_raw_fd();
            Some(socket)
        })
        .collect();
    RuntimeHandover {
        instances,
        sockets,
        sharing: kept.sharing,
    }
}

/// Tells the holder at this home (if any) to let go of everything and
/// exit: `eco kill` when no daemon runs.
pub fn quit_holder(paths: &Paths) {
    if let Ok(conn) = Conn::connect(&paths.holder()) {
        let _ = conn.send(&Message::Quit, &[]);
    }
}

/// Keeps a holder current for as long as the daemon runs.
pub struct Keeper {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    idle: Arc<tokio::sync::Notify>,
}

impl Keeper {
    /// Starts keeping (on `conn`, else on a holder it starts).
    pub fn start(engine: Arc<Engine>, paths: &Paths, conn: Option<Conn>) -> Keeper {
        let stop = CancellationToken::new();
        let idle = Arc::new(tokio::sync::Notify::new());
        let sync = Sync {
            idle: Arc::clone(&idle),
            engine,
            path: paths.holder(),
            conn,
            sent: BTreeSet::new(),
            state: String::new(),
            pending: false,
            start_times: BTreeMap::new(),
        };
        let task = tokio::spawn(sync.run(stop.clone()));
        Keeper { stop, task, idle }
    }

    /// Notified when the daemon has dropped its code pages (idle): the
    /// holder is told to drop its own, so neither needs a timer of its own
    /// and both shrink at the same moment.
    pub fn idle(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.idle)
    }

    /// Cancelling it lets the holder go at once, with apps still stopping:
    /// for `eco kill`, which forgets every app, so a crash during the stop
    /// must not have the next daemon adopt them, and syncing thousands of
    /// stopping instances to the holder only slowed the stop.
    pub fn early_quit(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// A clean stop (every app has stopped): the holder lets go and exits.
    pub async fn quit(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// The keeping task's state.
struct Sync {
    /// The daemon went idle (see [`Keeper::idle`]).
    idle: Arc<tokio::sync::Notify>,
    engine: Arc<Engine>,
    path: PathBuf,
    conn: Option<Conn>,
    /// Keys the holder has.
    sent: BTreeSet<String>,
    /// The state the holder has.
    state: String,
    /// Start times by (pid, spawn mark): read once per run, not per sync.
    start_times: BTreeMap<(i32, String), Option<u64>>,
    /// The last sync left descriptors to pass (at most [`MAX_DUPS`] each).
    pending: bool,
}

impl Sync {
    async fn run(mut self, stop: CancellationToken) {
        if nix::sys::socket::UnixAddr::new(&self.path).is_err() {
            tracing::warn!(socket = %self.path.display(), "the descriptor holder's socket path is too long for a Unix socket: no holder, so a crash of this daemon takes its apps down (use a shorter ECO_HOME)");
            return;
        }
        let mut retry_at = tokio::time::Instant::now();
        let mut retry_after = RETRY_AFTER;
        loop {
            // No holder while there is nothing to hold: a daemon with no
            // app costs one process, as before.
            let wanted = self.conn.is_none() && self.holds_anything().await;
            if wanted && tokio::time::Instant::now() >= retry_at {
                self.conn = start_holder(&self.engine, &self.path).await;
                if self.conn.is_none() {
                    retry_at = tokio::time::Instant::now() + retry_after;
                    retry_after = (retry_after * 2).min(RETRY_MOST);
                } else {
                    retry_after = RETRY_AFTER;
                }
            }
            let began = tokio::time::Instant::now();
            if self.conn.is_some() && !self.sync().await {
                retry_at = tokio::time::Instant::now() + retry_after;
                retry_after = (retry_after * 2).min(RETRY_MOST);
            }
            // A sync of many instances costs: the next waits longer, so
            // that syncing takes at most a ninth of the thread (a third
            // cost 10,000 instances starting at once over a second).
            let pause = DEBOUNCE + 8 * began.elapsed();
            if self.pending && self.conn.is_some() {
                // More descriptors to pass than one sync duplicates.
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = stop.cancelled() => {}
                }
            } else {
                // Every change says so (an instance's state, a descriptor
                // listed or not): an idle daemon does not wake up for this.
                // Without a holder, the retry is due.
                let retry = async {
                    if wanted && self.conn.is_none() {
                        tokio::time::sleep_until(retry_at).await;
                    } else {
                        std::future::pending::<()>().await;
                    }
                };
                tokio::pin!(retry);
                loop {
                    tokio::select! {
                        () = feed::changed().notified() => {
                            tokio::select! {
                                () = tokio::time::sleep(pause) => {}
                                () = stop.cancelled() => {}
                            }
                        }
                        () = &mut retry => {}
                        () = stop.cancelled() => {}
                        () = self.idle.notified() => {
                            self.tell_idle();
                            continue;
                        }
                    }
                    break;
                }
            }
            if stop.is_cancelled() {
                if let Some(conn) = self.conn.take() {
                    let _ =
                        tokio::task::spawn_blocking(move || conn.send(&Message::Quit, &[])).await;
                }
                return;
            }
        }
    }

    /// Whether any instance has a process or any cluster socket is open:
    /// what a holder would keep.
    async fn holds_anything(&self) -> bool {
        self.engine
            .rows()
            .await
            .iter()
            .any(|r| r.state.pid.is_some())
            || !self.engine.held_sockets().0.is_empty()
    }

    /// The instances with a process, their start times read once per run.
    async fn instances(&mut self) -> Vec<HeldInstance> {
        let cache = &mut self.start_times;
        let mut seen = BTreeMap::new();
        let instances = self
            .engine
            .held_instances(&mut |pid, mark| {
                let key = (pid, mark.to_owned());
                let time = match cache.get(&key) {
                    Some(time) => *time,
                    None => crate::procfs::start_time(pid),
                };
                seen.insert(key, time);
                time
            })
            .await;
        // Only the runs still there stay cached.
        self.start_times = seen;
        instances
    }

    /// The cluster sockets by key (each key `wanted`), with duplicates of
    /// those the holder lacks added to `new`; how TCP addresses are held.
    fn sockets(
        &self,
        wanted: &mut BTreeSet<String>,
        new: &mut Vec<(String, OwnedFd)>,
    ) -> (Vec<(HeldSocket, String)>, Option<String>) {
        let (sockets, sharing) = self.engine.held_sockets();
        let mut kept = Vec::new();
        for mut socket in sockets {
            let Some(inode) = feed::inode(socket.fd) else {
                continue;
            };
            let key = format!("sock {} {:?} {inode}", socket.addr, socket.slot);
            if !self.sent.contains(&key)
                && let Some(dup) = feed::duplicate(socket.fd, inode)
            {
                new.push((key.clone(), dup));
            }
            socket.fd = -1;
            wanted.insert(key.clone());
            kept.push((socket, key));
        }
        (kept, sharing)
    }

    /// Brings the holder up to date; false (and the holder dropped) when
    /// it failed.
    async fn sync(&mut self) -> bool {
        let instances = self.instances().await;
        // From here to the send, no await: the descriptor numbers listed
        // stay the ones duplicated (they close on this thread only).
        let mut wanted = BTreeSet::new();
        let mut new: Vec<(String, OwnedFd)> = Vec::new();
        let (sockets, sharing) = self.sockets(&mut wanted, &mut new);
        let room = MAX_DUPS.saturating_sub(new.len());
        let (dups, listed) = feed::listed(|key| !self.sent.contains(key), room);
        self.pending = dups.len() == room;
        new.extend(dups);
        let kept = describe(instances, sockets, sharing, listed, &mut wanted);
        let state = serde_json::to_string(&kept).unwrap_or_default();
        let forget: Vec<String> = self.sent.difference(&wanted).cloned().collect();
        if new.is_empty() && forget.is_empty() && state == self.state {
            return true;
        }
        let messages = messages(&new, &forget, (state != self.state).then_some(&state));
        let put: Vec<String> = new.iter().map(|(key, _)| key.clone()).collect();
        let Some(conn) = self.conn.take() else {
            return false;
        };
        // Sent from here while the socket takes them (a reload's sync: no
        // thread woken, none started); what a full buffer leaves goes on
        // a blocking thread, bounded by the holder's I/O limit.
        let mut rest = messages.into_iter().peekable();
        let mut result = Ok(());
        while let Some((message, fds)) = rest.peek() {
            match conn.try_send(message, fds) {
                Ok(true) => {
                    rest.next();
                }
                Ok(false) => break,
                Err(err) => {
                    result = Err(err);
                    break;
                }
            }
        }
        let sent = if result.is_err() || rest.peek().is_none() {
            // The duplicates are the holder's now (or nobody's).
            drop(new);
            Ok((conn, result))
        } else {
            tokio::task::spawn_blocking(move || {
                let result = rest.try_for_each(|(message, fds)| conn.send(&message, &fds));
                drop(new);
                (conn, result)
            })
            .await
        };
        match sent {
            Ok((conn, Ok(()))) => {
                self.conn = Some(conn);
                // Listed but not passed yet (over the cap): the next sync.
                self.sent.retain(|key| wanted.contains(key));
                self.sent.extend(put);
                self.state = state;
                true
            }
            Ok((_, Err(err))) => {
                tracing::warn!(%err, "the descriptor holder is gone or stuck; starting another (until then, a crash of this daemon takes its apps down)");
                self.forget_holder();
                false
            }
            Err(err) => {
                tracing::warn!(%err, "the descriptor holder's sender failed");
                self.forget_holder();
                false
            }
        }
    }

    /// Tells the holder the daemon went idle: an empty
    /// [`Message::Forget`], which no sync sends (a holder of an older
    /// build does nothing with it). Never waits: a full socket means the
    /// holder is busy anyway.
    fn tell_idle(&self) {
        if let Some(conn) = &self.conn {
            let _ = conn.try_send(&Message::Forget { keys: Vec::new() }, &[]);
        }
    }

    fn forget_holder(&mut self) {
        self.conn = None;
        self.sent.clear();
        self.state.clear();
    }
}

/// The state for the holder: instances (with the pipes they have),
/// sockets, notify sockets and stored descriptors by key; every key listed
/// is `wanted`.
fn describe(
    mut instances: Vec<HeldInstance>,
    sockets: Vec<(HeldSocket, String)>,
    sharing: Option<String>,
    listed: Vec<(String, Meta)>,
    wanted: &mut BTreeSet<String>,
) -> Kept {
    let mut notifies = BTreeMap::new();
    let mut stores = Vec::new();
    for (key, meta) in listed {
        match meta {
            Meta::Pipe => {}
            Meta::Notify { path, env_value } => {
                notifies.insert(key.clone(), (path, env_value));
            }
            Meta::Stored { owner, name } => stores.push((owner, name, key.clone())),
        }
        wanted.insert(key);
    }
    for held in &mut instances {
        let id = InstanceId {
            project: held.project.clone(),
            app: held.app.clone(),
            index: held.index,
        };
        // Which pipes it has: without them at the next daemon, it is not
        // adopted.
        let expected = |stream| {
            wanted
                .contains(&feed::pipe_key(&id, &held.mark, stream))
                .then(|| HeldPipe {
                    fd: -1,
                    leftover: Vec::new(),
                })
        };
        held.stdout = expected(Stream::Out);
        held.stderr = expected(Stream::Err);
    }
    Kept {
        instances,
        sockets,
        sharing,
        notifies,
        stores,
    }
}

/// The messages of one sync: new descriptors, forgotten keys, the state.
fn messages(
    new: &[(String, OwnedFd)],
    forget: &[String],
    state: Option<&String>,
) -> Vec<(Message, Vec<RawFd>)> {
    let mut messages = Vec::new();
    for batch in new.chunks(MAX_FDS / 2) {
        messages.push((
            Message::Put {
                keys: batch.iter().map(|(key, _)| key.clone()).collect(),
            },
            batch.iter().map(|(_, fd)| fd.as_raw_fd()).collect(),
        ));
    }
    for batch in forget.chunks(FORGET_BATCH) {
        messages.push((
            Message::Forget {
                keys: batch.to_vec(),
            },
            Vec::new(),
        ));
    }
    if let Some(state) = state {
        messages.extend(
            holder::state_parts(state)
                .into_iter()
                .map(|part| (part, Vec::new())),
        );
    }
    messages
}

/// Starts `eco __holder` (its own session; it outlives this daemon) and
/// connects to it.
async fn start_holder(engine: &Engine, path: &Path) -> Option<Conn> {
    let exe = match super::update::exe().map_or_else(std::env::current_exe, Ok) {
        Ok(exe) => exe,
        Err(err) => {
            tracing::warn!(%err, "cannot find eco's binary to start the descriptor holder; a crash of this daemon will take its apps down");
            return None;
        }
    };
    let _ = std::fs::remove_file(path);
    let mut command = std::process::Command::new(exe);
    command
        .arg(holder::COMMAND)
        .arg(path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let started = match engine.reaper() {
        Some(reaper) => reaper.spawn(&mut command).map(drop),
        None => command.spawn().map(drop),
    };
    if let Err(err) = started {
        tracing::warn!(%err, "cannot start the descriptor holder; a crash of this daemon will take its apps down");
        return None;
    }
    let deadline = tokio::time::Instant::now() + START_LIMIT;
    loop {
        let try_path = path.to_path_buf();
        let connected = tokio::task::spawn_blocking(move || Conn::connect(&try_path)).await;
        match connected {
            Ok(Ok(conn)) => {
                tracing::info!(socket = %path.display(), "descriptor holder started");
                return Some(conn);
            }
            Ok(Err(err)) if tokio::time::Instant::now() >= deadline => {
                tracing::warn!(%err, "the descriptor holder did not come up; a crash of this daemon will take its apps down");
                return None;
            }
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::spec::ListenAddr;
    use crate::state::Status;

    fn instance(mark: &str) -> HeldInstance {
        HeldInstance {
            project: "p".into(),
            app: "a".into(),
            index: 0,
            pid: 42,
            start_time: Some(7),
            started: None,
            status: Status::Online,
            restarts: 3,
            last_reason: None,
            last_exit: None,
            history: Vec::new(),
            mark: mark.into(),
            stdout: None,
            stderr: None,
            notify: None,
            fd_store: Vec::new(),
        }
    }

    fn fd() -> OwnedFd {
        nix::unistd::pipe().unwrap().0
    }

    #[test]
    fn the_holders_keys_give_each_instance_its_descriptors_and_nothing_else() {
        let id = InstanceId {
            project: "p".into(),
            app: "a".into(),
            index: 0,
        };
        let mut fds: BTreeMap<String, OwnedFd> = BTreeMap::new();
        fds.insert(feed::pipe_key(&id, "m1", Stream::Out), fd());
        // A pipe of an earlier run of the same instance: not this run's.
        fds.insert(feed::pipe_key(&id, "m0", Stream::Err), fd());
        fds.insert(feed::notify_key(&id, "m1"), fd());
        fds.insert("store p/a/0 keep 9".into(), fd());
        fds.insert("sock 127.0.0.1:1 None 5".into(), fd());
        // An instance whose pipe the holder lacks: not adopted.
        let mut lacking = instance("m2");
        lacking.index = 1;
        lacking.stdout = Some(HeldPipe {
            fd: -1,
            leftover: Vec::new(),
        });
        let kept = Kept {
            instances: vec![instance("m1"), lacking],
            sockets: vec![
                (
                    HeldSocket {
                        addr: ListenAddr::Tcp("127.0.0.1:1".parse().unwrap()),
                        slot: None,
                        users: 0,
                        fd: -1,
                    },
                    "sock 127.0.0.1:1 None 5".into(),
                ),
                (
                    HeldSocket {
                        addr: ListenAddr::Tcp("127.0.0.1:2".parse().unwrap()),
                        slot: None,
                        users: 0,
                        fd: -1,
                    },
                    "sock 127.0.0.1:2 None 6".into(),
                ),
            ],
            sharing: Some("shared".into()),
            notifies: BTreeMap::from([(
                feed::notify_key(&id, "m1"),
                (PathBuf::from("/n/1.0"), "/n/1.0".into()),
            )]),
            stores: vec![("p/a/0".into(), "keep".into(), "store p/a/0 keep 9".into())],
        };
        let runtime = runtime_of(kept, &mut fds);
        assert_eq!(runtime.instances.len(), 1, "adopted without its output");
        let held = &runtime.instances[0];
        assert!(held.stdout.is_some());
        assert!(held.stderr.is_none(), "another run's pipe");
        assert_eq!(
            held.notify.as_ref().map(|n| n.env_value.as_str()),
            Some("/n/1.0")
        );
        assert_eq!(held.fd_store.len(), 1);
        assert_eq!(held.fd_store[0].0, "keep");
        assert_eq!(
            runtime.sockets.len(),
            1,
            "a socket without its descriptor is left out"
        );
        assert_eq!(fds.len(), 1, "only the stale pipe is left to close");
        // What was handed out is owned again by the test.
        for fd in runtime.fds() {
            drop(crate::runtime::adopt::owned(fd));
        }
    }
}
