//! The engine: carries out plans on real processes and keeps them alive.
//! The only module that touches processes. It serves both `eco up -F` and
//! the daemon (through `reconcile`). Policy lives in `plan`, `policy` and
//! `rollout::next_steps`; the engine executes actions by sending controls to
//! per-instance tasks and never waits on a process while holding its state
//! lock. Every task it starts belongs to its tracker, and nothing starts
//! once it is closing.
//!
//! - `mod.rs`: the engine, shutdown. `apply`: a plan carried out.
//! - `types`: instance ids, events and the observer that receives them.
//! - `restart_queue`: the restarts instances ask for (health checks).
//! - `ops`: user commands (stop, start, restart, reload, delete, scale).
//! - `rollout`: the one rolling replacement (new beside old, readiness-gated).
//! - `wait`: `up --wait`. `views`: what `ls` and `describe` show.
//!   `progress`: the counts long requests report as they go.
//! - `ids`: the instances' numeric ids (PM2's `id` column).
//! - `instance`: one instance's task; `spawn`, `kill`, `ready`, `output`,
//!   `listen`, `reaper`: the system calls behind it; `turn`: one spawn at
//!   a time, the daemon's timers and sockets served between two.
//! - `spawner`: the spawn contract (`SpawnRequest`, `Spawner`): the real
//!   spawner in the daemon and `up -F`, a fake in `tests` (the engine run
//!   in-process on a paused clock).

pub mod adopt;
mod apply;
pub mod cgroup;
pub mod clone_into;
pub mod fd_slots;
pub mod feed;
pub mod guard;
pub mod ids;
pub mod instance;
pub mod kill;
pub mod leftovers;
pub mod listen;
pub mod listen_broker;
pub mod notify;
pub mod ops;
pub mod output;
pub mod pid_write;
pub mod pipe_head;
pub mod priority;
pub mod progress;
pub mod ready;
pub mod reaper;
mod restart_queue;
pub mod rollout;
pub mod spawn;
pub mod spawner;
mod stranger;
pub mod turn;
mod types;
pub mod views;
pub mod wait;

pub use types::{Event, InstanceId, Observer, RestartRequest, Stream};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Mutex, OwnedMutexGuard};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::plan::{self, Action};
use crate::spec::{AppSpec, ProjectSpec};
use crate::state::{Observed, ObservedApp, Reason};
use instance::{Control, Gate, InstanceHandle, InstanceState, Launch};
use reaper::Reaper;
use spawner::Machine;

/// Which streams of an app with `settings` eco reads: none thrown away
/// (see [`Observer::captures`]), unless readiness reads the log.
pub(crate) fn output_of(
    observer: &dyn Observer,
    settings: &crate::spec::Settings,
) -> spawn::Output {
    let reads_log = matches!(settings.ready, Some(crate::spec::Ready::Log(_)));
    spawn::Output {
        stdout: reads_log || observer.captures(settings, Stream::Out),
        stderr: reads_log || observer.captures(settings, Stream::Err),
        merged: observer.merges(settings),
    }
}

/// A `listen` address that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    #[error("`{app}` listens on {addr}, which {owner} already listens on")]
    Taken {
        addr: String,
        app: String,
        owner: String,
    },
    #[error("cannot listen on {addr}: {error}")]
    Bind { addr: String, error: String },
}

/// One app's live instances.
struct AppRuntime {
    spec: AppSpec,
    instances: Vec<InstanceHandle>,
    /// Replaced instances still serving until their successor is online
    /// (rolling replacement); not listed, but stopped and killed with the app.
    retiring: Vec<InstanceHandle>,
    user_stopped: bool,
    /// Instances stopped one by one (`eco stop app:N`), saved with the state.
    stopped_instances: std::collections::BTreeSet<u32>,
}

impl AppRuntime {
    fn new(spec: AppSpec, instances: Vec<InstanceHandle>, user_stopped: bool) -> AppRuntime {
        AppRuntime {
            spec,
            instances,
            retiring: Vec::new(),
            user_stopped,
            stopped_instances: std::collections::BTreeSet::new(),
        }
    }

