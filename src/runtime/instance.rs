//! One instance, as a task (an actor): it waits for its dependencies, starts
//! the process, watches readiness, restarts it by the policy, and stops it
//! when told. It publishes its state on a watch channel and reports events;
//! it never blocks anything else while a process starts or stops.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::cgroup::{Cgroup, Subtree};
use super::kill::Scope;
use super::listen_broker::{BROKER_ENV, Borrower, Broker};
use super::notify::fd_store::FdStore;
use super::notify::trust::{self, Own, Procs, Refusal, Refusals};
use super::notify::{Datagram, Message, NotifySocket};
use super::output::{LineMatcher, Sink, pump};
use super::ready::{self, Probes};
use super::reaper::Reaper;
use super::spawn::{SPAWN_MARK, spawn};
use super::{Event, InstanceId, Observer, Stream, kill};
use crate::policy::{self, AfterExit};
use crate::spec::{InstanceSpec, Ready, Settings};
use crate::state::{Exit, Reason, Status};
use crate::untrusted::{self, Rules};

/// Restart history entries kept per instance.
const HISTORY: usize = 20;

static SPAWN_COUNTER: AtomicU64 = AtomicU64::new(0);

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
    pub reaper: Arc<Reaper>,
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
    let (control, control_rx) = mpsc::unbounded_channel();
    let (restarts, history, last_exit) = match launch.carry {
        Some(old) => {
            let mut history = old.history;
            if let Some(reason) = &launch.reason {
                if history.len() == HISTORY {
                    history.pop_front();
                }
                history.push_back(HistoryEntry {
                    at: SystemTime::now(),
                    reason: reason.clone(),
                    exit: old.last_exit,
                });
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
        id: Arc::new(launch.id),
        mark_prefix: launch.mark_prefix,
        spec: launch.spec,
        settings: launch.settings,
        control: control_rx,
        state: state_tx,
        reaper: launch.reaper,
        observer: launch.observer,
        tasks: launch.tasks.clone(),
        cgroups: launch.cgroups,
        cgroup: None,
        probe_cgroup: None,
        spec_pid_file: launch.pid_file,
        watchdog: launch.watchdog,
        restarts: launch.restarts,
        fd_store: FdStore::default(),
        refusals: Refusals::default(),
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
    reaper: Arc<Reaper>,
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
            self.observer
                .output(&self.id, Stream::Err, format!("eco: {error}\n").as_bytes());
            self.set(|s| s.last_error = Some(error.clone()));
        }
        self.observer.event(&self.id, event);
    }

    fn record_restart(&self, reason: Reason, exit: Option<Exit>) {
        self.set(|s| {
            s.restarts += 1;
            s.last_reason = Some(reason.clone());
            if s.history.len() == HISTORY {
                s.history.pop_front();
            }
            s.history.push_back(HistoryEntry {
                at: SystemTime::now(),
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
            if !cgroup.is_empty() {
                cgroup.kill();
            }
            cgroup.remove();
        }
    }

    fn scope<'a>(&'a self, main: i32, mark: &'a str, cgroup: Option<&'a Cgroup>) -> Scope<'a> {
        Scope {
            reaper: &self.reaper,
            main,
            mark,
            cgroup,
        }
    }

    #[allow(clippy::too_many_lines)]
    async fn run_once(&mut self) -> RunEnd {
        let mark = format!(
            "{}.{}.{}",
            self.mark_prefix,
            std::process::id(),
            SPAWN_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut extra = vec![(SPAWN_MARK, mark.clone())];
        let ready_kind = self.settings.ready.clone();
        let wants_notify = matches!(ready_kind, Some(Ready::Notify))
            || self.watchdog.is_some()
            || self.settings.fd_store > 0
            || self.settings.reload_signal.is_some();
        let notify = if wants_notify {
            match NotifySocket::bind() {
                Ok(socket) => {
                    extra.push(("NOTIFY_SOCKET", socket.env_value.clone()));
                    Some(socket)
                }
                Err(err) => {
                    self.event(&Event::SpawnFailed {
                        error: format!("cannot create the notify socket: {err}"),
                    });
                    return RunEnd::Exited {
                        exit: Exit::Code(127),
                        ran_for: Duration::ZERO,
                        reason: Reason::Crash,
                        failed_start: false,
                    };
                }
            }
        } else {
            None
        };
        // A Node cluster app asks for its ports at listen() time.
        let mut broker = None;
        if self.spec.env.contains_key(BROKER_ENV) {
            match Broker::bind() {
                Ok(bound) => {
                    extra.push((BROKER_ENV, bound.env_value.clone()));
                    broker = Some(bound);
                }
                Err(err) => tracing::warn!(%err, "cannot create the listen broker's socket"),
            }
        }
        let mut watchdog_every = self.watchdog;
        if let Some(every) = watchdog_every {
            extra.push(("WATCHDOG_USEC", every.as_micros().to_string()));
        }
        let (matcher, log_line) = match &ready_kind {
            Some(Ready::Log(pattern)) => match regex::Regex::new(pattern) {
                Ok(regex) => {
                    let (found, rx) = oneshot::channel();
                    let found = Arc::new(std::sync::Mutex::new(Some(found)));
                    (Some(LineMatcher { regex, found }), Some(rx))
                }
                Err(_) => (None, None),
            },
            _ => (None, None),
        };
        self.set(|s| {
            s.status = Status::Starting;
            s.mark.clone_from(&mark);
            s.daemonized = false;
            s.status_text = None;
            s.reloading = false;
        });
        // One spawn at a time, the daemon's sockets served between two.
        let turn = super::turn::take().await;
        let cgroup = self.cgroup();
        let sockets = super::spawn::Sockets {
            listeners: &self.listeners,
            addrs: &self.listen,
            slot: self.id.index,
            stored: self.fd_store.fds(),
        };
        let output = super::output_of(&*self.observer, &self.settings);
        let spawned = spawn(
            &self.reaper,
            &self.spec,
            &extra,
            Some(sockets),
            cgroup.as_ref(),
            output,
        );
        turn.pass().await;
        // The app has its own copies now; eco keeps them for the next start.
        let spawned = match spawned {
            Ok(spawned) => spawned,
            Err(err) => {
                let error = if self.spec.cwd.is_dir() {
                    format!("cannot start `{}`: {err}", self.spec.argv[0])
                } else {
                    format!(
                        "cannot start `{}`: its folder {} does not exist",
                        self.spec.argv[0],
                        self.spec.cwd.display()
                    )
                };
                self.event(&Event::SpawnFailed { error });
                return RunEnd::Exited {
                    exit: Exit::Code(127),
                    ran_for: Duration::ZERO,
                    reason: Reason::Crash,
                    failed_start: false,
                };
            }
        };
        // The supervised process: the spawned one, until a launcher that
        // daemonized hands over to its daemon (or MAINPID= moves it).
        let mut pid = spawned.pid;
        if let Some(broker) = broker.as_mut() {
            broker.serve(
                &self.tasks,
                Borrower {
                    listeners: Arc::clone(&self.listeners),
                    owner: format!("{}/{}", self.id.project, self.id.app),
                    slot: self.id.index,
                    pid,
                },
            );
        }
        let started = Instant::now();
        self.set(|s| {
            s.pid = Some(pid);
            s.started = Some(SystemTime::now());
            s.last_error = None;
        });
        self.event(&Event::Started { pid });
        let pid_written = self.write_pid(pid);
        let hurry = CancellationToken::new();
        let pipes = [(spawned.stdout, Stream::Out), (spawned.stderr, Stream::Err)];
        let pumps = Pumps {
            handles: pipes
                .into_iter()
                .filter_map(|(pipe, stream)| {
                    let sink = self.sink(stream, matcher.clone());
                    Some(self.tasks.spawn(pump(pipe?, sink, hurry.clone())))
                })
                .collect(),
            hurry,
        };
        let mut exit_rx = spawned.exit;
        // Held until this run has ended and its processes are gone.
        let _lease = spawned.lease;
        let (ready_tx, mut ready_rx) = oneshot::channel::<Result<(), String>>();
        let mut awaiting_ready = false;
        let mut ready_task = None;
        // `ready: notify` is decided here, from the datagrams, by this deadline.
        let mut notify_deadline: Option<Instant> = None;
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        // A server that writes a pid file is online once it has handed over.
        let forking = self.spec_pid_file.is_some();
        match ready_kind.clone() {
            Some(Ready::Notify) => {
                awaiting_ready = true;
                notify_deadline = Some(Instant::now() + self.settings.ready_timeout);
            }
            Some(kind) => {
                awaiting_ready = true;
                let reaper = Arc::clone(&self.reaper);
                let spec = self.spec.clone();
                let limit = self.settings.ready_timeout;
                let probes = Probes {
                    log_line,
                    cgroup: self.probe_cgroup.clone(),
                };
                ready_task = Some(self.tasks.spawn(async move {
                    let result =
                        match timeout(limit, ready::wait(&kind, probes, &reaper, &spec)).await {
                            Ok(result) => result,
                            Err(_) => Err(not_ready(limit, &kind)),
                        };
                    let _ = ready_tx.send(result);
                }));
            }
            None if forking => {}
            None => self.set(|s| s.status = Status::Online),
        }
        let mut watchdog_at = watchdog_every.map(|every| Instant::now() + every);
        let health = self.settings.health.clone();
        let mut health_at = health.as_ref().map(|h| Instant::now() + h.interval);
        let mut health_probe: Option<tokio::task::JoinHandle<bool>> = None;
        let mut health_failures = 0u32;
        let mut reload_reply: Option<oneshot::Sender<Result<(), String>>> = None;
        let mut reload_deadline: Option<Instant> = None;
        let mut reported_errno: Option<i32> = None;
        let mut handed_over = false;
        let own = Own::get();
        let end = loop {
            tokio::select! {
                exit = &mut exit_rx => {
                    let exit = exit.unwrap_or(Exit::Signal(libc::SIGKILL));
                    let mut failed_start = false;
                    if exit.success() && !handed_over {
                        match self.hand_over(pid, &mark, cgroup.as_ref()).await {
                            HandOver::To(main) => {
                                // A server that daemonized itself: supervise the daemon.
                                handed_over = true;
                                pid = main;
                                exit_rx = self.exit_of(main);
                                let guessed = !forking;
                                self.set(|s| {
                                    s.pid = Some(main);
                                    s.daemonized = guessed;
                                    if !awaiting_ready {
                                        s.status = Status::Online;
                                    }
                                });
                                self.event(&Event::HandedOver { pid: main, guessed });
                                continue;
                            }
                            HandOver::Nothing => {}
                            HandOver::Failed(error) => {
                                // Reported as a start that failed: what the
                                // launcher left goes below, before any restart.
                                self.event(&Event::SpawnFailed { error });
                                failed_start = true;
                            }
                        }
                    }
                    kill::clean_up_after(self.scope(pid, &mark, cgroup.as_ref())).await;
                    pumps.drain().await;
                    self.exited_with(exit, reported_errno);
                    break RunEnd::Exited {
                        exit,
                        ran_for: if failed_start { Duration::ZERO } else { started.elapsed() },
                        reason: if failed_start { Reason::NotReady } else { Reason::Crash },
                        failed_start,
                    };
                }
                result = &mut ready_rx, if ready_task.is_some() && awaiting_ready => {
                    awaiting_ready = false;
                    let failure = match result {
                        Ok(Ok(())) => None,
                        Ok(Err(reason)) => Some(reason),
                        Err(_) => Some("the readiness check ended".to_owned()),
                    };
                    let Some(reason) = failure else {
                        if !forking || handed_over {
                            self.set(|s| s.status = Status::Online);
                        }
                        self.event(&Event::Ready);
                        continue;
                    };
                    break self.not_ready(reason, pid, &mark, cgroup.as_ref(), &mut exit_rx, pumps).await;
                }
                () = tokio::time::sleep_until(notify_deadline.unwrap_or(far)), if awaiting_ready && notify_deadline.is_some() => {
                    let reason = not_ready(self.settings.ready_timeout, &Ready::Notify);
                    break self.not_ready(reason, pid, &mark, cgroup.as_ref(), &mut exit_rx, pumps).await;
                }
                datagram = recv_notify(notify.as_ref()) => {
                    let Ok(datagram) = datagram else { continue };
                    let members = Members { main: pid, mark: &mark, cgroup: cgroup.as_ref(), own };
                    if let Some(refusal) = trust::refuse_sender(&datagram, own, &members) {
                        // Its descriptors are closed here, at once.
                        drop(datagram);
                        self.refuse(refusal);
                        continue;
                    }
                    let fds = datagram.fds;
                    let mut fd_name = None;
                    let mut store = false;
                    let mut remove = false;
                    for message in datagram.messages {
                        match message {
                            Message::Ready => {
                                if awaiting_ready && notify_deadline.is_some() {
                                    awaiting_ready = false;
                                    if !forking || handed_over {
                                        self.set(|s| s.status = Status::Online);
                                    }
                                    self.event(&Event::Ready);
                                }
                                self.set(|s| s.reloading = false);
                                if let Some(reply) = reload_reply.take() {
                                    let _ = reply.send(Ok(()));
                                    reload_deadline = None;
                                }
                            }
                            Message::Reloading => self.set(|s| s.reloading = true),
                            Message::Stopping => self.set(|s| s.status = Status::Stopping),
                            Message::Status(text) => self.set(|s| s.status_text = Some(text)),
                            Message::Watchdog => {
                                watchdog_at = watchdog_every.map(|every| Instant::now() + every);
                            }
                            Message::WatchdogTrigger => watchdog_at = Some(Instant::now()),
                            Message::WatchdogUsec(usec) => {
                                watchdog_every = (usec > 0).then(|| Duration::from_micros(usec));
                                watchdog_at = watchdog_every.map(|every| Instant::now() + every);
                            }
                            Message::MainPid(main) if main == pid => {}
                            Message::MainPid(main) => {
                                let members = Members { main: pid, mark: &mark, cgroup: cgroup.as_ref(), own };
                                if let Some(why) = trust::refuse_main_pid(main, own, &members) {
                                    self.refuse(Refusal::MainPid { pid: main, why });
                                } else {
                                    pid = main;
                                    exit_rx = self.exit_of(main);
                                    self.set(|s| s.pid = Some(main));
                                }
                            }
                            Message::ExtendTimeoutUsec(usec) => {
                                let until = Instant::now() + Duration::from_micros(usec);
                                if let Some(deadline) = notify_deadline.as_mut() {
                                    *deadline = (*deadline).max(until);
                                }
                                if let Some(deadline) = reload_deadline.as_mut() {
                                    *deadline = (*deadline).max(until);
                                }
                            }
                            Message::Errno(errno) => reported_errno = Some(errno),
                            // The fds of a barrier are closed below, at once.
                            Message::Barrier => {}
                            Message::FdStore => store = true,
                            Message::FdStoreRemove => remove = true,
                            Message::FdName(name) => fd_name = Some(name),
                        }
                    }
                    let name = fd_name.unwrap_or_else(|| "stored".to_owned());
                    if remove {
                        self.fd_store.remove(&name);
                    }
                    if store && !fds.is_empty() {
                        let cap = usize::try_from(self.settings.fd_store).unwrap_or(usize::MAX);
                        if let Err((closed, why)) = self.fd_store.store(&name, fds, cap) {
                            self.refuse(Refusal::FdStoreFull { closed, why });
                        }
                    } else {
                        // A barrier's pipe, or descriptors sent without FDSTORE=1.
                        drop(fds);
                    }
                }
                () = tokio::time::sleep_until(watchdog_at.unwrap_or(far)), if watchdog_at.is_some() => {
                    self.event(&Event::WatchdogTimeout);
                    // As systemd: SIGABRT (a core dump shows where it hung).
                    let abort = crate::spec::Signal(libc::SIGABRT);
                    self.stop_with(abort, pid, &mark, cgroup.as_ref(), &mut exit_rx, pumps).await;
                    break RunEnd::Restart(Reason::Watchdog);
                }
                () = tokio::time::sleep_until(health_at.unwrap_or(far)), if health_at.is_some() && health_probe.is_none() => {
                    health_at = None;
                    if let Some(health) = &health
                        && self.state.borrow().status == Status::Online
                    {
                        health_probe = Some(self.tasks.spawn(ready::probe_once(
                            health.probe.clone(),
                            health.timeout,
                            Arc::clone(&self.reaper),
                            self.spec.clone(),
                            self.probe_cgroup.clone(),
                        )));
                    } else if let Some(health) = &health {
                        health_at = Some(Instant::now() + health.interval);
                    }
                }
                healthy = join_probe(&mut health_probe) => {
                    health_probe = None;
                    let Some(health) = &health else { continue };
                    health_at = Some(Instant::now() + health.interval);
                    if healthy {
                        health_failures = 0;
                        continue;
                    }
                    health_failures += 1;
                    self.event(&Event::Unhealthy { failures: health_failures });
                    if health_failures >= health.failures {
                        health_failures = 0;
                        let _ = self.restarts.send(super::RestartRequest {
                            project: self.id.project.clone(),
                            app: self.id.app.clone(),
                            instance: self.id.index,
                            reason: Reason::Health,
                        });
                    }
                }
                () = tokio::time::sleep_until(reload_deadline.unwrap_or(far)), if reload_deadline.is_some() => {
                    reload_deadline = None;
                    if let Some(reply) = reload_reply.take() {
                        let _ = reply.send(Err(format!(
                            "no READY=1 within {} of the reload signal",
                            humantime::format_duration(self.settings.ready_timeout)
                        )));
                    }
                }
                control = self.control.recv() => match control {
                    None | Some(Control::Stop) => {
                        let exit = self.stop_process_and_drain(pid, &mark, cgroup.as_ref(), &mut exit_rx, pumps).await;
                        self.event(&Event::Stopped { exit });
                        break RunEnd::Stopped;
                    }
                    Some(Control::Restart(reason)) => {
                        let exit = self.stop_process_and_drain(pid, &mark, cgroup.as_ref(), &mut exit_rx, pumps).await;
                        self.event(&Event::Stopped { exit });
                        break RunEnd::Restart(reason);
                    }
                    Some(Control::Update(settings)) => self.settings = *settings,
                    Some(Control::Reload(reply)) => {
                        let signal = self.settings.reload_signal.unwrap_or(crate::spec::Signal(libc::SIGHUP));
                        if let Ok(sig) = nix::sys::signal::Signal::try_from(signal.0) {
                            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
                        }
                        if matches!(ready_kind, Some(Ready::Notify)) {
                            // Answered on the READY=1 that ends the reload.
                            reload_reply = Some(reply);
                            reload_deadline = Some(Instant::now() + self.settings.ready_timeout);
                        } else {
                            let _ = reply.send(Ok(()));
                        }
                    }
                },
            }
        };
        if let Some(task) = ready_task {
            task.abort();
        }
        if let Some(probe) = health_probe {
            probe.abort();
        }
        if let Some(report) = self.refusals.flush() {
            log_refusals(&self.id, &report);
        }
        if let Some((file, written)) = pid_written {
            super::pid_write::remove(&file, written);
        }
        end
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

    /// Readiness failed: the process is stopped, and restarts (by the
    /// policy) with reason `not-ready`.
    async fn not_ready(
        &mut self,
        reason: String,
        pid: i32,
        mark: &str,
        cgroup: Option<&Cgroup>,
        exit_rx: &mut oneshot::Receiver<Exit>,
        pumps: Pumps,
    ) -> RunEnd {
        self.set(|s| s.last_error = Some(reason.clone()));
        self.event(&Event::NotReady { reason });
        let exit = self
            .stop_process_and_drain(pid, mark, cgroup, exit_rx, pumps)
            .await;
        RunEnd::Exited {
            exit,
            ran_for: Duration::ZERO,
            reason: Reason::NotReady,
            failed_start: false,
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

    /// After the launcher exited 0: the daemon it left, if any. With
    /// `pid_file`, the live process of the instance the file names, waited
    /// for up to `ready_timeout`; a file that never names one, or that is
    /// not a plain file (a FIFO, a device, a link, a huge file), fails the
    /// start. Without, the oldest process it left (systemd's GuessMainPID).
    /// The file is read off the loop (see [`crate::untrusted`]).
    async fn hand_over(&self, launcher: i32, mark: &str, cgroup: Option<&Cgroup>) -> HandOver {
        let scope = self.scope(launcher, mark, cgroup);
        let Some(file) = &self.spec_pid_file else {
            return kill::left_behind(scope)
                .first()
                .map_or(HandOver::Nothing, |pid| HandOver::To(*pid));
        };
        let waited = self.settings.ready_timeout;
        let deadline = Instant::now() + waited;
        let mut seen = PidFileSeen::Nothing;
        loop {
            match untrusted::read_off_loop(file.clone(), Rules::PID_FILE, PID_FILE_READ_LIMIT).await
            {
                Ok(text) => match text.trim().parse::<i32>() {
                    Ok(named)
                        if named > 0
                            && crate::procfs::alive(named)
                            && (kill::left_behind(scope).contains(&named)
                                || (cgroup.is_none() && self.adopted(named))) =>
                    {
                        return HandOver::To(named);
                    }
                    Ok(named) => seen = PidFileSeen::Pid(named),
                    Err(_) => seen = PidFileSeen::Text(text),
                },
                Err(err) if err.is_missing() => {}
                Err(err) => return HandOver::Failed(pid_file_refused(file, &err)),
            }
            if Instant::now() >= deadline {
                return HandOver::Failed(pid_file_missed(file, &seen, waited));
            }
            tokio::time::sleep(PID_FILE_POLL).await;
        }
    }

    /// True when `pid` is an orphan eco adopted and nothing else claims:
    /// without cgroups, the best sign that a pid file names this instance's
    /// daemon when the daemon hid its spawn mark.
    fn adopted(&self, pid: i32) -> bool {
        let own = i32::try_from(std::process::id()).unwrap_or(0);
        crate::procfs::parent(pid) == Some(own) && !self.reaper.is_tracked(pid)
    }

    /// The exit of a daemon eco adopted (as subreaper, it is eco's child
    /// once its launcher exited); a process eco did not adopt is watched
    /// for its end instead.
    fn exit_of(&self, pid: i32) -> oneshot::Receiver<Exit> {
        if crate::procfs::parent(pid) == Some(i32::try_from(std::process::id()).unwrap_or(0)) {
            return self.reaper.adopt(pid);
        }
        let (tx, rx) = oneshot::channel();
        self.tasks.spawn(async move {
            while crate::procfs::alive(pid) {
                tokio::time::sleep(FOREIGN_POLL).await;
            }
            let _ = tx.send(Exit::Code(0));
        });
        rx
    }

    async fn stop_process_and_drain(
        &mut self,
        pid: i32,
        mark: &str,
        cgroup: Option<&Cgroup>,
        exit_rx: &mut oneshot::Receiver<Exit>,
        pumps: Pumps,
    ) -> Exit {
        let signal = self.settings.stop_signal;
        self.stop_with(signal, pid, mark, cgroup, exit_rx, pumps)
            .await
    }

    /// Stops the process with `signal` (SIGKILL after `stop_timeout`) and
    /// lets its output drain.
    async fn stop_with(
        &mut self,
        signal: crate::spec::Signal,
        pid: i32,
        mark: &str,
        cgroup: Option<&Cgroup>,
        exit_rx: &mut oneshot::Receiver<Exit>,
        pumps: Pumps,
    ) -> Exit {
        self.set(|s| s.status = Status::Stopping);
        let exit = kill::stop(
            self.scope(pid, mark, cgroup),
            exit_rx,
            signal,
            self.settings.stop_timeout,
        )
        .await;
        self.set(|s| {
            s.last_exit = Some(exit);
            s.pid = None;
        });
        pumps.drain().await;
        exit
    }
}

/// How often a pid file is read while waiting for it.
const PID_FILE_POLL: Duration = Duration::from_millis(20);

/// How long one read of a pid file may take (a hung network mount).
const PID_FILE_READ_LIMIT: Duration = Duration::from_secs(2);

/// What a launcher that exited 0 left.
enum HandOver {
    /// The daemon to supervise from now on.
    To(i32),
    /// Nothing, and no `pid_file` was expected: the app simply exited.
    Nothing,
    /// The `pid_file` failed the start; why, for `last_error`.
    Failed(String),
}

/// What a pid file held the last time it was read.
enum PidFileSeen {
    /// Nothing: no file.
    Nothing,
    /// A pid, but not one of a live process of the app.
    Pid(i32),
    /// Something that is not a pid.
    Text(String),
}

/// `last_error` for a pid file eco will not read.
fn pid_file_refused(file: &std::path::Path, err: &untrusted::ReadError) -> String {
    format!(
        "pid file {} refused: {err}; the app must write its pid into a regular file there",
        file.display()
    )
}

/// `last_error` for a pid file that never named a live process of the app.
fn pid_file_missed(file: &std::path::Path, seen: &PidFileSeen, waited: Duration) -> String {
    let within = humantime::format_duration(waited);
    match seen {
        PidFileSeen::Nothing => format!(
            "pid file {} never written within {within} of the launcher's exit; check that `pid_file` names the file the app writes",
            file.display()
        ),
        PidFileSeen::Pid(pid) => format!(
            "pid file {} names no live process of the app (it names {pid}) within {within} of the launcher's exit",
            file.display()
        ),
        PidFileSeen::Text(text) => format!(
            "pid file {} never held a pid within {within} of the launcher's exit (it holds {:?})",
            file.display(),
            text.chars().take(40).collect::<String>()
        ),
    }
}

/// How often a supervised process that is not eco's child is checked.
const FOREIGN_POLL: Duration = Duration::from_millis(200);

/// One run's processes, as the notify checks see them.
struct Members<'a> {
    main: i32,
    mark: &'a str,
    cgroup: Option<&'a Cgroup>,
    own: Own,
}

impl Procs for Members<'_> {
    fn alive(&self, pid: i32) -> bool {
        crate::procfs::alive(pid)
    }

    /// In the cgroup; without one, the supervised process, its process
    /// group (unless that is eco's), a process below it, or one carrying
    /// the run's spawn mark.
    fn inside(&self, pid: i32) -> bool {
        if let Some(cgroup) = self.cgroup {
            return cgroup.procs().contains(&pid);
        }
        let group = self.group(self.main);
        pid == self.main
            || (group.is_some() && group != Some(self.own.group) && self.group(pid) == group)
            || crate::procfs::descendants(self.main).contains(&pid)
            || crate::procfs::env_value(pid, SPAWN_MARK).as_deref() == Some(self.mark)
    }

    fn group(&self, pid: i32) -> Option<i32> {
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
            .ok()
            .map(nix::unistd::Pid::as_raw)
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

/// The next datagram on the notify socket; never when there is none.
async fn recv_notify(socket: Option<&NotifySocket>) -> std::io::Result<Datagram> {
    match socket {
        Some(socket) => socket.recv().await,
        None => std::future::pending().await,
    }
}

/// The result of the running health probe; never when none runs.
async fn join_probe(probe: &mut Option<tokio::task::JoinHandle<bool>>) -> bool {
    match probe {
        Some(handle) => handle.await.unwrap_or(false),
        None => std::future::pending().await,
    }
}

/// "not ready after 30s (waiting for log /^listening/)".
fn not_ready(limit: Duration, kind: &Ready) -> String {
    let waiting = match kind {
        Ready::Notify => "READY=1 on NOTIFY_SOCKET".to_owned(),
        Ready::Tcp(addr) => format!("a TCP connect to {addr}"),
        Ready::Http(url) => format!("a 2xx from {url}"),
        Ready::Exec(cmd) => format!("`{cmd}` to exit 0"),
        Ready::Log(re) => format!("log /{re}/"),
    };
    format!(
        "not ready after {} (waiting for {waiting})",
        humantime::format_duration(limit)
    )
}

/// How long an exit waits for the last output of its process: the pipes
/// close once the group is gone, unless an escaped process still holds them.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// The output readers of one run.
struct Pumps {
    handles: Vec<tokio::task::JoinHandle<()>>,
    /// Cancelled once the process has exited: read without pausing.
    hurry: CancellationToken,
}

impl Pumps {
    /// Lets the output readers finish, so an exit is reported after the
    /// last line.
    async fn drain(self) {
        self.hurry.cancel();
        let _ = timeout(DRAIN_LIMIT, async {
            for pump in self.handles {
                let _ = pump.await;
            }
        })
        .await;
    }
}
