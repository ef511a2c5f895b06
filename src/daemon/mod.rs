//! The daemon: the reconciler behind a Unix socket, state that survives the
//! daemon, output on disk. `main` takes the home and its lock; `run` wires
//! the engine, the reconciler and the socket together; `requests` answers
//! each request; `state` persists what is applied; `runtime::leftovers`
//! stops what a dead daemon left running.

pub mod idle_drop;
pub mod keeper;
pub mod log_file;
pub mod observe;
pub mod progress;
pub mod requests;
pub mod startup;
pub mod state;
pub mod stats;
pub mod supervisor;
pub mod update;

use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ipc::server;
use crate::logs::LogFiles;
use crate::paths::Paths;
use crate::reconcile::signals::Signals;
use crate::reconcile::{Host, Reconciler, Report};
use crate::runtime::Engine;
use crate::runtime::cgroup::Subtree;
use crate::runtime::leftovers;
use crate::runtime::reaper::Reaper;
use crate::runtime::spawner::Machine;
use crate::spec::ProjectSpec;

/// The project of apps started with `eco start SCRIPT`.
pub const DEFAULT_PROJECT: &str = "default";

/// Runs `eco daemon` until SIGTERM/SIGINT or `eco kill`. Returns early (Ok)
/// when another daemon already holds this ECO_HOME.
pub fn main(paths: Paths) -> anyhow::Result<()> {
    // Before anything of the daemon's own is open: what the starting
    // command inherited (a deploy script's flock) is not the daemon's.
    crate::fds::close_inherited();
    // Leave the caller's session: no terminal, no SIGHUP when it closes.
    // (Fails harmlessly when started as a process-group leader by a shell.)
    let _ = nix::unistd::setsid();
    crate::home::check_socket_path(&paths.socket())?;
    crate::home::prepare(&paths.home)?;
    let Some(lock) = startup::lock(&paths)? else {
        return Ok(());
    };
    let lock_inode = std::fs::metadata(paths.lock())
        .with_context(|| format!("cannot read {}", paths.lock().display()))?
        .ino();
    update::record_start(None);
    serve(paths, lock, lock_inode, None)
}

/// Runs the daemon holding `lock`: a fresh start, or one after `eco
/// update` with what the previous daemon handed over.
fn serve(
    paths: Paths,
    lock: nix::fcntl::Flock<std::fs::File>,
    lock_inode: u64,
    handover: Option<update::Handover>,
) -> anyhow::Result<()> {
    // Before the daemon opens its own: the lowest numbers are the slots'.
    crate::runtime::fd_slots::reserve();
    if let Some(nice) = crate::runtime::priority::raise() {
        tracing::info!(
            nice,
            "the daemon runs above its apps (they start at nice 0)"
        );
    }
    if let Some(limit) = startup::raise_nofile() {
        tracing::info!(limit, apps = ?startup::app_nofile(), "descriptor limit");
    }
    // Still one thread: the table's growth costs no RCU wait now.
    crate::fds::presize_table();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // An idle blocking thread ends after this, well before the code
        // pages are dropped (`idle_drop::SHORTEST` at least): with tokio's default of
        // 10 s, its exit ran code again after the drop and faulted
        // 0.6 MB of eco and libc back in for good.
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()?;
    let lock_fd = lock.as_raw_fd();
    let result = runtime.block_on(run(paths, lock_inode, lock_fd, handover));
    // The runtime (its blocking threads) ends before the lock goes: the
    // next daemon never runs beside this one.
    drop(runtime);
    drop(lock);
    result
}

/// How long an idle blocking thread (file reads, holder syncs) waits for
/// more work before it ends.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the idle drop hears of requests.
#[derive(Default)]
pub struct Commanded {
    /// Each request, as it is accepted.
    pub came: Notify,
    /// Set by a request that changes something (not a listing).
    pub changing: AtomicBool,
}

/// An `up`, a `reload` or a `scale` runs code an idle daemon does not run
/// again until the next such command (parsing, planning, the spawn path of
/// each kind of app), and each page of it stays resident. As at start-up,
/// the daemon drops its code pages once commands stop for a while (see
/// [`idle_drop::IdleDrop`]: 2 s, longer when changes keep coming back
/// soon after a drop); what it runs next faults back in from the page
/// cache (clean, file-backed pages: a minor fault each). One wake-up per
/// burst of commands; none while idle.
async fn drop_code_when_idle(
    commanded: Arc<Commanded>,
    holder_too: Arc<Notify>,
    stop: CancellationToken,
) {
    startup::drop_code_when_idle(
        &commanded.came,
        || commanded.changing.swap(false, Ordering::Relaxed),
        &stop,
        || holder_too.notify_one(),
    )
    .await;
}

