//! The one spawn contract. A [`SpawnRequest`] says everything a started
//! process gets (argv, the whole environment, cwd, stdio, its own process
//! group, its cgroup, its descriptor limit, and descriptors at given
//! numbers); a [`Spawner`] starts it and answers for the processes it
//! started (signals, liveness, what they left behind, their memory).
//!
//! Three ways honour the same request:
//! - `clone3` (`clone_into`): born inside its cgroup, the fast path;
//! - `std` (`std_command`): `std::process::Command`, entering the cgroup
//!   around the spawn where there is one;
//! - `fake::Fake` (tests only): no process at all, scripted exits and
//!   output, so the engine runs in-process on a paused clock.
//!
//! [`System`] is the real spawner: by default clone3, with or without a
//! cgroup (std on kernels without `CLONE_INTO_CGROUP`, off x86_64, and into
//! a killed cgroup); [`Strategy`] pins one. The daemon and `up -F` pass it to
//! `Engine::new`.
//!
//! Why clone3 stays: glibc's `posix_spawnattr_setcgroup_np` (the same
//! `CLONE_INTO_CGROUP`, without assembly) arrived in glibc 2.39; this
//! machine and CI run Debian 12's glibc 2.36, which lacks it, and the `libc`
//! crate cannot call a symbol the running glibc does not have without a
//! `dlsym` dance that still leaves 2.36 hosts on the slow path (entering the
//! cgroup, about 10 ms per spawn after a quiet spell). The hand-made clone
//! works on every x86_64 kernel since 5.7, whatever the libc.

#[cfg(test)]
pub mod fake;
pub mod std_command;
mod system;

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::oneshot;

use super::cgroup::Cgroup;
use super::reaper::Reaper;
use crate::metrics::Metrics;
use crate::state::Exit;

pub use system::{Strategy, System};

/// Where the child's stdout and stderr go: `true`, a new pipe whose read
/// end eco gets; `false`, /dev/null. stdin is always /dev/null.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Output {
    pub stdout: bool,
    pub stderr: bool,
    /// Both streams go to one place (the same log file): with both piped,
    /// fd 1 and 2 are one pipe, whose read end eco gets as `stdout`. One
    /// descriptor in eco instead of two, and the lines keep their order.
    pub merged: bool,
}

impl Output {
    pub const NULL: Output = Output {
        stdout: false,
        stderr: false,
        merged: false,
    };

    /// True when fd 1 and 2 share one pipe.
    pub fn one_pipe(self) -> bool {
        self.merged && self.stdout && self.stderr
    }

    /// The read ends eco gets: (stdout, stderr).
    pub fn read_ends(self) -> (bool, bool) {
        (self.stdout, self.stderr && !self.one_pipe())
    }
}

/// Everything a started process gets; every spawner honours every field.
#[derive(Debug, Clone)]
pub struct SpawnRequest {
    /// The program (looked up in the child's PATH unless it has a `/`) and
    /// its arguments.
    pub argv: Vec<String>,
    /// The whole environment: nothing of eco's own is added.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: PathBuf,
    pub output: Output,
    /// Leads a process group of its own (signals to the group reach
    /// everything it starts; a Ctrl-C in eco's terminal never does).
    pub new_group: bool,
    /// Born inside this cgroup.
    pub cgroup: Option<Cgroup>,
    /// The soft `RLIMIT_NOFILE` it starts with (capped at the hard one);
    /// None keeps eco's.
    pub nofile: Option<u64>,
    /// Descriptors of eco handed down at the given numbers (>= 3), as
    /// (eco's descriptor, the child's number). Everything else eco holds
    /// is closed on exec.
    pub fds: Vec<(RawFd, RawFd)>,
}

/// Variables eco's own supervisor gave eco (systemd's NOTIFY_SOCKET,
/// watchdog, socket activation): eco's, never its apps'.
pub const SUPERVISOR_VARS: [&str; 7] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    crate::paths::APP_NOFILE_ENV,
];

impl SpawnRequest {
    /// A request for `argv` in `cwd` with eco's environment minus what
    /// its own supervisor told it, stdio to /dev/null, in a new group.
    pub fn new(argv: Vec<String>, cwd: PathBuf) -> SpawnRequest {
        let env = std::env::vars_os()
            .filter(|(k, _)| !SUPERVISOR_VARS.iter().any(|v| k == v))
            .collect();
        SpawnRequest {
            argv,
            env,
            cwd,
            output: Output::NULL,
            new_group: true,
            cgroup: None,
            nofile: None,
            fds: Vec::new(),
        }
    }

