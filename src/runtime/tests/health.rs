//! Restarts eco decides on its own: failing health probes (an exec probe
//! through the fake), a silent watchdog, a cron schedule on the fake wall
//! clock, and memory over `max_memory` (as the sampler reads it).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::super::Event;
use super::super::spawner::fake::Script;
use super::{World, app, is_reason, pass, until};
use crate::reconcile::{Trigger, monitor};
use crate::spec::{Health, Probe};
use crate::state::{Reason, Status};

fn health(probe: &str) -> Health {
    Health {
        probe: Probe::Exec(probe.to_owned()),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        failures: 3,
    }
}

#[tokio::test(start_paused = true)]
async fn failing_health_probes_restart_the_instance_with_reason_health() {
    let w = World::new();
    w.fake.script("api-health", Script::exits(1));
    let mut api = app("api", 1);
    api.settings.health = Some(health("api-health"));
    w.up(vec![api]).await;
    until("a restart", || async { w.fake.started("api") == 2 }).await;
    w.all("api", Status::Online).await;
    let row = w.row("api", 0).await;
    assert!(
        is_reason(&row, &Reason::Health),
        "{:?}",
        row.state.last_reason
    );
    let failures: Vec<u32> = w
        .events_of("api")
        .iter()
        .filter_map(|e| match e {
            Event::Unhealthy { failures } => Some(*failures),
            _ => None,
        })
        .take(3)
        .collect();
    assert_eq!(failures, [1, 2, 3]);
    let probes = w.fake.started("api-health");
    assert!(probes >= 3, "{probes} probes ran through the spawner");
}

#[tokio::test(start_paused = true)]
async fn passing_health_probes_leave_the_instance_alone() {
    let w = World::new();
    w.fake.script("api-health", Script::exits(0));
    let mut api = app("api", 1);
    api.settings.health = Some(health("api-health"));
    w.up(vec![api]).await;
    w.all("api", Status::Online).await;
    pass(Duration::from_secs(120)).await;
    assert_eq!(w.fake.started("api"), 1);
    assert!(w.fake.started("api-health") >= 60, "probed every second");
    assert_eq!(w.count("api", |e| matches!(e, Event::Unhealthy { .. })), 0);
}

#[tokio::test(start_paused = true)]
async fn a_hung_health_probe_is_a_failure_and_is_killed() {
    let w = World::new();
    w.fake.script("api-health", Script::runs());
    let mut api = app("api", 1);
    api.settings.health = Some(health("api-health"));
    w.up(vec![api]).await;
    until("a restart", || async { w.fake.started("api") == 2 }).await;
    until("no probe left", || async {
        w.fake.running("api-health").is_empty()
    })
    .await;
    for spawn in w.fake.spawns().iter().filter(|s| s.key == "api-health") {
        assert_eq!(w.fake.signals_to(spawn.pid), [libc::SIGKILL]);
    }
}

/// Notify sockets live in a private folder of a home made once per test binary.
fn notify_home() {
    static HOME: OnceLock<std::path::PathBuf> = OnceLock::new();
    let home = HOME.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("eco-engine")
            .tempdir()
            .unwrap();
        dir.keep()
    });
    crate::runtime::notify::place::init(home);
}

#[tokio::test(start_paused = true)]
async fn a_silent_watchdog_aborts_and_restarts_the_instance() {
    notify_home();
    let w = World::new();
    let mut api = app("api", 1);
    api.process.watchdog = Some(Duration::from_secs(2));
    w.up(vec![api]).await;
    until("a restart", || async { w.fake.started("api") == 2 }).await;
    let first = w.fake.spawns()[0].clone();
    assert_eq!(w.fake.signals_to(first.pid), [libc::SIGABRT]);
    let silent_for = w.fake.spawns()[1].at - first.at;
    assert!(
        silent_for >= Duration::from_secs(2) && silent_for < Duration::from_secs(3),
        "{silent_for:?}"
    );
    assert_eq!(w.count("api", |e| *e == Event::WatchdogTimeout), 1);
    let usec = first.request.env_var("WATCHDOG_USEC").unwrap();
    assert_eq!(usec, "2000000");
    assert!(first.request.env_var("NOTIFY_SOCKET").is_some());
    w.all("api", Status::Online).await;
    assert!(is_reason(&w.row("api", 0).await, &Reason::Watchdog));
}

/// Runs the daemon's monitor on the engine, carrying out its triggers as
/// the reconciler does.
fn monitor(w: &World) -> (Arc<Notify>, CancellationToken) {
    let changed = Arc::new(Notify::new());
    let stop = CancellationToken::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Trigger>();
    tokio::spawn(monitor::run(
        Arc::clone(&w.engine),
        Arc::clone(&changed),
        tx,
        stop.clone(),
    ));
    let engine = Arc::clone(&w.engine);
    tokio::spawn(async move {
        while let Some(t) = rx.recv().await {
            let _ = engine
                .restart_for(&t.project, &t.app, t.instance, t.reason)
                .await;
        }
    });
    (changed, stop)
}

#[tokio::test(start_paused = true)]
async fn cron_restarts_on_the_minute_of_the_wall_clock() {
    let w = World::new();
    let mut api = app("api", 1);
    api.settings.cron_restart = Some("* * * * *".into());
    w.up(vec![api]).await;
    w.all("api", Status::Online).await;
    let (changed, stop) = monitor(&w);
    changed.notify_one();
    until("two cron restarts", || async { w.fake.started("api") == 3 }).await;
    let at: Vec<_> = w.fake.spawns().iter().map(|s| s.at).collect();
    // The fake clock starts at 10:00:30: the first run is 10:01:00.
    let first = at[1] - at[0];
    assert!(
        first >= Duration::from_secs(30) && first < Duration::from_millis(30_200),
        "{first:?}"
    );
    let second = at[2] - at[1];
    assert!(
        second >= Duration::from_millis(59_800) && second < Duration::from_millis(60_200),
        "{second:?}"
    );
    assert!(is_reason(&w.row("api", 0).await, &Reason::Cron));
    stop.cancel();
}

#[tokio::test(start_paused = true)]
async fn memory_over_the_limit_for_two_samples_restarts_only_that_app() {
    let w = World::new();
    w.fake.set_memory("hog", 300 << 20);
    w.fake.set_memory("lean", 10 << 20);
    let mut hog = app("hog", 1);
    hog.settings.max_memory = Some(100 << 20);
    let mut lean = app("lean", 1);
    lean.settings.max_memory = Some(100 << 20);
    w.up(vec![hog, lean]).await;
    w.all("hog", Status::Online).await;
    let (changed, stop) = monitor(&w);
    changed.notify_one();
    until("hog restarted", || async { w.fake.started("hog") == 2 }).await;
    let took = w
        .fake
        .spawns()
        .iter()
        .filter(|s| s.key == "hog")
        .nth(1)
        .unwrap()
        .at
        - w.fake.spawns()[0].at;
    assert!(
        took >= Duration::from_secs(2),
        "two samples first: {took:?}"
    );
    w.all("hog", Status::Online).await;
    assert!(is_reason(&w.row("hog", 0).await, &Reason::Memory));
    w.fake.set_memory("hog", 10 << 20);
    pass(Duration::from_secs(30)).await;
    assert_eq!(w.fake.started("hog"), 2, "back under the limit");
    assert_eq!(w.fake.started("lean"), 1, "under its limit all along");
    stop.cancel();
}
