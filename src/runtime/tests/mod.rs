//! The engine in-process: a fake spawner (no process at all) and tokio's
//! paused clock, so every scenario runs in virtual time, deterministically
//! and at once. One file per theme; the helpers are here.

#![allow(clippy::unwrap_used, clippy::too_many_lines)]

mod crashes;
mod health;
mod lifecycle;
mod rollouts;
mod shutdown;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::pipe_head::Receipt;
use super::spawner::fake::{Fake, FakeClock};
use super::spawner::{Machine, Spawner};
use super::{Engine, Event, InstanceId, InstanceRow, Observer, Stream};
use crate::spec::{AppSpec, Mode, ProcessSpec, ProjectSpec, Ready, Settings};
use crate::state::{Reason, Status};

/// 2026-11-29 10:00:30 UTC: where the fake wall clock starts.
const EPOCH_SECS: u64 = 1_795_946_430;

/// Everything an engine reported.
#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(InstanceId, Event)>>,
    lines: Mutex<Vec<(InstanceId, Stream, String)>>,
}

impl Observer for Recorder {
    fn output(&self, id: &InstanceId, stream: Stream, lines: &[u8], _written: Receipt) {
        let text = String::from_utf8_lossy(lines);
        let mut all = self.lines.lock().unwrap();
        for line in text.lines() {
            all.push((id.clone(), stream, line.to_owned()));
        }
    }

    fn event(&self, id: &InstanceId, event: &Event) {
        self.events
            .lock()
            .unwrap()
            .push((id.clone(), event.clone()));
    }
}

/// An engine on a fake spawner and a fake clock.
struct World {
    engine: Arc<Engine>,
    fake: Fake,
    recorder: Arc<Recorder>,
    clock_base: SystemTime,
}

impl World {
    fn new() -> World {
        let fake = Fake::new();
        let recorder = Arc::new(Recorder::default());
        let clock_base = SystemTime::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS);
        let machine = Machine {
            spawner: Arc::new(fake.clone()) as Arc<dyn Spawner>,
            clock: Arc::new(FakeClock::at(clock_base)),
            app_nofile: Some(1024),
        };
        let engine = Engine::new(machine, recorder.clone(), "test".into(), None);
        World {
            engine,
            fake,
            recorder,
            clock_base,
        }
    }

    async fn up(&self, apps: Vec<AppSpec>) {
        self.engine.apply(project(apps)).await;
    }

    async fn rows(&self) -> Vec<InstanceRow> {
        self.engine.rows().await
    }

    /// The state of `app:index`.
    async fn row(&self, app: &str, index: u32) -> InstanceRow {
        self.rows()
            .await
            .into_iter()
            .find(|r| r.app == app && r.index == index)
            .unwrap_or_else(|| panic!("no row for {app}:{index}"))
    }

    async fn statuses(&self, app: &str) -> Vec<Status> {
        self.rows()
            .await
            .into_iter()
            .filter(|r| r.app == app)
            .map(|r| r.state.status)
            .collect()
    }

    /// Waits (virtual time, bounded) until every instance of `app` is `status`.
    async fn all(&self, app: &str, status: Status) {
        let what = format!("every {app} {status:?}");
        until(&what, || async {
            let s = self.statuses(app).await;
            !s.is_empty() && s.iter().all(|x| *x == status)
        })
        .await;
    }

    fn events_of(&self, app: &str) -> Vec<Event> {
        self.recorder
            .events
            .lock()
            .unwrap()
            .iter()
            .filter(|(id, _)| id.app == app)
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn count(&self, app: &str, wanted: impl Fn(&Event) -> bool) -> usize {
        self.events_of(app).iter().filter(|e| wanted(e)).count()
    }
}

/// How often `until` looks, in virtual time (spawn times are exact anyway).
const POLL: Duration = Duration::from_millis(25);

/// How long a scenario may wait for something, in virtual time.
const PATIENCE: Duration = Duration::from_secs(3600);

/// Polls `check` on the paused clock until it holds; panics saying `what`
/// after [`PATIENCE`] of virtual time.
async fn until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never happened: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Lets virtual time pass (for "nothing happens meanwhile" checks).
async fn pass(time: Duration) {
    tokio::time::sleep(time).await;
}

/// An app whose program is its name (the fake's key), in fork mode.
fn app(name: &str, instances: u32) -> AppSpec {
    AppSpec {
        name: name.into(),
        process: ProcessSpec {
            argv: vec![name.to_owned()],
            cwd: "/".into(),
            env: BTreeMap::new(),
            mode: Mode::Fork,
            increment_var: None,
            listen: Vec::new(),
            pid_file: None,
            watchdog: None,
        },
        instances,
        settings: Settings::default(),
    }
}

/// `app` made ready by an exec probe whose fake key is `probe`.
fn ready_app(name: &str, instances: u32, probe: &str) -> AppSpec {
    let mut app = app(name, instances);
    app.settings.ready = Some(Ready::Exec(probe.to_owned()));
    app.settings.ready_timeout = Duration::from_secs(5);
    app
}

fn project(apps: Vec<AppSpec>) -> ProjectSpec {
    ProjectSpec {
        name: "shop".into(),
        file: "/srv/shop/eco.yaml".into(),
        profile: None,
        env_files: Vec::new(),
        apps: apps.into_iter().map(|a| (a.name.clone(), a)).collect(),
    }
}

fn is_reason(row: &InstanceRow, reason: &Reason) -> bool {
    row.state.last_reason.as_ref() == Some(reason)
}