/// The daemon proper: restore state, serve requests until a stop signal,
/// a `kill` request or the loss of its home, then stop every app.
async fn run(
    paths: Paths,
    lock_inode: u64,
    lock_fd: std::os::fd::RawFd,
    mut handover: Option<update::Handover>,
) -> anyhow::Result<()> {
    let mut signals = Signals::install()?;
    let supervisor = supervisor::Supervisor::from_env();
    tracing::info!(home = %paths.home.display(), pid = std::process::id(), "daemon starting");
    write_pid(&paths)?;
    let (holder, crashed, spare) = take_from_holder(&paths, handover.as_ref());
    let cgroups = clear_leftovers(&paths, handover.is_none(), &spare);
    let services = TaskTracker::new();
    let services_stop = CancellationToken::new();
    let reaper = Reaper::start(&services, services_stop.clone())
        .context("cannot become the child subreaper")?;
    let logs = LogFiles::new(paths.clone());
    let observed = Arc::new(observe::Observed::default());
    let watcher = Arc::new(observe::Watcher {
        inner: logs.clone(),
        observed: Arc::clone(&observed),
    });
    let machine = Machine::system(reaper, startup::app_nofile());
    let engine = Engine::new(machine, watcher, paths.token(), cgroups);
    services.spawn(supervisor.clone().ping_watchdog(services_stop.clone()));
    let saver = state::Saver::new(paths.state());
    services.spawn(Arc::clone(&saver).retry(services_stop.clone()));
    let life = Arc::new(requests::Life::default());
    let host = Arc::new(DaemonHost {
        engine: Arc::clone(&engine),
        supervisor: supervisor.clone(),
        logs: Arc::clone(&logs),
        saver: Arc::clone(&saver),
        life: Arc::clone(&life),
        observed: Arc::clone(&observed),
        socket_inode: std::sync::OnceLock::new(),
        home_lost: AtomicBool::new(false),
    });
    let reconciler = Reconciler::start(
        Arc::clone(&engine),
        Arc::clone(&host) as Arc<dyn Host>,
        Some(paths.logs()),
    );
    adopt_crashed(&engine, crashed)?;
    let not_restored = restore(&paths, &engine, &logs, &reconciler, handover.as_mut()).await?;
    let keeper = keeper::Keeper::start(Arc::clone(&engine), &paths, holder);
    let listener = listen(&paths, handover.as_ref())?;
    update::record_held(lock_fd, listener.as_raw_fd());
    tracing::info!(socket = %paths.socket().display(), fd = listener.as_raw_fd(), "listening");
    // Start-up code is done with: only what runs from now on stays mapped.
    startup::map_only_used_code();
    if let Ok(meta) = std::fs::metadata(paths.socket()) {
        let _ = host.socket_inode.set(meta.ino());
    }
    // Every project is restored and the socket serves: ready.
    announce_ready(&engine, &supervisor).await;
    let commanded = Arc::new(Commanded::default());
    let daemon = Arc::new(requests::Daemon {
        commanded: Arc::clone(&commanded),
        reconciler: Arc::clone(&reconciler),
        logs: Arc::clone(&logs),
        paths: paths.clone(),
        killed: Notify::new(),
        saver,
        life,
        not_restored: std::sync::Mutex::new(not_restored),
        observed,
    });
    let connections = TaskTracker::new();
    let hang_up = CancellationToken::new();
    let lost = home_lost(&paths, lock_inode);
    // Requests are served until every app has stopped: reads and `kill`
    // are answered during the stop, other requests refused with a reason.
    let holder_quit = keeper.early_quit();
    let until = async {
        tokio::select! {
            () = daemon.killed.notified() => holder_quit.cancel(),
            () = lost => {
                tracing::warn!(home = %paths.home.display(), "the home was removed or replaced: stopping every app and this daemon");
                host.home_lost.store(true, Ordering::SeqCst);
            }
        }
    };
    services.spawn(drop_code_when_idle(
        Arc::clone(&commanded),
        keeper.idle(),
        services_stop.clone(),
    ));
    let accept = serve_connections(&listener, &daemon, &commanded, &connections, &hang_up);
    tokio::select! {
        () = reconciler.serve(&mut signals, until) => {}
        () = accept => {}
    }
    // Every app has stopped: the holder has nothing left to keep.
    keeper.quit().await;
    // No new client from here on: commands start a new daemon, which waits
    // for this one's lock. Only the socket this daemon bound is removed.
    remove_own_socket(&paths, host.socket_inode.get());
    drop(listener);
    // `kill` requests were woken when every app stopped: one turn of the
    // runtime lets them send their last progress frame before the cut.
    tokio::task::yield_now().await;
    hang_up.cancel();
    connections.close();
    connections.wait().await;
    logs.flush();
    remove_own_pid(&paths);
    services_stop.cancel();
    services.close();
    services.wait().await;
    tracing::info!("daemon stopped");
    Ok(())
}

