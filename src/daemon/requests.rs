//! One function per request: each asks the reconciler or the engine and
//! answers with typed facts (`ipc::proto::Response`); the CLI renders them.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::DEFAULT_PROJECT;
use super::progress::{Gauge, KEEPALIVE};
use super::state::Saver;
use crate::cli::hints;
use crate::ipc::proto::{
    Command, ErrorKind, ErrorReply, LogFile, LogStream, Request, Response, Step, Warning,
};
use crate::ipc::server::{Handler, Reply};
use crate::logs::LogFiles;
use crate::paths::Paths;
use crate::reconcile::{ReconcileError, Reconciler};
use crate::runtime::ListenError;
use crate::runtime::Stream;
use crate::runtime::progress::Scope;
use crate::spec::{AppSpec, ProjectSpec};
use crate::target::{Selected, TargetError};
use crate::view::Problem;

/// What the requests act on.
pub struct Daemon {
    /// Told of each request that changes something (the idle code drop).
    pub commanded: Arc<super::Commanded>,
    pub reconciler: Arc<Reconciler>,
    pub logs: Arc<LogFiles>,
    pub paths: Paths,
    /// Notified by `kill`: the daemon shuts down.
    pub killed: Notify,
    /// Saves the state, retrying a failed save.
    pub saver: Arc<Saver>,
    /// Shutdown began / every app has stopped.
    pub life: Arc<Life>,
    /// Why the saved state was not restored at start; told to every
    /// command until the next `eco up`.
    pub not_restored: Mutex<Option<String>>,
    /// Counters and events for `eco serve`.
    pub observed: Arc<super::observe::Observed>,
}

/// Where the daemon is in its life, for requests that arrive meanwhile.
#[derive(Default)]
pub struct Life {
    /// Cancelled when shutdown begins: only reads are answered from here.
    pub stopping: CancellationToken,
    /// Cancelled once every app has stopped.
    pub stopped: CancellationToken,
}

/// How often `logs -f` tells a quiet follower the daemon is still there.
const HEARTBEAT: Duration = Duration::from_secs(1);

impl Handler for Daemon {
    async fn handle(self: Arc<Self>, request: Request, mut reply: Reply) {
        if self.life.stopping.is_cancelled() && !request.allowed_while_stopping() {
            reply
                .send(&Response::Error(ErrorReply::failed(
                    "the daemon is stopping: every app stops, then the daemon exits",
                    Some("run the command again once `eco kill` has returned".into()),
                )))
                .await;
            return;
        }
        match request {
            Request::Follow { target, out, err } => {
                follow(&self, target.as_deref(), out, err, reply).await;
            }
            Request::Kill => kill(&self, reply).await,
            Request::Events => super::stats::events(&self.observed, reply).await,
            Request::Update => super::update::update(&self, reply).await,
            request => {
                let changes = !request.allowed_while_stopping();
                if changes {
                    self.commanded
                        .changing
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
                if matches!(request, Request::Apply { dry_run: false, .. }) {
                    // The user has applied a project again: heard.
                    self.take_not_restored();
                }
                let gauge = Gauge::of(&self, &request).await;
                let work = answer(&self, request);
                let response = match &gauge {
                    Some(gauge) => {
                        let engine = self.reconciler.engine();
                        let response = gauge.watch(&mut reply, engine, work).await;
                        let ok = !matches!(response, Response::Error(_));
                        gauge.last(&mut reply, engine, ok).await;
                        response
                    }
                    None => busy(&mut reply, work).await,
                };
                if changes && let Some(error) = self.saver.error() {
                    reply
                        .send(&Response::Warning(Warning::NotSaved { error }))
                        .await;
                }
                if let Some(message) = self.not_restored() {
                    reply
                        .send(&Response::Warning(Warning::NotRestored { message }))
                        .await;
                }
                reply.send(&response).await;
            }
        }
    }
}

impl Daemon {
    fn not_restored(&self) -> Option<String> {
        self.not_restored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn take_not_restored(&self) {
        self.not_restored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
    }
}

/// Runs `work` to its end, sending [`Response::Working`] every
/// [`KEEPALIVE`] meanwhile (a client that left does not cut the work short):
/// often enough for a silence timer of 1 s, even on a busy host.
pub(super) async fn busy<T>(reply: &mut Reply, work: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(work);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + KEEPALIVE, KEEPALIVE);
    let mut listening = true;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = tick.tick(), if listening => {
                listening = reply.send(&Response::Working).await;
            }
        }
    }
}

