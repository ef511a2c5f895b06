//! The daemon: the engine behind a Unix socket, state that survives the
//! daemon, output on disk. `run` wires it together; shutdown is injected.

pub mod leftovers;
pub mod monitor;
pub mod state;

use std::future::Future;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use crate::cli::render;
use crate::ipc::proto::{LogFile, Request, Response};
use crate::ipc::server::{self, Handler, Reply};
use crate::logs::LogFiles;
use crate::paths::{Paths, create_private_dir};
use crate::runtime::reaper::Reaper;
use crate::runtime::{Engine, Stream};
use crate::state::Reason;
use crate::watch::{Change, Watches};

/// Runs `eco daemon` until SIGTERM/SIGINT or `eco kill`. Returns early (Ok)
/// when another daemon already holds this ECO_HOME.
pub fn main(paths: Paths) -> anyhow::Result<()> {
    // Leave the caller's session: no terminal, no SIGHUP when it closes.
    // (Fails harmlessly when started as a process-group leader by a shell.)
    let _ = nix::unistd::setsid();
    create_private_dir(&paths.home)
        .with_context(|| format!("cannot create {}", paths.home.display()))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.lock())
        .with_context(|| format!("cannot open {}", paths.lock().display()))?;
    let locked = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock);
    let _lock = match locked {
        Ok(lock) => lock,
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
            eprintln!(
                "eco: another daemon already runs for {}",
                paths.home.display()
            );
            return Ok(());
        }
        Err((_, err)) => return Err(err).context("cannot lock the daemon lock file"),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut sigint = signal(SignalKind::interrupt())?;
        let shutdown = async move {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = sigint.recv() => {}
            }
        };
        run(paths, shutdown).await
    })
}

/// The daemon proper: restore state, serve requests until `shutdown`
/// resolves or a `kill` request arrives, then stop every app.
pub async fn run(paths: Paths, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    tracing::info!(home = %paths.home.display(), pid = std::process::id(), "daemon starting");
    std::fs::write(paths.pid(), format!("{}\n", std::process::id()))?;
    let left = leftovers::stop(&paths.token());
    if left > 0 {
        tracing::info!(left, "stopped the previous daemon's processes");
    }
    let reaper = Reaper::start().context("cannot become the child subreaper")?;
    let logs = LogFiles::new(paths.clone());
    let engine = Engine::new(reaper, logs.clone(), paths.token());
    match state::load(&paths.state()) {
        Ok(saved) => {
            for project in saved.projects {
                logs.configure(&project.spec);
                engine.restore(project.spec, &project.user_stopped).await;
            }
        }
        Err(message) => tracing::error!(%message, "state not restored"),
    }
    let (watches, changes) = Watches::new(paths.logs());
    watches.set(&engine.projects().await);
    let listener = server::bind(&paths.socket())
        .with_context(|| format!("cannot listen on {}", paths.socket().display()))?;
    tracing::info!(socket = %paths.socket().display(), fd = listener.as_raw_fd(), "listening");
    let killed = Arc::new(Notify::new());
    let handler = Arc::new(Daemon {
        engine: Arc::clone(&engine),
        logs,
        paths: paths.clone(),
        killed: Arc::clone(&killed),
        watches,
        config_errors: std::sync::Mutex::new(std::collections::BTreeMap::new()),
        specs_changed: Arc::new(Notify::new()),
    });
    tokio::spawn(monitor::run(
        Arc::clone(&engine),
        Arc::clone(&handler.specs_changed),
    ));
    tokio::spawn(Arc::clone(&handler).react(changes));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            () = killed.notified() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(server::serve(stream, Arc::clone(&handler)));
                }
                Err(err) => tracing::warn!(%err, "accept failed"),
            },
        }
    }
    tracing::info!("stopping every app");
    let _ = std::fs::remove_file(paths.socket());
    engine.shutdown().await;
    handler.logs.flush();
    let _ = std::fs::remove_file(paths.pid());
    tracing::info!("daemon stopped");
    Ok(())
}

/// The project of apps started with `eco start SCRIPT`.
pub const DEFAULT_PROJECT: &str = "default";

