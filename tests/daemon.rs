//! The daemon through the real CLI, each test with its own ECO_HOME.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::support::{
    Home, all_online, eco_bin, eventually, mark, processes_with_env, state_of, stderr, stdout,
};

const TWO_APPS: &str = "name: shop\napps:\n  web:\n    cmd: [sh, -c, 'echo web $ECO_INSTANCE up; exec sleep 1000']\n    instances: 2\n  \
                        worker:\n    cmd: [sh, -c, 'echo working; exec sleep 1000']\n";

fn pid(row: &Value) -> i64 {
    row["pid"]
        .as_i64()
        .unwrap_or_else(|| panic!("no pid in {row}"))
}

#[test]
fn up_returns_and_ls_json_follows_the_contract() {
    let home = Home::new();
    home.write("ecosystem.yaml", TWO_APPS);
    let out = home.ok(&["up"]);
    assert_eq!(out, "+ start web:0..1\n+ start worker\n");
    let rows = home.wait_rows("all online", all_online);
    assert_eq!(rows.len(), 3);
    for row in &rows {
        assert_eq!(row["project"], "shop");
        assert!(row["instance"].is_u64());
        assert!(row["pid"].is_i64());
        assert!(row["restarts"].is_u64());
        assert!(row["uptime_ms"].is_u64());
        assert!(row["exit_code"].is_null());
        assert!(row.get("cpu_percent").is_some());
        assert!(row["memory_bytes"].is_u64() || row["memory_bytes"].is_null());
        assert!(state_of(i32::try_from(pid(row)).expect("pid")).is_some());
    }
    let table = home.ok(&["ls"]);
    assert!(table.starts_with("project  app"), "{table}");
    assert!(table.contains("online"), "{table}");
    // A second `up` of the same file changes nothing.
    assert_eq!(home.ok(&["up"]), "= web unchanged\n= worker unchanged\n");
    let diff = home.eco(&["diff"]);
    assert_eq!(diff.status.code(), Some(0));
}

#[test]
fn stop_start_restart_scale_delete_down_kill() {
    let home = Home::new();
    home.write("ecosystem.yaml", TWO_APPS);
    home.ok(&["up"]);
    home.wait_rows("online", all_online);
    let worker = pid(&home.row("worker", 0));

    home.ok(&["stop", "web"]);
    let rows = home.rows();
    assert!(
        rows.iter()
            .filter(|r| r["app"] == "web")
            .all(|r| r["status"] == "stopped" && r["pid"].is_null())
    );
    assert_eq!(
        pid(&home.row("worker", 0)),
        worker,
        "stop web touches only web"
    );

    // A reload of the file keeps web stopped.
    home.ok(&["reload"]);
    assert!(
        home.rows()
            .iter()
            .filter(|r| r["app"] == "web")
            .all(|r| r["status"] == "stopped")
    );

    home.ok(&["start", "web"]);
    home.wait_rows("web online", all_online);

    home.ok(&["restart", "worker"]);
    let rows = home.wait_rows("worker restarted", |rows| {
        all_online(rows)
            && rows
                .iter()
                .any(|r| r["app"] == "worker" && r["pid"].as_i64() != Some(worker))
    });
    let worker_row = rows.iter().find(|r| r["app"] == "worker").expect("worker");
    assert_eq!(worker_row["restarts"], 1);

    let web0 = pid(&home.row("web", 0));
    home.ok(&["scale", "web", "4"]);
    let rows = home.wait_rows("4 web", |rows| {
        rows.iter()
            .filter(|r| r["app"] == "web" && r["status"] == "online")
            .count()
            == 4
    });
    assert_eq!(
        pid(rows
            .iter()
            .find(|r| r["app"] == "web" && r["instance"] == 0)
            .expect("web:0")),
        web0
    );
    home.ok(&["scale", "web", "1"]);
    let rows = home.rows();
    assert_eq!(rows.iter().filter(|r| r["app"] == "web").count(), 1);
    assert_eq!(
        pid(&home.row("web", 0)),
        web0,
        "scaling down keeps instance 0"
    );

    home.ok(&["delete", "worker"]);
    assert!(home.rows().iter().all(|r| r["app"] != "worker"));
    eventually("worker gone", Duration::from_secs(5), || {
        state_of(i32::try_from(worker).expect("pid")).is_none()
    });

    home.ok(&["down", "shop"]);
    assert!(home.rows().is_empty());
    let daemon = home.daemon_pid().expect("daemon pid");
    home.ok(&["kill"]);
    // Exited; reaping it is its parent's business (here the test's init).
    assert!(
        state_of(daemon).is_none_or(|s| s == 'Z'),
        "daemon still runs after kill"
    );
}

