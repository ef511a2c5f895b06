//! Outliving a crash: the daemon is SIGKILLed, its apps run on (their
//! pipes and cluster sockets kept by the descriptor holder, `eco
//! __holder`), and the daemon that the next command starts adopts them:
//! same pids, no line lost, no connection refused.

use std::process::Command;
use std::time::Duration;

use crate::cluster::{Load, free_port};
use crate::support::{Home, all_online, eco_bin, eventually, root, state_of};
use crate::update::{FDSTORE_APP, lines_of, numbers};

/// `(app:index, pid)` of every row.
fn pids(home: &Home) -> Vec<(String, i64)> {
    home.rows()
        .iter()
        .map(|r| {
            (
                format!("{}:{}", r["app"], r["instance"]),
                r["pid"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

/// The holder processes serving this home.
fn holders(home: &Home) -> Vec<i32> {
    let socket = home.path().join("holder.sock");
    let needle = format!("__holder\0{}", socket.display());
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
        })
        .filter(|pid| state_of(*pid).is_some_and(|s| s != 'Z'))
        .collect()
}

fn alive(pid: i64) -> bool {
    i32::try_from(pid)
        .ok()
        .and_then(state_of)
        .is_some_and(|s| s != 'Z')
}

/// What a process's descriptors point at (`pipe:[123]`, `socket:[456]`).
fn open_of(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            Some(
                std::fs::read_link(e.path())
                    .ok()?
                    .to_string_lossy()
                    .into_owned(),
            )
        })
        .collect()
}

/// Waits until the holder holds the stdout and stderr pipes of every
/// running instance `ls` shows (it is fed a moment after each change),
/// then kills the daemon with SIGKILL.
pub(crate) fn crash(home: &Home) {
    crash_holding(home, 0);
}

/// [`crash`], once the holder also holds `sockets` sockets besides its own
/// two.
fn crash_holding(home: &Home, sockets: usize) {
    let pipes: Vec<String> = home
        .rows()
        .iter()
        .filter_map(|r| i32::try_from(r["pid"].as_i64()?).ok())
        .flat_map(|pid| {
            ["1", "2"].into_iter().filter_map(move |fd| {
                let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
                Some(link.to_string_lossy().into_owned())
            })
        })
        .filter(|link| link.starts_with("pipe:"))
        .collect();
    assert!(!pipes.is_empty(), "no app writes into a pipe");
    eventually("the holder fed", Duration::from_secs(10), || {
        holders(home).first().is_some_and(|holder| {
            let held = open_of(*holder);
            pipes.iter().all(|p| held.contains(p))
                && held.iter().filter(|l| l.starts_with("socket:")).count() >= sockets + 2
        })
    });
    home.kill_daemon_hard();
}

const WRITER: &str = "  seq:\n    cmd: ['sh', '-c', 'i=0; while :; do i=$((i+1)); echo \"seq $i\"; case $((i % 20)) in 0) sleep 0.01;; esac; done']\n";

/// The most lines one kill may repeat: the lines the killed daemon had
/// written to the file but not yet taken out of the pipe (README,
/// "Outliving a crash": lines leave the pipe only once written, so a kill
/// repeats at most the last write's lines and loses none). One second of
/// this writer's output bounds it.
const REPEATED_AT_A_KILL_MOST: usize = 2_000;

/// Every sequence number the writer wrote is in the log, in order; the
/// only repeats are at most one short run per kill (the last lines the
/// killed daemon wrote, read again by the next).
fn assert_lines_kept(home: &Home, more_than: u64, kills: usize) {
    eventually(
        "the writer's lines after the crash",
        Duration::from_secs(30),
        || numbers(home).len() as u64 > more_than + 500,
    );
    let all = numbers(home);
    // Runs of missing numbers: (first missing, how many).
    let mut gaps: Vec<(u64, u64)> = Vec::new();
    // Repeated runs: (first repeated, how many).
    let mut repeats: Vec<(u64, u64)> = Vec::new();
    let mut expected = 1;
    for n in &all {
        if *n > expected {
            gaps.push((expected, n - expected));
        } else if *n < expected {
            match repeats.last_mut() {
                Some((first, count)) if *first + *count == *n => *count += 1,
                _ => repeats.push((*n, 1)),
            }
            continue;
        }
        expected = n + 1;
    }
    assert!(
        gaps.is_empty(),
        "{} lines; missing runs (first, count): {gaps:?}",
        all.len()
    );
    if !repeats.is_empty() {
        eprintln!("lines repeated at the kills (first, count): {repeats:?}");
    }
    assert!(
        repeats.len() <= kills
            && repeats
                .iter()
                .all(|(_, count)| *count as usize <= REPEATED_AT_A_KILL_MOST),
        "{} lines; repeated runs (first, count) beyond what {kills} kills may repeat: {repeats:?}",
        all.len()
    );
}

#[test]
fn a_killed_daemon_s_apps_are_adopted_with_every_line() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        &format!(
            "name: up\napps:\n{WRITER}  sleeper:\n    cmd: ['sleep', '300']\n    instances: 2\n  \
             merged:\n    cmd: [sh, -c, 'echo out; echo err >&2; exec sleep 300']\n    out_file: merged.log\n    err_file: merged.log\n"
        ),
    );
    home.ok(&["up", "--wait"]);
    eventually("the writer's first lines", Duration::from_secs(20), || {
        numbers(&home).len() > 200
    });
    let before = pids(&home);
    assert!(before.iter().all(|(_, pid)| *pid > 0), "{before:?}");

    // Three crashes, each followed by a command that starts the next
    // daemon, which adopts them.
    let mut during = 0;
    for _ in 0..3 {
        crash(&home);
        during = numbers(&home).len() as u64;
        assert!(
            before.iter().all(|(_, pid)| alive(*pid)),
            "an app died with the daemon"
        );
        let rows = home.rows();
        assert!(all_online(&rows), "{rows:#?}");
        assert_eq!(pids(&home), before, "an app was restarted");
    }
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default();
    assert!(
        log.contains("adopting the instances a crashed daemon left running"),
        "{log}"
    );
    assert_lines_kept(&home, during, 3);
}

