//! One instance, as a task (an actor): it waits for its dependencies, starts
//! the process, watches readiness, restarts it by the policy, and stops it
//! when told. It publishes its state on a watch channel and reports events;
//! it never blocks anything else while a process starts or stops.
//!
//! - `mod.rs`: the handle, the task and its restart loop (by the policy).
//! - `start`: one run's set-up and its one spawn.
//! - `running`: one run as a state machine (`Running`, `Phase`, one method
//!   per event).
//! - `notify_messages`: what the run does with sd_notify datagrams.
//! - `hand_over`: the daemon a launcher that exited 0 left.
//! - `adopted`: a run from a process a previous daemon handed over
//!   (`eco update`), and the quiesce that parks a run for the next daemon.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::cgroup::{Cgroup, Subtree};
use super::kill::Scope;
use super::notify::fd_store::FdStore;
use super::notify::trust::{self, Refusal, Refusals};
use super::output::{LineMatcher, Sink, pump_from};
use super::spawner::Machine;
use super::{Event, InstanceId, Observer, Stream};
use crate::policy::{self, AfterExit};
use crate::spec::{InstanceSpec, Ready, Settings};
use crate::state::{Exit, Reason, Status};

mod adopted;
mod hand_over;
mod notify_messages;
mod running;
mod start;

pub use adopted::adopt;

/// Restart history entries kept per instance.
const HISTORY: usize = 20;

/// Names each instance's cgroup uniquely (an old and a new instance of one
/// slot run side by side during a rolling replacement).
static CGROUP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What an instance is doing, as `ls` and `describe` show it.
#[derive(Clone, Debug)]
pub struct InstanceState {
    pub status: Status,
    pub pid: Option<i32>,
    /// When the current process started.
    pub started: Option<SystemTime>,
    pub restarts: u32,
    pub last_exit: Option<Exit>,
    /// Why it was last (re)started.
    pub last_reason: Option<Reason>,
    pub history: VecDeque<HistoryEntry>,
    /// The spawn mark of the current process (finds its escaped children).
    pub mark: String,
    /// The launcher exited 0 and left a daemon that eco now supervises,
    /// guessed without a `pid_file`: `ls` and `describe` warn about it.
    pub daemonized: bool,
    /// Why the last start failed (a missing program, EACCES, a missing cwd,
    /// EMFILE…); cleared by the next start that works.
    pub last_error: Option<String>,
    /// The app's last `STATUS=` (sd_notify).
    pub status_text: Option<String>,
    /// Between `RELOADING=1` and `READY=1`.
    pub reloading: bool,
    /// Notify datagrams and messages refused (from outside the instance,
    /// an invalid `MAINPID=`, descriptors over the store's cap).
    pub notify_rejected: u64,
}

/// One restart, for `describe`.
#[derive(Clone, Debug)]
pub struct HistoryEntry {
    pub at: SystemTime,
    pub reason: Reason,
    pub exit: Option<Exit>,
}

/// Messages to an instance.
#[derive(Debug)]
pub enum Control {
    /// Stop gracefully and end.
    Stop,
    /// Stop gracefully and start again at once.
    Restart(Reason),
    /// New in-place settings (restart policy, timeouts, ...).
    Update(Box<Settings>),
    /// `reload_signal` in place; answered once the app is ready again.
    Reload(oneshot::Sender<Result<(), String>>),
}

/// The handle the engine keeps for each instance.
#[derive(Clone)]
pub struct InstanceHandle {
    pub index: u32,
    pub state: watch::Receiver<InstanceState>,
    control: mpsc::UnboundedSender<Control>,
}

impl InstanceHandle {
    pub fn send(&self, control: Control) {
        let _ = self.control.send(control);
    }

    /// True once the task has ended (stopped for good).
    pub fn is_finished(&self) -> bool {
        self.control.is_closed()
    }

    /// Resolves when the task has ended.
    pub fn finished(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut state = self.state.clone();
        async move { while state.changed().await.is_ok() {} }
    }
}

/// What must hold before the first start.
#[derive(Default)]
pub struct Gate {
    /// The instance this one replaces: start only once it has ended.
    pub after: Option<watch::Receiver<InstanceState>>,
    /// Instances that must be online first: the dependencies' instances,
    /// and in a rolling replacement the previous new instance.
    pub deps: Vec<watch::Receiver<InstanceState>>,
}

