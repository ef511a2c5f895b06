//! Issue 21, classes 1, 2 and 5: no one outside an instance speaks for it
//! on its notify socket. Another user cannot reach the socket; a process
//! of eco's own user that is not in the instance, or that is gone by the
//! time eco reads it, is refused (and counted, and logged once per
//! interval, even through a flood); `MAINPID=` never names eco, its group
//! or a dead process; `FDSTORE=1` cannot fill eco's descriptor table. The
//! senders that really are the instance's, short-lived ones included
//! (`systemd-notify`, `eco notify`, the Node shim), still work, with and
//! without cgroups. The attacker runs as `nobody` (uid 65534): these tests
//! need root, as CI runs them.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::tools::tool;
use crate::support::{eco_bin, eventually, mark, processes_with_env, stderr, stdout};

const NOBODY: u32 = 65534;
const LIMIT: Duration = Duration::from_secs(20);

fn assert_root() {
    assert!(
        nix::unistd::getuid().is_root(),
        "these tests act as a second user (nobody): run them as root, as CI does"
    );
}

/// A project folder with its ECO_HOME (`home` inside), run by root (eco
/// contains the apps with cgroups) or by nobody (process groups).
struct Site {
    dir: tempfile::TempDir,
    as_nobody: bool,
}

impl Site {
    fn new(as_nobody: bool) -> Site {
        assert_root();
        let dir = tempfile::tempdir().expect("tempdir");
        if as_nobody {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).expect("chown");
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        Site { dir, as_nobody }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn home(&self) -> PathBuf {
        self.path().join("home")
    }

    fn write(&self, name: &str, text: &str) {
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write");
        if self.as_nobody {
            std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).expect("chown");
        }
    }

    fn eco(&self, args: &[&str]) -> Output {
        let mut command = Command::new(eco_bin());
        command
            .args(args)
            .current_dir(self.path())
            .env("ECO_HOME", self.home())
            .env("NO_COLOR", "1");
        if self.as_nobody {
            command.uid(NOBODY).gid(NOBODY);
        }
        command.output().expect("eco runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.eco(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "eco {args:?}:\n{}{}\ndaemon.log:\n{}",
            stdout(&out),
            stderr(&out),
            self.daemon_log()
        );
        stdout(&out)
    }

    /// `describe --json` of `app`'s instance 0.
    fn instance(&self, app: &str) -> serde_json::Value {
        let described: serde_json::Value =
            serde_json::from_str(&self.ok(&["describe", app, "--json"])).expect("json");
        described[0]["instances"][0].clone()
    }

    fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.home().join("daemon.log")).unwrap_or_default()
    }

    fn daemon_pid(&self) -> i32 {
        std::fs::read_to_string(self.home().join("daemon.pid"))
            .expect("daemon.pid")
            .trim()
            .parse()
            .expect("a pid")
    }

    /// The pid of `app`'s instance 0, once it runs.
    fn pid(&self, app: &str) -> i32 {
        let mut pid = 0;
        eventually("the instance runs", LIMIT, || {
            pid = self.instance(app)["pid"]
                .as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0);
            pid > 0
        });
        pid
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.eco(&["kill"]);
    }
}

/// One variable of a process's environment.
fn env_of(pid: i32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    env.split(|b| *b == 0)
        .find_map(|v| v.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd folder")
        .count()
}

/// `eco ls` answers, and long before the client's 10 s wait for a daemon
/// that does not answer (generous for a loaded host).
fn assert_responsive(site: &Site) {
    let start = Instant::now();
    site.ok(&["ls"]);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "`eco ls` took {took:?}");
}

/// Sends datagrams to a notify socket as a process outside the instance:
/// `python3 -c SENDER path count text fds_each`.
const SENDER: &str = r#"
import array, os, socket, sys
path, count, text, each = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(each)]
rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
for _ in range(count):
    s.sendmsg([text], rights, 0, path)
"#;

fn sender(path: &str, count: u32, text: &str, fds_each: u32) -> Command {
    sender_from(Command::new(tool("python3")), path, count, text, fds_each)
}

/// [`sender`] run as `nobody`: python3 by name, so the child's PATH lookup
/// skips a python `nobody` may not run (root's pyenv) for the system one.
fn sender_as_nobody(path: &str, count: u32, text: &str, fds_each: u32) -> Command {
    let mut command = sender_from(Command::new("python3"), path, count, text, fds_each);
    command.uid(NOBODY).gid(NOBODY);
    command
}