#[test]
fn up_wait_fails_fast_with_the_log_tail() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  broken:\n    cmd: [sh, -c, 'echo cannot connect to database >&2; exit 1']\n",
    );
    let start = std::time::Instant::now();
    let out = home.eco(&["up", "--wait", "--timeout", "30s"]);
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    // Far from the 30 s timeout: a crash ends the wait.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    let err = stderr(&out);
    assert!(err.contains("broken:0 crashed (exit code 1)"), "{err}");
    assert!(err.contains("cannot connect to database"), "{err}");
}

#[test]
fn up_wait_succeeds_once_ready() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  slow:\n    cmd: [sh, -c, 'sleep 0.3; echo ready now; exec sleep 1000']\n    ready: { log: 'ready now' }\n",
    );
    let out = home.eco(&["up", "--wait", "--timeout", "10s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(home.row("slow", 0)["status"], "online");
}

#[test]
fn logs_tail_and_follow() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "apps:\n  talk:\n    cmd: [sh, -c, 'for i in 1 2 3 4 5; do echo line $i; done; while read x; do :; done; exec sleep 1000']\n",
    );
    home.ok(&["up"]);
    let log = home.path().join("logs/ecosystem-test/talk.out.log");
    let _ = log;
    eventually("5 lines logged", Duration::from_secs(5), || {
        home.ok(&["logs", "talk", "-n", "100", "--out"])
            .lines()
            .count()
            >= 5
    });
    assert_eq!(
        home.ok(&["logs", "talk", "-n", "2", "--out"]),
        "line 4\nline 5\n"
    );
    // Follow: new lines of an app started later show up.
    let mut follow = Command::new(eco_bin())
        .args(["logs", "-f", "-n", "0"])
        .env("ECO_HOME", home.path())
        .stdout(Stdio::piped())
        .spawn()
        .expect("logs -f");
    let reader = BufReader::new(follow.stdout.take().expect("stdout"));
    std::thread::sleep(Duration::from_millis(300));
    home.ok(&["restart", "talk"]);
    let seen: Vec<String> = reader.lines().map_while(Result::ok).take(5).collect();
    let _ = follow.kill();
    let _ = follow.wait();
    // Two files followed (out and err): each line says which.
    assert_eq!(
        seen,
        vec![
            "talk out | line 1",
            "talk out | line 2",
            "talk out | line 3",
            "talk out | line 4",
            "talk out | line 5"
        ]
    );
}

#[test]
fn two_projects_are_independent() {
    let home = Home::new();
    let a = home.path().join("a");
    let b = home.path().join("b");
    std::fs::create_dir_all(&a).expect("a");
    std::fs::create_dir_all(&b).expect("b");
    std::fs::write(
        a.join("ecosystem.yaml"),
        "apps:\n  web:\n    cmd: [sleep, '1000']\n",
    )
    .expect("a");
    std::fs::write(
        b.join("ecosystem.yaml"),
        "apps:\n  web:\n    cmd: [sleep, '1000']\n  api:\n    cmd: [sleep, '1000']\n",
    )
    .expect("b");
    home.ok(&["up", "-f", "a/ecosystem.yaml"]);
    home.ok(&["up", "-f", "b/ecosystem.yaml"]);
    let rows = home.wait_rows("3 online", |r| r.len() == 3 && all_online(r));
    let b_web = rows
        .iter()
        .find(|r| r["project"] == "b" && r["app"] == "web")
        .map(pid);
    // A bare name in two projects is ambiguous; project/app is not.
    let out = home.eco(&["stop", "web"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("`web` exists in 2 projects: a/web, b/web"),
        "{}",
        stderr(&out)
    );
    home.ok(&["stop", "a/web"]);
    home.ok(&["down", "a"]);
    let rows = home.rows();
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r["project"] == "b" && r["status"] == "online")
    );
    assert_eq!(rows.iter().find(|r| r["app"] == "web").map(pid), b_web);
    // The same project name from another file is refused.
    std::fs::write(
        a.join("ecosystem.yaml"),
        "name: b\napps:\n  x:\n    cmd: [sleep, '1000']\n",
    )
    .expect("a");
    let out = home.eco(&["up", "-f", "a/ecosystem.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("project `b` is already applied from") && err.contains("b/ecosystem.yaml"),
        "{err}"
    );
}

