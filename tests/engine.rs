//! The engine with real processes, through `eco up -F`: restarts and
//! backoff, stops (graceful, forced, whole tree), readiness, dependencies,
//! env, output capture, reload on save. Each test has its own temp folder.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use crate::support::{
    Foreground, eventually, mark, processes_with_env, root, write, zombie_children,
};

const LIMIT: Duration = Duration::from_secs(10);

/// `KEY=VALUE` → the YAML env line `KEY: VALUE`.
fn env_line(mark: &str) -> String {
    let (k, v) = mark.split_once('=').expect("KEY=VALUE");
    format!("{k}: \"{v}\"")
}

fn started(instance: &str) -> impl Fn(&str) -> bool + '_ {
    move |l: &str| l.starts_with(&format!("eco: {instance} started"))
}

#[test]
fn crash_loop_backs_off_then_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  crash:\n    cmd: [sh, -c, 'echo boom; exit 3']\n    restart_delay: 40ms\n    max_restarts: 4\n",
    );
    let eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.lines.wait_for("errored", LIMIT, |l| {
        l.contains("crash.0 errored (exit code 3)")
    });
    let delays: Vec<u64> = eco
        .lines
        .all()
        .iter()
        .filter_map(|l| l.strip_prefix("eco: crash.0 restarting in "))
        .filter_map(|r| r.trim_end_matches(" ms").parse().ok())
        .collect();
    assert_eq!(delays, vec![40, 80, 160, 320]);
    // stdout and stderr are separate pipes: wait for the output to catch up.
    eco.stdout
        .wait_count("5 runs", 5, LIMIT, |l| l == "crash.0 | boom");
}

#[test]
fn term_ignoring_app_is_killed_after_stop_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  stubborn:\n    cmd: [sh, -c, 'trap \"\" TERM; echo up; while :; do sleep 0.05; done']\n    stop_timeout: 400ms\n",
    );
    let mut eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.stdout.wait_for("up", LIMIT, |l| l == "stubborn.0 | up");
    let start = Instant::now();
    eco.signal(libc::SIGINT);
    let (code, _) = eco.wait_exit(LIMIT);
    let took = start.elapsed();
    assert_eq!(code, Some(0));
    // Not before the stop timeout; after it, SIGKILL (the app would
    // never end by itself: `wait_exit` is bounded).
    assert!(took >= Duration::from_millis(400), "stopped after {took:?}");
    // The reader threads may still be draining the pipes after the exit.
    eco.lines.wait_for("SIGKILL", LIMIT, |l| {
        l == "eco: stubborn.0 stopped (signal SIGKILL)"
    });
}

#[test]
fn stop_leaves_no_process_of_the_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let marker = mark("tree");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        &format!(
            "env:\n  {}\napps:\n  waiter:\n    cmd: [sh, -c, 'sleep 1000 & echo up; wait']\n  \
             daemonised:\n    cmd: [sh, -c, 'setsid sh -c \"sleep 1001\" </dev/null >/dev/null 2>&1 & echo up; exec sleep 1002']\n",
            env_line(&marker)
        ),
    );
    let mut eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.stdout
        .wait_count("both up", 2, LIMIT, |l| l.ends_with("| up"));
    eventually("4 marked processes", LIMIT, || {
        processes_with_env(&marker).len() >= 5
    });
    eco.signal(libc::SIGINT);
    let (code, took) = eco.wait_exit(LIMIT);
    assert_eq!(code, Some(0));
    // The apps end on SIGTERM: nothing waits out the 10 s stop timeout.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    eventually("no marked process left", LIMIT, || {
        processes_with_env(&marker).is_empty()
    });
}