#[test]
fn cluster_sockets_keep_accepting_across_a_daemon_crash() {
    let home = Home::new();
    let port = free_port();
    home.write(
        "ecosystem.yaml",
        &format!(
            "name: up\napps:\n  web:\n    cmd: ['{}', __fixture-http]\n    mode: cluster\n    instances: 2\n    listen: ['127.0.0.1:{port}']\n    stop_timeout: 5s\n",
            eco_bin().display()
        ),
    );
    home.ok(&["up", "--wait"]);
    let before = pids(&home);
    let load = Load::start(port, 4);
    eventually("requests served", Duration::from_secs(20), || {
        load.ok() > 50
    });

    for _ in 0..3 {
        crash(&home);
        let served = load.ok();
        eventually(
            "requests served with no daemon",
            Duration::from_secs(20),
            || load.ok() > served + 50,
        );
        home.ok(&["ls"]);
        let served = load.ok();
        eventually(
            "requests served after the adoption",
            Duration::from_secs(20),
            || load.ok() > served + 50,
        );
    }
    let (done, refused, failed) = load.finish();
    eprintln!(
        "3 crashes under load: {done} requests, {refused} refused, {} failed",
        failed.len()
    );
    assert_eq!(refused, 0, "refused connections across the crash");
    assert_eq!(pids(&home), before, "an app was restarted");
    assert!(all_online(&home.rows()));
}

#[test]
fn an_app_that_ends_while_no_daemon_runs_is_started_again() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: up\napps:\n  sleeper:\n    cmd: ['sleep', '300']\n  stays:\n    cmd: ['sleep', '300']\n",
    );
    home.ok(&["up", "--wait"]);
    let before = pids(&home);
    let victim = home.row("sleeper", 0)["pid"].as_i64().expect("pid");
    let stays = home.row("stays", 0)["pid"].as_i64().expect("pid");
    crash(&home);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(victim).expect("pid")),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
    eventually("the app gone", Duration::from_secs(5), || !alive(victim));

    let rows = home.wait_rows("the app started again", |rows| {
        all_online(rows)
            && rows
                .iter()
                .all(|r| r["pid"].as_i64().is_some_and(|p| p > 0 && p != victim))
    });
    assert_ne!(pids(&home), before);
    assert_eq!(
        home.row("stays", 0)["pid"].as_i64(),
        Some(stays),
        "{rows:#?}"
    );
    // Restarted by its policy, as after any failure, its exit unknown.
    let sleeper = home.row("sleeper", 0);
    assert_eq!(sleeper["restarts"], 1, "{sleeper:#?}");
    assert!(sleeper["exit_code"].is_null(), "{sleeper:#?}");
    let said = home.ok(&["describe", "sleeper"]);
    assert!(said.contains("exit status unknown"), "{said}");
    // What cannot be known is said where users look.
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        readme.contains("exit code of an app that ends while no daemon runs is lost"),
        "the README must say the exit code is lost"
    );
}