fn sender_from(mut command: Command, path: &str, count: u32, text: &str, fds_each: u32) -> Command {
    command
        .args(["-c", SENDER, path])
        .arg(count.to_string())
        .arg(text)
        .arg(fds_each.to_string());
    command
}

/// A `ready: notify` app that never says it is ready (so an outsider's
/// READY=1 would show), with a notify socket and an fd store.
const NEVER_READY: &str = "apps:\n  svc:\n    cmd: [sleep, '1000']\n    ready: notify\n    ready_timeout: 5m\n    fd_store: 4\n";

#[test]
fn another_user_cannot_reach_the_notify_socket_even_given_its_path() {
    let site = Site::new(false);
    site.write("ecosystem.yaml", NEVER_READY);
    site.ok(&["up"]);
    let pid = site.pid("svc");
    let socket = env_of(pid, "NOTIFY_SOCKET").expect("NOTIFY_SOCKET");
    // A path in the home's private notify folder: no abstract socket that
    // any user could list in /proc/net/unix.
    let folder = site.home().join("notify");
    assert!(
        Path::new(&socket).starts_with(&folder),
        "NOTIFY_SOCKET={socket}"
    );
    let meta = std::fs::symlink_metadata(&folder).expect("notify folder");
    assert_eq!(meta.mode() & 0o777, 0o700);
    assert_eq!(meta.uid(), 0);
    // nobody, told the path, cannot even send.
    let out = Command::new(eco_bin())
        .args(["notify", "READY=1", "STATUS=pwned", "WATCHDOG_USEC=1"])
        .current_dir("/")
        .env("NOTIFY_SOCKET", &socket)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("eco notify as nobody");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let out = sender_as_nobody(&socket, 1, "READY=1", 0)
        .output()
        .expect("python as nobody");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("PermissionError"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let instance = site.instance("svc");
    assert_eq!(instance["status"], "starting", "{instance}");
    assert_eq!(instance["status_text"], serde_json::Value::Null);
    assert_eq!(instance["notify_rejected"], 0);
    // The socket goes with the instance.
    site.ok(&["down"]);
    eventually("the socket file removed", LIMIT, || {
        !Path::new(&socket).exists()
    });
}

/// Continues a stopped daemon when dropped, so a failing test leaves none.
struct Stopped(i32);

impl Stopped {
    fn new(pid: i32) -> Stopped {
        signal(pid, libc::SIGSTOP);
        eventually("the daemon stopped", LIMIT, || {
            crate::support::state_of(pid) == Some('T')
        });
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

fn signal(pid: i32, sig: i32) {
    let sig = nix::sys::signal::Signal::try_from(sig).expect("signal");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig).expect("kill");
}

#[test]
fn a_sender_gone_before_eco_reads_it_is_refused() {
    let site = Site::new(false);
    site.write("ecosystem.yaml", NEVER_READY);
    site.ok(&["up"]);
    let pid = site.pid("svc");
    let socket = env_of(pid, "NOTIFY_SOCKET").expect("NOTIFY_SOCKET");
    {
        // The datagrams wait in the socket while their senders exit and
        // are reaped: when eco reads them, nothing of the sender is left.
        let _stopped = Stopped::new(site.daemon_pid());
        let status = sender(&socket, 1, "READY=1\nSTATUS=pwned\nWATCHDOG_USEC=1", 0)
            .status()
            .expect("python");
        assert!(status.success());
        let status = sender(&socket, 1, "FDSTORE=1\nFDNAME=planted", 1)
            .status()
            .expect("python");
        assert!(status.success());
    }
    eventually("both datagrams refused", LIMIT, || {
        site.instance("svc")["notify_rejected"] == 2
    });
    let instance = site.instance("svc");
    assert_eq!(instance["status"], "starting", "{instance}");
    assert_eq!(instance["status_text"], serde_json::Value::Null);
    assert_eq!(instance["restarts"], 0, "no watchdog restart: {instance}");
    assert!(
        site.daemon_log().contains("exited before eco read it"),
        "{}",
        site.daemon_log()
    );
    // The planted descriptor is not handed to the next start.
    signal(pid, libc::SIGKILL);
    let mut next = 0;
    eventually("restarted", LIMIT, || {
        next = site.instance("svc")["pid"].as_i64().unwrap_or(0) as i32;
        next > 0 && next != pid
    });
    assert_eq!(env_of(next, "LISTEN_FDS"), None);
    assert!(std::fs::read_link(format!("/proc/{next}/fd/3")).is_err());
}

/// Sends each bad MAINPID, then READY=1 (read after them: `up --wait`
/// returns once eco has read them all).
const LIAR: &str = r#"set -e
e="$1"
"$e" notify MAINPID=0
"$e" notify MAINPID=-1
"$e" notify "MAINPID=$PPID"
sleep 0 & dead=$!
wait $dead
"$e" notify "MAINPID=$dead"
"$e" notify READY=1
exec sleep 1000
"#;

fn main_pid_is_refused_unless_a_live_process_of_the_instance(as_nobody: bool) {
    let site = Site::new(as_nobody);
    let tag = mark(if as_nobody {
        "mainpid_nobody"
    } else {
        "mainpid_root"
    });
    let (key, value) = tag.split_once('=').expect("KEY=VALUE");
    site.write("liar.sh", LIAR);
    site.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  liar:\n    cmd: [sh, liar.sh, '{}']\n    ready: notify\n    env: {{ {key}: '{value}' }}\n",
            eco_bin().display()
        ),
    );
    site.ok(&["up", "--wait", "--timeout", "20s"]);
    let containment = if as_nobody { "process-group" } else { "cgroup" };
    assert!(
        site.ok(&["describe", "liar", "--json"])
            .contains(&format!("\"containment\": \"{containment}\"")),
        "containment is {containment}"
    );
    let daemon = site.daemon_pid();
    let instance = site.instance("liar");
    let pid = instance["pid"].as_i64().expect("pid") as i32;
    // $PPID was eco: the app's parent.
    assert_eq!(
        crate::support::state_of(daemon).map(|s| s != 'Z'),
        Some(true)
    );
    assert_eq!(
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| s
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()),
        Some(daemon)
    );
    assert_eq!(instance["notify_rejected"], 4, "{instance}");
    assert_eq!(instance["status"], "online");
    assert_eq!(instance["restarts"], 0, "{instance}");
    let log = site.daemon_log();
    assert!(log.contains("MAINPID=0 refused"), "{log}");
    // One copy runs (the last `eco notify` may still be ending), and it is
    // still supervised: `eco kill` leaves nothing of it.
    eventually("only the app carries the tag", LIMIT, || {
        processes_with_env(&tag) == vec![pid]
    });
    site.ok(&["kill"]);
    eventually("nothing left after eco kill", LIMIT, || {
        processes_with_env(&tag).is_empty()
    });
}