/// Everything an instance task needs.
pub struct Launch {
    pub id: InstanceId,
    pub spec: InstanceSpec,
    pub settings: Settings,
    pub reason: Option<Reason>,
    /// The replaced instance's restart count and history, carried over.
    pub carry: Option<InstanceState>,
    pub gate: Gate,
    pub mark_prefix: String,
    /// Cluster sockets, and which of them this app listens on.
    pub listeners: Arc<super::listen::Listeners>,
    pub listen: Vec<crate::spec::ListenAddr>,
    /// The spawner, the clock and the apps' descriptor limit.
    pub machine: Machine,
    /// The engine's spawn turns (see `turn`).
    pub turns: super::turn::Turns,
    pub observer: Arc<dyn Observer>,
    /// The engine's tracker: the instance's task and its helpers belong to it.
    pub tasks: TaskTracker,
    /// eco's cgroup subtree, when cgroups contain the instances.
    pub cgroups: Option<Arc<Subtree>>,
    /// `pid_file` of the app (absolute).
    pub pid_file: Option<std::path::PathBuf>,
    /// `watchdog` of the app.
    pub watchdog: Option<Duration>,
    /// Where a failing health check asks for a graceful restart.
    pub restarts: mpsc::UnboundedSender<super::RestartRequest>,
}

/// A handle for an instance that is not running (restored as user-stopped):
/// its task has already ended, so `start` launches a fresh one.
pub fn stopped(index: u32) -> InstanceHandle {
    let (control, _) = mpsc::unbounded_channel();
    let (_, state) = watch::channel(InstanceState {
        status: Status::Stopped,
        pid: None,
        started: None,
        restarts: 0,
        last_exit: None,
        last_reason: None,
        history: VecDeque::new(),
        mark: String::new(),
        daemonized: false,
        last_error: None,
        status_text: None,
        reloading: false,
        notify_rejected: 0,
    });
    InstanceHandle {
        index,
        state,
        control,
    }
}

/// Starts the task and returns its handle.
pub fn launch(launch: Launch) -> InstanceHandle {
    launch_with(launch, None)
}

/// [`launch`]; with `adopted`, the first run supervises that running
/// process instead of spawning one.
fn launch_with(launch: Launch, adopted: Option<Box<super::adopt::Adoptee>>) -> InstanceHandle {
    let (control, control_rx) = mpsc::unbounded_channel();
    let (restarts, history, last_exit) = match launch.carry {
        Some(old) => {
            let mut history = old.history;
            if let Some(reason) = &launch.reason {
                if history.len() == HISTORY {
                    history.pop_front();
                }
                history.push_back(HistoryEntry {
                    at: launch.machine.clock.now(),
                    reason: reason.clone(),
                    exit: old.last_exit,
                });
            }
            if let Some(reason) = &launch.reason {
                let restarted = Event::Restarted {
                    reason: reason.clone(),
                };
                launch.observer.event(&launch.id, &restarted);
            }
            (old.restarts + 1, history, old.last_exit)
        }
        None => (0, VecDeque::new(), None),
    };
    let (state_tx, state) = watch::channel(InstanceState {
        status: Status::Starting,
        pid: None,
        started: None,
        restarts,
        last_exit,
        last_reason: launch.reason.clone(),
        history,
        mark: String::new(),
        daemonized: false,
        last_error: None,
        status_text: None,
        reloading: false,
        notify_rejected: 0,
    });
    let index = launch.id.index;
    let actor = Actor {
        listeners: launch.listeners,
        listen: launch.listen,
        fd_store: FdStore::owned_by(crate::runtime::feed::owner(&launch.id)),
        id: Arc::new(launch.id),
        mark_prefix: launch.mark_prefix,
        spec: launch.spec,
        settings: launch.settings,
        control: control_rx,
        state: state_tx,
        machine: launch.machine,
        turns: launch.turns,
        observer: launch.observer,
        tasks: launch.tasks.clone(),
        cgroups: launch.cgroups,
        cgroup: None,
        probe_cgroup: None,
        spec_pid_file: launch.pid_file,
        watchdog: launch.watchdog,
        restarts: launch.restarts,
        refusals: Refusals::default(),
        adopted,
    };
    launch.tasks.spawn(actor.run(launch.gate));
    InstanceHandle {
        index,
        state,
        control,
    }
}

