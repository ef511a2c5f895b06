//! The reconciler: one loop drives the engine, for `eco up -F` and the
//! daemon alike. Its inputs are saves of ecosystem and env files, watched
//! sources, memory and cron triggers (`monitor`), user commands, signals
//! (`signals`) and shutdown; its output is plans carried out by the engine
//! and typed [`Report`]s to its [`Host`] (the terminal of `up -F`, or the
//! daemon's state file and log). Every task it starts is owned: the loop
//! and the monitor by its tracker, restarts by the engine's.

pub mod error;
pub mod monitor;
pub mod signals;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config;
use crate::plan::Action;
use crate::runtime::Engine;
use crate::runtime::reaper::Reaper;
use crate::runtime::rollout::RolloutError;
use crate::spec::ProjectSpec;
use crate::state::Reason;
use crate::untrusted;
use crate::watch::{Change, Watches};
pub use error::ReconcileError;
use signals::{Asked, Signals};

/// Quiet time after the last event on an ecosystem or env file before it
/// is re-read (editors write a file in several steps).
const SAVE_SETTLE: Duration = Duration::from_millis(50);

/// Where the reconciler's effects beyond the engine go.
pub trait Host: Send + Sync + 'static {
    /// A project is about to be applied (the daemon points its logs).
    fn configure(&self, _spec: &ProjectSpec) {}
    /// What is applied changed (the daemon saves it).
    fn persist(&self, _projects: Vec<(ProjectSpec, Vec<String>)>) {}
    /// Something the user should hear of.
    fn report(&self, report: Report);
}

/// What the reconciler tells its host.
#[derive(Debug)]
pub enum Report {
    /// A saved file (or SIGHUP) was applied with this plan.
    Applied {
        project: String,
        actions: Vec<Action>,
    },
    /// A saved file could not be applied; the apps run as they are.
    NotApplied { project: String, errors: String },
    /// A watched source, a memory limit or a schedule restarts an app.
    Restarting(Trigger),
    /// A rolling restart stopped before the end.
    RolloutFailed {
        project: String,
        error: RolloutError,
    },
    /// SIGHUP: every applied file is read again …
    ReloadBegun,
    /// … and applied.
    ReloadDone,
    /// Shutdown began: every app stops gracefully.
    Stopping,
    /// A second stop signal: every app is killed.
    Killing,
    /// Every app has stopped.
    Stopped,
}

/// A restart asked for by a watched source, a memory limit or a schedule.
#[derive(Clone, Debug)]
pub struct Trigger {
    pub project: String,
    pub app: String,
    /// `None`: every instance.
    pub instance: Option<u32>,
    pub reason: Reason,
}

/// The loop and what it keeps between inputs.
pub struct Reconciler {
    engine: Arc<Engine>,
    host: Arc<dyn Host>,
    watches: Arc<Watches>,
    /// Per project, the error of the last save that could not be applied.
    config_errors: Mutex<BTreeMap<String, String>>,
    /// Wakes the monitor after the applied specs changed.
    specs_changed: Arc<Notify>,
    /// Owns the loop and the monitor.
    services: TaskTracker,
    /// Cancelled when shutdown begins: the loop and the monitor end.
    stop: CancellationToken,
}

