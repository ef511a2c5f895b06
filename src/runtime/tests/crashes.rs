//! Crash loops: backoff, min_uptime, max_restarts, restart policies,
//! starts that fail, and what a user restart resets.

use std::time::Duration;

use super::super::Event;
use super::super::spawner::fake::Script;
use super::{World, app, is_reason, pass, until};
use crate::spec::RestartPolicy;
use crate::state::{Exit, Reason, Status};

#[tokio::test(start_paused = true)]
async fn a_crash_loop_backs_off_doubling_up_to_the_cap() {
    let w = World::new();
    w.fake.script("api", Script::exits(1));
    let mut api = app("api", 1);
    api.settings.restart_delay = Duration::from_millis(100);
    api.settings.max_restart_delay = Duration::from_millis(800);
    api.settings.max_restarts = 100;
    w.up(vec![api]).await;
    until("7 starts", || async { w.fake.started("api") >= 7 }).await;
    let at: Vec<_> = w.fake.spawns().iter().map(|s| s.at).collect();
    let gaps: Vec<u128> = at.windows(2).map(|p| (p[1] - p[0]).as_millis()).collect();
    // 100, 200, 400, 800, then capped at 800 (within the clock's 1 ms grain).
    let wanted = [100, 200, 400, 800, 800, 800];
    for (gap, want) in gaps.iter().zip(wanted) {
        assert!(
            (want..=want + 2).contains(gap),
            "gaps {gaps:?}, wanted {wanted:?}"
        );
    }
    assert!(
        w.count("api", |e| matches!(e, Event::Restarting { .. })) >= 6,
        "every crash is announced with its delay"
    );
}

#[tokio::test(start_paused = true)]
async fn max_restarts_crashes_in_a_row_make_it_errored() {
    let w = World::new();
    w.fake.script("api", Script::exits(3));
    let mut api = app("api", 1);
    api.settings.max_restarts = 3;
    w.up(vec![api]).await;
    w.all("api", Status::Errored).await;
    // The first start and 3 restarts, then nothing more.
    assert_eq!(w.fake.started("api"), 4);
    pass(Duration::from_secs(600)).await;
    assert_eq!(w.fake.started("api"), 4, "an errored app stays down");
    let row = w.row("api", 0).await;
    assert_eq!(row.state.last_exit, Some(Exit::Code(3)));
    assert_eq!(row.state.restarts, 3);
    assert_eq!(
        w.count("api", |e| matches!(e, Event::Errored { .. })),
        1,
        "errored once"
    );
}

#[tokio::test(start_paused = true)]
async fn runs_longer_than_min_uptime_never_count_as_a_crash_loop() {
    let w = World::new();
    w.fake
        .script("api", Script::runs().exits_after(Duration::from_secs(2), 1));
    let mut api = app("api", 1);
    api.settings.min_uptime = Duration::from_secs(1);
    api.settings.max_restarts = 2;
    w.up(vec![api]).await;
    until("10 starts", || async { w.fake.started("api") >= 10 }).await;
    assert_ne!(w.row("api", 0).await.state.status, Status::Errored);
    // Each restart waits the base delay only: the count was reset.
    let at: Vec<_> = w.fake.spawns().iter().map(|s| s.at).collect();
    for pair in at.windows(2) {
        let gap = (pair[1] - pair[0]).as_millis();
        assert!((2100..=2102).contains(&gap), "gap {gap} ms");
    }
}

#[tokio::test(start_paused = true)]
async fn runs_shorter_than_min_uptime_count_as_crashes() {
    let w = World::new();
    w.fake.script(
        "api",
        Script::runs().exits_after(Duration::from_millis(500), 0),
    );
    let mut api = app("api", 1);
    api.settings.min_uptime = Duration::from_secs(1);
    api.settings.max_restarts = 2;
    w.up(vec![api]).await;
    w.all("api", Status::Errored).await;
    assert_eq!(
        w.fake.started("api"),
        3,
        "a clean but short run is a crash too"
    );
}

#[tokio::test(start_paused = true)]
async fn restart_never_and_on_failure_follow_the_exit_code() {
    let w = World::new();
    w.fake.script("clean", Script::exits(0));
    w.fake.script("failing", Script::exits(2));
    w.fake.then("flaky", Script::exits(1));
    w.fake.then("flaky", Script::exits(0));
    let mut clean = app("clean", 1);
    clean.settings.restart = RestartPolicy::Never;
    let mut failing = app("failing", 1);
    failing.settings.restart = RestartPolicy::Never;
    let mut flaky = app("flaky", 1);
    flaky.settings.restart = RestartPolicy::OnFailure;
    w.up(vec![clean, failing, flaky]).await;
    w.all("clean", Status::Stopped).await;
    w.all("failing", Status::Errored).await;
    w.all("flaky", Status::Stopped).await;
    assert_eq!(w.fake.started("clean"), 1);
    assert_eq!(w.fake.started("failing"), 1);
    assert_eq!(
        w.fake.started("flaky"),
        2,
        "restarted after the failure only"
    );
}