/// What a crashed daemon's descriptor holder kept: its connection, the
/// instances to adopt, and their pids (spared by the leftovers step; their
/// notify sockets by the sweep of a dead daemon's). After `eco update` the
/// holder's copies are stale (this daemon holds the originals): taken and
/// closed.
fn take_from_holder(
    paths: &Paths,
    handover: Option<&update::Handover>,
) -> (
    Option<crate::holder::Conn>,
    Option<crate::runtime::adopt::RuntimeHandover>,
    Vec<i32>,
) {
    // From here every pipe and socket the runtime opens is listed for the
    // holder (the adopted instances' too, whenever their tasks first run).
    crate::runtime::feed::enable();
    if let Some(handover) = handover {
        // Sockets adopted after a crash carry a dead daemon's pid.
        let notify = handover.runtime.instances.iter();
        crate::runtime::notify::place::spare(
            notify
                .filter_map(|i| Some(i.notify.as_ref()?.path.clone()))
                .collect(),
        );
    }
    match keeper::take(paths) {
        Some(taken) if handover.is_none() => {
            crate::runtime::notify::place::spare(taken.notify_paths());
            let spare = taken.live_pids();
            (Some(taken.conn), Some(taken.runtime), spare)
        }
        Some(taken) => (Some(taken.conn), None, Vec::new()),
        None => (None, None, Vec::new()),
    }
}

/// Writes this daemon's pid where `eco kill` and the tests look for it.
fn write_pid(paths: &Paths) -> anyhow::Result<()> {
    use std::io::Write;
    let mut pid = crate::home::open(&paths.pid(), crate::home::Open::Truncate)?;
    writeln!(pid, "{}", std::process::id())?;
    Ok(())
}

/// This ECO_HOME's cgroup subtree, where the machine allows; whatever a
/// dead daemon left in it goes first, then whatever carries its mark. After
/// `eco update` (`clear` false) they are this daemon's own, handed over.
fn clear_leftovers(paths: &Paths, clear: bool, spare: &[i32]) -> Option<Arc<Subtree>> {
    // The instances' notify sockets: their private folder, swept of a dead
    // daemon's (after `eco update` its own are the running instances').
    if clear {
        crate::runtime::notify::place::init(&paths.home);
    } else {
        crate::runtime::notify::place::init_keeping_own(&paths.home);
    }
    let cgroups = Subtree::create(&format!("eco-{}", paths.token())).map(Arc::new);
    if !clear {
        return cgroups;
    }
    let mut left = cgroups.as_ref().map_or(0, |c| c.clear_except(spare));
    left += leftovers::stop(&paths.token(), spare);
    if left > 0 {
        tracing::info!(left, "stopped the previous daemon's processes");
    }
    cgroups
}

/// The socket to serve on: bound afresh, or the one handed over.
fn listen(
    paths: &Paths,
    handover: Option<&update::Handover>,
) -> anyhow::Result<tokio::net::UnixListener> {
    Ok(match handover {
        Some(handover) => update::listener_of(handover.socket_fd)
            .context("cannot serve on the socket handed over")?,
        None => server::bind(&paths.socket())
            .with_context(|| format!("cannot listen on {}", paths.socket().display()))?,
    })
}