    /// Sets (or replaces) variables.
    pub fn set_env<K: Into<OsString>, V: Into<OsString>>(
        &mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) {
        for (key, value) in vars {
            let key = key.into();
            let value = value.into();
            match self.env.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => self.env.push((key, value)),
            }
        }
    }

    /// The value of a variable the child will see.
    pub fn env_var(&self, key: &str) -> Option<&OsString> {
        self.env.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Refuses what no spawner can honour, before anything starts.
    pub fn check(&self) -> io::Result<()> {
        if self.argv.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "nothing to start: the command is empty",
            ));
        }
        if let Some((_, to)) = self.fds.iter().find(|(_, to)| *to < 3) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("descriptor {to} is stdio's; handed-down descriptors start at 3"),
            ));
        }
        Ok(())
    }
}

/// A started process.
pub struct Child {
    pub pid: i32,
    pub exit: oneshot::Receiver<Exit>,
    /// Non-blocking-ready read ends of its output pipes (None: /dev/null).
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// A time (clock ticks since boot) taken before it started: whatever
    /// it starts has a start time at least this. None from a fake.
    pub born: Option<u64>,
}

/// Starts processes, and answers for them: every signal and every
/// process-table read of the engine goes through here, so a fake sees them.
pub trait Spawner: Send + Sync {
    fn spawn(&self, request: &SpawnRequest) -> io::Result<Child>;

    /// True when `spawn` waits for the child's exec (a vfork, as the real
    /// spawner's): the engine then runs it on a thread of its own, several
    /// at once, and goes on meanwhile.
    fn waits_for_exec(&self) -> bool {
        false
    }

    /// `signal` to one process.
    fn signal(&self, pid: i32, signal: i32);

    /// `signal` to a process group.
    fn signal_group(&self, pgid: i32, signal: i32);

    /// The process group of `pid`, if it still runs.
    fn group_of(&self, pid: i32) -> Option<i32>;

    /// True while any process of group `pgid` runs.
    fn group_alive(&self, pgid: i32) -> bool;

    /// True while `pid` runs (not a zombie).
    fn alive(&self, pid: i32) -> bool;

    /// Processes below `pid` that this spawner did not start itself.
    fn descendants(&self, pid: i32) -> Vec<i32>;

    /// Orphans eco adopted (not started by it) whose spawn mark is `mark`.
    fn strays(&self, mark: &str) -> Vec<i32>;

    /// Orphans eco adopted that no instance owns (`owned` says whether a
    /// pid or a mark belongs to a live instance).
    fn unowned(&self, owned: &dyn Fn(i32, Option<&str>) -> bool) -> Vec<i32>;

    /// True while `pid` is inside an exec: its new image has no
    /// environment yet, so its spawn mark cannot be read.
    fn in_exec(&self, pid: i32) -> bool;

    /// When `pid` started (clock ticks since boot), for ordering.
    fn start_time(&self, pid: i32) -> Option<u64>;

    /// True when `pid` was started here and has not exited yet.
    fn is_tracked(&self, pid: i32) -> bool;

    /// The exit of `pid`, an orphan eco adopted as subreaper.
    fn adopt(&self, pid: i32) -> oneshot::Receiver<Exit>;

    /// CPU and memory of each leader's tree (leader pid, how long it ran).
    fn sample(&self, leaders: &[(i32, Duration)]) -> HashMap<i32, Metrics>;

    /// The one place that waits for children, for what else the process
    /// starts (node evaluating a config); None for a fake.
    fn reaper(&self) -> Option<Arc<Reaper>>;
}

/// The wall clock the engine reads (`started`, history, cron), faked in tests.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
}

/// The real wall clock.
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// What the engine is given besides its observer: how it starts processes,
/// what time it is, and the descriptor limit its apps get.
#[derive(Clone)]
pub struct Machine {
    pub spawner: Arc<dyn Spawner>,
    pub clock: Arc<dyn Clock>,
    /// The soft `RLIMIT_NOFILE` apps start with (the one of the command
    /// that started the daemon); None keeps eco's.
    pub app_nofile: Option<u64>,
}

impl Machine {
    /// The real processes and clock.
    pub fn system(reaper: Arc<Reaper>, app_nofile: Option<u64>) -> Machine {
        Machine {
            spawner: Arc::new(System::new(reaper)),
            clock: Arc::new(WallClock),
            app_nofile,
        }
    }
}
