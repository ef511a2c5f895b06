//! `rollout: { max_surge, max_unavailable }`: a wide surge starts as many
//! new instances at once as it allows, under load without a failed
//! request, and stopping first lets an app on a fixed port roll at all.

use std::path::Path;

use crate::cluster::{Load, free_port, wait_requests};
use crate::support::{Home, all_online, eco_bin, stderr};

/// A cluster app whose instances each take 2 s to get ready, and append
/// `start` when eco starts them and `ready` just before they tell eco they
/// are, to `journal`. Appends are ordered, so the journal is the order of
/// eco's decisions whatever the machine's load.
fn cluster_file(port: u16, instances: u32, rollout: &str, journal: &Path) -> String {
    format!(
        "name: web\napps:\n  api:\n    cmd: [sh, -c, 'echo start >> \"$1\"; sleep 2; echo ready >> \"$1\"; \
         exec \"$0\" __fixture-http', '{}', '{}']\n    mode: cluster\n    \
         instances: {instances}\n    listen: ['127.0.0.1:{port}']\n    ready: notify\n    ready_timeout: 30s\n    \
         stop_timeout: 5s\n    rollout: {rollout}\n",
        eco_bin().display(),
        journal.display()
    )
}

/// The most new instances starting at once (started, not yet ready) in a
/// journal, and how many started in all.
fn widest_wave(journal: &str) -> (usize, usize) {
    let (mut pending, mut widest, mut started) = (0usize, 0, 0);
    for line in journal.lines() {
        match line {
            "start" => {
                pending += 1;
                started += 1;
                widest = widest.max(pending);
            }
            "ready" => pending = pending.saturating_sub(1),
            _ => {}
        }
    }
    (widest, started)
}

fn pids(home: &Home) -> Vec<i64> {
    home.rows()
        .iter()
        .map(|r| r["pid"].as_i64().unwrap_or(-1))
        .collect()
}

#[test]
fn eight_instances_with_surge_4_start_four_at_a_time() {
    let home = Home::new();
    let port = free_port();
    let journal = home.path().join("journal");
    home.write(
        "ecosystem.yaml",
        &cluster_file(port, 8, "{ max_surge: 4, max_unavailable: 0 }", &journal),
    );
    home.ok(&["up", "--wait"]);
    let load = Load::start(port, 4);
    wait_requests(&load, 50);
    let before = pids(&home);
    // Only the reload's own starts count.
    let skip = std::fs::read_to_string(&journal).expect("journal").len();
    home.ok(&["reload", "api"]);
    let text = std::fs::read_to_string(&journal).expect("journal");
    let rows = home.rows();
    assert!(all_online(&rows), "{rows:#?}");
    let after = pids(&home);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} → {after:?}"
    );
    wait_requests(&load, 20);
    let (ok, refused, failed) = load.finish();
    assert_eq!(refused, 0, "refused connections");
    assert!(failed.is_empty(), "{failed:?}");
    assert!(ok > 70, "only {ok} requests");
    // Surge 4: four new instances start before any is ready, never a
    // fifth (one at a time would show 1, no limit 8). Each instance sleeps
    // 2 s before it is ready, so starting four at once is in eco's hands.
    let (widest, started) = widest_wave(&text[skip..]);
    assert_eq!(started, 8, "{}", &text[skip..]);
    assert_eq!(widest, 4, "new instances at once: {}", &text[skip..]);
}

#[test]
fn the_wave_counter_reads_a_journal() {
    let journal = "start\nstart\nready\nstart\nready\nready\nstart\n";
    assert_eq!(widest_wave(journal), (2, 4));
}

#[test]
fn stopping_first_rolls_an_app_on_a_fixed_port() {
    crate::support::tools::require(&["python3"]);
    let home = Home::new();
    let port = free_port();
    let file = |rollout: &str| {
        format!(
            "apps:\n  api:\n    cmd: [python3, -m, http.server, --bind, 127.0.0.1, '{port}']\n    \
             ready: {{ tcp: '127.0.0.1:{port}' }}\n    ready_timeout: 20s\n    stop_timeout: 2s\n{rollout}"
        )
    };
    home.write("ecosystem.yaml", &file(""));
    home.ok(&["up", "--wait"]);
    let first = pids(&home);
    // Beside the old one (the default), the new one could not bind the
    // port, and its tcp check would be answered by the old one: stopping
    // first is the honest way.
    home.write(
        "ecosystem.yaml",
        &file("    rollout: { max_surge: 0, max_unavailable: 1 }\n"),
    );
    home.ok(&["up", "--wait"]);
    let out = home.eco(&["reload", "api"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        home.ok(&["describe", "api"])
    );
    let rows = home.wait_rows("replaced", |rows| {
        all_online(rows)
            && rows
                .iter()
                .all(|r| !first.contains(&r["pid"].as_i64().unwrap_or(-1)))
    });
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["last_restart_reason"], "user", "{rows:#?}");
    std::net::TcpStream::connect(("127.0.0.1", port)).expect("the new one serves");
}

#[test]
fn both_limits_zero_is_refused() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  api:\n    cmd: [sleep, '100']\n    rollout: { max_surge: 0, max_unavailable: 0 }\n",
    );
    let out = home.eco(&["up"]);
    assert_ne!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert!(err.contains("both 0"), "{err}");
}
