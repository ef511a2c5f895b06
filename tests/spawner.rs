//! Issue 23: one spawn contract. Both real spawners (the clone3 path and
//! the std fallback) get the same `SpawnRequest`, and the child each starts
//! must see the same world, read from /proc: its descriptors, environment,
//! cwd, descriptor limit, process group and cgroup; each is also checked
//! against the request, so two equally wrong spawners fail too.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use eco::runtime::cgroup::Subtree;
use eco::runtime::reaper::Reaper;
use eco::runtime::spawner::{Output, SpawnRequest, Spawner, Strategy, System};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::support::eventually;

/// What a child sees of itself.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    /// Descriptor number → what it is (pipe, socket, a path).
    fds: BTreeMap<i32, String>,
    env: Vec<String>,
    cwd: String,
    nofile_soft: String,
    /// Its process group equals its pid.
    leads_group: bool,
    cgroup: String,
}

/// A descriptor's kind: pipes and sockets differ in inode from run to run.
fn kind(target: &Path) -> String {
    let shown = target.display().to_string();
    match shown.split_once(":[") {
        Some((kind, _)) => kind.to_owned(),
        None => shown,
    }
}

fn seen(pid: i32) -> Seen {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the child's fds")
        .flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            Some((fd, kind(&std::fs::read_link(e.path()).ok()?)))
        })
        .collect();
    let mut env: Vec<String> = std::fs::read(format!("/proc/{pid}/environ"))
        .expect("read environ")
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    env.sort();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
        .expect("read cwd")
        .display()
        .to_string();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let nofile_soft = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .expect("a NOFILE line")
        .to_owned();
    let pgid = nix::unistd::getpgid(Some(Pid::from_raw(pid))).expect("getpgid");
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .expect("read cgroup")
        .lines()
        .find(|l| l.starts_with("0::"))
        .unwrap_or_default()
        .to_owned();
    Seen {
        fds,
        env,
        cwd,
        nofile_soft,
        leads_group: pgid.as_raw() == pid,
        cgroup,
    }
}

/// Starts the request with one strategy, reads what the child sees, ends it.
fn run(strategy: Strategy, request: &SpawnRequest) -> Seen {
    // One at a time: a descriptor another of these tests holds while its
    // child starts is no business of this one's child.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // This test binary inherited descriptors (cargo's jobserver pipe...)
    // that eco's own processes close first thing (`fds::close_inherited`):
    // marked close-on-exec here, so only what the spawner hands down counts.
    eco::fds::cloexec_all_but(3, &[]);
    let spawner = System::with(Reaper::unstarted(), strategy);
    let child = spawner
        .spawn(request)
        .unwrap_or_else(|err| panic!("{strategy:?} cannot spawn: {err}"));
    let pid = child.pid;
    // Both spawners return once the child has exec'd, but `sleep` opens
    // libc and locale files while it starts: read it once it sleeps.
    eventually("the child sleeps", Duration::from_secs(10), || {
        sleeping(pid)
    });
    let seen = seen(pid);
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = waitpid(Pid::from_raw(pid), None);
    drop(child);
    seen
}

/// True once `pid` waits in nanosleep(2) or clock_nanosleep(2) (x86_64
/// numbers; /proc/PID/syscall is readable by root, as CI runs).
fn sleeping(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .is_ok_and(|s| matches!(s.split_whitespace().next(), Some("35" | "230")))
}