/// Expects the instances a crashed daemon's holder kept: the projects
/// restored next adopt them instead of starting them.
fn adopt_crashed(
    engine: &Engine,
    crashed: Option<crate::runtime::adopt::RuntimeHandover>,
) -> anyhow::Result<()> {
    if let Some(runtime) = crashed {
        let adopted = engine.expect(runtime)?;
        tracing::info!(
            adopted,
            "adopting the instances a crashed daemon left running"
        );
    }
    Ok(())
}

/// Starts the saved projects again; the reason when the state file could
/// not be read (`eco ls` shows it). After `eco update`, the state is the
/// one handed over and each running instance is adopted, not started.
async fn restore(
    paths: &Paths,
    engine: &Arc<Engine>,
    logs: &LogFiles,
    reconciler: &Reconciler,
    handover: Option<&mut update::Handover>,
) -> anyhow::Result<Option<String>> {
    let saved = match handover {
        Some(handover) => {
            let runtime = std::mem::take(&mut handover.runtime);
            let adopted = engine.expect(runtime)?;
            tracing::info!(adopted, "adopting the running instances");
            Ok(std::mem::take(&mut handover.state))
        }
        None => state::load(&paths.state()),
    };
    Ok(match saved {
        Ok(saved) => {
            // Ids first: each restored instance starts under its old id.
            engine.load_ids(&saved.ids);
            for project in saved.projects {
                logs.configure(&project.spec);
                engine.restore(project.spec, &project.user_stopped).await;
            }
            engine.settle_ids().await;
            reconciler.saved().await;
            stop_unclaimed(engine);
            None
        }
        Err(err) => {
            tracing::error!(%err, "state not restored");
            Some(err.to_string())
        }
    })
}

/// Handed-over processes that no restored project claims are stopped.
fn stop_unclaimed(engine: &Engine) {
    let unclaimed = engine.unclaimed_adoptees();
    if !unclaimed.is_empty() {
        tracing::warn!(
            ?unclaimed,
            "stopping handed-over processes no project claims"
        );
        crate::runtime::kill::kill_pids(&*engine.machine().spawner, &unclaimed);
    }
}

/// Tells the service manager (when there is one) that the daemon is ready.
async fn announce_ready(engine: &Engine, supervisor: &supervisor::Supervisor) {
    let projects = engine.projects().await;
    let instances: u32 = projects
        .iter()
        .flat_map(|p| p.apps.values())
        .map(|a| a.instances)
        .sum();
    supervisor.send(&format!(
        "READY=1\nSTATUS={} projects, {instances} instances",
        projects.len()
    ));
}

/// Serves each connection on its own task until `hang_up`. An accept that
/// fails (EMFILE/ENFILE at the descriptor limit) fails again at once: wait
/// 100 ms, doubling to 1 s, and log the episode once, not each try.
async fn serve_connections(
    listener: &tokio::net::UnixListener,
    daemon: &Arc<requests::Daemon>,
    commanded: &Commanded,
    connections: &TaskTracker,
    hang_up: &CancellationToken,
) {
    let mut failures: u32 = 0;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                commanded.came.notify_one();
                if failures > 0 {
                    tracing::info!(failures, "accepting connections again");
                    failures = 0;
                }
                let daemon = Arc::clone(daemon);
                let hang_up = hang_up.clone();
                connections.spawn(async move {
                    tokio::select! {
                        () = server::serve(stream, daemon) => {}
                        () = hang_up.cancelled() => {}
                    }
                });
            }
            Err(err) => {
                if failures == 0 {
                    tracing::warn!(%err, "cannot accept connections; retrying every second at most until it can (at the descriptor limit, see `ulimit -n`/LimitNOFILE)");
                }
                failures = failures.saturating_add(1);
                let delay = std::time::Duration::from_millis(100 << (failures - 1).min(4));
                tokio::time::sleep(delay.min(std::time::Duration::from_secs(1))).await;
            }
        }
    }
}

/// Removes the socket only if it is still the one this daemon bound.
fn remove_own_socket(paths: &Paths, inode: Option<&u64>) {
    let socket = paths.socket();
    if std::fs::metadata(&socket).is_ok_and(|m| Some(&m.ino()) == inode) {
        let _ = std::fs::remove_file(&socket);
    }
}

/// Removes the pid file only if it still names this daemon.
fn remove_own_pid(paths: &Paths) {
    let ours = std::fs::read_to_string(paths.pid())
        .is_ok_and(|p| p.trim() == std::process::id().to_string());
    if ours {
        let _ = std::fs::remove_file(paths.pid());
    }
}