#[test]
fn no_zombies_while_apps_crash_and_leave_children() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  leaky:\n    cmd: [sh, -c, '(sleep 0.05 &); sleep 0.01 & exit 1']\n    restart_delay: 10ms\n    max_restart_delay: 20ms\n    max_restarts: 10\n",
    );
    let eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.lines
        .wait_for("errored", LIMIT, |l| l.contains("leaky.0 errored"));
    let pid = eco.pid();
    eventually("no zombie children", LIMIT, || {
        zombie_children(pid).is_empty()
    });
}

#[test]
fn dependencies_start_in_order_and_stop_in_reverse() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  web:\n    cmd: [sh, -c, 'echo web; exec sleep 1000']\n    depends_on: [api]\n  \
         api:\n    cmd: [sh, -c, 'sleep 0.2; echo api ready; exec sleep 1000']\n    depends_on: [db]\n    ready: { log: 'api ready' }\n  \
         db:\n    cmd: [sh, -c, 'sleep 0.2; echo db ready; exec sleep 1000']\n    ready: { log: 'db ready' }\n",
    );
    let mut eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.lines.wait_for("web started", LIMIT, started("web.0"));
    let lines = eco.lines.clone();
    let order = |prefix: &str| -> Vec<String> {
        lines
            .all()
            .iter()
            .filter_map(|l| l.strip_prefix("eco: "))
            .filter(|l| l.contains(prefix))
            .map(|l| l.split('.').next().unwrap_or_default().to_owned())
            .collect()
    };
    assert_eq!(order(" started (pid"), vec!["db", "api", "web"]);
    eco.signal(libc::SIGINT);
    eco.wait_exit(LIMIT);
    lines.wait_count("3 stops", 3, LIMIT, |l| l.contains(" stopped ("));
    assert_eq!(order(" stopped ("), vec!["web", "api", "db"]);
}

#[test]
fn env_and_increment_var_reach_instances() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        "name: envy\napps:\n  web:\n    cmd: [sh, -c, 'echo \"$ECO_PROJECT $ECO_APP $ECO_INSTANCE $NODE_APP_INSTANCE $PORT\"; exec sleep 1000']\n    \
         instances: 3\n    increment_var: PORT\n    env: { PORT: 8000 }\n",
    );
    let eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.stdout
        .wait_count("3 lines", 3, LIMIT, |l| l.starts_with("web."));
    let mut lines: Vec<String> = eco.stdout.all();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "web.0 | envy web 0 0 8000",
            "web.1 | envy web 1 1 8001",
            "web.2 | envy web 2 2 8002"
        ]
    );
}

#[test]
fn every_line_arrives_complete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  chatty:\n    cmd: [sh, -c, 'i=0; while [ $i -lt 50000 ]; do echo \"$ECO_INSTANCE:$i:abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789\"; i=$((i+1)); done']\n    \
         instances: 2\n    restart: never\n",
    );
    let eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.lines
        .wait_count("both exit", 2, Duration::from_secs(60), |l| {
            l.contains("exited")
        });
    eco.stdout
        .wait_count("every line", 100_000, LIMIT, |l| l.starts_with("chatty."));
    let lines = eco.stdout.all();
    assert_eq!(lines.len(), 100_000);
    let mut next = [0u32; 2];
    for line in &lines {
        let (prefix, body) = line.split_once(" | ").expect("prefixed");
        let instance: usize = prefix
            .strip_prefix("chatty.")
            .expect("app")
            .parse()
            .expect("index");
        let expected = format!(
            "{instance}:{}:abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789",
            next[instance]
        );
        assert_eq!(body, expected);
        next[instance] += 1;
    }
    assert_eq!(next, [50_000, 50_000]);
}