/// Answers requests against the engine, and reacts to file changes.
struct Daemon {
    engine: Arc<Engine>,
    logs: Arc<LogFiles>,
    paths: Paths,
    killed: Arc<Notify>,
    watches: Arc<Watches>,
    /// The last save of a project's file that could not be applied.
    config_errors: std::sync::Mutex<std::collections::BTreeMap<String, String>>,
    /// Wakes the monitor (memory limits, schedules) after spec changes.
    specs_changed: Arc<Notify>,
}

/// Quiet time after the last event on an ecosystem file before reloading it
/// (editors write a file in several steps).
const SAVE_SETTLE: Duration = Duration::from_millis(50);

fn error(message: impl Into<String>, hint: Option<String>) -> Response {
    Response::Error {
        message: message.into(),
        hint,
    }
}

fn ok(message: impl Into<String>) -> Response {
    Response::Ok {
        message: message.into(),
    }
}

impl Daemon {
    /// Persists the state and points the watches at what is applied now.
    async fn save(&self) {
        let snapshot = self.engine.snapshot_for_state().await;
        if let Err(err) = state::save(&self.paths.state(), snapshot) {
            tracing::error!(%err, "cannot save the state");
        }
        self.watches.set(&self.engine.projects().await);
        self.specs_changed.notify_one();
    }

    fn set_config_error(&self, project: &str, error: Option<String>) {
        let mut errors = self
            .config_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match error {
            Some(e) => errors.insert(project.to_owned(), e),
            None => errors.remove(project),
        };
    }

    fn config_error(&self, project: &str) -> Option<String> {
        self.config_errors
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(project)
            .cloned()
    }

    /// Debounces file changes and acts on them: a saved ecosystem file is
    /// re-read and applied; changed sources restart their app once per burst.
    async fn react(self: Arc<Self>, mut changes: tokio::sync::mpsc::UnboundedReceiver<Change>) {
        use std::collections::BTreeMap;
        use tokio::time::Instant;
        let mut configs: BTreeMap<String, Instant> = BTreeMap::new();
        let mut sources: BTreeMap<(String, String), (Instant, String)> = BTreeMap::new();
        loop {
            let next = configs
                .values()
                .chain(sources.values().map(|(t, _)| t))
                .min()
                .copied();
            let change = match next {
                Some(deadline) => tokio::select! {
                    change = changes.recv() => change,
                    () = tokio::time::sleep_until(deadline) => {
                        let now = Instant::now();
                        let due: Vec<String> = configs.iter().filter(|(_, t)| **t <= now).map(|(p, _)| p.clone()).collect();
                        for project in due {
                            configs.remove(&project);
                            self.reload_project(&project).await;
                        }
                        let due: Vec<(String, String)> = sources.iter().filter(|(_, (t, _))| *t <= now).map(|(k, _)| k.clone()).collect();
                        for key in due {
                            if let Some((_, path)) = sources.remove(&key) {
                                self.engine.restart_for_change(&key.0, &key.1, Reason::FileChange(path)).await;
                            }
                        }
                        continue;
                    }
                },
                None => changes.recv().await,
            };
            let Some(change) = change else { return };
            match change {
                Change::Config { project } => {
                    configs.insert(project, Instant::now() + SAVE_SETTLE);
                }
                Change::Sources {
                    project,
                    app,
                    path,
                    delay,
                } => {
                    let entry = sources
                        .entry((project, app))
                        .or_insert((Instant::now(), path));
                    // Trailing debounce: the restart waits for a quiet `watch_delay`.
                    entry.0 = Instant::now() + delay;
                }
                Change::NewFolder(folder) => self.watches.add_folder(&folder),
            }
        }
    }

    /// Re-reads a project's file and applies it; an invalid file changes
    /// nothing and its errors are kept for `ls` and `describe`.
    async fn reload_project(&self, project: &str) {
        let Some(current) = self.engine.project_spec(project).await else {
            return;
        };
        if current.file.as_os_str().is_empty() {
            return;
        }
        match crate::config::load(&current.file, current.profile.as_deref()) {
            Ok(spec) if spec.name == project => {
                self.set_config_error(project, None);
                self.logs.configure(&spec);
                let actions = self.engine.apply(spec).await;
                tracing::info!(%project, plan = ?render::plan_lines(&actions), "file saved; applied");
                self.save().await;
            }
            Ok(spec) => {
                self.set_config_error(
                    project,
                    Some(format!(
                        "{}: the project's name changed to `{}`; run `eco down {project}` and `eco up` to rename it",
                        current.file.display(),
                        spec.name
                    )),
                );
            }
            Err(errors) => {
                tracing::warn!(%project, %errors, "file saved with errors; nothing changed");
                self.set_config_error(project, Some(errors.to_string()));
            }
        }
    }