#[test]
fn kill_after_an_adoption_leaves_nothing() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: up\napps:\n  sleeper:\n    cmd: ['sh', '-c', 'sleep 300 & wait']\n    instances: 2\n",
    );
    home.ok(&["up", "--wait"]);
    let before = pids(&home);
    crash(&home);
    assert_eq!(pids(&home), before, "not adopted");
    let holder = holders(&home);
    assert_eq!(holder.len(), 1, "one holder: {holder:?}");
    home.ok(&["kill"]);
    eventually("the apps gone", Duration::from_secs(10), || {
        before.iter().all(|(_, pid)| !alive(*pid))
    });
    eventually("the holder gone", Duration::from_secs(10), || {
        holders(&home).is_empty()
    });
    assert!(
        !home.path().join("holder.sock").exists(),
        "its socket file stays"
    );
    assert!(
        crate::support::processes_with_env("ECO_SPAWN_ID")
            .iter()
            .all(
                |pid| !std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|e| String::from_utf8_lossy(&e)
                        .contains(&home.path().display().to_string()))
            )
    );
}

/// A home running one `sleep` app.
fn one_sleeper() -> Home {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: up\napps:\n  sleeper:\n    cmd: ['sleep', '300']\n",
    );
    home.ok(&["up", "--wait"]);
    home
}

/// How many times the scheduler has run `pid` (schedstat's third field):
/// unchanged over a window, the process never woke up in it.
fn times_run(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .expect("schedstat")
}

/// An idle holder sleeps until something happens: no periodic check of
/// its socket file (it watches it), so a window longer than the old
/// 5 s check sees it never run.
#[test]
fn an_idle_holder_never_wakes_up() {
    let home = one_sleeper();
    eventually("a holder", Duration::from_secs(10), || {
        holders(&home).len() == 1
    });
    let holder = holders(&home)[0];
    // The first window may hold the last sync and the drop of its code
    // pages after it; one of the next must be quiet.
    let quiet = (0..3).any(|_| {
        let before = times_run(holder);
        std::thread::sleep(Duration::from_secs(6));
        times_run(holder) == before
    });
    assert!(quiet, "the idle holder woke up in every 6 s window");
}

/// Its socket file removed (the home going) while no daemon runs, the
/// holder lets go at once: it watches the file rather than checking it
/// now and then.
#[test]
fn a_holder_whose_socket_file_goes_exits_at_once() {
    let home = one_sleeper();
    let before = pids(&home);
    crash(&home);
    assert_eq!(holders(&home).len(), 1);
    std::fs::remove_file(home.path().join("holder.sock")).expect("rm holder.sock");
    eventually("the holder gone", Duration::from_secs(2), || {
        holders(&home).is_empty()
    });
    // Nothing held them: the next daemon starts them again.
    restarted_past(&home, &before);
}

/// `eco kill` forgets every app: the holder lets go as the stop begins,
/// so a crash during a long stop never has the next daemon adopt what the
/// user asked to stop.
#[test]
fn an_explicit_kill_lets_the_holder_go_before_the_apps_are_stopped() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: up\napps:\n  slow:\n    cmd: ['sh', '-c', 'trap \"sleep 4; exit 0\" TERM; while :; do sleep 1; done']\n    stop_timeout: 20s\n",
    );
    home.ok(&["up", "--wait"]);
    eventually("a holder", Duration::from_secs(10), || {
        holders(&home).len() == 1
    });
    let app = pids(&home)[0].1;
    let mut kill = Command::new(eco_bin())
        .arg("kill")
        .env("ECO_HOME", home.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("eco kill runs");
    eventually("the holder gone", Duration::from_secs(3), || {
        holders(&home).is_empty()
    });
    assert!(alive(app), "the app still stopping (its trap sleeps 4 s)");
    assert!(kill.wait().expect("eco kill ends").success());
    assert!(!alive(app), "the app stopped");
}