struct Actor {
    listeners: Arc<super::listen::Listeners>,
    listen: Vec<crate::spec::ListenAddr>,
    id: Arc<InstanceId>,
    mark_prefix: String,
    spec: InstanceSpec,
    settings: Settings,
    control: mpsc::UnboundedReceiver<Control>,
    state: watch::Sender<InstanceState>,
    machine: Machine,
    turns: super::turn::Turns,
    observer: Arc<dyn Observer>,
    tasks: TaskTracker,
    cgroups: Option<Arc<Subtree>>,
    /// This instance's cgroup and its probes', once created.
    cgroup: Option<Cgroup>,
    probe_cgroup: Option<Cgroup>,
    spec_pid_file: Option<std::path::PathBuf>,
    watchdog: Option<Duration>,
    restarts: mpsc::UnboundedSender<super::RestartRequest>,
    /// Fds the app stored with FDSTORE=1 (`fd_store`), handed back at its
    /// next start after the listen sockets.
    fd_store: FdStore,
    /// Notify datagrams and messages refused, and when they were last logged.
    refusals: Refusals,
    /// A running process handed over by the previous daemon: the first
    /// run supervises it instead of spawning (see `adopted`).
    adopted: Option<Box<super::adopt::Adoptee>>,
}

/// How one run of the process ended.
enum RunEnd {
    /// It exited by itself (or failed to start or to become ready);
    /// `reason` is why it would restart.
    Exited {
        exit: Exit,
        ran_for: Duration,
        reason: Reason,
        /// The launcher exited but never handed over (`pid_file`): a
        /// failure whatever its exit code.
        failed_start: bool,
    },
    /// Stopped on request: the task ends.
    Stopped,
    /// Stopped on request to start again.
    Restart(Reason),
}

/// What arrived while waiting between runs.
enum Wake {
    Start(Option<Reason>),
    End,
}

impl Actor {
    async fn run(mut self, gate: Gate) {
        self.supervise(gate).await;
        self.remove_cgroups();
    }

    async fn supervise(&mut self, gate: Gate) {
        if !self.pass_gate(gate).await {
            self.set(|s| s.status = Status::Stopped);
            return;
        }
        let mut crashes = 0u32;
        loop {
            match self.run_once().await {
                RunEnd::Stopped => {
                    self.set(|s| {
                        s.status = Status::Stopped;
                        s.pid = None;
                    });
                    return;
                }
                RunEnd::Restart(reason) => {
                    crashes = 0;
                    self.record_restart(reason, None);
                }
                RunEnd::Exited {
                    exit,
                    ran_for,
                    reason: exit_reason,
                    failed_start,
                } => match if failed_start {
                    policy::after_failed_start(&self.settings, crashes)
                } else {
                    policy::after_exit(&self.settings, exit, ran_for, crashes)
                } {
                    AfterExit::Restart { delay, crashes: c } => {
                        crashes = c;
                        self.set(|s| {
                            s.status = Status::Backoff;
                            s.pid = None;
                        });
                        self.event(&Event::Restarting { delay });
                        match self.pause(delay).await {
                            Wake::End => return self.end(),
                            Wake::Start(reason) => {
                                if reason.is_some() {
                                    crashes = 0;
                                }
                                self.record_restart(reason.unwrap_or(exit_reason), Some(exit));
                            }
                        }
                    }
                    decision @ (AfterExit::Errored | AfterExit::Stopped) => {
                        let errored = decision == AfterExit::Errored;
                        self.set(|s| {
                            s.status = if errored {
                                Status::Errored
                            } else {
                                Status::Stopped
                            };
                            s.pid = None;
                        });
                        if errored {
                            self.event(&Event::Errored { exit });
                        }
                        match self.idle().await {
                            Wake::End => return self.end(),
                            Wake::Start(reason) => {
                                crashes = 0;
                                self.record_restart(reason.unwrap_or(Reason::User), Some(exit));
                            }
                        }
                    }
                },
            }
        }
    }

    fn end(&self) {
        self.set(|s| {
            s.status = Status::Stopped;
            s.pid = None;
        });
    }

    fn set(&self, change: impl FnOnce(&mut InstanceState)) {
        self.state.send_modify(change);
        crate::runtime::feed::touch();
    }