    async fn answer(&self, request: Request) -> Response {
        match request {
            Request::Ping => ok("pong"),
            Request::Apply { spec, dry_run } => {
                if let Some(running) = self.engine.project_spec(&spec.name).await
                    && running.file != spec.file
                {
                    return error(
                            format!(
                                "project `{}` is already applied from {}; {} uses the same name",
                                spec.name,
                                running.file.display(),
                                spec.file.display()
                            ),
                            Some("give one of the files another `name:`, or `eco down` the other project".into()),
                        );
                }
                if dry_run {
                    let actions = self.engine.preview(&spec).await;
                    return Response::Plan {
                        lines: render::plan_lines(&actions),
                        changes: !crate::plan::is_empty(&actions),
                    };
                }
                self.logs.configure(&spec);
                self.set_config_error(&spec.name, None);
                let actions = self.engine.apply(*spec).await;
                self.save().await;
                Response::Plan {
                    lines: render::plan_lines(&actions),
                    changes: !crate::plan::is_empty(&actions),
                }
            }
            Request::Down { project } => {
                if self.engine.down(&project).await {
                    self.save().await;
                    ok(format!("project {project} is down"))
                } else {
                    error(
                        format!("no project `{project}` runs"),
                        Some("`eco ls` lists what runs".into()),
                    )
                }
            }
            Request::List => Response::List {
                rows: self.engine.list_json().await,
                problems: self
                    .config_errors
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .iter()
                    .map(|(p, e)| (p.clone(), e.clone()))
                    .collect(),
            },
            Request::Describe { target } => match self.engine.describe(&target, &self.logs).await {
                Ok(mut details) => {
                    for app in details.as_array_mut().into_iter().flatten() {
                        let project = app["project"].as_str().unwrap_or_default().to_owned();
                        app["config_error"] = self.config_error(&project).into();
                    }
                    Response::Describe { details }
                }
                Err(e) => error(e.message, e.hint),
            },
            Request::Stop { target } => {
                let result = self.engine.stop(&target).await;
                self.save().await;
                done(result, "stopped")
            }
            Request::Start { target } => {
                let result = self.engine.start(&target).await;
                self.save().await;
                done(result, "started")
            }
            Request::Restart { target } => done(
                self.engine.restart(&target, Reason::User).await,
                "restarted",
            ),
            Request::Reload { target } => match self.engine.reload(&target).await {
                Ok(selected) => ok(format!("reloaded {}", names(&selected))),
                Err(message) => error(
                    message,
                    Some("the instances not yet replaced keep running; see `eco logs`".into()),
                ),
            },
            Request::Delete { target } => {
                let result = self.engine.delete(&target).await;
                self.save().await;
                done(result, "deleted")
            }
            Request::Scale { target, instances } => {
                match self.engine.scale(&target, instances).await {
                    Ok(spec) => {
                        self.logs.configure(&spec);
                        self.save().await;
                        ok(format!("scaled {target} to {instances}"))
                    }
                    Err(e) => error(e.message, e.hint),
                }
            }
            Request::Wait {
                project,
                timeout_ms,
            } => {
                match self
                    .engine
                    .wait(&project, Duration::from_millis(timeout_ms))
                    .await
                {
                    Ok(()) => ok("every instance is online"),
                    Err(failure) => {
                        self.logs.flush();
                        let mut log_tail = Vec::new();
                        if let Some(spec) = self.engine.project_spec(&failure.project).await
                            && let Some(app) = spec.apps.get(&failure.app)
                        {
                            let settings = self.logs.settings_for(&failure.project, app);
                            log_tail.extend(crate::logs::tail(&settings.out, 20));
                            log_tail.extend(crate::logs::tail(&settings.err, 20));
                        }
                        Response::WaitFailed {
                            reason: failure.reason,
                            log_tail,
                        }
                    }
                }
            }
            Request::LogFiles { target } => self.log_files(target.as_deref()).await,
            Request::Follow { .. } => error("follow is answered as a stream", None),
            Request::AddApp { app } => {
                let mut spec = self
                    .engine
                    .project_spec(DEFAULT_PROJECT)
                    .await
                    .unwrap_or_else(|| crate::spec::ProjectSpec {
                        name: DEFAULT_PROJECT.into(),
                        file: std::path::PathBuf::new(),
                        profile: None,
                        env_files: Vec::new(),
                        apps: std::collections::BTreeMap::new(),
                    });
                spec.apps.insert(app.name.clone(), *app);
                self.logs.configure(&spec);
                let actions = self.engine.apply(spec).await;
                self.save().await;
                Response::Plan {
                    lines: render::plan_lines(&actions),
                    changes: !crate::plan::is_empty(&actions),
                }
            }
            Request::Kill => {
                // An explicit kill forgets what ran: the next daemon starts empty
                // (a crash or SIGTERM keeps the state, to be restored).
                if let Err(err) = state::save(&self.paths.state(), Vec::new()) {
                    tracing::error!(%err, "cannot clear the state");
                }
                self.killed.notify_one();
                ok("stopping every app, then the daemon")
            }
        }
    }

