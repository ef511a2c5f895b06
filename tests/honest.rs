//! Honest messages: why an app cannot start is shown where users look,
//! and `listen` addresses are checked before anything starts.

use std::time::Duration;

use crate::support::{Home, eventually, stderr};

#[test]
fn a_missing_program_is_named_in_up_wait_ls_describe_and_the_err_log() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  a:\n    cmd: [/no/such/program]\n    restart_delay: 10ms\n    max_restarts: 2\n",
    );
    let out = home.eco(&["up", "--wait", "--timeout", "10s"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot start `/no/such/program`: No such file or directory"),
        "{err}"
    );
    eventually("errored", Duration::from_secs(10), || {
        home.row("a", 0)["status"] == "errored"
    });
    let table = home.ok(&["ls"]);
    assert!(
        table.contains("error: a:0 cannot start `/no/such/program`"),
        "{table}"
    );
    let described = home.ok(&["describe", "a"]);
    assert!(
        described.contains("last start failed: cannot start"),
        "{described}"
    );
    let logs = home.ok(&["logs", "a", "--err"]);
    assert!(
        logs.contains("eco: cannot start `/no/such/program`"),
        "{logs}"
    );
}

#[test]
fn a_deleted_cwd_is_named() {
    let home = Home::new();
    std::fs::create_dir(home.path().join("work")).expect("mkdir");
    home.write(
        "ecosystem.yaml",
        "apps:\n  a:\n    cmd: [sh, -c, 'sleep 0.2; exit 1']\n    cwd: ./work\n    restart_delay: 10ms\n",
    );
    home.ok(&["up"]);
    std::fs::remove_dir(home.path().join("work")).expect("rmdir");
    eventually("the cause", Duration::from_secs(10), || {
        home.ok(&["ls"]).contains("does not exist")
    });
    let described = home.ok(&["describe", "a"]);
    assert!(described.contains("work does not exist"), "{described}");
}

#[test]
fn two_projects_cannot_share_a_listen_address() {
    let home = Home::new();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    for project in ["p1", "p2"] {
        std::fs::create_dir(home.path().join(project)).expect("mkdir");
        home.write(
            &format!("{project}/ecosystem.yaml"),
            &format!(
                "name: {project}\napps:\n  web:\n    cmd: [sleep, '1000']\n    mode: cluster\n    listen: ['127.0.0.1:{port}']\n"
            ),
        );
    }
    home.ok(&["up", "-f", "p1/ecosystem.yaml"]);
    let out = home.eco(&["up", "-f", "p2/ecosystem.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("p1/web"), "{}", stderr(&out));
    assert!(
        !home.rows().iter().any(|r| r["project"] == "p2"),
        "nothing of p2 started"
    );
}

#[test]
fn an_address_held_by_another_program_is_an_error_not_a_crash_loop() {
    let home = Home::new();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().expect("addr").port();
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  web:\n    cmd: [sleep, '1000']\n    mode: cluster\n    listen: ['127.0.0.1:{port}']\n"
        ),
    );
    let out = home.eco(&["up"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")) && err.contains("in use"),
        "{err}"
    );
    assert!(home.rows().is_empty(), "nothing started");
    drop(holder);
}

#[test]
fn ad_hoc_names_follow_the_files_rules() {
    let home = Home::new();
    home.write("job.sh", "sleep 1000\n");
    for name in ["all", &"x".repeat(65)] {
        let out = home.eco(&["start", "job.sh", "--name", name]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", stderr(&out));
    }
}