    /// Starts reading one pipe of the run marked `mark`, listed for the
    /// descriptor holder while it is read.
    fn spawn_pump(
        &self,
        (pipe, leftover): (std::os::fd::OwnedFd, Vec<u8>),
        stream: Stream,
        mark: &str,
        matcher: Option<LineMatcher>,
        hurry: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let key = crate::runtime::feed::pipe_key(&self.id, mark, stream);
        let offered = crate::runtime::feed::offer(key, &pipe, crate::runtime::feed::Meta::Pipe);
        let pump = pump_from(pipe, self.sink(stream, matcher), hurry, leftover);
        self.tasks.spawn(async move {
            pump.await;
            drop(offered);
        })
    }

    /// Where one of this instance's pipes goes.
    fn sink(&self, stream: Stream, matcher: Option<LineMatcher>) -> Sink {
        Sink {
            id: Arc::clone(&self.id),
            stream,
            observer: Arc::clone(&self.observer),
            matcher,
        }
    }

    fn event(&self, event: &Event) {
        if let Event::SpawnFailed { error } = event {
            // The cause goes where users look: the app's err log (or the
            // terminal), `describe`, `ls` and `up --wait`.
            self.observer.output(
                &self.id,
                Stream::Err,
                format!("eco: {error}\n").as_bytes(),
                crate::runtime::pipe_head::Receipt::none(),
            );
            self.set(|s| s.last_error = Some(error.clone()));
        }
        self.observer.event(&self.id, event);
    }

    fn record_restart(&self, reason: Reason, exit: Option<Exit>) {
        self.observer.event(
            &self.id,
            &Event::Restarted {
                reason: reason.clone(),
            },
        );
        self.set(|s| {
            s.restarts += 1;
            s.last_reason = Some(reason.clone());
            if s.history.len() == HISTORY {
                s.history.pop_front();
            }
            s.history.push_back(HistoryEntry {
                at: self.machine.clock.now(),
                reason,
                exit,
            });
        });
    }

    /// Waits for the replaced instance to end and the dependencies to be
    /// online. False when told to stop meanwhile.
    async fn pass_gate(&mut self, gate: Gate) -> bool {
        let prerequisites = async {
            if let Some(mut after) = gate.after {
                while after.changed().await.is_ok() {}
            }
            for mut dep in gate.deps {
                let _ = dep.wait_for(|s| s.status == Status::Online).await;
            }
        };
        tokio::pin!(prerequisites);
        loop {
            tokio::select! {
                () = &mut prerequisites => return true,
                control = self.control.recv() => match control {
                    None | Some(Control::Stop) => return false,
                    Some(Control::Update(settings)) => self.settings = *settings,
                    Some(Control::Restart(_)) => {}
                    Some(Control::Reload(reply)) => {
                        let _ = reply.send(Ok(()));
                    }
                },
            }
        }
    }

