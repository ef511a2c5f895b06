//! Containment: nothing eco starts outlives it. Real servers that
//! daemonize (redis, nginx), eco's own fixture that daemonizes and hides
//! its spawn mark, renamed and detached workers, probes, a killed `up -F`,
//! a removed home. As root the instances run in cgroups; the same cases
//! run as `nobody` (no cgroups: process groups and the subreaper).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::tools::{require, tool, tool_str};
use crate::support::{
    Foreground, Home, eco_bin, eventually, free_port, mark, processes_with_env, stderr, stdout,
    write,
};

const LIMIT: Duration = Duration::from_secs(15);

/// Live processes whose command line contains `needle`.
fn processes_with_cmdline(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                String::from_utf8_lossy(&c)
                    .replace('\0', " ")
                    .contains(needle)
            })
        })
        .filter(|pid| crate::support::state_of(*pid).is_some_and(|s| s != 'Z'))
        .collect()
}

fn read_pid(file: &Path) -> Option<i64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

fn nothing_left(what: &str, check: impl Fn() -> Vec<i32>) {
    eventually(what, LIMIT, || check().is_empty());
}

fn assert_root() {
    assert!(
        nix::unistd::getuid().is_root(),
        "the containment tests run as root (cgroups, and `nobody` for the unprivileged case)"
    );
}

#[test]
fn a_daemonizing_fixture_with_a_pid_file_is_supervised_by_its_pid() {
    let home = Home::new();
    let pid_file = home.path().join("d.pid");
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  d:\n    cmd: [{eco}, __fixture-daemonize, --pid-file, {file}]\n    pid_file: ./d.pid\n",
            eco = eco_bin().display(),
            file = pid_file.display()
        ),
    );
    home.ok(&["up", "--wait"]);
    let first = read_pid(&pid_file).expect("pid file");
    let row = home.row("d", 0);
    assert_eq!(row["pid"], first, "{row}");
    assert_eq!(row["status"], "online");
    assert_eq!(row["restarts"], 0);
    let described = home.ok(&["describe", "d", "--json"]);
    assert!(
        described.contains("\"containment\": \"cgroup\""),
        "{described}"
    );
    home.ok(&["restart", "d"]);
    home.wait_rows("a new daemon", |rows| {
        rows[0]["status"] == "online" && rows[0]["pid"] != first && rows[0]["pid"].is_i64()
    });
    let second = read_pid(&pid_file).expect("pid file");
    assert_ne!(first, second);
    assert_eq!(home.row("d", 0)["pid"], second);
    home.ok(&["kill"]);
    nothing_left("no daemon left", || {
        processes_with_cmdline(&pid_file.display().to_string())
    });
}

#[test]
fn a_daemon_that_hides_its_mark_is_guessed_and_warned_about() {
    let home = Home::new();
    let pid_file = home.path().join("hidden.pid");
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  d:\n    cmd: [{eco}, __fixture-daemonize, --retitle, --pid-file, {file}]\n",
            eco = eco_bin().display(),
            file = pid_file.display()
        ),
    );
    home.ok(&["up", "--wait"]);
    eventually("pid file", LIMIT, || read_pid(&pid_file).is_some());
    std::thread::sleep(Duration::from_millis(1500));
    let row = home.row("d", 0);
    assert_eq!(row["restarts"], 0, "no crash loop: {row}");
    assert_eq!(row["status"], "online");
    assert_eq!(row["pid"], read_pid(&pid_file).expect("pid"), "{row}");
    assert_eq!(row["daemonized"], true);
    let table = home.ok(&["ls"]);
    assert!(table.contains("daemonized itself; set pid_file"), "{table}");
    assert_eq!(
        processes_with_cmdline(&pid_file.display().to_string()).len(),
        1,
        "never a second copy"
    );
    home.ok(&["kill"]);
    nothing_left("no daemon left", || {
        processes_with_cmdline(&pid_file.display().to_string())
    });
}

