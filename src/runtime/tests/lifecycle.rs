//! What users do to running apps: scale, stop, start, restart, delete,
//! down; what the spawner is asked; what the engine reports.

use std::time::Duration;

use super::super::spawner::fake::Script;
use super::{World, app, is_reason, ready_app, until};
use crate::state::{Reason, Status};

#[tokio::test(start_paused = true)]
async fn scaling_up_adds_instances_and_leaves_the_others_alone() {
    let w = World::new();
    w.up(vec![app("web", 2)]).await;
    w.all("web", Status::Online).await;
    let before = w.fake.running("web");
    w.engine.scale("web", 5).await.unwrap();
    w.all("web", Status::Online).await;
    let rows = w.rows().await;
    let indexes: Vec<u32> = rows.iter().map(|r| r.index).collect();
    assert_eq!(indexes, [0, 1, 2, 3, 4]);
    assert_eq!(w.fake.running("web").len(), 5);
    for pid in before {
        assert!(w.fake.running("web").contains(&pid), "{pid} kept running");
    }
}

#[tokio::test(start_paused = true)]
async fn scaling_down_stops_the_highest_instances() {
    let w = World::new();
    w.up(vec![app("web", 5)]).await;
    w.all("web", Status::Online).await;
    let kept = [w.row("web", 0).await, w.row("web", 1).await].map(|r| r.state.pid.unwrap());
    w.engine.scale("web", 2).await.unwrap();
    until("3 stopped", || async { w.fake.running("web").len() == 2 }).await;
    let indexes: Vec<u32> = w.rows().await.iter().map(|r| r.index).collect();
    assert_eq!(indexes, [0, 1]);
    let mut running = w.fake.running("web");
    running.sort_unstable();
    assert_eq!(running, kept.to_vec());
}

#[tokio::test(start_paused = true)]
async fn stopping_one_instance_and_starting_it_again() {
    let w = World::new();
    w.up(vec![app("web", 3)]).await;
    w.all("web", Status::Online).await;
    let pid1 = w.row("web", 1).await.state.pid.unwrap();
    w.engine.stop("web:1").await.unwrap();
    assert_eq!(w.row("web", 1).await.state.status, Status::Stopped);
    assert!(!w.fake.running("web").contains(&pid1));
    assert_eq!(w.fake.signals_to(pid1), [libc::SIGTERM]);
    assert_eq!(w.fake.running("web").len(), 2, "the others run on");
    w.engine.start("web:1").await.unwrap();
    w.all("web", Status::Online).await;
    assert_eq!(w.fake.running("web").len(), 3);
    assert_eq!(w.fake.started("web"), 4, "only web:1 started again");
}