/// The apps are restarted (not adopted) and the command does not hang.
fn restarted_past(home: &Home, before: &[(String, i64)]) {
    let started = std::time::Instant::now();
    let rows = home.wait_rows("the apps started afresh", |rows| {
        all_online(rows)
            && rows
                .iter()
                .all(|r| before.iter().all(|(_, p)| r["pid"].as_i64() != Some(*p)))
    });
    assert!(started.elapsed() < Duration::from_secs(10), "{rows:#?}");
}

#[test]
fn a_stale_or_foreign_holder_socket_fools_no_daemon() {
    let home = one_sleeper();

    // A stale socket file: its holder is gone.
    let before = pids(&home);
    crash(&home);
    for holder in holders(&home) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(holder),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    eventually("the holder gone", Duration::from_secs(5), || {
        holders(&home).is_empty()
    });
    assert!(home.path().join("holder.sock").exists());
    restarted_past(&home, &before);

    // A holder served by another uid (a socket at that path it does not
    // own): refused, whatever it says.
    crate::support::tools::require(&["setpriv"]);
    let before = pids(&home);
    crash(&home);
    let theirs = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        theirs.path(),
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o777),
    )
    .expect("chmod");
    let socket = theirs.path().join("holder.sock");
    let mut stranger = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(eco_bin())
        .arg("__holder")
        .arg(&socket)
        .spawn()
        .expect("setpriv");
    eventually("the stranger's socket", Duration::from_secs(5), || {
        socket.exists()
    });
    let ours = home.path().join("holder.sock");
    for holder in holders(&home) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(holder),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = std::fs::remove_file(&ours);
    std::os::unix::fs::symlink(&socket, &ours).expect("symlink");
    restarted_past(&home, &before);
    let log = std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default();
    assert!(log.contains("not trusted"), "{log}");
    let _ = stranger.kill();
    let _ = stranger.wait();

    // A holder that is stuck (stopped): the next daemon waits for it a
    // bounded time, then carries on as without one.
    let before = pids(&home);
    crash(&home);
    let stuck = holders(&home);
    for holder in &stuck {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*holder),
            nix::sys::signal::Signal::SIGSTOP,
        );
    }
    restarted_past(&home, &before);
    for holder in stuck {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(holder),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[test]
fn notify_sockets_watchdogs_and_stored_descriptors_outlive_a_crash() {
    crate::support::tools::require(&["python3"]);
    let home = Home::new();
    home.write("keep.py", FDSTORE_APP);
    let pings = home.path().join("pings");
    let fds = home.path().join("fds");
    home.write(
        "ecosystem.yaml",
        &format!(
            "name: up\napps:\n  dog:\n    cmd: [sh, -c, 'while :; do {eco} notify WATCHDOG=1 && echo ping >> {pings} || echo notify-failed; sleep 0.1; done']\n    watchdog: 1s\n  \
             keeper:\n    cmd: [python3, keep.py, {fds}]\n    fd_store: 1\n    restart_delay: 0ms\n    env: {{ ECO_BIN_FOR_TEST: '{eco}' }}\n",
            eco = eco_bin().display(),
            pings = pings.display(),
            fds = fds.display(),
        ),
    );
    home.ok(&["up", "--wait"]);
    eventually("stored", Duration::from_secs(20), || {
        std::fs::read_to_string(&fds).is_ok_and(|t| t.contains("stored "))
    });
    eventually("pings", Duration::from_secs(20), || lines_of(&pings) > 3);
    let before = pids(&home);

    // Two notify sockets and the stored one.
    crash_holding(&home, 3);
    // Pings go on (into the socket's queue, then to the next daemon),
    // well over a watchdog interval of them, and nothing restarts.
    home.ok(&["ls"]);
    let seen = lines_of(&pings);
    eventually("pings after the crash", Duration::from_secs(30), || {
        lines_of(&pings) > seen + 25
    });
    assert_eq!(pids(&home), before, "restarted (watchdog?)");
    let log = std::fs::read_to_string(home.path().join("logs/up/dog.out.log")).unwrap_or_default();
    assert!(!log.contains("notify-failed"), "{log}");

    // The stored descriptor comes back at the next start.
    let keeper = home.row("keeper", 0)["pid"].as_i64().expect("pid");
    crate::support::assert_stored_fd_comes_back(keeper, &fds, Duration::from_secs(20));
}