#[test]
fn clone3_and_std_give_the_child_the_same_world() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cwd = dir.path().canonicalize().expect("canonical");
    // Descriptors to hand down at 3 and 7, and one eco holds that the child
    // must not get (close-on-exec, as everything eco opens).
    let (socket, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let (pipe_read, _pipe_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let _kept: OwnedFd = std::fs::File::open("/dev/null").expect("open").into();
    let subtree = Subtree::create(&format!("eco-spawner-test-{}", std::process::id()));
    let cgroup = subtree.as_ref().map(|s| s.child("app").expect("a cgroup"));
    let mut request = SpawnRequest::new(vec!["sleep".to_owned(), "30".to_owned()], cwd.clone());
    request.env = vec![
        (OsString::from("PATH"), OsString::from("/usr/bin:/bin")),
        (OsString::from("ECO_TEST"), OsString::from("one two")),
    ];
    request.output = Output {
        stdout: true,
        stderr: false,
        merged: false,
    };
    request.nofile = Some(321);
    request.cgroup = cgroup.clone();
    request.fds = vec![(socket.as_raw_fd(), 3), (pipe_read.as_raw_fd(), 7)];

    let by_clone = run(Strategy::Clone3, &request);
    let by_std = run(Strategy::Std, &request);
    assert_eq!(by_clone, by_std, "clone3 and std disagree");

    let wanted_fds: BTreeMap<i32, String> = [
        (0, "/dev/null"),
        (1, "pipe"),
        (2, "/dev/null"),
        (3, "socket"),
        (7, "pipe"),
    ]
    .into_iter()
    .map(|(fd, k)| (fd, k.to_owned()))
    .collect();
    assert_eq!(
        by_std.fds, wanted_fds,
        "exactly 0, 1, 2 and the handed-down ones"
    );
    assert_eq!(by_std.env, ["ECO_TEST=one two", "PATH=/usr/bin:/bin"]);
    assert_eq!(by_std.cwd, cwd.display().to_string());
    assert_eq!(by_std.nofile_soft, "321");
    assert!(by_std.leads_group, "it leads its own process group");
    if let Some(cgroup) = &cgroup {
        let name = cgroup
            .path()
            .file_name()
            .expect("a cgroup has a name")
            .to_string_lossy()
            .into_owned();
        assert!(
            by_std.cgroup.ends_with(&format!("/{name}")),
            "{}",
            by_std.cgroup
        );
        cgroup.remove();
    }
    if let Some(subtree) = subtree {
        subtree.remove();
    }
}

#[test]
fn a_request_without_a_group_leaves_the_child_in_ours_on_both_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut request = SpawnRequest::new(
        vec!["sleep".to_owned(), "30".to_owned()],
        dir.path().to_path_buf(),
    );
    request.new_group = false;
    let ours = nix::unistd::getpgrp().as_raw();
    for strategy in [Strategy::Clone3, Strategy::Std] {
        let seen = run(strategy, &request);
        assert!(!seen.leads_group, "{strategy:?}");
        assert_eq!(
            seen.fds.keys().copied().collect::<Vec<_>>(),
            [0, 1, 2],
            "{strategy:?}: {:?}",
            seen.fds
        );
    }
    assert!(ours > 0);
}

#[test]
fn handed_down_descriptors_may_swap_numbers() {
    // eco's 3 goes to the child's 4 and eco's 4 to the child's 3: a naive
    // dup2 in order would give the child the same file twice.
    let dir = tempfile::tempdir().expect("tempdir");
    let (socket, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let (pipe_read, _pipe_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
    let mut request = SpawnRequest::new(
        vec!["sleep".to_owned(), "30".to_owned()],
        dir.path().to_path_buf(),
    );
    request.fds = vec![
        (socket.as_raw_fd(), pipe_read.as_raw_fd()),
        (pipe_read.as_raw_fd(), socket.as_raw_fd()),
    ];
    for strategy in [Strategy::Clone3, Strategy::Std] {
        let seen = run(strategy, &request);
        assert_eq!(seen.fds[&pipe_read.as_raw_fd()], "socket", "{strategy:?}");
        assert_eq!(seen.fds[&socket.as_raw_fd()], "pipe", "{strategy:?}");
    }
}

#[test]
fn a_limit_below_the_descriptors_eco_holds_still_starts_on_both_paths() {
    // A daemon with many instances holds hundreds of descriptors; its apps
    // get the small soft limit of the command that started it. The child
    // must set the limit after its own opens and dups, or they fail EMFILE.
    let dir = tempfile::tempdir().expect("tempdir");
    let held: Vec<std::fs::File> = (0..64)
        .map(|_| std::fs::File::open("/dev/null").expect("open"))
        .collect();
    let (socket, _peer) = std::os::unix::net::UnixStream::pair().expect("socketpair");
    let mut request = SpawnRequest::new(
        vec!["sleep".to_owned(), "30".to_owned()],
        dir.path().to_path_buf(),
    );
    request.output = Output {
        stdout: true,
        stderr: true,
        merged: false,
    };
    request.nofile = Some(16);
    request.fds = vec![(socket.as_raw_fd(), 3)];
    for strategy in [Strategy::Clone3, Strategy::Std] {
        let seen = run(strategy, &request);
        assert_eq!(seen.nofile_soft, "16", "{strategy:?}");
        assert_eq!(
            seen.fds.keys().copied().collect::<Vec<_>>(),
            [0, 1, 2, 3],
            "{strategy:?}"
        );
    }
    drop(held);
}