impl Reconciler {
    /// Starts the loop and the monitor. `log_root`: eco's own log folder,
    /// which source watches skip.
    pub fn start(
        engine: Arc<Engine>,
        host: Arc<dyn Host>,
        log_root: Option<PathBuf>,
    ) -> Arc<Reconciler> {
        let (watches, changes) = Watches::new(log_root);
        let (triggers, trigger_rx) = mpsc::unbounded_channel();
        let reconciler = Arc::new(Reconciler {
            engine: Arc::clone(&engine),
            host,
            watches,
            config_errors: Mutex::default(),
            specs_changed: Arc::new(Notify::new()),
            services: TaskTracker::new(),
            stop: CancellationToken::new(),
        });
        reconciler.services.spawn(monitor::run(
            engine,
            Arc::clone(&reconciler.specs_changed),
            triggers,
            reconciler.stop.clone(),
        ));
        reconciler
            .services
            .spawn(Arc::clone(&reconciler.watches).read_links(reconciler.stop.clone()));
        reconciler
            .services
            .spawn(Arc::clone(&reconciler).run(changes, trigger_rx));
        reconciler
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The loop: debounced file changes and triggers, until shutdown.
    async fn run(
        self: Arc<Self>,
        mut changes: mpsc::UnboundedReceiver<Change>,
        mut triggers: mpsc::UnboundedReceiver<Trigger>,
    ) {
        let mut configs: BTreeMap<String, Instant> = BTreeMap::new();
        let mut sources: BTreeMap<(String, String), (Instant, String)> = BTreeMap::new();
        loop {
            let next = configs
                .values()
                .chain(sources.values().map(|(t, _)| t))
                .min()
                .copied();
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                () = self.stop.cancelled() => return,
                change = changes.recv() => match change {
                    None => return,
                    Some(Change::Config { project }) => {
                        configs.insert(project, Instant::now() + SAVE_SETTLE);
                    }
                    Some(Change::Sources { project, app, path, delay }) => {
                        let entry = sources
                            .entry((project, app))
                            .or_insert((Instant::now(), path));
                        // Trailing debounce: the restart waits for a quiet `watch_delay`.
                        entry.0 = Instant::now() + delay;
                    }
                    Some(Change::NewFolder(folder)) => self.watches.add_folder(&folder),
                },
                Some(trigger) = triggers.recv() => self.restart_for(trigger),
                () = tokio::time::sleep_until(next.unwrap_or(far)), if next.is_some() => {
                    let now = Instant::now();
                    let due: Vec<String> = configs
                        .iter()
                        .filter(|(_, t)| **t <= now)
                        .map(|(p, _)| p.clone())
                        .collect();
                    for project in due {
                        configs.remove(&project);
                        self.reload_project(&project).await;
                    }
                    let due: Vec<(String, String)> = sources
                        .iter()
                        .filter(|(_, (t, _))| *t <= now)
                        .map(|(k, _)| k.clone())
                        .collect();
                    for (project, app) in due {
                        if let Some((_, path)) = sources.remove(&(project.clone(), app.clone())) {
                            self.restart_for(Trigger { project, app, instance: None, reason: Reason::Watch(path) });
                        }
                    }
                }
            }
        }
    }

    /// Carries out a trigger in its own task (operations on one app are
    /// serialised by the engine).
    fn restart_for(&self, trigger: Trigger) {
        if self.engine.is_closing() {
            return;
        }
        self.host.report(Report::Restarting(trigger.clone()));
        let engine = Arc::clone(&self.engine);
        let host = Arc::clone(&self.host);
        self.engine.spawn(async move {
            let Trigger {
                project,
                app,
                instance,
                reason,
            } = trigger;
            if let Err(error) = engine.restart_for(&project, &app, instance, reason).await {
                host.report(Report::RolloutFailed { project, error });
            }
        });
    }