#[test]
fn rotation_keeps_log_keep_files_and_every_line() {
    let home = Home::new();
    home.write(
        "ecosystem.yaml",
        "name: rot\napps:\n  chatty:\n    cmd: [sh, -c, 'i=0; while [ $i -lt 20000 ]; do echo \"line $i\"; i=$((i+1)); done; exec sleep 1000']\n    \
         log_max_size: 20K\n    log_keep: 3\n",
    );
    home.ok(&["up"]);
    let dir = home.path().join("logs/rot");
    let newest = dir.join("chatty.out.log");
    eventually("all lines written", Duration::from_secs(20), || {
        std::fs::read_to_string(&newest).is_ok_and(|t| t.ends_with("line 19999\n"))
    });
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("log dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chatty.out.log"))
        .collect();
    files.sort();
    assert_eq!(
        files,
        vec![
            "chatty.out.log",
            "chatty.out.log.1",
            "chatty.out.log.2",
            "chatty.out.log.3"
        ]
    );
    // The kept files hold a contiguous, untorn run of lines ending with the last.
    let mut text = String::new();
    for name in [
        "chatty.out.log.3",
        "chatty.out.log.2",
        "chatty.out.log.1",
        "chatty.out.log",
    ] {
        let part = std::fs::read_to_string(dir.join(name)).expect("part");
        assert!(part.len() <= 20 * 1024, "{name} is {} bytes", part.len());
        assert!(part.ends_with('\n'));
        text.push_str(&part);
    }
    let numbers: Vec<u32> = text
        .lines()
        .map(|l| {
            l.strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("torn line {l:?}"))
        })
        .collect();
    let first = numbers[0];
    assert!(
        numbers
            .iter()
            .enumerate()
            .all(|(i, n)| *n == first + u32::try_from(i).expect("i"))
    );
    assert_eq!(*numbers.last().expect("last"), 19_999);
}

#[test]
fn a_killed_daemon_comes_back_with_the_same_apps_once() {
    let home = Home::new();
    let marker = mark("resurrect");
    let (k, v) = marker.split_once('=').expect("mark");
    home.write(
        "ecosystem.yaml",
        &format!("name: phoenix\nenv: {{ {k}: \"{v}\" }}\napps:\n  web:\n    cmd: [sh, -c, 'sleep 1000 & wait']\n    instances: 2\n  db:\n    cmd: [sleep, '1000']\n  off:\n    cmd: [sleep, '1000']\n"),
    );
    home.ok(&["up"]);
    home.wait_rows("online", all_online);
    home.ok(&["stop", "off"]);
    let before = processes_with_env(&marker);
    assert_eq!(before.len(), 5, "2 × (sh + sleep) + db");
    // Killed once its descriptor holder holds the running instances.
    crate::crash::crash(&home);
    let rows = home.wait_rows("back online", |rows| {
        rows.iter()
            .filter(|r| r["app"] != "off")
            .all(|r| r["status"] == "online")
            && rows.len() == 4
    });
    assert_eq!(
        rows.iter()
            .find(|r| r["app"] == "off")
            .map(|r| r["status"].clone()),
        Some("stopped".into())
    );
    // The same processes, adopted (issue 25): none stopped, none doubled.
    let mut now = processes_with_env(&marker);
    now.sort_unstable();
    let mut before = before;
    before.sort_unstable();
    assert_eq!(
        now,
        before,
        "the apps were not adopted as they ran; daemon.log:\n{}",
        std::fs::read_to_string(home.path().join("daemon.log")).unwrap_or_default()
    );
}