#[test]
fn main_pid_is_refused_unless_a_live_process_of_the_instance_with_cgroups() {
    main_pid_is_refused_unless_a_live_process_of_the_instance(false);
}

#[test]
fn main_pid_is_refused_unless_a_live_process_of_the_instance_with_process_groups() {
    main_pid_is_refused_unless_a_live_process_of_the_instance(true);
}

#[test]
fn a_flood_of_refused_datagrams_keeps_the_daemon_small_responsive_and_its_log_short() {
    const FLOOD: u32 = 20_000;
    let site = Site::new(false);
    site.write("ecosystem.yaml", NEVER_READY);
    site.ok(&["up"]);
    let pid = site.pid("svc");
    let socket = env_of(pid, "NOTIFY_SOCKET").expect("NOTIFY_SOCKET");
    let daemon = site.daemon_pid();
    let fds_before = open_fds(daemon);
    let log_before = site.daemon_log().len();
    // 4 KB of text and a descriptor in each, from a live process of the
    // same user outside the instance.
    let text = format!("READY=1\nSTATUS={}", "x".repeat(4000));
    let mut flood = sender(&socket, FLOOD, &text, 1)
        .stdout(Stdio::null())
        .spawn()
        .expect("python");
    let mut most_fds = 0;
    let mut most_rss = 0;
    let mut checks = 0;
    loop {
        assert_responsive(&site);
        most_fds = most_fds.max(open_fds(daemon));
        most_rss = most_rss.max(rss_kib(daemon));
        checks += 1;
        if flood.try_wait().expect("wait").is_some() {
            break;
        }
    }
    eventually("every datagram refused", LIMIT, || {
        site.instance("svc")["notify_rejected"] == FLOOD
    });
    assert_responsive(&site);
    most_fds = most_fds.max(open_fds(daemon));
    most_rss = most_rss.max(rss_kib(daemon));
    eprintln!(
        "flood: {checks} checks, most fds {most_fds} (before {fds_before}), most RSS {most_rss} KiB"
    );
    assert!(most_rss < 30 * 1024, "RSS {most_rss} KiB");
    // Each refused descriptor was closed at once.
    assert!(
        most_fds < fds_before + 32,
        "{most_fds} fds, {fds_before} before"
    );
    let instance = site.instance("svc");
    assert_eq!(instance["status"], "starting", "{instance}");
    assert_eq!(instance["status_text"], serde_json::Value::Null);
    let log = site.daemon_log();
    let grown = log.len() - log_before;
    eprintln!("flood: daemon.log grew {grown} bytes");
    assert!(grown < 4096, "daemon.log grew {grown} bytes:\n{log}");
    assert!(!log.contains("xxxxxxxx"), "a datagram's content was logged");
    assert!(log.contains("not a process of the instance"), "{log}");
}