    /// Refuses a project name already applied from another file, and
    /// `listen` addresses that are another project's or held elsewhere.
    async fn check(&self, spec: &ProjectSpec, bind: bool) -> Result<(), ReconcileError> {
        self.engine.check_listen(spec, bind).await?;
        self.check_descriptors(spec, bind).await?;
        match self.engine.project_spec(&spec.name).await {
            Some(running) if running.file != spec.file => Err(ReconcileError::NameTaken {
                project: spec.name.clone(),
                running: running.file,
                file: spec.file.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Refuses a spec whose instances, with every other project's, would
    /// need more descriptors than eco may open (two pipes per instance, a
    /// notify socket for notify and watchdog apps, a socket per TCP
    /// `listen` address where instances have their own), and says how many
    /// fit.
    /// Only when `apply`ing does it change anything (the soft limit, the
    /// sharing sysctl): a dry run reads.
    async fn check_descriptors(
        &self,
        spec: &ProjectSpec,
        apply: bool,
    ) -> Result<(), ReconcileError> {
        use nix::sys::resource::{Resource, getrlimit, setrlimit};
        let Ok((soft, limit)) = getrlimit(Resource::RLIMIT_NOFILE) else {
            return Ok(());
        };
        let projects = self.engine.projects().await;
        // Asked only where it matters: the first ask may set a sysctl.
        let per_instance = projects
            .iter()
            .chain(std::iter::once(spec))
            .any(|p| p.apps.values().any(|a| tcp_listen(a) > 0))
            && if apply {
                self.engine.sockets_per_instance()
            } else {
                self.engine.sockets_per_instance_preview()
            };
        let others: u64 = projects
            .iter()
            .filter(|p| p.name != spec.name)
            .map(|p| descriptors_needed(p, per_instance, &self.engine))
            .sum();
        let needed = others + descriptors_needed(spec, per_instance, &self.engine);
        if needed + RESERVED_FDS <= limit {
            // Within the hard limit: raise the soft one as far as needed
            // (apps inherit it, so no further).
            let want = (needed + RESERVED_FDS) * 5 / 4;
            if apply
                && want > soft
                && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, want.min(limit), limit)
            {
                tracing::warn!(%err, want, "cannot raise the descriptor limit");
            }
            return Ok(());
        }
        let instances: u64 = spec.apps.values().map(|a| u64::from(a.instances)).sum();
        // At this project's own cost per instance.
        let each = descriptors_needed(spec, per_instance, &self.engine)
            .checked_div(instances)
            .unwrap_or(FDS_PER_INSTANCE)
            .max(1);
        let room = limit.saturating_sub(RESERVED_FDS + others) / each;
        Err(ReconcileError::Descriptors {
            instances,
            needed,
            limit,
            room,
        })
    }

    /// The plan `apply` would carry out.
    pub async fn preview(&self, spec: &ProjectSpec) -> Result<Vec<Action>, ReconcileError> {
        self.check(spec, false).await?;
        Ok(self.engine.preview(spec).await)
    }

    /// Applies a project as `eco up` asks.
    pub async fn apply(&self, spec: ProjectSpec) -> Result<Vec<Action>, ReconcileError> {
        self.check(&spec, true).await?;
        Ok(self.apply_unchecked(spec).await)
    }

    /// Applies a spec with no file check (ad-hoc apps, restored state).
    pub async fn apply_unchecked(&self, spec: ProjectSpec) -> Vec<Action> {
        self.host.configure(&spec);
        self.set_config_error(&spec.name, None);
        let actions = self.engine.apply(spec).await;
        self.saved().await;
        actions
    }

    /// Re-reads a project's file and applies it; an invalid file changes
    /// nothing and its errors are kept for `ls` and `describe`.
    pub async fn reload_project(&self, project: &str) {
        let Some(current) = self.engine.project_spec(project).await else {
            return;
        };
        if current.file.as_os_str().is_empty() {
            return;
        }
        let loaded = load_off_loop(
            current.file.clone(),
            current.profile.clone(),
            self.engine.reaper(),
        )
        .await;
        let errors = match loaded.map(|(spec, _)| spec) {
            Ok(spec) if spec.name == project => match self.check(&spec, true).await {
                Ok(()) => {
                    let actions = self.apply_unchecked(spec).await;
                    self.host.report(Report::Applied {
                        project: project.to_owned(),
                        actions,
                    });
                    return;
                }
                Err(err) => format!("{}: {err}", current.file.display()),
            },
            Ok(spec) => format!(
                "{}: the project's name changed to `{}`; run `eco down {project}` and `eco up` to rename it",
                current.file.display(),
                spec.name
            ),
            Err(errors) => errors.to_string(),
        };
        self.set_config_error(project, Some(errors.clone()));
        self.host.report(Report::NotApplied {
            project: project.to_owned(),
            errors,
        });
    }

    /// Re-reads and applies every applied file (SIGHUP).
    pub async fn reload_all(&self) {
        for project in self.engine.projects().await {
            self.reload_project(&project.name).await;
        }
    }

    /// After any change of what is applied: persist it, point the watches
    /// at it, wake the monitor.
    pub async fn saved(&self) {
        let projects = self.engine.projects().await;
        self.watches.set(&projects);
        self.host.persist(self.engine.snapshot_for_state().await);
        self.specs_changed.notify_one();
    }

    fn set_config_error(&self, project: &str, error: Option<String>) {
        let mut errors = self
            .config_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match error {
            Some(e) => errors.insert(project.to_owned(), e),
            None => errors.remove(project),
        };
    }

    /// The error of a project's last save, if it was not applied.
    pub fn config_error(&self, project: &str) -> Option<String> {
        self.config_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(project)
            .cloned()
    }

    /// Every project whose last save was not applied, with its error.
    pub fn config_errors(&self) -> Vec<(String, String)> {
        self.config_errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect()
    }

    /// Stops everything gracefully and ends the loop and the monitor.
    pub async fn shutdown(&self) {
        self.host.report(Report::Stopping);
        self.stop.cancel();
        self.engine.shutdown().await;
        self.services.close();
        self.services.wait().await;
        self.host.report(Report::Stopped);
    }

    /// Serves until a stop signal or `until` resolves, then shuts down
    /// gracefully; a second stop signal meanwhile kills every app at once.
    /// SIGHUP applies every file again; SIGUSR1 and SIGUSR2 are ignored.
    pub async fn serve(&self, signals: &mut Signals, until: impl Future<Output = ()>) {
        tokio::pin!(until);
        loop {
            tokio::select! {
                () = &mut until => break,
                asked = signals.next() => match asked {
                    Asked::Stop => break,
                    Asked::Reload => {
                        tracing::info!("SIGHUP: applying every file again");
                        self.host.report(Report::ReloadBegun);
                        self.reload_all().await;
                        self.host.report(Report::ReloadDone);
                    }
                    Asked::Nothing(name) => tracing::info!(signal = name, "ignored"),
                },
            }
        }
        let shutdown = self.shutdown();
        tokio::pin!(shutdown);
        tokio::select! {
            () = &mut shutdown => {}
            () = signals.next_stop() => {
                self.host.report(Report::Killing);
                self.engine.kill_all().await;
                shutdown.await;
            }
        }
    }
}

/// How long a reload may take to read its files: node's own limit, and
/// room for the env files and the sweep after it.
const LOAD_LIMIT: Duration = Duration::from_secs(config::js::TIMEOUT.as_secs() + 5);

/// Reads and validates a project's file on a blocking thread, given up
/// after [`LOAD_LIMIT`]: a slow `ecosystem.config.js`, or a file on a hung
/// mount, never stops the loop (or, in the daemon, its one thread).
async fn load_off_loop(
    file: PathBuf,
    profile: Option<String>,
    reaper: Option<Arc<Reaper>>,
) -> Result<(ProjectSpec, Vec<config::Note>), config::ConfigErrors> {
    let home = crate::paths::home();
    let shown = file.clone();
    // Without a reaper (a fake spawner in tests), node is waited for by a
    // thread of its own.
    let work = move || match &reaper {
        Some(reaper) => {
            config::load_for_run_with(&file, profile.as_deref(), &home, reaper.as_ref())
        }
        None => config::load_for_run_with(&file, profile.as_deref(), &home, &config::js::OwnChild),
    };
    untrusted::off_loop(LOAD_LIMIT, work)
        .await
        .unwrap_or_else(|| {
            Err(config::ConfigErrors(vec![config::ConfigError {
            file: shown,
            pos: config::node::Pos::default(),
            path: String::new(),
            message: format!(
                "reading the file took longer than {}s",
                LOAD_LIMIT.as_secs()
            ),
            hint: Some(
                "check the mount that holds the file and its env files; the apps run as they were"
                    .into(),
            ),
            source_line: None,
        }]))
        })
}

/// The daemon's (and `up -F`'s) node runs under the engine's reaper, the
/// one place there that waits for children.
impl config::js::Runner for Reaper {
    fn spawn(
        &self,
        command: &mut std::process::Command,
    ) -> std::io::Result<(
        std::process::Child,
        tokio::sync::oneshot::Receiver<crate::state::Exit>,
    )> {
        Reaper::spawn(self, command)
    }
}

/// Descriptors one instance holds in eco when nothing else is known: its
/// stdout and stderr pipes.
const FDS_PER_INSTANCE: u64 = 2;

/// Descriptors eco keeps for itself: sockets, log files, inotify, the
/// clients of the moment (17 with one app of 1,000 instances, measured).
const RESERVED_FDS: u64 = 128;

/// What a project's instances hold open in eco.
/// Descriptors eco holds for `spec`'s instances; `per_instance` when each
/// instance has its own socket per TCP `listen` address.
fn descriptors_needed(spec: &ProjectSpec, per_instance: bool, engine: &Engine) -> u64 {
    spec.apps
        .values()
        .map(|app| {
            let notify = app.settings.ready == Some(crate::spec::Ready::Notify)
                || app.process.watchdog.is_some();
            let sockets = if per_instance { tcp_listen(app) } else { 0 };
            let pipes = engine.output_pipes(&app.settings);
            u64::from(app.instances) * (pipes + u64::from(notify) + sockets)
        })
        .sum()
}

/// The app's TCP `listen` addresses that get a socket per instance.
fn tcp_listen(app: &crate::spec::AppSpec) -> u64 {
    let count = app
        .process
        .listen
        .iter()
        .filter(|a| a.can_split_per_instance())
        .count();
    u64::try_from(count).unwrap_or(u64::MAX)
}
