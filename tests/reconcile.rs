//! The one reconciler: `up -F` watches sources and env files as the daemon
//! does; shutdown never races a restart; the daemon's signals.

use std::time::Duration;

use crate::support::{Foreground, Home, eventually, mark, processes_with_env, state_of, write};

const LIMIT: Duration = Duration::from_secs(10);

fn signal(pid: i32, sig: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("kill");
}

#[test]
fn up_f_restarts_a_watched_app_once_per_burst() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("src")).expect("mkdir");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  web:\n    cmd: [sh, -c, 'echo up; exec sleep 1000']\n    watch: ['src/**']\n    watch_delay: 200ms\n",
    );
    let eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.stdout
        .wait_for("first start", LIMIT, |l| l == "web.0 | up");
    for i in 0..5 {
        write(&dir.path().join("src"), &format!("f{i}.js"), "x");
        std::thread::sleep(Duration::from_millis(20));
    }
    eco.stdout
        .wait_count("one restart", 2, LIMIT, |l| l == "web.0 | up");
    eco.lines.wait_for("the reason", LIMIT, |l| {
        l.starts_with("eco: restarting web: watch (src/")
    });
    // Nothing else is pending: a second restart would come within the delay.
    std::thread::sleep(Duration::from_millis(700));
    let ups = eco
        .stdout
        .all()
        .iter()
        .filter(|l| *l == "web.0 | up")
        .count();
    assert_eq!(ups, 2, "{:?}", eco.lines.all());
}

#[test]
fn up_f_applies_an_env_file_edit() {
    let dir = tempfile::tempdir().expect("tempdir");
    write(dir.path(), ".env", "GREETING=hello\n");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  a:\n    cmd: [sh, -c, 'echo \"greeting $GREETING\"; exec sleep 1000']\n    env_file: .env\n",
    );
    let eco = Foreground::start(dir.path(), dir.path(), &file);
    eco.stdout
        .wait_for("hello", LIMIT, |l| l == "a.0 | greeting hello");
    write(dir.path(), ".env", "GREETING=bye\n");
    eco.stdout
        .wait_for("bye", LIMIT, |l| l == "a.0 | greeting bye");
    assert!(
        eco.lines.all().iter().any(|l| l.contains("~ replace a")),
        "{:?}",
        eco.lines.all()
    );
}

/// Restarts keep coming (every second by schedule, every two by memory) and
/// each stop takes a while; `eco kill` in the middle of that, five times,
/// leaves nothing running and nothing starting afterwards.
#[test]
fn kill_during_cron_and_memory_restarts_leaves_nothing() {
    let home = Home::new();
    let tag = mark("kill_during_restarts");
    let starts = home.path().join("starts.log");
    let app = |name: &str, extra: &str| {
        format!(
            "  {name}:\n    cmd: [sh, -c, 'echo {name} >> {log}; trap \"sleep 0.3; exit 0\" TERM; while :; do sleep 0.05; done']\n    env: {{ {k}: \"{v}\" }}\n    restart_delay: 0ms\n{extra}",
            log = starts.display(),
            k = tag.split_once('=').expect("mark").0,
            v = tag.split_once('=').expect("mark").1,
        )
    };
    let yaml = format!(
        "apps:\n{}{}",
        app(
            "ticker",
            "    cron_restart: \"* * * * * *\"\n    instances: 2\n"
        ),
        app("hog", "    max_memory: 1K\n"),
    );
    home.write("ecosystem.yaml", &yaml);
    for round in 0..5 {
        home.ok(&["up"]);
        home.wait_rows("restarts under way", |rows| {
            rows.iter()
                .any(|r| r["app"] == "ticker" && r["restarts"].as_u64() >= Some(1))
        });
        let out = home.ok(&["kill"]);
        assert!(out.contains("daemon stopped"), "{out}");
        let lines_at_kill = std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .count();
        assert_eq!(
            processes_with_env(&tag),
            Vec::<i32>::new(),
            "round {round}: processes left after kill"
        );
        // A schedule or a limit would have started something by now.
        std::thread::sleep(Duration::from_millis(1200));
        let lines_later = std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .count();
        assert_eq!(
            lines_at_kill, lines_later,
            "round {round}: started after kill"
        );
        assert_eq!(processes_with_env(&tag), Vec::<i32>::new());
    }
}

#[test]
fn second_sigterm_kills_a_term_ignoring_app_without_its_stop_timeout() {
    let home = Home::new();
    let tag = mark("second_sigterm");
    let (k, v) = tag.split_once('=').expect("mark");
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  stubborn:\n    cmd: [sh, -c, 'trap \"\" TERM; while :; do sleep 0.05; done']\n    stop_timeout: 60s\n    env: {{ {k}: \"{v}\" }}\n"
        ),
    );
    home.ok(&["up", "--wait"]);
    let daemon = home.daemon_pid().expect("daemon pid");
    signal(daemon, nix::sys::signal::Signal::SIGTERM);
    eventually("stopping", LIMIT, || {
        std::fs::read_to_string(home.path().join("daemon.log"))
            .unwrap_or_default()
            .contains("stopping every app")
    });
    signal(daemon, nix::sys::signal::Signal::SIGTERM);
    // Well within the app's 60 s stop timeout: killed, not waited out.
    eventually("daemon and app gone", LIMIT, || {
        state_of(daemon).is_none_or(|s| s == 'Z') && processes_with_env(&tag).is_empty()
    });
}

#[test]
fn sighup_applies_a_changed_file() {
    let home = Home::new();
    // The file is a link to a folder the daemon does not watch, so only
    // SIGHUP can bring the edit in.
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let real = write(
        elsewhere.path(),
        "real.yaml",
        "name: hup\napps:\n  a:\n    cmd: [sleep, '1000']\n",
    );
    std::os::unix::fs::symlink(&real, home.path().join("ecosystem.yaml")).expect("symlink");
    home.ok(&["up"]);
    std::fs::write(
        &real,
        "name: hup\napps:\n  a:\n    cmd: [sleep, '1000']\n    instances: 2\n",
    )
    .expect("edit");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(home.rows().len(), 1, "the edit is not seen without SIGHUP");
    signal(
        home.daemon_pid().expect("daemon"),
        nix::sys::signal::Signal::SIGHUP,
    );
    home.wait_rows("two instances", |rows| rows.len() == 2);
}

#[test]
fn sigusr1_and_sigusr2_leave_the_daemon_running() {
    let home = Home::new();
    home.write("ecosystem.yaml", "apps:\n  a:\n    cmd: [sleep, '1000']\n");
    home.ok(&["up", "--wait"]);
    let daemon = home.daemon_pid().expect("daemon");
    let pid = home.row("a", 0)["pid"].clone();
    signal(daemon, nix::sys::signal::Signal::SIGUSR1);
    signal(daemon, nix::sys::signal::Signal::SIGUSR2);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(state_of(daemon).map(|s| s != 'Z'), Some(true));
    assert_eq!(home.daemon_pid(), Some(daemon));
    assert_eq!(home.row("a", 0)["pid"], pid, "the app was not touched");
}
