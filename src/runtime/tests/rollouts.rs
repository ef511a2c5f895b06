//! Rolling replacements: surge, a not-ready abort that keeps the old
//! instances, and user stops, starts and saves that land in the middle.

use std::sync::Arc;
use std::time::Duration;

use super::super::spawner::fake::Script;
use super::{World, app, ready_app, until};
use crate::state::Status;

/// The probe of new instances: ready 1 s after it starts.
fn slow_ready(w: &World) {
    w.fake.script(
        "web-ready",
        Script::runs().exits_after(Duration::from_secs(1), 0),
    );
}

/// Reloads `web` in a task of its own; the answer comes on the handle.
fn reload(w: &World) -> tokio::task::JoinHandle<Result<(), String>> {
    let engine = Arc::clone(&w.engine);
    tokio::spawn(async move {
        match engine.reload("web").await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(err.to_string()),
            Err(err) => Err(err.to_string()),
        }
    })
}

#[tokio::test(start_paused = true)]
async fn a_rollout_starts_max_surge_new_instances_beside_the_old_ones() {
    let w = World::new();
    slow_ready(&w);
    let mut web = ready_app("web", 4, "web-ready");
    web.settings.rollout.max_surge = 2;
    w.up(vec![web]).await;
    w.all("web", Status::Online).await;
    let old = w.fake.running("web");
    reload(&w).await.unwrap().unwrap();
    until("4 new, old gone", || async {
        let now = w.fake.running("web");
        now.len() == 4 && now.iter().all(|p| !old.contains(p))
    })
    .await;
    assert_eq!(w.fake.peak("web"), 6, "4 old + 2 surging, never more");
    w.all("web", Status::Online).await;
    // Each old one got its stop signal only once its successor was ready.
    for pid in &old {
        assert_eq!(w.fake.signals_to(*pid), [libc::SIGTERM]);
    }
}

#[tokio::test(start_paused = true)]
async fn a_rollout_whose_new_instance_is_never_ready_keeps_the_old_ones() {
    let w = World::new();
    slow_ready(&w);
    w.up(vec![ready_app("web", 3, "web-ready")]).await;
    w.all("web", Status::Online).await;
    let old = w.fake.running("web");
    // From now on the probe fails: no new instance is ever ready.
    w.fake.script("web-ready", Script::exits(1));
    let answer = reload(&w).await.unwrap();
    let err = answer.expect_err("the rollout must fail");
    assert!(err.contains("did not become ready"), "{err}");
    assert!(err.contains("old instances keep serving"), "{err}");
    until("the new one gone", || async {
        w.fake.running("web").len() == 3
    })
    .await;
    let mut now = w.fake.running("web");
    now.sort_unstable();
    let mut old_sorted = old.clone();
    old_sorted.sort_unstable();
    assert_eq!(now, old_sorted, "the old instances serve on");
    for pid in &old {
        assert!(w.fake.signals_to(*pid).is_empty(), "{pid} untouched");
    }
    assert!(w.statuses("web").await.iter().all(|s| *s == Status::Online));
}

#[tokio::test(start_paused = true)]
async fn a_user_stop_during_a_rollout_stops_old_and_new() {
    let w = World::new();
    slow_ready(&w);
    w.up(vec![ready_app("web", 3, "web-ready")]).await;
    w.all("web", Status::Online).await;
    let rolling = reload(&w);
    until("a new one starting", || async {
        w.fake.started("web") == 4
    })
    .await;
    w.engine.stop("web").await.unwrap();
    let _ = rolling.await.unwrap();
    assert!(w.fake.running("web").is_empty(), "nothing of web runs");
    super::pass(Duration::from_secs(60)).await;
    assert!(w.fake.running("web").is_empty(), "and nothing comes back");
    w.all("web", Status::Stopped).await;
}