#[tokio::test(start_paused = true)]
async fn a_stopped_app_stays_stopped_until_started() {
    let w = World::new();
    w.fake.script("api", Script::runs());
    w.up(vec![app("api", 2)]).await;
    w.all("api", Status::Online).await;
    w.engine.stop("api").await.unwrap();
    w.all("api", Status::Stopped).await;
    // A save of the same file changes nothing for a stopped app.
    w.up(vec![app("api", 2)]).await;
    super::pass(Duration::from_secs(60)).await;
    assert!(w.fake.running("api").is_empty());
    w.engine.start("api").await.unwrap();
    w.all("api", Status::Online).await;
    assert_eq!(w.fake.running("api").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_custom_stop_signal_and_a_stubborn_app_get_sigkill_after_the_timeout() {
    let w = World::new();
    w.fake.script("stubborn", Script::runs().ignores_stop());
    let mut stubborn = app("stubborn", 1);
    stubborn.settings.stop_signal = crate::spec::Signal(libc::SIGINT);
    stubborn.settings.stop_timeout = Duration::from_secs(7);
    w.up(vec![stubborn]).await;
    w.all("stubborn", Status::Online).await;
    let pid = w.row("stubborn", 0).await.state.pid.unwrap();
    let started = tokio::time::Instant::now();
    w.engine.stop("stubborn").await.unwrap();
    let took = started.elapsed();
    assert_eq!(w.fake.signals_to(pid), [libc::SIGINT, libc::SIGKILL]);
    assert!(
        took >= Duration::from_secs(7) && took < Duration::from_secs(8),
        "SIGKILL came after {took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn user_restart_records_the_reason_and_the_history() {
    let w = World::new();
    w.up(vec![app("api", 1)]).await;
    w.all("api", Status::Online).await;
    let id = w.row("api", 0).await.id;
    w.engine.restart("api").await.unwrap();
    until("a second start", || async { w.fake.started("api") == 2 }).await;
    w.all("api", Status::Online).await;
    w.engine.restart("api:0").await.unwrap();
    until("a third start", || async { w.fake.started("api") == 3 }).await;
    w.all("api", Status::Online).await;
    let row = w.row("api", 0).await;
    assert_eq!(row.id, id);
    assert_eq!(row.state.restarts, 2);
    assert!(is_reason(&row, &Reason::User));
    let reasons: Vec<Reason> = row.state.history.iter().map(|h| h.reason.clone()).collect();
    assert_eq!(reasons, [Reason::User, Reason::User]);
    assert_eq!(w.fake.started("api"), 3);
}

#[tokio::test(start_paused = true)]
async fn started_and_history_times_come_from_the_engines_clock() {
    let w = World::new();
    super::pass(Duration::from_secs(90)).await;
    w.up(vec![app("api", 1)]).await;
    w.all("api", Status::Online).await;
    let started = w.row("api", 0).await.state.started.unwrap();
    let since = started.duration_since(w.clock_base).unwrap();
    assert!(
        since >= Duration::from_secs(90) && since < Duration::from_secs(91),
        "{since:?}"
    );
    super::pass(Duration::from_secs(30)).await;
    w.engine.restart("api").await.unwrap();
    until("a second start", || async { w.fake.started("api") == 2 }).await;
    w.all("api", Status::Online).await;
    let at = w.row("api", 0).await.state.history[0].at;
    let since = at.duration_since(w.clock_base).unwrap();
    assert!(since >= Duration::from_secs(120), "{since:?}");
}

#[tokio::test(start_paused = true)]
async fn the_spawn_request_carries_env_cwd_group_and_the_descriptor_budget() {
    let w = World::new();
    let mut api = app("api", 2);
    api.process.env.insert("PORT".into(), "8080".into());
    api.process.cwd = "/srv".into();
    w.up(vec![api]).await;
    w.all("api", Status::Online).await;
    let spawns = w.fake.spawns();
    assert_eq!(spawns.len(), 2);
    for spawn in &spawns {
        let r = &spawn.request;
        assert_eq!(r.argv, ["api"]);
        assert_eq!(r.cwd, std::path::Path::new("/srv"));
        assert!(r.new_group, "every instance leads its own group");
        assert_eq!(r.nofile, Some(1024), "the budget given to Engine::new");
        assert!(r.cgroup.is_none());
        assert!(r.fds.is_empty());
        assert_eq!(r.env_var("PORT").unwrap(), "8080");
        let mark = r.env_var(super::super::spawn::SPAWN_MARK).unwrap();
        assert!(mark.to_string_lossy().starts_with("test."), "{mark:?}");
        assert!(
            r.env_var("NOTIFY_SOCKET").is_none(),
            "eco's own supervisor's"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn output_lines_reach_the_observer_per_instance_and_stream() {
    let w = World::new();
    w.fake
        .script("talker", Script::runs().prints("hello").prints_err("oops"));
    w.up(vec![app("talker", 2)]).await;
    until("4 lines", || async {
        w.recorder.lines.lock().unwrap().len() >= 4
    })
    .await;
    let mut lines: Vec<(u32, String)> = w
        .recorder
        .lines
        .lock()
        .unwrap()
        .iter()
        .map(|(id, stream, line)| (id.index, format!("{stream:?}:{line}")))
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            (0, "Err:oops".to_owned()),
            (0, "Out:hello".to_owned()),
            (1, "Err:oops".to_owned()),
            (1, "Out:hello".to_owned())
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn ready_on_a_log_line() {
    let w = World::new();
    w.fake.script(
        "server",
        Script::runs().prints("booting").prints("listening on :80"),
    );
    let mut server = app("server", 1);
    server.settings.ready = Some(crate::spec::Ready::Log("^listening".into()));
    w.up(vec![server]).await;
    w.all("server", Status::Online).await;
    assert_eq!(w.count("server", |e| *e == super::super::Event::Ready), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dependent_starts_once_its_dependency_is_ready() {
    let w = World::new();
    w.fake.script(
        "db-ready",
        Script::runs().exits_after(Duration::from_secs(3), 0),
    );
    let db = ready_app("db", 1, "db-ready");
    let mut api = app("api", 1);
    api.settings.depends_on = vec!["db".into()];
    w.up(vec![db, api]).await;
    w.all("api", Status::Online).await;
    let spawns = w.fake.spawns();
    let db_at = spawns.iter().find(|s| s.key == "db").unwrap().at;
    let api_at = spawns.iter().find(|s| s.key == "api").unwrap().at;
    assert!(
        api_at - db_at >= Duration::from_secs(3),
        "api started {:?} after db",
        api_at - db_at
    );
}

#[tokio::test(start_paused = true)]
async fn delete_and_down_stop_everything_and_free_the_ids() {
    let w = World::new();
    w.up(vec![app("web", 2), app("worker", 1)]).await;
    w.all("web", Status::Online).await;
    w.all("worker", Status::Online).await;
    w.engine.delete("worker").await.unwrap();
    assert!(w.fake.running("worker").is_empty());
    assert!(w.rows().await.iter().all(|r| r.app == "web"));
    assert!(w.engine.down("shop").await);
    assert!(w.fake.all_running().is_empty());
    assert!(w.rows().await.is_empty());
    assert!(
        w.engine.saved_ids().is_empty(),
        "ids freed with their slots"
    );
    assert!(!w.engine.down("shop").await, "nothing left to take down");
}
