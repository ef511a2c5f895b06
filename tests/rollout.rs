//! `rollout: { max_surge, max_unavailable }`: a wide surge swaps many
//! instances in about the time of one, under load without a failed
//! request, and stopping first lets an app on a fixed port roll at all.

use std::time::{Duration, Instant};

use crate::cluster::{Load, free_port, wait_requests};
use crate::support::{Home, all_online, eco_bin, stderr};

/// A cluster app whose instances each take `SLOW` to get ready, so a
/// rollout's width shows in its duration whatever the machine's load.
fn cluster_file(port: u16, instances: u32, rollout: &str) -> String {
    format!(
        "name: web\napps:\n  api:\n    cmd: [sh, -c, 'sleep 2; exec \"$0\" __fixture-http', '{}']\n    mode: cluster\n    \
         instances: {instances}\n    listen: ['127.0.0.1:{port}']\n    ready: notify\n    ready_timeout: 10s\n    \
         stop_timeout: 5s\n    rollout: {rollout}\n",
        eco_bin().display()
    )
}

/// How long each instance takes to get ready.
const SLOW: Duration = Duration::from_secs(2);

fn pids(home: &Home) -> Vec<i64> {
    home.rows()
        .iter()
        .map(|r| r["pid"].as_i64().unwrap_or(-1))
        .collect()
}

#[test]
fn eight_instances_with_surge_4_swap_in_about_the_time_of_one() {
    let home = Home::new();
    let port = free_port();
    home.write(
        "ecosystem.yaml",
        &cluster_file(port, 8, "{ max_surge: 4, max_unavailable: 0 }"),
    );
    home.ok(&["up", "--wait"]);
    let load = Load::start(port, 4);
    wait_requests(&load, 50);
    let before = pids(&home);
    let started = Instant::now();
    home.ok(&["reload", "api"]);
    let took = started.elapsed();
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
    // Two waves of four take about 2 × SLOW; three waves would take
    // 3 × SLOW, one at a time 8 × SLOW. The margin is for a loaded machine.
    assert!(took >= SLOW * 2, "faster than two waves: {took:?}");
    assert!(
        took < SLOW * 2 + SLOW * 3 / 4,
        "8 instances with surge 4 took {took:?}"
    );
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