    /// Every handle, listed or retiring.
    fn all_handles(&self) -> impl Iterator<Item = &InstanceHandle> {
        self.instances.iter().chain(&self.retiring)
    }
}

/// True for apps replaced one instance at a time, each new one online
/// before the old one stops: cluster apps and apps with a readiness check.
pub fn replaced_rolling(app: &AppSpec) -> bool {
    app.settings.ready.is_some() || app.process.mode == crate::spec::Mode::Cluster
}

struct ProjectRuntime {
    spec: ProjectSpec,
    apps: BTreeMap<String, AppRuntime>,
}

impl ProjectRuntime {
    /// A copy sharing the same instance tasks.
    fn share(&self) -> ProjectRuntime {
        ProjectRuntime {
            spec: self.spec.clone(),
            apps: self
                .apps
                .iter()
                .map(|(name, app)| {
                    (
                        name.clone(),
                        AppRuntime {
                            spec: app.spec.clone(),
                            instances: app.instances.clone(),
                            retiring: app.retiring.clone(),
                            user_stopped: app.user_stopped,
                            stopped_instances: app.stopped_instances.clone(),
                        },
                    )
                })
                .collect(),
        }
    }
}

/// One row of `eco ls`.
#[derive(Clone, Debug)]
pub struct InstanceRow {
    /// The slot's numeric id (see `ids`).
    pub id: u32,
    pub project: String,
    pub app: String,
    pub index: u32,
    pub state: InstanceState,
}

/// How long shutdown waits for the engine's tasks once every app stopped
/// (an output reader whose pipe a stray process still holds never ends).
const TASKS_LIMIT: Duration = Duration::from_secs(5);

/// Serialises the operations on one app (rollouts, user commands, saves),
/// and lets a newer one interrupt a rollout in progress.
#[derive(Default)]
struct AppOps {
    lock: Arc<Mutex<()>>,
    /// Cancelled to interrupt the operation holding `lock`.
    current: std::sync::Mutex<CancellationToken>,
}

/// Held while an operation runs on one app.
pub struct AppGuard {
    _guard: OwnedMutexGuard<()>,
    /// Cancelled when a newer operation (or shutdown) interrupts this one.
    pub cancel: CancellationToken,
}

type AppKey = (String, String);

/// The supervisor engine.
pub struct Engine {
    /// How processes start and are signalled, the clock, the apps' limit.
    machine: Machine,
    /// One spawn at a time (see `turn`).
    turns: turn::Turns,
    observer: Arc<dyn Observer>,
    projects: Mutex<BTreeMap<String, ProjectRuntime>>,
    /// Starts every spawn mark: names this engine's world (see `leftovers`).
    mark_prefix: String,
    listeners: Arc<listen::Listeners>,
    /// Owns every task the engine starts (instances, output pumps, probes, rollouts).
    tasks: TaskTracker,
    /// Cancelled when shutdown begins: from then on nothing is launched.
    closing: CancellationToken,
    app_ops: std::sync::Mutex<HashMap<AppKey, Arc<AppOps>>>,
    /// eco's cgroup subtree, when cgroups contain the instances.
    cgroups: Option<Arc<cgroup::Subtree>>,
    /// Restarts instances ask for (health checks), carried out in order.
    restarts: tokio::sync::mpsc::UnboundedSender<RestartRequest>,
    /// Instances a restore keeps stopped (`eco stop app:N` before the
    /// daemon restarted): launched as stopped, once.
    held: std::sync::Mutex<std::collections::BTreeSet<(String, String, u32)>>,
    /// Every instance slot's numeric id: given at its first launch, freed
    /// when the slot goes (see `ids`).
    ids: std::sync::Mutex<ids::IdTable>,
    /// Running processes a previous daemon handed over (`eco update`),
    /// taken by the launch of their slot (see `adopt`).
    adoptees: std::sync::Mutex<BTreeMap<adopt::AdopteeKey, adopt::Adoptee>>,
}