/// Output in bursts with quiet gaps: each burst is read in batches out of
/// epoll, each gap puts the pipe back in it; nothing is lost or reordered.
#[test]
fn bursts_and_gaps_lose_no_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  bursty:\n    cmd: [sh, -c, 'for b in 1 2 3 4; do seq 1 20000 | sed \"s/^/$b:/\"; sleep 0.05; done; echo last']\n    restart: never\n",
    );
    let eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.stdout
        .wait_for("the last line", LIMIT, |l| l == "bursty.0 | last");
    let lines: Vec<String> = eco
        .stdout
        .all()
        .iter()
        .filter_map(|l| l.strip_prefix("bursty.0 | ").map(str::to_owned))
        .collect();
    let expected: Vec<String> = (1..=4)
        .flat_map(|b| (1..=20_000).map(move |i| format!("{b}:{i}")))
        .chain(["last".to_string()])
        .collect();
    assert_eq!(lines.len(), expected.len());
    assert!(lines == expected, "lines out of order or changed");
}

#[test]
fn long_lines_are_split_not_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  wide:\n    cmd: [sh, -c, 'head -c 150000 /dev/zero | tr \"\\\\0\" x; echo; echo done']\n    restart: never\n",
    );
    let eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.stdout.wait_for("done", LIMIT, |l| l == "wide.0 | done");
    let pieces: Vec<usize> = eco
        .stdout
        .all()
        .iter()
        .filter_map(|l| l.strip_prefix("wide.0 | "))
        .filter(|b| b.starts_with('x'))
        .map(str::len)
        .collect();
    assert_eq!(pieces.iter().sum::<usize>(), 150_000);
    assert!(pieces.iter().all(|n| *n <= 64 * 1024), "{pieces:?}");
}

mod readiness {
    use super::*;

    fn ready_app(dir: &std::path::Path, ready: &str, extra: &str) -> Foreground {
        let file = write(
            dir,
            "ecosystem.yaml",
            &format!(
                "apps:\n  svc:\n    cmd: [sh, -c, '{extra} exec sleep 1000']\n    ready: {ready}\n    ready_timeout: 5s\n"
            ),
        );
        Foreground::start(dir, dir, &file)
    }

    fn ready(eco: &Foreground) {
        eco.lines
            .wait_for("ready", LIMIT, |l| l == "eco: svc.0 ready");
    }

    #[test]
    fn notify() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = crate::support::eco_bin();
        let eco = ready_app(
            dir.path(),
            "notify",
            &format!("sleep 0.1; {} notify READY=1;", bin.display()),
        );
        ready(&eco);
    }

    #[test]
    fn log_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let eco = ready_app(
            dir.path(),
            "{ log: 'listening on \\d+' }",
            "echo listening on 80;",
        );
        ready(&eco);
    }

    #[test]
    fn exec() {
        let dir = tempfile::tempdir().expect("tempdir");
        let eco = ready_app(dir.path(), "{ exec: 'test -f flag' }", "");
        eco.lines.wait_for("started", LIMIT, started("svc.0"));
        std::thread::sleep(Duration::from_millis(100));
        assert!(!eco.lines.all().iter().any(|l| l == "eco: svc.0 ready"));
        std::fs::write(dir.path().join("flag"), "").expect("flag");
        ready(&eco);
    }

    #[test]
    fn tcp() {
        let dir = tempfile::tempdir().expect("tempdir");
        // Reserve a port, free it, and only listen once the app runs.
        let port = TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let eco = ready_app(dir.path(), &format!("{{ tcp: '127.0.0.1:{port}' }}"), "");
        eco.lines.wait_for("started", LIMIT, started("svc.0"));
        let _listener = TcpListener::bind(("127.0.0.1", port)).expect("listen");
        ready(&eco);
    }

    #[test]
    fn http() {
        let dir = tempfile::tempdir().expect("tempdir");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        std::thread::spawn(move || {
            // First answer 503, then 200.
            for (i, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { continue };
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let status = if i == 0 {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = stream.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes(),
                );
            }
        });
        let eco = ready_app(
            dir.path(),
            &format!("{{ http: 'http://127.0.0.1:{port}/health' }}"),
            "",
        );
        ready(&eco);
    }

    #[test]
    fn timeout_counts_as_a_failure() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(
            dir.path(),
            "ecosystem.yaml",
            "apps:\n  svc:\n    cmd: [sleep, '1000']\n    ready: { log: never-printed }\n    ready_timeout: 300ms\n    restart_delay: 50ms\n",
        );
        let eco = Foreground::start(dir.path(), dir.path(), &file);
        eco.lines.wait_for("not ready", LIMIT, |l| {
            l.starts_with("eco: svc.0 failed its readiness check: not ready after 300ms")
        });
        eco.lines.wait_for("restart", LIMIT, |l| {
            l.starts_with("eco: svc.0 restarting in 50 ms")
        });
    }
}