/// Resolves when this daemon's home was removed or replaced: the lock file
/// at its path is no longer the one this daemon holds. Event-driven: an
/// inotify watch on the lock file (an unlink changes its link count) and on
/// the home folder itself (moved or deleted), read on the runtime, with no
/// thread of its own and no wake-up for the files written in the home.
/// Never resolves if it cannot watch.
#[allow(unsafe_code)]
async fn home_lost(paths: &Paths, lock_inode: u64) {
    use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
    let lock = paths.lock();
    let watch = || -> std::io::Result<tokio::io::unix::AsyncFd<Watch>> {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
        inotify.add_watch(
            &lock,
            AddWatchFlags::IN_ATTRIB | AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF,
        )?;
        inotify.add_watch(
            &paths.home,
            AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF | AddWatchFlags::IN_ONLYDIR,
        )?;
        // SAFETY: `Watch` owns the inotify instance and so its fd, which
        // stays open and the same until the AsyncFd (its only owner) drops.
        unsafe { tokio::io::unix::AsyncFd::register(Watch(inotify)) }
            .map_err(|err| err.into_parts().1)
    };
    let inotify = match watch() {
        Ok(inotify) => inotify,
        Err(err) => {
            tracing::warn!(%err, "cannot watch the home folder");
            return std::future::pending().await;
        }
    };
    let still_ours = || std::fs::metadata(&lock).is_ok_and(|m| m.ino() == lock_inode);
    while still_ours() {
        let Ok(mut ready) = inotify.readable().await else {
            return std::future::pending().await;
        };
        match ready.get_inner().0.read_events() {
            Ok(_) => {}
            Err(nix::errno::Errno::EAGAIN) => ready.clear_ready(),
            Err(err) => {
                tracing::warn!(%err, "cannot read the home folder's watch");
                return std::future::pending().await;
            }
        }
    }
}

/// An inotify instance that tokio can poll.
struct Watch(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for Watch {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsFd::as_fd(&self.0).as_raw_fd()
    }
}

/// The daemon's side of the reconciler: logs configured per project, the
/// state saved after every change, reports in daemon.log.
struct DaemonHost {
    /// Read for the instances' ids at each save.
    engine: Arc<Engine>,
    supervisor: supervisor::Supervisor,
    logs: Arc<LogFiles>,
    saver: Arc<state::Saver>,
    life: Arc<requests::Life>,
    /// Told of every save applied or refused (for `eco serve`).
    observed: Arc<observe::Observed>,
    /// The socket file this daemon bound: only that one is removed.
    socket_inode: std::sync::OnceLock<u64>,
    /// Set when the home was removed or replaced: nothing is written there.
    home_lost: AtomicBool,
}

impl Host for DaemonHost {
    fn configure(&self, spec: &ProjectSpec) {
        self.logs.configure(spec);
    }

    fn persist(&self, projects: Vec<(ProjectSpec, Vec<String>)>) {
        if self.home_lost.load(Ordering::SeqCst) {
            return;
        }
        self.saver.save(state::Snapshot {
            projects,
            ids: self.engine.saved_ids(),
        });
    }

    fn report(&self, report: Report) {
        match report {
            Report::Applied { project, actions } => {
                tracing::info!(%project, plan = ?actions, "file saved; applied");
                self.observed.saved(&project, None);
            }
            Report::NotApplied { project, errors } => {
                tracing::warn!(%project, %errors, "file saved with errors; nothing changed");
                self.observed.saved(&project, Some(errors));
            }
            Report::Restarting(trigger) => {
                tracing::info!(?trigger, "restarting");
            }
            Report::RolloutFailed { project, error } => {
                tracing::warn!(%project, %error, "rolling restart stopped");
            }
            Report::Stopping => {
                // From here on only reads (and `kill`) are answered.
                self.life.stopping.cancel();
                self.supervisor.send("STOPPING=1");
                tracing::info!("stopping every app");
            }
            Report::ReloadBegun => self.supervisor.reloading(),
            Report::ReloadDone => self.supervisor.send("READY=1"),
            Report::Killing => tracing::warn!("second stop signal: killing every app"),
            Report::Stopped => {
                self.life.stopped.cancel();
                tracing::info!("every app stopped");
            }
        }
    }
}