async fn answer(daemon: &Daemon, request: Request) -> Response {
    let engine = daemon.reconciler.engine();
    match request {
        Request::Ping => Response::Pong,
        Request::Apply { spec, dry_run } => apply(daemon, *spec, dry_run).await,
        Request::Down { project } => down(daemon, project).await,
        Request::List => list(daemon).await,
        Request::Describe { target } => describe(daemon, &target).await,
        Request::Stop { target } => {
            let result = engine.stop(&target).await;
            daemon.reconciler.saved().await;
            done(Command::Stop, result)
        }
        Request::Start { target } => {
            let result = engine.start(&target).await;
            daemon.reconciler.saved().await;
            done(Command::Start, result)
        }
        Request::Restart { target } => done(Command::Restart, engine.restart(&target).await),
        Request::Reload { target } => reload(daemon, &target).await,
        Request::Delete { target } => {
            if let Err(err) = whole_apps(daemon, &target).await {
                return Response::Error(err.into());
            }
            let result = engine.delete(&target).await;
            daemon.reconciler.saved().await;
            done(Command::Delete, result)
        }
        Request::Scale { target, instances } => scale(daemon, &target, instances).await,
        Request::Wait {
            project,
            timeout_ms,
        } => wait(daemon, &project, Duration::from_millis(timeout_ms)).await,
        Request::LogFiles { target } => log_files(daemon, target.as_deref()).await,
        Request::Follow { .. } => {
            Response::Error(ErrorReply::failed("follow is answered as a stream", None))
        }
        Request::AddApp { app } => add_app(daemon, *app).await,
        Request::Flush { target } => flush(daemon, target.as_deref()).await,
        Request::Kill => Response::Error(ErrorReply::failed("kill is answered as a stream", None)),
        Request::Stats => super::stats::stats(daemon).await,
        Request::Events => {
            Response::Error(ErrorReply::failed("events are answered as a stream", None))
        }
        Request::Version => super::update::version(),
        Request::Update => {
            Response::Error(ErrorReply::failed("update is answered on its own", None))
        }
    }
}

/// Refuses a target naming single instances (`web:1`, an id) for a
/// command that removes whole apps: deleting one instance would delete
/// its app, which is not what `eco delete 3` asks (PM2 removes just that
/// process; eco's instances are an app's count: `eco scale`).
async fn whole_apps(daemon: &Daemon, target: &str) -> Result<(), TargetError> {
    let selected = daemon.reconciler.engine().select(target).await?;
    if selected.iter().any(|s| s.instance.is_some()) {
        return Err(TargetError::WholeAppOnly {
            target: target.to_owned(),
        });
    }
    Ok(())
}

fn done(command: Command, result: Result<Vec<Selected>, TargetError>) -> Response {
    match result {
        Ok(targets) => Response::Done { command, targets },
        Err(err) => Response::Error(err.into()),
    }
}

async fn apply(daemon: &Daemon, spec: ProjectSpec, dry_run: bool) -> Response {
    let project = spec.name.clone();
    let result = if dry_run {
        daemon.reconciler.preview(&spec).await
    } else {
        let result = daemon.reconciler.apply(spec).await;
        let error = result.as_ref().err().map(ToString::to_string);
        daemon.observed.saved(&project, error);
        result
    };
    match result {
        Ok(actions) => Response::Plan { project, actions },
        Err(err) => Response::Error(refused(&err)),
    }
}

/// The wire's form of a refused project: an address another app of eco
/// listens on is invalid input (exit 2); the rest failed (exit 1).
pub fn refused(err: &ReconcileError) -> ErrorReply {
    let kind = match err {
        ReconcileError::Listen(ListenError::Taken { .. }) => ErrorKind::Invalid,
        ReconcileError::Listen(ListenError::Bind { .. })
        | ReconcileError::NameTaken { .. }
        | ReconcileError::Descriptors { .. } => ErrorKind::Failed,
    };
    ErrorReply {
        kind,
        message: err.to_string(),
        hint: Some(hints::reconcile(err).to_owned()),
    }
}

async fn down(daemon: &Daemon, project: String) -> Response {
    if daemon.reconciler.engine().down(&project).await {
        daemon.reconciler.saved().await;
        daemon.observed.forget_project(&project);
        Response::Down { project }
    } else {
        Response::Error(ErrorReply {
            kind: ErrorKind::Target,
            message: format!("no project `{project}` runs"),
            hint: Some("`eco ls` lists what runs".into()),
        })
    }
}