#[test]
fn bad_input_is_answered_and_the_daemon_keeps_serving() {
    let home = Home::new();
    home.write("ecosystem.yaml", TWO_APPS);
    home.ok(&["up"]);
    let socket = home.path().join("eco.sock");
    // Garbage.
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.write_all(b"this is not json\n").expect("write");
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).expect("answer");
    assert!(answer.contains("malformed request"), "{answer}");
    // Oversized (no newline, 17 MiB).
    let mut s = UnixStream::connect(&socket).expect("connect");
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..17 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.contains("larger than"), "{answer}");
    // A wrong protocol version.
    let mut s = UnixStream::connect(&socket).expect("connect");
    s.write_all(b"{\"version\":999,\"request\":{\"type\":\"ping\"}}\n")
        .expect("write");
    let mut answer = String::new();
    BufReader::new(&s).read_line(&mut answer).expect("answer");
    assert!(answer.contains("run `eco kill`"), "{answer}");
    // Unknown targets: exit 2 with a suggestion.
    let out = home.eco(&["restart", "wrker"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("no app named `wrker`")
            && stderr(&out).contains("did you mean `worker`?"),
        "{}",
        stderr(&out)
    );
    // A missing file and a file with errors: exit 2, nothing changed.
    let before = home.rows();
    let out = home.eco(&["up", "-f", "nope.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    home.write(
        "ecosystem.yaml",
        "name: shop\napps:\n  web:\n    cmd: x\n    instances: lots\n",
    );
    let out = home.eco(&["up"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("apps.web.instances"));
    let after = home.rows();
    let pids = |rows: &[Value]| rows.iter().map(|r| r["pid"].clone()).collect::<Vec<_>>();
    assert_eq!(pids(&before), pids(&after));
    // Still serving.
    assert_eq!(home.rows().len(), 3);
    assert!(socket.exists());
}

#[test]
fn ad_hoc_scripts_start_like_pm2() {
    let home = Home::new();
    home.write("server.sh", "echo \"serving on $1\"\nexec sleep 1000\n");
    let out = home.ok(&[
        "start",
        "server.sh",
        "--name",
        "Server1",
        "-i",
        "2",
        "--",
        "8080",
    ]);
    // The plan, then the project's table (as PM2 prints its list).
    assert!(out.starts_with("+ start Server1:0..1\nproject "), "{out}");
    let rows = home.wait_rows("online", all_online);
    assert!(
        rows.iter()
            .all(|r| r["project"] == "default" && r["app"] == "Server1")
    );
    eventually("output", Duration::from_secs(5), || {
        home.ok(&["logs", "Server1", "--out"])
            .contains("serving on 8080")
    });
    // It survives the daemon like file apps do.
    home.kill_daemon_hard();
    home.wait_rows("back", |r| r.len() == 2 && all_online(r));
}

#[test]
fn a_full_disk_is_reported_and_the_daemon_carries_on() {
    let home = Home::new();
    // A full disk (a small tmpfs, filled): every write fails with ENOSPC.
    let disk = crate::faults::SmallDisk::mount().expect("needs root to mount a small tmpfs");
    disk.fill();
    let out_file = disk.mount.join("noisy.log");
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  noisy:\n    cmd: [sh, -c, 'while :; do echo hello; sleep 0.05; done']\n    out_file: {}\n",
            out_file.display()
        ),
    );
    home.ok(&["up"]);
    eventually("the error in describe", Duration::from_secs(5), || {
        home.ok(&["describe", "noisy"])
            .contains("No space left on device")
    });
    assert_eq!(home.row("noisy", 0)["status"], "online");
    assert!(
        home.ok(&["describe", "noisy", "--json"])
            .contains("noisy.log: cannot write")
    );
}

#[test]
fn another_user_is_refused_by_peer_credentials() {
    if !nix::unistd::getuid().is_root() {
        eprintln!("skipped: needs root to run a client as another user");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let home = Home::new();
    home.write("ecosystem.yaml", "apps:\n  a:\n    cmd: [sleep, '1000']\n");
    home.ok(&["up"]);
    // Open the door the permissions normally keep shut (0700 home, 0600
    // socket), so that only the peer-credential check stands in the way.
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let socket = home.path().join("eco.sock");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = Command::new(eco_bin())
        .args(["ls", "--json"])
        .env("ECO_HOME", home.path())
        .uid(65534)
        .gid(65534)
        .output()
        .expect("eco as nobody");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("belongs to another user"),
        "{}",
        stderr(&out)
    );
    // The owner is still served.
    assert_eq!(home.rows().len(), 1);
}