/// Stores descriptors 16 at a time, far past eco's budget, then sends
/// too many in one datagram, then READY=1 (read after all of them).
const HOARDER: &str = r#"
import array, os, socket, time
path = os.environ["NOTIFY_SOCKET"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(text, count):
    fds = [os.open("/dev/null", os.O_RDONLY) for _ in range(count)]
    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
    s.sendmsg([text], rights, 0, path)
    for fd in fds:
        os.close(fd)
for i in range(100):
    send(b"FDSTORE=1\nFDNAME=n%d" % i, 16)
send(b"FDSTORE=1\nFDNAME=many", 40)
send(b"READY=1", 0)
time.sleep(1000)
"#;

#[test]
fn fdstore_cannot_fill_the_daemons_descriptor_table() {
    crate::support::tools::require(&["python3"]);
    let site = Site::new(false);
    site.write("hoard.py", HOARDER);
    site.write(
        "ecosystem.yaml",
        "apps:\n  hoard:\n    cmd: [python3, hoard.py]\n    ready: notify\n    fd_store: 100000\n",
    );
    // The daemon's table holds 1,024 and it cannot raise that.
    let out = Command::new(tool("setpriv"))
        .args(["--bounding-set=-sys_resource", "sh", "-c"])
        .arg(format!(
            "ulimit -Sn 1024 && ulimit -Hn 1024 && exec '{}' up --wait --timeout 30s",
            eco_bin().display()
        ))
        .current_dir(site.path())
        .env("ECO_HOME", site.home())
        .output()
        .expect("setpriv runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        stderr(&out),
        site.daemon_log()
    );
    let daemon = site.daemon_pid();
    let fds = open_fds(daemon);
    eprintln!("daemon holds {fds} descriptors");
    // A quarter of the table for stored descriptors, at most.
    assert!(fds <= 256 + 64, "{fds} descriptors open");
    assert_responsive(&site);
    let instance = site.instance("hoard");
    // 16 datagrams fit the budget; 84 did not, and one carried too many.
    assert_eq!(
        instance["notify_rejected"],
        85,
        "{instance}\n{}",
        site.daemon_log()
    );
    let log = site.daemon_log();
    assert!(log.contains("descriptor budget"), "{log}");
    assert!(rss_kib(daemon) < 30 * 1024);
}

const NODE_READY: &str =
    "setTimeout(() => process.send('ready'), 200); setInterval(() => {}, 1000);";

fn short_lived_senders_still_speak_for_their_instance(as_nobody: bool) {
    crate::support::tools::require(&["node", "systemd-notify"]);
    let site = Site::new(as_nobody);
    site.write(
        "ecosystem.yaml",
        &format!(
            "apps:\n  \
             sdnotify:\n    cmd: [sh, -c, 'sleep 0.2; systemd-notify --ready --status=sd-up && exec sleep 1000']\n    ready: notify\n  \
             econotify:\n    cmd: [sh, -c, 'sleep 0.2; \"$0\" notify READY=1 STATUS=eco-up && exec sleep 1000', '{eco}']\n    ready: notify\n  \
             node:\n    cmd: [node, -e, \"{NODE_READY}\"]\n    ready: notify\n",
            eco = eco_bin().display()
        ),
    );
    site.ok(&["up", "--wait", "--timeout", "20s"]);
    for (app, status) in [("sdnotify", "sd-up"), ("econotify", "eco-up")] {
        eventually("the status", LIMIT, || {
            site.instance(app)["status_text"] == status
        });
    }
    for app in ["sdnotify", "econotify", "node"] {
        let instance = site.instance(app);
        assert_eq!(instance["status"], "online", "{app}: {instance}");
        assert_eq!(instance["notify_rejected"], 0, "{app}: {instance}");
        assert_eq!(instance["restarts"], 0, "{app}: {instance}");
    }
}

#[test]
fn short_lived_senders_still_speak_for_their_instance_with_cgroups() {
    short_lived_senders_still_speak_for_their_instance(false);
}

#[test]
fn short_lived_senders_still_speak_for_their_instance_with_process_groups() {
    short_lived_senders_still_speak_for_their_instance(true);
}