async fn list(daemon: &Daemon) -> Response {
    Response::List {
        rows: daemon.reconciler.engine().list().await,
        problems: daemon
            .reconciler
            .config_errors()
            .into_iter()
            .map(|(project, error)| Problem { project, error })
            .collect(),
        daemon_version: Some(crate::version::current().to_owned()),
    }
}

async fn describe(daemon: &Daemon, target: &str) -> Response {
    match daemon
        .reconciler
        .engine()
        .describe(target, Some(&daemon.logs))
        .await
    {
        Ok(mut apps) => {
            for app in &mut apps {
                app.config_error = daemon.reconciler.config_error(&app.project);
            }
            Response::Describe { apps }
        }
        Err(err) => Response::Error(err.into()),
    }
}

async fn reload(daemon: &Daemon, target: &str) -> Response {
    match daemon.reconciler.engine().reload(target).await {
        Ok(Ok(targets)) => Response::Done {
            command: Command::Reload,
            targets,
        },
        Ok(Err(err)) => Response::Error(ErrorReply::failed(
            err.to_string(),
            Some("the instances not yet replaced keep running; see `eco logs`".into()),
        )),
        Err(err) => Response::Error(err.into()),
    }
}

async fn scale(daemon: &Daemon, target: &str, instances: u32) -> Response {
    match daemon.reconciler.engine().scale(target, instances).await {
        Ok((selected, spec)) => {
            daemon.logs.configure(&spec);
            daemon.reconciler.saved().await;
            Response::Done {
                command: Command::Scale { instances },
                targets: vec![selected],
            }
        }
        Err(err) => Response::Error(err.into()),
    }
}

async fn wait(daemon: &Daemon, project: &str, limit: Duration) -> Response {
    let engine = daemon.reconciler.engine();
    match engine.wait(project, limit).await {
        Ok(()) => Response::AllOnline,
        Err(failure) => {
            daemon.logs.flush();
            let mut log_tail = Vec::new();
            if let Some(spec) = engine.project_spec(&failure.project).await
                && let Some(app) = spec.apps.get(&failure.app)
            {
                let settings = daemon.logs.settings_for(&failure.project, app);
                log_tail.extend(crate::logs::tail(&settings.out, 20));
                log_tail.extend(crate::logs::tail(&settings.err, 20));
            }
            Response::WaitFailed { failure, log_tail }
        }
    }
}

async fn log_files(daemon: &Daemon, target: Option<&str>) -> Response {
    match files_of(daemon, target).await {
        Ok(files) => Response::LogFiles { files },
        Err(err) => Response::Error(err.into()),
    }
}

/// `eco flush`: empties the target's log files (the writer thread does it,
/// between whole lines) and removes their rotated copies.
async fn flush(daemon: &Daemon, target: Option<&str>) -> Response {
    match files_of(daemon, target).await {
        Ok(files) => {
            let paths: Vec<std::path::PathBuf> = files.into_iter().map(|f| f.path).collect();
            daemon.logs.truncate(paths.clone());
            Response::Flushed { files: paths }
        }
        Err(err) => Response::Error(err.into()),
    }
}

/// The log files of a target (or of everything).
async fn files_of(daemon: &Daemon, target: Option<&str>) -> Result<Vec<LogFile>, TargetError> {
    let engine = daemon.reconciler.engine();
    let selected = engine.select(target.unwrap_or("all")).await?;
    let mut files = Vec::new();
    for sel in selected {
        let Some(spec) = engine.project_spec(&sel.project).await else {
            continue;
        };
        let Some(app) = spec.apps.get(&sel.app) else {
            continue;
        };
        let settings = daemon.logs.settings_for(&sel.project, app);
        for (stream, path) in [
            (LogStream::Out, settings.out),
            (LogStream::Err, settings.err),
        ] {
            files.push(LogFile {
                project: sel.project.clone(),
                app: sel.app.clone(),
                stream,
                path,
            });
        }
    }
    Ok(files)
}

/// Adds (or replaces) an ad-hoc app in the `default` project.
async fn add_app(daemon: &Daemon, app: AppSpec) -> Response {
    let mut spec = daemon
        .reconciler
        .engine()
        .project_spec(DEFAULT_PROJECT)
        .await
        .unwrap_or_else(|| ProjectSpec {
            name: DEFAULT_PROJECT.into(),
            file: std::path::PathBuf::new(),
            profile: None,
            env_files: Vec::new(),
            apps: std::collections::BTreeMap::new(),
        });
    spec.apps.insert(app.name.clone(), app);
    let actions = daemon.reconciler.apply_unchecked(spec).await;
    Response::Plan {
        project: DEFAULT_PROJECT.into(),
        actions,
    }
}