fn redis_conf(dir: &Path, port: u16) -> Vec<String> {
    vec![
        tool_str("redis-server"),
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--daemonize".into(),
        "yes".into(),
        "--pidfile".into(),
        dir.join("redis.pid").display().to_string(),
        "--dir".into(),
        dir.display().to_string(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
    ]
}

fn yaml_list(argv: &[String]) -> String {
    let items: Vec<String> = argv.iter().map(|a| format!("'{a}'")).collect();
    format!("[{}]", items.join(", "))
}

fn redis_ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    s.read(&mut buf)
        .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

#[test]
fn redis_daemonizing_with_and_without_a_pid_file() {
    assert_root();
    for with_pid_file in [true, false] {
        let home = Home::new();
        let port = free_port();
        let argv = redis_conf(home.path(), port);
        let extra = if with_pid_file {
            "    pid_file: ./redis.pid\n"
        } else {
            ""
        };
        home.write(
            "ecosystem.yaml",
            &format!("apps:\n  redis:\n    cmd: {}\n{extra}", yaml_list(&argv)),
        );
        home.ok(&["up", "--wait"]);
        eventually("redis answers", LIMIT, || redis_ping(port));
        std::thread::sleep(Duration::from_millis(1200));
        let row = home.row("redis", 0);
        assert_eq!(row["restarts"], 0, "no crash loop ({with_pid_file}): {row}");
        assert_eq!(row["status"], "online", "{row}");
        let pid_file = home.path().join("redis.pid");
        assert_eq!(row["pid"], read_pid(&pid_file).expect("redis.pid"), "{row}");
        let needle = format!(":{port}");
        let servers = || {
            processes_with_cmdline(&needle)
                .into_iter()
                .filter(|p| {
                    std::fs::read_to_string(format!("/proc/{p}/comm"))
                        .is_ok_and(|c| c.starts_with("redis"))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(servers().len(), 1, "one redis");
        if with_pid_file {
            let first = read_pid(&pid_file);
            home.ok(&["restart", "redis"]);
            home.wait_rows("a new redis", |rows| {
                rows[0]["status"] == "online" && rows[0]["pid"] != row["pid"]
            });
            eventually("new pid in the file", LIMIT, || {
                read_pid(&pid_file) != first
            });
            eventually("redis answers again", LIMIT, || redis_ping(port));
        } else {
            assert!(home.ok(&["ls"]).contains("daemonized itself"));
        }
        home.ok(&["kill"]);
        nothing_left("no redis left", servers);
    }
}

fn nginx_conf(dir: &Path, port: u16) -> PathBuf {
    let conf = format!(
        "worker_processes 2;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {dir}/body;\n  proxy_temp_path {dir}/proxy;\n  \
         fastcgi_temp_path {dir}/fastcgi;\n  uwsgi_temp_path {dir}/uwsgi;\n  scgi_temp_path {dir}/scgi;\n  \
         server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"ok\\n\"; }} }}\n}}\n",
        dir = dir.display()
    );
    write(dir, "nginx.conf", &conf)
}

fn http_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200")
}

#[test]
fn nginx_daemon_on_with_and_without_a_pid_file() {
    assert_root();
    for with_pid_file in [true, false] {
        let home = Home::new();
        let port = 8000 + free_port() % 20000;
        let conf = nginx_conf(home.path(), port);
        let extra = if with_pid_file {
            "    pid_file: ./nginx.pid\n"
        } else {
            ""
        };
        home.write(
            "ecosystem.yaml",
            &format!(
                "apps:\n  web:\n    cmd: ['{}', -c, {}, -p, {}]\n{extra}",
                tool_str("nginx"),
                conf.display(),
                home.path().display()
            ),
        );
        home.ok(&["up", "--wait"]);
        eventually("nginx serves", LIMIT, || http_ok(port));
        let pid_file = home.path().join("nginx.pid");
        let master = read_pid(&pid_file).expect("nginx.pid");
        let family = || {
            let master = i32::try_from(master).expect("pid");
            let mut all = vec![master];
            all.extend(crate::support::children_of(master));
            all.retain(|p| crate::support::state_of(*p).is_some_and(|s| s != 'Z'));
            all
        };
        assert_eq!(family().len(), 3, "a master and 2 workers");
        std::thread::sleep(Duration::from_millis(1200));
        let row = home.row("web", 0);
        assert_eq!(row["restarts"], 0, "no crash loop: {row}");
        assert_eq!(row["pid"], master, "{row}");
        if with_pid_file {
            home.ok(&["restart", "web"]);
            eventually("a new master in the pid file", LIMIT, || {
                read_pid(&pid_file).is_some_and(|p| p != master)
            });
            eventually("nginx serves again", LIMIT, || http_ok(port));
        } else {
            assert!(home.ok(&["ls"]).contains("daemonized itself"));
        }
        let conf_text = conf.display().to_string();
        home.ok(&["kill"]);
        nothing_left("no nginx master left", || {
            processes_with_cmdline(&conf_text)
        });
        nothing_left("no nginx worker left", || {
            family()
                .into_iter()
                .filter(|p| *p != i32::try_from(master).unwrap_or(0))
                .collect()
        });
        assert!(!http_ok(port));
    }
}

/// The three escapes of issue 12, as one file.
fn escapes_yaml(tag: &str, n: u32) -> String {
    let (k, v) = tag.split_once('=').expect("mark");
    format!(
        "name: escapes\napps:\n\
         \x20 renamed:\n\
         \x20   cmd: [sh, -c, 'setsid perl -e \"\\$0=q(worker{n}).(q(x) x 3000); sleep 600\" & exit 0']\n\
         \x20   restart: on-failure\n\
         \x20   env: {{ {k}: \"{v}\" }}\n\
         \x20 detached:\n\
         \x20   cmd: [setsid, -f, sleep, '{d}']\n\
         \x20   restart: never\n\
         \x20   env: {{ {k}: \"{v}\" }}\n\
         \x20 doublefork:\n\
         \x20   cmd: [sh, -c, 'sh -c \"sleep {f} &\"; exec sleep 1000']\n\
         \x20   env: {{ {k}: \"{v}\" }}\n",
        d = 4242 + n,
        f = 7770 + n,
    )
}

/// The command lines of one escapes test's three workers (each test has its
/// own numbers, so parallel tests never see each other's).
fn needles(n: u32) -> (String, String, String) {
    (
        format!("worker{n}xxxxxxxx"),
        format!("sleep {}", 4242 + n),
        format!("sleep {}", 7770 + n),
    )
}

/// Processes of the escapes test: by mark, and by the titles that hide it.
fn escaped(tag: &str, dir: &Path, n: u32) -> Vec<i32> {
    let mut found = processes_with_env(tag);
    let (worker, detached, forked) = needles(n);
    for needle in [worker.as_str(), detached.as_str(), forked.as_str()] {
        for pid in processes_with_cmdline(needle) {
            // Only ours: their cwd is our folder.
            let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap_or_default();
            if cwd.starts_with(dir) && !found.contains(&pid) {
                found.push(pid);
            }
        }
    }
    found
}

/// Runs `eco` as nobody (no cgroups can be written), in `dir`.
fn eco_as_nobody(dir: &Path, args: &[&str]) -> Output {
    Command::new(tool("setpriv"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(eco_bin())
        .args(args)
        .current_dir(dir)
        .env("ECO_HOME", dir.join("home"))
        .env("NO_COLOR", "1")
        .output()
        .expect("setpriv runs")
}

fn run_escapes(as_nobody: bool) {
    require(&["perl", "setsid"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = mark(if as_nobody {
        "escapes_nobody"
    } else {
        "escapes_root"
    });
    let n = u32::from(as_nobody);
    write(dir.path(), "ecosystem.yaml", &escapes_yaml(&tag, n));
    let (worker, detached, forked) = needles(n);
    if as_nobody {
        nix::unistd::chown(
            dir.path(),
            Some(nix::unistd::Uid::from_raw(65534)),
            Some(nix::unistd::Gid::from_raw(65534)),
        )
        .expect("chown");
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .expect("chmod");
    }
    let home = dir.path().join("home");
    let eco = |args: &[&str]| -> Output {
        if as_nobody {
            eco_as_nobody(dir.path(), args)
        } else {
            crate::support::eco(&home, dir.path(), args)
        }
    };
    let ok = |args: &[&str]| {
        let out = eco(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "eco {args:?}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        stdout(&out)
    };
    // eco down, then eco kill, each after the escapes are running.
    for finish in [&["down", "escapes"][..], &["kill"][..]] {
        let _ = ok(&["up", "--wait"]);
        let containment = if as_nobody { "process-group" } else { "cgroup" };
        assert!(
            ok(&["describe", "doublefork", "--json"])
                .contains(&format!("\"containment\": \"{containment}\"")),
            "containment is {containment}"
        );
        let every_escape_runs = || {
            let procs = escaped(&tag, dir.path(), n);
            processes_with_cmdline(&worker)
                .iter()
                .any(|p| procs.contains(p))
                && !processes_with_cmdline(&detached).is_empty()
                && !processes_with_cmdline(&forked).is_empty()
        };
        let deadline = std::time::Instant::now() + LIMIT;
        while !every_escape_runs() {
            assert!(
                std::time::Instant::now() < deadline,
                "timed out: every escape runs (after eco {finish:?})\n{}\n{}",
                stdout(&eco(&["ls"])),
                std::fs::read_to_string(home.join("daemon.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = ok(finish);
        nothing_left(&format!("nothing left after eco {finish:?}"), || {
            escaped(&tag, dir.path(), n)
        });
    }
    let _ = ok(&["kill"]);
    let home_var = format!("ECO_HOME={}", home.display());
    nothing_left("no daemon left", || {
        processes_with_cmdline(" daemon")
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|e| e.split(|b| *b == 0).any(|v| v == home_var.as_bytes()))
            })
            .collect()
    });
}

#[test]
fn renamed_detached_and_double_forked_workers_leave_nothing_with_cgroups() {
    assert_root();
    run_escapes(false);
}

#[test]
fn renamed_detached_and_double_forked_workers_leave_nothing_without_cgroups() {
    assert_root();
    run_escapes(true);
}

#[test]
fn ctrl_c_of_up_f_leaves_no_escaped_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = mark("escapes_fg");
    let n = 2;
    let file = write(dir.path(), "ecosystem.yaml", &escapes_yaml(&tag, n));
    let (_, detached, _) = needles(n);
    let mut eco = Foreground::start(dir.path(), dir.path(), &file);
    eventually("every escape runs", LIMIT, || {
        !processes_with_cmdline(&detached).is_empty() && escaped(&tag, dir.path(), n).len() >= 4
    });
    eco.signal(libc::SIGINT);
    let (code, _) = eco.wait_exit(LIMIT);
    assert_eq!(code, Some(0));
    nothing_left("nothing left after Ctrl-C", || escaped(&tag, dir.path(), n));
}

#[test]
fn kill_9_of_up_f_ends_its_apps() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tag = mark("kill9_fg");
    let (k, v) = tag.split_once('=').expect("mark");
    let file = write(
        dir.path(),
        "ecosystem.yaml",
        &format!(
            "apps:\n  a:\n    cmd: [sh, -c, 'sleep 1000 & setsid sleep 1001 & wait']\n    env: {{ {k}: \"{v}\" }}\n    instances: 2\n"
        ),
    );
    let mut eco = Foreground::start(dir.path(), dir.path(), &file);
    eventually("apps run", LIMIT, || processes_with_env(&tag).len() >= 6);
    eco.signal(libc::SIGKILL);
    let _ = eco.wait_exit(LIMIT);
    // The apps would sleep 1000 s: gone at all is the guardian's work.
    eventually("apps gone", LIMIT, || processes_with_env(&tag).is_empty());
}

#[test]
fn a_probe_still_running_at_the_ready_timeout_is_killed() {
    let home = Home::new();
    let tag = mark("probe_timeout");
    let (k, v) = tag.split_once('=').expect("mark");
    home.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  slow:\n    cmd: [sleep, '1000']\n    ready: {{ exec: 'sh -c \"sleep 999 & sleep 998\"' }}\n    ready_timeout: 1s\n    restart: never\n    env: {{ {k}: \"{v}\" }}\n"
        ),
    );
    home.ok(&["up"]);
    eventually("a probe runs", LIMIT, || {
        !processes_with_cmdline("sleep 999").is_empty()
    });
    home.wait_rows("not ready, given up", |rows| {
        rows[0]["status"] == "errored" || rows[0]["status"] == "stopped"
    });
    nothing_left("no probe left", || processes_with_env(&tag));
}

#[test]
fn a_removed_home_never_runs_two_daemons_and_kill_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let home = dir.path().join("home");
    let tag = mark("removed_home");
    let (k, v) = tag.split_once('=').expect("mark");
    write(
        dir.path(),
        "ecosystem.yaml",
        &format!("apps:\n  a:\n    cmd: [sleep, '1000']\n    env: {{ {k}: \"{v}\" }}\n"),
    );
    let eco = |args: &[&str]| crate::support::eco(&home, dir.path(), args);
    assert!(eco(&["up", "--wait"]).status.success());
    let home_var = format!("ECO_HOME={}", home.display());
    // A daemon's child between its fork and its exec still shows the
    // daemon's command line and environment: it is not a second daemon.
    let daemons = move || {
        let all: Vec<i32> = processes_with_cmdline(" daemon")
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/environ"))
                    .is_ok_and(|e| e.split(|b| *b == 0).any(|var| var == home_var.as_bytes()))
            })
            .collect();
        all.iter()
            .filter(|p| !eco::procfs::parent(**p).is_some_and(|parent| all.contains(&parent)))
            .count()
    };
    assert_eq!(daemons(), 1);
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let most = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    // What was running when two were seen (to tell which two).
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sampler = {
        let (watching, most, seen) = (watching.clone(), most.clone(), seen.clone());
        let daemons = daemons.clone();
        std::thread::spawn(move || {
            while watching.load(std::sync::atomic::Ordering::SeqCst) {
                let now = daemons();
                if now > 1 {
                    seen.lock().expect("seen").extend(
                        processes_with_cmdline(" daemon").into_iter().map(|p| {
                            let cmdline =
                                std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                            format!(
                                "{p} (parent {:?}): {}",
                                eco::procfs::parent(p),
                                String::from_utf8_lossy(&cmdline).replace('\0', " ")
                            )
                        }),
                    );
                }
                most.fetch_max(now, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    std::fs::remove_dir_all(&home).expect("rm -rf home");
    let out = eco(&["ls"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(eco(&["up", "--wait"]).status.success());
    assert_eq!(processes_with_env(&tag).len(), 1, "one copy of the app");
    let out = eco(&["kill"]);
    assert!(out.status.success(), "{}", stderr(&out));
    watching.store(false, std::sync::atomic::Ordering::SeqCst);
    sampler.join().expect("sampler");
    assert!(
        most.load(std::sync::atomic::Ordering::SeqCst) <= 1,
        "two daemons at once: {:?}",
        seen.lock().expect("seen")
    );
    nothing_left("nothing left", || processes_with_env(&tag));
    assert_eq!(daemons(), 0);
}

/// Without cgroups, a launcher whose daemon left its process group and
/// wrote its title over its environment (eco's mark with it) before the
/// launcher exited: eco supervises that daemon (the oldest unmarked orphan
/// born after the launcher) instead of sweeping it away as unowned.
#[test]
fn a_daemon_that_hid_its_mark_before_its_launcher_exited_is_supervised() {
    assert_root();
    require(&["perl", "setsid"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("renamed");
    // The launcher exits only once the daemon has renamed itself (perl
    // creates the file after $0 is set): the mark is gone by then.
    write(
        dir.path(),
        "ecosystem.yaml",
        &format!(
            "apps:\n  hidden:\n    cmd: [sh, -c, 'setsid perl -e \"\\$0=q(hidden9).(q(y) x 3000); open(F, q(>{r})); close(F); sleep 600\" & until [ -e {r} ]; do sleep 0.05; done; exit 0']\n    restart: on-failure\n",
            r = ready.display()
        ),
    );
    nix::unistd::chown(
        dir.path(),
        Some(nix::unistd::Uid::from_raw(65534)),
        Some(nix::unistd::Gid::from_raw(65534)),
    )
    .expect("chown");
    let run = |args: &[&str]| {
        let out = eco_as_nobody(dir.path(), args);
        assert_eq!(out.status.code(), Some(0), "eco {args:?}: {}", stderr(&out));
        stdout(&out)
    };
    run(&["up"]);
    let daemon = || processes_with_cmdline("hidden9yyyy");
    eventually("the daemon runs", LIMIT, || daemon().len() == 1);
    let pid = daemon()[0];
    eventually("eco supervises it", LIMIT, || {
        let rows: serde_json::Value =
            serde_json::from_str(&run(&["ls", "--json"])).expect("ls --json");
        rows[0]["status"] == "online" && rows[0]["pid"] == pid
    });
    run(&["kill"]);
    nothing_left("the daemon stopped with eco", daemon);
}