impl Engine {
    /// `machine`: the real spawner and clock in the daemon and `up -F`, a
    /// fake in the engine's tests.
    pub fn new(
        machine: Machine,
        observer: Arc<dyn Observer>,
        mark_prefix: String,
        cgroups: Option<Arc<cgroup::Subtree>>,
    ) -> Arc<Engine> {
        let (restarts, requests) = tokio::sync::mpsc::unbounded_channel::<RestartRequest>();
        let engine = Arc::new(Engine {
            machine,
            turns: turn::Turns::default(),
            observer,
            projects: Mutex::new(BTreeMap::new()),
            mark_prefix,
            listeners: Arc::default(),
            tasks: TaskTracker::new(),
            closing: CancellationToken::new(),
            held: std::sync::Mutex::default(),
            ids: std::sync::Mutex::default(),
            adoptees: std::sync::Mutex::default(),
            app_ops: std::sync::Mutex::default(),
            cgroups,
            restarts,
        });
        restart_queue::serve(&engine, requests);
        engine
    }

    /// The output pipes eco holds per instance of an app with `settings`
    /// (one when both streams share it).
    pub fn output_pipes(&self, settings: &crate::spec::Settings) -> u64 {
        let (stdout, stderr) = output_of(&*self.observer, settings).read_ends();
        u64::from(stdout) + u64::from(stderr)
    }

    /// True when cluster instances get a socket each (see `listen`).
    pub fn sockets_per_instance(&self) -> bool {
        self.listeners.sharing() == listen::Sharing::PerInstance
    }

    /// As [`Engine::sockets_per_instance`], without setting the sysctl the
    /// first decision may set (dry runs change nothing on the host).
    pub fn sockets_per_instance_preview(&self) -> bool {
        self.listeners.sharing_preview() == listen::Sharing::PerInstance
    }