/// `eco kill`: answers `Stopping` at once, then holds the connection
/// (with heartbeats) until every app has stopped. Kills in parallel all
/// get the same answer; the first one starts the shutdown.
async fn kill(daemon: &Daemon, mut reply: Reply) {
    if !daemon.life.stopping.is_cancelled() {
        // An explicit kill forgets what ran: the next daemon starts empty
        // (a crash or SIGTERM keeps the state, to be restored).
        daemon.saver.save(super::state::Snapshot::default());
        daemon.killed.notify_one();
    }
    if let Some(error) = daemon.saver.error() {
        reply
            .send(&Response::Warning(Warning::NotSaved { error }))
            .await;
    }
    if !reply.send(&Response::Stopping).await {
        return;
    }
    let gauge = Gauge::new(Scope::All, Step::Stopped);
    let engine = daemon.reconciler.engine();
    gauge
        .watch(&mut reply, engine, daemon.life.stopped.cancelled())
        .await;
    gauge.last(&mut reply, engine, true).await;
}

/// Streams new output lines of the target until the client leaves.
async fn follow(daemon: &Daemon, target: Option<&str>, out: bool, err: bool, mut reply: Reply) {
    let selected = match daemon
        .reconciler
        .engine()
        .select(target.unwrap_or("all"))
        .await
    {
        Ok(s) => s,
        Err(e) => {
            reply.send(&Response::Error(e.into())).await;
            return;
        }
    };
    let mut lines = daemon.logs.subscribe();
    if !reply.send(&Response::Following).await {
        return;
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        let received = tokio::select! {
            received = lines.recv() => received,
            _ = tick.tick() => {
                if !reply.send(&Response::Working).await {
                    return;
                }
                continue;
            }
        };
        tick.reset();
        let response = match received {
            Ok(line) => {
                let wanted = selected
                    .iter()
                    .any(|s| s.project == line.project && s.app == line.app)
                    && match line.stream {
                        Stream::Out => out,
                        Stream::Err => err,
                    };
                if !wanted {
                    continue;
                }
                Response::Line {
                    text: line.text.clone(),
                    app: Some(line.app.clone()),
                    stream: Some(match line.stream {
                        Stream::Out => LogStream::Out,
                        Stream::Err => LogStream::Err,
                    }),
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(count)) => {
                Response::Skipped { count }
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        };
        if !reply.send(&response).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn taken() -> ReconcileError {
        ReconcileError::Listen(ListenError::Taken {
            addr: "127.0.0.1:80".into(),
            app: "b".into(),
            owner: "a".into(),
        })
    }

    /// Each refusal keeps the kind (so the exit code) and the words the
    /// contract gives it: an address of another app is invalid input.
    #[test]
    fn a_refused_project_maps_to_its_kind_message_and_hint() {
        let reply = refused(&taken());
        assert_eq!(reply.kind, ErrorKind::Invalid);
        assert_eq!(
            reply.message,
            "`b` listens on 127.0.0.1:80, which a already listens on"
        );
        assert_eq!(
            reply.hint.as_deref(),
            Some("give one of the apps another address")
        );
        let reply = refused(&ReconcileError::NameTaken {
            project: "p".into(),
            running: "/a/eco.yaml".into(),
            file: "/b/eco.yaml".into(),
        });
        assert_eq!(reply.kind, ErrorKind::Failed);
        assert_eq!(
            reply.message,
            "project `p` is already applied from /a/eco.yaml; /b/eco.yaml uses the same name"
        );
        assert!(reply.hint.is_some_and(|h| h.contains("another `name:`")));
        let reply = refused(&ReconcileError::Descriptors {
            instances: 400,
            needed: 1200,
            limit: 1024,
            room: 300,
        });
        assert_eq!(reply.kind, ErrorKind::Failed);
        assert!(
            reply
                .message
                .starts_with("400 instances need about 1200 descriptors"),
            "{}",
            reply.message
        );
        assert!(reply.hint.is_some_and(|h| h.contains("ulimit -Hn")));
        let reply = refused(&ReconcileError::Listen(ListenError::Bind {
            addr: "127.0.0.1:80".into(),
            error: "permission denied".into(),
        }));
        assert_eq!(reply.kind, ErrorKind::Failed);
        assert_eq!(
            reply.message,
            "cannot listen on 127.0.0.1:80: permission denied"
        );
    }
}