    /// The backoff pause; a restart request cuts it short.
    async fn pause(&mut self, delay: Duration) -> Wake {
        if delay.is_zero() {
            // No timer: tokio's 1 ms granularity would be most of a respawn.
            while let Ok(control) = self.control.try_recv() {
                match control {
                    Control::Stop => return Wake::End,
                    Control::Restart(reason) => return Wake::Start(Some(reason)),
                    Control::Update(settings) => self.settings = *settings,
                    Control::Reload(reply) => {
                        let _ = reply.send(Err("it is not running".into()));
                    }
                }
            }
            return Wake::Start(None);
        }
        let deadline = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => return Wake::Start(None),
                control = self.control.recv() => match control {
                    None | Some(Control::Stop) => return Wake::End,
                    Some(Control::Restart(reason)) => return Wake::Start(Some(reason)),
                    Some(Control::Update(settings)) => self.settings = *settings,
                    Some(Control::Reload(reply)) => {
                        let _ = reply.send(Err("it is not running".into()));
                    }
                },
            }
        }
    }

    /// Errored or exited for good: wait for a restart or a stop.
    async fn idle(&mut self) -> Wake {
        loop {
            match self.control.recv().await {
                None | Some(Control::Stop) => return Wake::End,
                Some(Control::Restart(reason)) => return Wake::Start(Some(reason)),
                Some(Control::Update(settings)) => self.settings = *settings,
                Some(Control::Reload(reply)) => {
                    let _ = reply.send(Err("it is not running".into()));
                }
            }
        }
    }

    /// The instance's cgroup, created on the first run and kept across
    /// restarts; None without cgroup containment.
    fn cgroup(&mut self) -> Option<Cgroup> {
        // A killed cgroup is replaced by a fresh one, which a clone can
        // enter (see `Cgroup::killed`); its processes are gone by now.
        let killed = [&self.cgroup, &self.probe_cgroup]
            .into_iter()
            .flatten()
            .any(Cgroup::was_killed);
        if killed
            && [&self.cgroup, &self.probe_cgroup]
                .into_iter()
                .flatten()
                .all(Cgroup::is_empty)
        {
            for old in [self.cgroup.take(), self.probe_cgroup.take()]
                .into_iter()
                .flatten()
            {
                old.remove();
            }
        }
        if self.cgroup.is_none()
            && let Some(subtree) = &self.cgroups
        {
            let name = format!(
                "{}.{}.{}.{}",
                self.id.project,
                self.id.app,
                self.id.index,
                CGROUP_COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            // Exec probes (readiness or health) get a cgroup of their own;
            // apps without them pay for one mkdir, not two.
            let probes = matches!(self.settings.ready, Some(Ready::Exec(_)))
                || matches!(
                    self.settings.health.as_ref().map(|h| &h.probe),
                    Some(crate::spec::Probe::Exec(_))
                );
            match subtree.child(&name) {
                Ok(cgroup) => self.cgroup = Some(cgroup),
                Err(err) => {
                    tracing::warn!(%err, instance = ?self.id, "cannot create the instance's cgroup");
                }
            }
            if probes && self.cgroup.is_some() {
                match subtree.child(&format!("{name}.probe")) {
                    Ok(cgroup) => self.probe_cgroup = Some(cgroup),
                    Err(err) => {
                        tracing::warn!(%err, instance = ?self.id, "cannot create the probes' cgroup");
                    }
                }
            }
        }
        self.cgroup.clone()
    }

    /// Removes the instance's cgroups once it has ended.
    fn remove_cgroups(&mut self) {
        for cgroup in [self.cgroup.take(), self.probe_cgroup.take()]
            .into_iter()
            .flatten()
        {
            // An empty cgroup (the usual case) goes at the first try,
            // without reading it first.
            if !cgroup.try_remove() && !cgroup.is_empty() {
                cgroup.kill();
                cgroup.remove();
            }
        }
    }

    fn scope<'a>(&'a self, main: i32, mark: &'a str, cgroup: Option<&'a Cgroup>) -> Scope<'a> {
        Scope {
            spawner: &*self.machine.spawner,
            main,
            mark,
            cgroup,
        }
    }

    /// `write_pid_file`: the pid goes to the instance's file (PM2's
    /// `pid_file`); a failure is logged, and the app runs on, as in PM2.
    fn write_pid(&self, pid: i32) -> Option<(std::path::PathBuf, i32)> {
        let base = self.settings.write_pid_file.as_deref()?;
        let file = super::pid_write::file_of(base, self.id.index);
        match super::pid_write::write(&file, pid) {
            Ok(()) => Some((file, pid)),
            Err(err) => {
                tracing::warn!(%err, instance = ?self.id, file = %file.display(), "cannot write write_pid_file");
                None
            }
        }
    }

    /// Counts a refused notify datagram or message; logs at most one line
    /// per `trust::LOG_EVERY`.
    fn refuse(&mut self, refusal: Refusal) {
        let report = self.refusals.record(Instant::now(), refusal);
        let total = self.refusals.total;
        self.set(|s| s.notify_rejected = total);
        if let Some(report) = report {
            log_refusals(&self.id, &report);
        }
    }

    /// Records an exit, with the error the app reported (`ERRNO=`).
    fn exited_with(&self, exit: Exit, errno: Option<i32>) {
        self.set(|s| {
            s.last_exit = Some(exit);
            if let Some(errno) = errno {
                s.last_error = Some(format!(
                    "the app reported ERRNO={errno} ({})",
                    nix::errno::Errno::from_raw(errno).desc()
                ));
            }
        });
        self.event(&Event::Exited { exit });
    }
}

/// One line in daemon.log for refusals: how many, and the last reason
/// (never a datagram's content).
fn log_refusals(id: &InstanceId, report: &trust::Report) {
    tracing::warn!(
        instance = ?id,
        refused = report.count,
        total = report.total,
        last = %report.last,
        "refused notify messages (counted in `eco describe`; at most one line per {}s)",
        trust::LOG_EVERY.as_secs()
    );
}
