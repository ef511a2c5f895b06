//! Issue 21, classes 8-10: an app receives exactly its documented
//! descriptors whatever the spawn path and whatever the first eco command
//! inherited (a deploy script's `flock`); a dry run changes nothing on the
//! host; a schedule that can never fire is a warning. CI runs as root, so
//! the process-group path runs eco as `nobody`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::tools::{tool, tool_str};
use crate::support::{eco_bin, eventually, free_port, stderr, stdout};

const NOBODY: u32 = 65534;
const LIMIT: Duration = Duration::from_secs(20);

fn assert_root() {
    assert!(
        nix::unistd::getuid().is_root(),
        "this test acts as a second user and needs root (CI runs as root)"
    );
}

/// `eco ARGS` with `ECO_HOME=home` in `dir`, as `nobody` when asked, under
/// `flock LOCK` (so the command inherits the lock's descriptor, as from a
/// deploy script), optionally through `prefix` (e.g. `unshare -n`).
fn eco_as(home: &Path, dir: &Path, nobody: bool, lock: Option<&Path>, args: &[&str]) -> Output {
    let mut argv: Vec<String> = Vec::new();
    if let Some(lock) = lock {
        argv.extend([tool_str("flock"), lock.display().to_string()]);
    }
    argv.push(eco_bin().display().to_string());
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let mut command = Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .current_dir(dir)
        .env("ECO_HOME", home)
        .env("NO_COLOR", "1");
    if nobody {
        command.uid(NOBODY).gid(NOBODY);
    }
    command.output().expect("eco runs")
}

fn fds_of(pid: i64) -> Vec<(i32, String)> {
    let mut fds: Vec<(i32, String)> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read fds")
        .flatten()
        .filter_map(|e| {
            let fd = e.file_name().to_str()?.parse().ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            Some((fd, target.display().to_string()))
        })
        .collect();
    fds.sort();
    fds
}

fn env_of(pid: i64, var: &str) -> Option<String> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{var}=");
    environ
        .split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn daemon_pid(home: &Path) -> i64 {
    std::fs::read_to_string(home.join("daemon.pid"))
        .expect("daemon.pid")
        .trim()
        .parse()
        .expect("pid")
}