#[tokio::test(start_paused = true)]
async fn a_start_that_fails_says_why_and_backs_off_to_errored() {
    let w = World::new();
    w.fake.script("ghost", Script::fails(libc::ENOENT));
    let mut ghost = app("ghost", 1);
    ghost.settings.max_restarts = 2;
    w.up(vec![ghost]).await;
    w.all("ghost", Status::Errored).await;
    let failures = w.count("ghost", |e| matches!(e, Event::SpawnFailed { .. }));
    assert_eq!(failures, 3, "the first start and two retries");
    let row = w.row("ghost", 0).await;
    let error = row.state.last_error.unwrap_or_default();
    assert!(
        error.contains("cannot start `ghost`") && error.contains("No such file"),
        "{error}"
    );
    let told = w.recorder.lines.lock().unwrap().clone();
    assert!(
        told.iter()
            .any(|(_, _, l)| l.contains("eco: cannot start `ghost`")),
        "the cause goes to the app's err stream: {told:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_user_restart_of_an_errored_app_starts_it_with_a_fresh_count() {
    let w = World::new();
    w.fake.script("api", Script::exits(1));
    let mut api = app("api", 1);
    api.settings.max_restarts = 1;
    w.up(vec![api]).await;
    w.all("api", Status::Errored).await;
    assert_eq!(w.fake.started("api"), 2);
    w.fake.script("api", Script::runs());
    w.engine.restart("api").await.unwrap();
    w.all("api", Status::Online).await;
    let row = w.row("api", 0).await;
    assert!(
        is_reason(&row, &Reason::User),
        "{:?}",
        row.state.last_reason
    );
    assert_eq!(w.fake.running("api").len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_process_killed_from_outside_is_restarted_with_reason_crash() {
    let w = World::new();
    w.up(vec![app("api", 2)]).await;
    w.all("api", Status::Online).await;
    let victim = w.row("api", 1).await.state.pid.unwrap();
    w.fake.end(victim, Exit::Signal(libc::SIGKILL));
    until("api:1 back", || async {
        let row = w.row("api", 1).await;
        row.state.status == Status::Online && row.state.pid != Some(victim)
    })
    .await;
    let row = w.row("api", 1).await;
    assert!(is_reason(&row, &Reason::Crash));
    assert_eq!(row.state.restarts, 1);
    let entry = row.state.history.back().cloned().unwrap();
    assert_eq!(entry.exit, Some(Exit::Signal(libc::SIGKILL)));
    assert_eq!(
        w.row("api", 0).await.state.restarts,
        0,
        "its sibling untouched"
    );
}

#[tokio::test(start_paused = true)]
async fn ids_stay_the_same_across_crash_restarts() {
    let w = World::new();
    w.up(vec![app("web", 3), app("worker", 2)]).await;
    w.all("web", Status::Online).await;
    w.all("worker", Status::Online).await;
    let before: Vec<(String, u32, u32)> = w
        .rows()
        .await
        .iter()
        .map(|r| (r.app.clone(), r.index, r.id))
        .collect();
    for pid in w.fake.running("web") {
        w.fake.end(pid, Exit::Code(1));
    }
    until("web restarted", || async { w.fake.started("web") == 6 }).await;
    w.all("web", Status::Online).await;
    let after: Vec<(String, u32, u32)> = w
        .rows()
        .await
        .iter()
        .map(|r| (r.app.clone(), r.index, r.id))
        .collect();
    assert_eq!(before, after);
    let ids: std::collections::BTreeSet<u32> = after.iter().map(|r| r.2).collect();
    assert_eq!(ids.len(), 5, "one id per slot");
}

#[tokio::test(start_paused = true)]
async fn an_instance_never_ready_at_its_first_start_restarts_as_not_ready() {
    let w = World::new();
    w.fake.script("api-ready", Script::exits(1));
    let mut api = super::ready_app("api", 1, "api-ready");
    api.settings.ready_timeout = Duration::from_secs(2);
    api.settings.max_restarts = 1;
    w.up(vec![api]).await;
    w.all("api", Status::Errored).await;
    assert_eq!(w.fake.started("api"), 2);
    assert!(w.fake.all_running().is_empty(), "stopped when not ready");
    let row = w.row("api", 0).await;
    assert!(
        is_reason(&row, &Reason::NotReady),
        "{:?}",
        row.state.last_reason
    );
    let error = row.state.last_error.unwrap_or_default();
    assert!(error.contains("not ready after 2s"), "{error}");
    assert_eq!(w.count("api", |e| matches!(e, Event::NotReady { .. })), 2);
}
