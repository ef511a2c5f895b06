//! The real spawner: processes started by clone3 or std, waited for by the
//! reaper, signalled with kill(2), and read from /proc.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal as NixSignal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use super::{Child, SpawnRequest, Spawner, std_command};
use crate::metrics::{Metrics, Sampler};
use crate::procfs;
use crate::runtime::cgroup::Cgroup;
use crate::runtime::clone_into;
use crate::runtime::reaper::Reaper;
use crate::runtime::spawn::SPAWN_MARK;
use crate::state::Exit;

/// How the real spawner starts a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// clone3 (std when the kernel lacks it, off x86_64, and for a cgroup
    /// that was killed): the daemon's choice.
    Auto,
    /// Always clone3 (with or without a cgroup); an error where unsupported.
    Clone3,
    /// Always std, entering the cgroup around the spawn.
    Std,
}

/// Kernels without `CLONE_INTO_CGROUP` (before 5.7) are found once.
static CLONE_INTO_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Real processes.
pub struct System {
    reaper: Arc<Reaper>,
    strategy: Strategy,
    /// CPU/memory of instance trees, sampled on demand.
    sampler: Mutex<Sampler>,
}

impl System {
    pub fn new(reaper: Arc<Reaper>) -> System {
        System::with(reaper, Strategy::Auto)
    }

    pub fn with(reaper: Arc<Reaper>, strategy: Strategy) -> System {
        // The daemon reserved them first thing; `up -F` and tests here.
        crate::runtime::fd_slots::reserve();
        System {
            reaper,
            strategy,
            sampler: Mutex::default(),
        }
    }

    fn clone3(&self, request: &SpawnRequest) -> io::Result<Child> {
        let mut pipes = None;
        let (pid, exit) = self.reaper.spawn_with(|| {
            let child = clone_into::spawn(request)?;
            pipes = Some((child.stdout, child.stderr));
            Ok(child.pid)
        })?;
        let (stdout, stderr) = pipes.unwrap_or_default();
        Ok(Child {
            pid,
            exit,
            stdout,
            stderr,
            born: None,
        })
    }

    /// Starts the process the way the strategy says.
    fn start(&self, request: &SpawnRequest) -> io::Result<Child> {
        match self.strategy {
            Strategy::Clone3 => self.clone3(request),
            Strategy::Std => std_command::spawn(&self.reaper, request),
            Strategy::Auto => {
                // A killed cgroup is entered: the kernel kills what is cloned
                // into it at birth (see `Cgroup::killed`). Without a cgroup
                // too, clone3 is the cheaper way: std's posix_spawn copies
                // eco's whole descriptor table (see `fd_slots`).
                let clone = !request.cgroup.as_ref().is_some_and(Cgroup::was_killed)
                    && !CLONE_INTO_UNSUPPORTED.load(Ordering::Relaxed);
                if clone {
                    match self.clone3(request) {
                        Err(err) if err.kind() == io::ErrorKind::Unsupported => {
                            tracing::info!(%err, "no CLONE_INTO_CGROUP: eco enters each cgroup to spawn");
                            CLONE_INTO_UNSUPPORTED.store(true, Ordering::Relaxed);
                        }
                        started => return started,
                    }
                }
                std_command::spawn(&self.reaper, request)
            }
        }
    }
}

impl Spawner for System {
    fn spawn(&self, request: &SpawnRequest) -> io::Result<Child> {
        let born = procfs::ticks_now();
        let mut child = self.start(request)?;
        child.born = born;
        Ok(child)
    }

    fn waits_for_exec(&self) -> bool {
        true
    }

    fn signal(&self, pid: i32, signal: i32) {
        if let Ok(sig) = NixSignal::try_from(signal) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }

    fn signal_group(&self, pgid: i32, signal: i32) {
        if let Ok(sig) = NixSignal::try_from(signal) {
            let _ = killpg(Pid::from_raw(pgid), sig);
        }
    }

    fn group_of(&self, pid: i32) -> Option<i32> {
        nix::unistd::getpgid(Some(Pid::from_raw(pid)))
            .ok()
            .map(Pid::as_raw)
    }

    fn group_alive(&self, pgid: i32) -> bool {
        !matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
    }

    fn alive(&self, pid: i32) -> bool {
        procfs::alive(pid)
    }

    fn descendants(&self, pid: i32) -> Vec<i32> {
        let mut found = procfs::descendants(pid);
        found.retain(|p| !self.reaper.is_tracked(*p));
        found
    }

    fn strays(&self, mark: &str) -> Vec<i32> {
        let needle = format!("{SPAWN_MARK}={mark}");
        procfs::own_children()
            .into_iter()
            .filter(|pid| !self.reaper.is_tracked(*pid))
            .filter(|pid| procfs::env_has(*pid, |var| var == needle.as_bytes()))
            .collect()
    }

    fn unowned(&self, owned: &dyn Fn(i32, Option<&str>) -> bool) -> Vec<i32> {
        procfs::own_children()
            .into_iter()
            .filter(|pid| !self.reaper.is_tracked(*pid) && procfs::alive(*pid))
            .filter(|pid| {
                let mark = procfs::env_value(*pid, SPAWN_MARK);
                !owned(*pid, mark.as_deref())
            })
            .collect()
    }

    fn in_exec(&self, pid: i32) -> bool {
        procfs::environ_empty(pid)
    }

    fn start_time(&self, pid: i32) -> Option<u64> {
        procfs::start_time(pid)
    }

    fn is_tracked(&self, pid: i32) -> bool {
        self.reaper.is_tracked(pid)
    }

    fn adopt(&self, pid: i32) -> oneshot::Receiver<Exit> {
        self.reaper.adopt(pid)
    }

    fn sample(&self, leaders: &[(i32, Duration)]) -> HashMap<i32, Metrics> {
        self.sampler
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sample(leaders)
    }

    fn reaper(&self) -> Option<Arc<Reaper>> {
        Some(Arc::clone(&self.reaper))
    }
}