#[tokio::test(start_paused = true)]
async fn a_user_start_after_a_stop_mid_rollout_brings_back_every_instance() {
    let w = World::new();
    slow_ready(&w);
    w.up(vec![ready_app("web", 3, "web-ready")]).await;
    w.all("web", Status::Online).await;
    let rolling = reload(&w);
    until("a new one starting", || async {
        w.fake.started("web") == 4
    })
    .await;
    w.engine.stop("web").await.unwrap();
    let _ = rolling.await.unwrap();
    w.engine.start("web").await.unwrap();
    w.all("web", Status::Online).await;
    assert_eq!(w.fake.running("web").len(), 3);
    let indexes: Vec<u32> = w.rows().await.iter().map(|r| r.index).collect();
    assert_eq!(indexes, [0, 1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_save_during_a_rollout_wins_and_every_instance_runs_the_new_spec() {
    let w = World::new();
    slow_ready(&w);
    w.up(vec![ready_app("web", 3, "web-ready")]).await;
    w.all("web", Status::Online).await;
    let rolling = reload(&w);
    until("a new one starting", || async {
        w.fake.started("web") == 4
    })
    .await;
    let mut changed = ready_app("web", 3, "web-ready");
    changed.process.env.insert("VERSION".into(), "2".into());
    w.up(vec![changed]).await;
    let _ = rolling.await.unwrap();
    until("3 instances of version 2", || async {
        let running = w.fake.running("web");
        running.len() == 3
            && w.fake
                .spawns()
                .iter()
                .filter(|s| running.contains(&s.pid))
                .all(|s| s.request.env_var("VERSION").is_some_and(|v| v == "2"))
    })
    .await;
    w.all("web", Status::Online).await;
    assert!(w.fake.peak("web") <= 4, "one surging at a time");
}

#[tokio::test(start_paused = true)]
async fn an_app_without_readiness_restarts_in_place_one_by_one() {
    let w = World::new();
    w.up(vec![app("worker", 3)]).await;
    w.all("worker", Status::Online).await;
    let old = w.fake.running("worker");
    w.engine.reload("worker").await.unwrap().unwrap();
    until("3 new", || async {
        let now = w.fake.running("worker");
        now.len() == 3 && now.iter().all(|p| !old.contains(p))
    })
    .await;
    assert_eq!(
        w.fake.peak("worker"),
        3,
        "an old one ends before its new one"
    );
    let rows = w.rows().await;
    assert!(
        rows.iter().all(|r| r.state.restarts == 1),
        "each restarted once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_changed_spec_replaces_ready_gated_instances_rolling() {
    let w = World::new();
    slow_ready(&w);
    w.up(vec![ready_app("web", 2, "web-ready")]).await;
    w.all("web", Status::Online).await;
    let mut changed = ready_app("web", 2, "web-ready");
    changed.process.env.insert("VERSION".into(), "2".into());
    w.up(vec![changed]).await;
    until("2 of version 2", || async {
        let running = w.fake.running("web");
        running.len() == 2
            && w.fake
                .spawns()
                .iter()
                .filter(|s| running.contains(&s.pid))
                .all(|s| s.request.env_var("VERSION").is_some())
    })
    .await;
    assert_eq!(w.fake.peak("web"), 3, "new beside old, one at a time");
    let reason = w.row("web", 0).await.state.last_reason;
    assert_eq!(reason, Some(crate::state::Reason::ConfigChange));
}

#[tokio::test(start_paused = true)]
async fn max_unavailable_without_surge_stops_each_old_one_before_its_successor() {
    let w = World::new();
    slow_ready(&w);
    let mut web = ready_app("web", 3, "web-ready");
    web.settings.rollout.max_surge = 0;
    web.settings.rollout.max_unavailable = 1;
    w.up(vec![web]).await;
    w.all("web", Status::Online).await;
    let old = w.fake.running("web");
    reload(&w).await.unwrap().unwrap();
    until("3 new", || async {
        let now = w.fake.running("web");
        now.len() == 3 && now.iter().all(|p| !old.contains(p))
    })
    .await;
    assert_eq!(w.fake.peak("web"), 3, "never more than the instance count");
}

#[tokio::test(start_paused = true)]
async fn a_reload_signal_reloads_in_place_without_a_new_process() {
    let w = World::new();
    let mut api = app("api", 2);
    api.settings.reload_signal = Some(crate::spec::Signal(libc::SIGHUP));
    w.up(vec![api]).await;
    w.all("api", Status::Online).await;
    let pids = w.fake.running("api");
    w.engine.reload("api").await.unwrap().unwrap();
    assert_eq!(w.fake.running("api"), pids, "the same processes");
    assert_eq!(w.fake.started("api"), 2);
    for pid in pids {
        assert_eq!(w.fake.signals_to(pid), [libc::SIGHUP]);
    }
}