    /// How instances are contained: `cgroup` or `process-group`.
    pub fn containment(&self) -> &'static str {
        if self.cgroups.is_some() {
            "cgroup"
        } else {
            "process-group"
        }
    }

    /// The one place in this process that waits for children: whatever
    /// else the process starts (node evaluating a config) goes through it.
    /// None under a fake spawner.
    pub fn reaper(&self) -> Option<Arc<Reaper>> {
        self.machine.spawner.reaper()
    }

    /// What the engine runs on (spawner, clock, the apps' descriptor limit).
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// Runs `task` as one of the engine's own tasks (awaited at shutdown).
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// True once shutdown has begun.
    pub fn is_closing(&self) -> bool {
        self.closing.is_cancelled()
    }

    pub(crate) fn lock_ids(&self) -> std::sync::MutexGuard<'_, ids::IdTable> {
        self.ids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The id of an instance slot, given now if it has none.
    pub(crate) fn id_of(&self, project: &str, app: &str, index: u32) -> u32 {
        self.lock_ids()
            .allocate(&ids::Slot::new(project, app, index))
    }

    /// Frees the ids of instances `from..` of an app (its slots are gone).
    pub(crate) fn free_ids(&self, project: &str, app: &str, from: u32) {
        self.lock_ids().free_from(project, app, from);
    }

    /// The ids to save with the state.
    pub fn saved_ids(&self) -> Vec<ids::SavedId> {
        self.lock_ids().saved()
    }

    /// Takes the ids a previous daemon saved, before its projects are
    /// restored: each slot starts again under its old id.
    pub fn load_ids(&self, saved: &[ids::SavedId]) {
        *self.lock_ids() = ids::IdTable::from_saved(saved);
    }

    /// Frees the ids of slots that no longer exist (saved ones whose
    /// project was not restored), and numbers slots that have none yet.
    pub async fn settle_ids(&self) {
        let projects = self.projects.lock().await;
        let live: std::collections::BTreeSet<ids::Slot> = projects
            .iter()
            .flat_map(|(p, rt)| {
                rt.apps.iter().flat_map(move |(a, app)| {
                    app.instances
                        .iter()
                        .map(move |h| ids::Slot::new(p, a, h.index))
                })
            })
            .collect();
        let mut table = self.lock_ids();
        table.free(|slot| !live.contains(slot));
        for slot in &live {
            table.allocate(slot);
        }
    }

    fn ops_of(&self, project: &str, app: &str) -> Arc<AppOps> {
        let mut ops = self
            .app_ops
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        Arc::clone(ops.entry((project.to_owned(), app.to_owned())).or_default())
    }

    /// Waits for the operations already running on an app, then holds it.
    /// `interrupt`: cancel the one in progress first (a stop, a delete or a
    /// newer save supersedes a rollout).
    pub async fn lock_app(&self, project: &str, app: &str, interrupt: bool) -> AppGuard {
        let ops = self.ops_of(project, app);
        if interrupt {
            ops.current
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .cancel();
        }
        let guard = Arc::clone(&ops.lock).lock_owned().await;
        let cancel = self.closing.child_token();
        *ops.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = cancel.clone();
        AppGuard {
            _guard: guard,
            cancel,
        }
    }

    /// What the planner sees of a project now.
    pub async fn observed(&self, project: &str) -> Observed {
        let projects = self.projects.lock().await;
        projects.get(project).map(observe).unwrap_or_default()
    }

    /// Checks a spec's `listen` addresses before it is applied: none may be
    /// another project's (`PROJECT/APP` is named), and each must be
    /// bindable now (with `bind`: bound here, kept for the apply).
    pub async fn check_listen(&self, spec: &ProjectSpec, bind: bool) -> Result<(), ListenError> {
        let projects = self.projects.lock().await;
        for other in projects.values().filter(|p| p.spec.name != spec.name) {
            for (app_name, app) in &other.spec.apps {
                for addr in &app.process.listen {
                    if let Some(mine) = spec.apps.values().find(|a| a.process.listen.contains(addr))
                    {
                        return Err(ListenError::Taken {
                            addr: addr.to_string(),
                            app: mine.name.clone(),
                            owner: format!("{}/{app_name}", other.spec.name),
                        });
                    }
                }
            }
        }
        if !bind {
            return Ok(());
        }
        let wanted: std::collections::BTreeSet<crate::spec::ListenAddr> = spec
            .apps
            .values()
            .flat_map(|a| a.process.listen.iter().cloned())
            .collect();
        self.listeners
            .bind_new(&wanted)
            .map_err(|(addr, err)| ListenError::Bind {
                addr: addr.to_string(),
                error: err.to_string(),
            })
    }

    /// The plan `apply` would carry out, changing nothing.
    pub async fn preview(&self, spec: &ProjectSpec) -> Vec<Action> {
        plan::plan(spec, &self.observed(&spec.name).await)
    }

    /// Starts instance `index` of `app`, gated on its dependencies being
    /// online and on `gate`.
    fn launch(
        &self,
        project: &ProjectRuntime,
        project_name: &str,
        app: &AppSpec,
        index: u32,
        gate: Gate,
        reason: Option<Reason>,
    ) -> InstanceHandle {
        self.launch_carrying(project, project_name, app, index, gate, reason, None)
    }

    /// `launch`, carrying over the restart count and history of the
    /// instance it replaces.
    #[allow(clippy::too_many_arguments)]
    fn launch_carrying(
        &self,
        project: &ProjectRuntime,
        project_name: &str,
        app: &AppSpec,
        index: u32,
        mut gate: Gate,
        reason: Option<Reason>,
        carry: Option<InstanceState>,
    ) -> InstanceHandle {
        if self.is_closing() {
            // Shutdown has begun: nothing new starts.
            return instance::stopped(index);
        }
        self.id_of(project_name, &app.name, index);
        let key = (project_name.to_owned(), app.name.clone(), index);
        if self
            .held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&key)
        {
            return instance::stopped(index);
        }
        gate.deps.extend(
            app.settings
                .depends_on
                .iter()
                .filter_map(|dep| project.apps.get(dep))
                .flat_map(|dep| dep.instances.iter().map(|h| h.state.clone())),
        );
        let adoptee = self.take_adoptee(project_name, &app.name, index);
        let launch = Launch {
            id: InstanceId {
                project: project_name.to_owned(),
                app: app.name.clone(),
                index,
            },
            spec: app.instance(project_name, index),
            settings: app.settings.clone(),
            reason,
            carry,
            gate,
            mark_prefix: self.mark_prefix.clone(),
            listeners: Arc::clone(&self.listeners),
            listen: app.process.listen.clone(),
            machine: self.machine.clone(),
            turns: self.turns.clone(),
            observer: Arc::clone(&self.observer),
            tasks: self.tasks.clone(),
            cgroups: self.cgroups.clone(),
            pid_file: app.process.pid_file.clone(),
            watchdog: app.process.watchdog,
            restarts: self.restarts.clone(),
        };
        match adoptee {
            Some(adoptee) => instance::adopt(launch, adoptee),
            None => instance::launch(launch),
        }
    }

    /// Stops every app of a project (dependents first) and forgets it.
    /// Returns false when no such project runs.
    pub async fn down(&self, project: &str) -> bool {
        let apps: Vec<String> = match self.projects.lock().await.get(project) {
            Some(p) => p.apps.keys().cloned().collect(),
            None => return false,
        };
        let mut guards = Vec::new();
        for app in &apps {
            guards.push(self.lock_app(project, app, true).await);
        }
        let runtime = {
            let mut projects = self.projects.lock().await;
            let Some(runtime) = projects.remove(project) else {
                return false;
            };
            self.listeners.sync(&wanted_sockets(&projects));
            self.lock_ids().free(|slot| slot.project == project);
            runtime
        };
        stop_project(&runtime).await;
        self.reap_unowned().await;
        true
    }

    /// Stops everything, each project in reverse dependency order, and
    /// waits for every task of the engine. From its first line on, nothing
    /// new is launched, and operations in progress are interrupted. The
    /// projects stay listed while they stop, so `kill_all` can still reach them.
    pub async fn shutdown(&self) {
        self.closing.cancel();
        let projects: Vec<ProjectRuntime> = self
            .projects
            .lock()
            .await
            .values()
            .map(ProjectRuntime::share)
            .collect();
        for project in &projects {
            stop_project(project).await;
        }
        self.projects.lock().await.clear();
        self.listeners.sync(&std::collections::BTreeSet::new());
        // Escapees no instance owns may hold an app's output pipes open:
        // they go first, so the output readers can end.
        self.reap_unowned().await;
        self.tasks.close();
        if tokio::time::timeout(TASKS_LIMIT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some tasks did not end in time; stopping anyway");
        }
        if let Some(cgroups) = &self.cgroups {
            cgroups.remove();
        }
    }

    /// SIGKILL to every instance at once (a second Ctrl-C). Stops still
    /// to come are immediate too.
    pub async fn kill_all(&self) {
        let projects = self.projects.lock().await;
        for app in projects.values().flat_map(|p| p.apps.values()) {
            for handle in app.all_handles() {
                let mut settings = app.spec.settings.clone();
                settings.stop_timeout = Duration::ZERO;
                handle.send(Control::Update(Box::new(settings)));
                let state = handle.state.borrow().clone();
                if let Some(pid) = state.pid {
                    kill::kill_now(kill::Scope {
                        spawner: &*self.machine.spawner,
                        main: pid,
                        mark: &state.mark,
                        cgroup: None,
                    });
                }
            }
        }
        if let Some(cgroups) = &self.cgroups {
            cgroups.kill_all();
        }
        drop(projects);
        self.reap_unowned().await;
    }

    /// Without cgroups: kills the orphans eco adopted that no live instance
    /// owns (they escaped an instance and hid its mark, e.g. by rewriting
    /// their title). Runs after stops and at shutdown.
    pub async fn reap_unowned(&self) {
        if self.cgroups.is_some() {
            return;
        }
        let (pids, marks): (Vec<i32>, Vec<String>) = {
            let projects = self.projects.lock().await;
            projects
                .values()
                .flat_map(|p| p.apps.values())
                .flat_map(AppRuntime::all_handles)
                .filter(|h| !h.is_finished())
                .map(|h| {
                    let s = h.state.borrow();
                    (s.pid.unwrap_or(0), s.mark.clone())
                })
                .unzip()
        };
        let unowned = self.machine.spawner.unowned(&|pid, mark| {
            pids.contains(&pid) || mark.is_some_and(|m| marks.iter().any(|k| k == m))
        });
        if !unowned.is_empty() {
            tracing::info!(?unowned, "killing processes no instance owns");
            kill::kill_pids(&*self.machine.spawner, &unowned);
        }
    }

    /// Every instance of every project, ordered by project, app, index.
    pub async fn rows(&self) -> Vec<InstanceRow> {
        let projects = self.projects.lock().await;
        let mut rows = Vec::new();
        for (project, runtime) in projects.iter() {
            for (app, rt) in &runtime.apps {
                for handle in &rt.instances {
                    rows.push(InstanceRow {
                        id: self.id_of(project, app, handle.index),
                        project: project.clone(),
                        app: app.clone(),
                        index: handle.index,
                        state: handle.state.borrow().clone(),
                    });
                }
            }
        }
        rows
    }

    /// The project specs currently applied.
    pub async fn projects(&self) -> Vec<ProjectSpec> {
        self.projects
            .lock()
            .await
            .values()
            .map(|p| p.spec.clone())
            .collect()
    }
}