    async fn log_files(&self, target: Option<&str>) -> Response {
        let selected = match self.engine.select(target.unwrap_or("all")).await {
            Ok(s) => s,
            Err(e) => return error(e.message, e.hint),
        };
        let mut files = Vec::new();
        for sel in selected {
            let Some(spec) = self.engine.project_spec(&sel.project).await else {
                continue;
            };
            let Some(app) = spec.apps.get(&sel.app) else {
                continue;
            };
            let settings = self.logs.settings_for(&sel.project, app);
            for (stream, path) in [("out", settings.out), ("err", settings.err)] {
                files.push(LogFile {
                    project: sel.project.clone(),
                    app: sel.app.clone(),
                    stream: stream.into(),
                    path,
                });
            }
        }
        Response::LogFiles { files }
    }

    async fn follow(&self, target: Option<String>, out: bool, err: bool, mut reply: Reply) {
        let selected = match self.engine.select(target.as_deref().unwrap_or("all")).await {
            Ok(s) => s,
            Err(e) => {
                reply.send(&error(e.message, e.hint)).await;
                return;
            }
        };
        let mut lines = self.logs.subscribe();
        if !reply.send(&ok("following")).await {
            return;
        }
        loop {
            match lines.recv().await {
                Ok(line) => {
                    let wanted = selected
                        .iter()
                        .any(|s| s.project == line.project && s.app == line.app)
                        && match line.stream {
                            Stream::Out => out,
                            Stream::Err => err,
                        };
                    if wanted
                        && !reply
                            .send(&Response::Line {
                                text: line.text.clone(),
                            })
                            .await
                    {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    let text = format!(
                        "eco: {n} lines skipped (the terminal is slower than the app; the log files have them)"
                    );
                    if !reply.send(&Response::Line { text }).await {
                        return;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    }
}

fn names(selected: &[crate::runtime::commands::Selected]) -> String {
    let mut names: Vec<String> = selected
        .iter()
        .map(|s| match s.instance {
            Some(i) => format!("{}:{i}", s.app),
            None => s.app.clone(),
        })
        .collect();
    names.dedup();
    names.join(", ")
}

fn done(
    result: Result<Vec<crate::runtime::commands::Selected>, crate::runtime::commands::TargetError>,
    verb: &str,
) -> Response {
    match result {
        Ok(selected) if selected.is_empty() => ok("nothing to do: no app runs".to_string()),
        Ok(selected) => ok(format!("{verb} {}", names(&selected))),
        Err(e) => error(e.message, e.hint),
    }
}

impl Handler for Daemon {
    async fn handle(self: Arc<Self>, request: Request, mut reply: Reply) {
        if let Request::Follow { target, out, err } = request {
            self.follow(target, out, err, reply).await;
            return;
        }
        let response = self.answer(request).await;
        reply.send(&response).await;
    }
}