/// The first command runs under a held `flock`; the daemon must not keep
/// the lock's descriptor, and every app gets 0, 1, 2 and its LISTEN_FDS
/// only: a plain app, one whose output goes to /dev/null, one with a
/// notify socket, and a cluster app (through `eco __listen`).
fn run_descriptor_check(nobody: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let project = dir.path().join("project");
    let home = dir.path().join("home");
    std::fs::create_dir(&project).expect("mkdir");
    let lock = dir.path().join("deploy.lock");
    std::fs::write(&lock, "").expect("lock file");
    if nobody {
        std::fs::create_dir(&home).expect("mkdir home");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        for path in [&project, &lock, &home] {
            nix::unistd::chown(path, Some(NOBODY.into()), Some(NOBODY.into())).expect("chown");
        }
    }
    let port = free_port();
    std::fs::write(
        project.join("ecosystem.yaml"),
        format!(
            "apps:\n\
             \x20 plain:\n    cmd: [sleep, '1000']\n\
             \x20 quiet:\n    cmd: [sleep, '1000']\n    out_file: /dev/null\n    err_file: /dev/null\n\
             \x20 notified:\n    cmd: [sh, -c, 'eco_notify() {{ :; }}; exec sleep 1000']\n    watchdog: 1h\n\
             \x20 web:\n    cmd: [sleep, '1000']\n    mode: cluster\n    instances: 2\n    listen: \"127.0.0.1:{port}\"\n"
        ),
    )
    .expect("write file");
    if nobody {
        nix::unistd::chown(
            &project.join("ecosystem.yaml"),
            Some(NOBODY.into()),
            Some(NOBODY.into()),
        )
        .expect("chown");
    }
    let out = eco_as(&home, &project, nobody, Some(&lock), &["up", "--wait"]);
    assert!(
        out.status.success(),
        "up: {}{}\n{}",
        stdout(&out),
        stderr(&out),
        std::fs::read_to_string(home.join("daemon.log")).unwrap_or_default()
    );
    let ls = eco_as(&home, &project, nobody, None, &["ls", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&ls.stdout).expect("ls --json");
    let describe = eco_as(
        &home,
        &project,
        nobody,
        None,
        &["describe", "plain", "--json"],
    );
    let containment = if nobody { "process-group" } else { "cgroup" };
    assert!(
        stdout(&describe).contains(&format!("\"containment\": \"{containment}\"")),
        "containment is {containment}: {}",
        stdout(&describe)
    );
    // The lock is free: nothing of eco holds the script's descriptor.
    let daemon = daemon_pid(&home);
    let lock_name = lock.display().to_string();
    assert!(
        !fds_of(daemon).iter().any(|(_, t)| t == &lock_name),
        "the daemon holds the deploy script's lock: {:?}",
        fds_of(daemon)
    );
    let free = Command::new(tool("flock"))
        .args(["-n", &lock_name, "true"])
        .status()
        .expect("flock -n");
    assert!(free.success(), "the deploy script's lock is still held");
    assert_eq!(rows.len(), 5, "{rows:#?}");
    for row in &rows {
        let app = row["app"].as_str().expect("app");
        let pid = row["pid"].as_i64().expect("pid");
        let fds = fds_of(pid);
        let numbers: Vec<i32> = fds.iter().map(|(n, _)| *n).collect();
        let expected: Vec<i32> = if app == "web" {
            assert_eq!(env_of(pid, "LISTEN_FDS").as_deref(), Some("1"), "{app}");
            vec![0, 1, 2, 3]
        } else {
            vec![0, 1, 2]
        };
        assert_eq!(numbers, expected, "{app} ({containment}) got {fds:?}");
        assert!(
            fds[0].1 == "/dev/null",
            "{app}: stdin is /dev/null: {fds:?}"
        );
        if app == "quiet" {
            assert!(
                fds[1].1 == "/dev/null" && fds[2].1 == "/dev/null",
                "{fds:?}"
            );
        }
        if app == "web" {
            assert!(fds[3].1.starts_with("socket:"), "{fds:?}");
        }
    }
    let out = eco_as(&home, &project, nobody, None, &["kill"]);
    assert!(out.status.success(), "kill: {}", stderr(&out));
}

#[test]
fn apps_get_only_their_descriptors_and_no_lock_of_the_first_command_with_cgroups() {
    assert_root();
    run_descriptor_check(false);
}

#[test]
fn apps_get_only_their_descriptors_and_no_lock_of_the_first_command_without_cgroups() {
    assert_root();
    run_descriptor_check(true);
}

#[test]
fn up_foreground_closes_what_it_inherited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lock = dir.path().join("deploy.lock");
    std::fs::write(&lock, "").expect("lock");
    let file = crate::support::write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  plain:\n    cmd: [sleep, '1000']\n",
    );
    let mut child = Command::new(tool("flock"))
        .arg(&lock)
        .arg(eco_bin())
        .args(["up", "-F", "-f"])
        .arg(&file)
        .current_dir(dir.path())
        .env("ECO_HOME", dir.path().join("home"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("flock eco up -F");
    let eco = i64::from(child.id());
    let lock_name = lock.display().to_string();
    let mut app = None;
    eventually("the app runs", LIMIT, || {
        app = crate::support::children_of(i32::try_from(eco).unwrap_or(0))
            .into_iter()
            .flat_map(crate::support::children_of)
            .find(|p| {
                std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| c.starts_with("sleep\0"))
            });
        app.is_some()
    });
    let app = i64::from(app.expect("app"));
    // Polled: /proc shows the new command line a moment before exec has
    // closed the close-on-exec descriptors; a real leak never settles.
    let settled = std::time::Instant::now() + LIMIT;
    let all = loop {
        let all = fds_of(app);
        if all.iter().map(|(n, _)| *n).eq([0, 1, 2]) {
            break all;
        }
        assert!(
            std::time::Instant::now() < settled,
            "the app's descriptors: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(all.len(), 3);
    // `flock` is eco's parent here and holds the lock itself; eco must not.
    let eco_pid = crate::support::children_of(i32::try_from(eco).unwrap_or(0))
        .into_iter()
        .next()
        .map_or(eco, i64::from);
    assert!(
        !fds_of(eco_pid).iter().any(|(_, t)| t == &lock_name),
        "up -F holds the lock's descriptor"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(eco_pid).unwrap_or(0)),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let _ = child.wait();
}

/// `diff` and `up --dry-run` read and never write: the per-network-
/// namespace sysctl `net.ipv4.tcp_migrate_req` stays as it was; the real
/// `up` then sets it (so this test fails if a dry run writes). (The soft
/// descriptor limit, the other write, is raised past the start-up value
/// only with CAP_SYS_RESOURCE, which this machine's root lacks; the same
/// `apply` flag guards both.) The daemon runs in a network namespace
/// of its own, so the host's sysctl is never touched.
#[test]
fn a_dry_run_changes_nothing_on_the_host() {
    assert_root();
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let port = free_port();
    crate::support::write(
        dir.path(),
        "ecosystem.yaml",
        &format!(
            "apps:\n  web:\n    cmd: [sleep, '1000']\n    mode: cluster\n    instances: 2\n    listen: \"127.0.0.1:{port}\"\n"
        ),
    );
    let eco = eco_bin().display().to_string();
    let ip = tool_str("ip");
    let script = format!(
        "set -e\n\
         '{ip}' link set lo up\n\
         '{eco}' ls >/dev/null\n\
         cat /proc/sys/net/ipv4/tcp_migrate_req\n\
         '{eco}' diff >/dev/null || true\n\
         '{eco}' up --dry-run >/dev/null\n\
         cat /proc/sys/net/ipv4/tcp_migrate_req\n\
         cat \"$ECO_HOME/daemon.pid\"\n"
    );
    let out = Command::new(tool("unshare"))
        .args(["-n", "sh", "-c", &script])
        .current_dir(dir.path())
        .env("ECO_HOME", &home)
        .env("NO_COLOR", "1")
        .output()
        .expect("unshare");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[0], "0",
        "a fresh network namespace starts with the sysctl off"
    );
    assert_eq!(lines[1], "0", "a dry run set net.ipv4.tcp_migrate_req");
    let daemon: i64 = lines[2].parse().expect("daemon pid");
    // The real thing, in the daemon's namespace: both change.
    let out = Command::new(tool("nsenter"))
        .args(["-t", &daemon.to_string(), "-n", &eco, "up"])
        .current_dir(dir.path())
        .env("ECO_HOME", &home)
        .output()
        .expect("nsenter eco up");
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    let sysctl = Command::new(tool("nsenter"))
        .args([
            "-t",
            &daemon.to_string(),
            "-n",
            "cat",
            "/proc/sys/net/ipv4/tcp_migrate_req",
        ])
        .output()
        .expect("nsenter cat");
    assert_eq!(
        stdout(&sysctl).trim(),
        "1",
        "up sets the sysctl in its namespace"
    );
    let out = Command::new(&eco)
        .arg("kill")
        .env("ECO_HOME", &home)
        .output()
        .expect("kill");
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_schedule_that_never_fires_is_a_warning() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = crate::support::write(
        dir.path(),
        "ecosystem.yaml",
        "apps:\n  nightly:\n    cmd: [sleep, '1000']\n    cron_restart: \"0 0 30 2 *\"\n  daily:\n    cmd: [sleep, '1000']\n    cron_restart: \"0 3 * * *\"\n",
    );
    let out = crate::support::eco(
        &dir.path().join("home"),
        dir.path(),
        &["validate", "-f", &file.display().to_string()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("ecosystem.yaml:4:")
            && err.contains("apps.nightly.cron_restart")
            && err.contains("never fires"),
        "{err}"
    );
    assert!(!err.contains("apps.daily"), "{err}");
}

/// Stores a socket with FDSTORE=1 (then a BARRIER=1, so eco has taken it
/// before the exit) and exits 1; started again with it, sleeps.
const STORING_APP: &str = r#"
import array, os, select, socket, sys
if os.environ.get("LISTEN_FDS"):
    os.execvp("sleep", ["sleep", "1000"])
def notify(text, fd):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    s.sendmsg([text.encode()], rights, 0, os.environ["NOTIFY_SOCKET"])
kept = socket.socket()
kept.bind(("127.0.0.1", 0))
kept.listen()
notify("FDSTORE=1\nFDNAME=keep", kept.fileno())
r, w = os.pipe()
notify("BARRIER=1", w)
os.close(w)
select.select([r], [], [], 30)
sys.exit(1)
"#;

/// CONTRACT section 4: a descriptor the app stored comes back after a
/// restart as the only one besides 0, 1 and 2, announced in LISTEN_FDS.
#[test]
fn a_stored_descriptor_comes_back_as_the_only_one_besides_stdio() {
    crate::support::tools::require(&["python3"]);
    let home = crate::support::Home::new();
    home.write("store.py", STORING_APP);
    home.write(
        "ecosystem.yaml",
        "apps:\n  keeper:\n    cmd: [python3, store.py]\n    fd_store: 1\n    restart_delay: 0ms\n",
    );
    home.ok(&["up"]);
    let mut pid = 0;
    eventually("started again with its stored socket", LIMIT, || {
        let row = home.row("keeper", 0);
        pid = row["pid"].as_i64().unwrap_or(0);
        pid > 0
            && env_of(pid, "LISTEN_FDS").is_some()
            && std::fs::read_to_string(format!("/proc/{pid}/syscall"))
                .is_ok_and(|s| matches!(s.split_whitespace().next(), Some("35" | "230")))
    });
    let fds = fds_of(pid);
    let numbers: Vec<i32> = fds.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [0, 1, 2, 3], "{fds:?}");
    assert!(fds[3].1.starts_with("socket:"), "{fds:?}");
    assert_eq!(env_of(pid, "LISTEN_FDS").as_deref(), Some("1"));
    assert_eq!(env_of(pid, "LISTEN_FDNAMES").as_deref(), Some("keep"));
    home.ok(&["kill"]);
}