#[test]
fn minimal_example_runs_and_stops_without_its_stop_timeout() {
    let home = tempfile::tempdir().expect("tempdir");
    let mut eco = Foreground::start(home.path(), &root(), &root().join("examples/minimal.yaml"));
    eco.stdout
        .wait_for("a tick", LIMIT, |l| l == "ticker.0 | tick 1");
    let pid = eco.wait_pid("ticker.0");
    eco.signal(libc::SIGINT);
    let (code, took) = eco.wait_exit(LIMIT);
    assert_eq!(code, Some(0));
    // The ticker ends on SIGTERM: nothing waits out a stop timeout.
    assert!(took < Duration::from_secs(8), "took {took:?}");
    assert!(crate::support::state_of(pid).is_none(), "ticker still runs");
}

#[test]
fn saving_the_file_changes_only_the_edited_app() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = |greeting: &str| {
        format!(
            "apps:\n  a:\n    cmd: [sh, -c, 'echo a $GREETING; exec sleep 1000']\n    env: {{ GREETING: {greeting} }}\n  \
             b:\n    cmd: [sh, -c, 'echo b; exec sleep 1000']\n"
        )
    };
    let file = write(dir.path(), "ecosystem.yaml", &text("hello"));
    let eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.stdout.wait_for("a", LIMIT, |l| l == "a.0 | a hello");
    eco.stdout.wait_for("b", LIMIT, |l| l == "b.0 | b");
    let (a1, b1) = (Some(eco.wait_pid("a.0")), Some(eco.wait_pid("b.0")));
    write(dir.path(), "ecosystem.yaml", &text("bonjour"));
    eco.stdout
        .wait_for("a again", LIMIT, |l| l == "a.0 | a bonjour");
    eco.lines
        .wait_count("a started twice", 2, LIMIT, started("a.0"));
    assert_ne!(eco.latest_pid("a.0"), a1);
    assert_eq!(eco.latest_pid("b.0"), b1);
    // An invalid edit is reported and changes nothing.
    write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  a:\n    cmd: x\n    instances: many\n",
    );
    eco.lines
        .wait_for("error", LIMIT, |l| l.contains("apps.a.instances"));
    eco.lines
        .wait_for("kept", LIMIT, |l| l.contains("the edit was not applied"));
    std::thread::sleep(Duration::from_millis(100));
    assert!(crate::support::state_of(eco.latest_pid("a.0").expect("pid")).is_some());
    assert!(crate::support::state_of(b1.expect("pid")).is_some());
}

#[test]
fn a_second_ctrl_c_kills_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  stubborn:\n    cmd: [sh, -c, 'trap \"\" TERM; echo up; while :; do sleep 0.05; done']\n    stop_timeout: 30s\n",
    );
    let mut eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.stdout.wait_for("up", LIMIT, |l| l == "stubborn.0 | up");
    let start = Instant::now();
    eco.signal(libc::SIGINT);
    eco.lines
        .wait_for("stopping", LIMIT, |l| l.contains("Ctrl-C again"));
    eco.signal(libc::SIGINT);
    let (code, _) = eco.wait_exit(LIMIT);
    assert_eq!(code, Some(0));
    // Far within the app's 30 s stop timeout: killed, not waited out.
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "took {:?}",
        start.elapsed()
    );
}