/// Every address some applied app listens on.
fn wanted_sockets(
    projects: &BTreeMap<String, ProjectRuntime>,
) -> std::collections::BTreeSet<crate::spec::ListenAddr> {
    projects
        .values()
        .flat_map(|p| p.spec.apps.values())
        .flat_map(|a| a.process.listen.iter().cloned())
        .collect()
}

fn observe(project: &ProjectRuntime) -> Observed {
    project
        .apps
        .iter()
        .map(|(name, app)| {
            (
                name.clone(),
                ObservedApp {
                    spec: app.spec.clone(),
                    instances: u32::try_from(app.instances.len()).unwrap_or(u32::MAX),
                    user_stopped: app.user_stopped,
                },
            )
        })
        .collect()
}

/// Sends Stop to every handle and waits until all have ended.
pub(crate) async fn stop_all(handles: &[InstanceHandle]) {
    for handle in handles {
        handle.send(Control::Stop);
    }
    for handle in handles {
        handle.finished().await;
    }
}

/// Stops a project's apps by dependency level, deepest dependents first;
/// apps on one level stop together.
async fn stop_project(project: &ProjectRuntime) {
    let specs: BTreeMap<&str, &AppSpec> = project
        .apps
        .iter()
        .map(|(n, a)| (n.as_str(), &a.spec))
        .collect();
    let order = plan::dependency_order(&specs);
    let mut level: BTreeMap<&str, usize> = BTreeMap::new();
    for name in &order {
        let depth = specs[name]
            .settings
            .depends_on
            .iter()
            .filter_map(|d| level.get(d.as_str()))
            .max()
            .map_or(0, |d| d + 1);
        level.insert(name, depth);
    }
    let deepest = level.values().copied().max().unwrap_or(0);
    for depth in (0..=deepest).rev() {
        let handles: Vec<&InstanceHandle> = project
            .apps
            .iter()
            .filter(|(name, _)| level.get(name.as_str()) == Some(&depth))
            .flat_map(|(_, app)| app.all_handles())
            .collect();
        for handle in &handles {
            handle.send(Control::Stop);
        }
        for handle in handles {
            handle.finished().await;
        }
    }
}

#[cfg(test)]
mod tests;
