//! Ending: shutdown in the middle of restarts and rollouts, `kill_all`,
//! and `up --wait`'s answers.

use std::sync::Arc;
use std::time::Duration;

use super::super::spawner::fake::Script;
use super::{World, app, pass, ready_app, until};
use crate::state::Status;
use crate::view::WaitCause;

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_crash_loop_starts_nothing_more() {
    let w = World::new();
    w.fake.script("api", Script::exits(1));
    let mut api = app("api", 2);
    api.settings.restart_delay = Duration::from_secs(1);
    api.settings.max_restarts = 1000;
    w.up(vec![api, app("steady", 2)]).await;
    until("a few crashes", || async { w.fake.started("api") >= 6 }).await;
    w.engine.shutdown().await;
    let started = w.fake.started("api");
    assert!(w.fake.all_running().is_empty(), "everything stopped");
    pass(Duration::from_secs(600)).await;
    assert_eq!(w.fake.started("api"), started, "no restart after shutdown");
    assert!(w.engine.rows().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_waits_for_a_stubborn_app_and_kills_it_after_its_timeout() {
    let w = World::new();
    w.fake.script("stubborn", Script::runs().ignores_stop());
    let mut stubborn = app("stubborn", 1);
    stubborn.settings.stop_timeout = Duration::from_secs(4);
    w.up(vec![stubborn, app("polite", 1)]).await;
    w.all("stubborn", Status::Online).await;
    let pid = w.fake.running("stubborn")[0];
    let began = tokio::time::Instant::now();
    w.engine.shutdown().await;
    let took = began.elapsed();
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(w.fake.signals_to(pid), [libc::SIGTERM, libc::SIGKILL]);
    assert!(w.fake.all_running().is_empty());
}

#[tokio::test(start_paused = true)]
async fn shutdown_during_a_rollout_stops_old_and_new() {
    let w = World::new();
    w.fake.script(
        "web-ready",
        Script::runs().exits_after(Duration::from_secs(2), 0),
    );
    w.up(vec![ready_app("web", 3, "web-ready")]).await;
    w.all("web", Status::Online).await;
    let engine = Arc::clone(&w.engine);
    let rolling = tokio::spawn(async move { engine.reload("web").await });
    until("a new one starting", || async {
        w.fake.started("web") == 4
    })
    .await;
    w.engine.shutdown().await;
    let _ = rolling.await.unwrap();
    assert!(
        w.fake.all_running().is_empty(),
        "{:?}",
        w.fake.all_running()
    );
    pass(Duration::from_secs(60)).await;
    assert_eq!(w.fake.started("web"), 4, "nothing started after shutdown");
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_dependents_before_their_dependencies() {
    let w = World::new();
    // api takes its whole stop_timeout to stop: db must run on meanwhile.
    w.fake.script("api", Script::runs().ignores_stop());
    let mut api = app("api", 1);
    api.settings.depends_on = vec!["db".into()];
    api.settings.stop_timeout = Duration::from_secs(3);
    w.up(vec![app("db", 1), api]).await;
    w.all("api", Status::Online).await;
    let api = w.fake.running("api")[0];
    let db = w.fake.running("db")[0];
    let fake = w.fake.clone();
    let watcher = tokio::spawn(async move {
        let mut db_signalled_while_api_ran = false;
        while fake.all_running().contains(&api) {
            db_signalled_while_api_ran |= !fake.signals_to(db).is_empty();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        db_signalled_while_api_ran
    });
    w.engine.shutdown().await;
    assert!(!watcher.await.unwrap(), "db was signalled before api ended");
    assert_eq!(w.fake.signals_to(db), [libc::SIGTERM]);
    assert!(w.fake.all_running().is_empty());
}

#[tokio::test(start_paused = true)]
async fn kill_all_leaves_nothing_even_of_apps_that_ignore_their_stop_signal() {
    let w = World::new();
    w.fake.script("stubborn", Script::runs().ignores_stop());
    let mut stubborn = app("stubborn", 3);
    stubborn.settings.stop_timeout = Duration::from_secs(3600);
    w.up(vec![stubborn, app("polite", 2)]).await;
    w.all("stubborn", Status::Online).await;
    w.all("polite", Status::Online).await;
    w.engine.kill_all().await;
    until("nothing left", || async { w.fake.all_running().is_empty() }).await;
    for spawn in w.fake.spawns() {
        assert!(
            w.fake.signals_to(spawn.pid).contains(&libc::SIGKILL),
            "{} got SIGKILL",
            spawn.key
        );
    }
    let began = tokio::time::Instant::now();
    w.engine.shutdown().await;
    assert!(
        began.elapsed() < Duration::from_secs(60),
        "stops after kill_all are immediate"
    );
}

#[tokio::test(start_paused = true)]
async fn up_wait_answers_ok_for_steady_apps_and_names_a_crashing_one() {
    let w = World::new();
    w.up(vec![app("steady", 2)]).await;
    w.engine
        .wait("shop", Duration::from_secs(10))
        .await
        .expect("steady apps are online");
    w.fake.script("crasher", Script::exits(1));
    w.up(vec![app("steady", 2), app("crasher", 1)]).await;
    let failure = w
        .engine
        .wait("shop", Duration::from_secs(10))
        .await
        .expect_err("a crash loop fails the wait");
    assert_eq!(failure.app, "crasher");
    assert!(
        matches!(
            failure.cause,
            WaitCause::Crashed { .. } | WaitCause::Errored { .. }
        ),
        "{:?}",
        failure.cause
    );
}
