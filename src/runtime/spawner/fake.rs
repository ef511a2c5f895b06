//! A spawner without processes, for the engine's in-process tests. Each
//! "process" follows a [`Script`] chosen by its key (the last word of its
//! argv: an app's program, or an exec probe's command): it exits now, after
//! a while (on tokio's clock, so a paused test runs it instantly), on its
//! stop signal (the default), or only on SIGKILL; it may print lines, on
//! real pipes (pipes are not processes). Its pids start at 1 << 23, above
//! the kernel's `pid_max` ceiling (1 << 22): a real kill(2) or /proc read
//! on one is a harmless ESRCH or ENOENT.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Child, SpawnRequest, Spawner};
use crate::metrics::Metrics;
use crate::runtime::reaper::Reaper;
use crate::state::Exit;

/// The first fake pid: above any pid the kernel can hand out.
pub const FIRST_PID: i32 = 1 << 23;

/// How a fake process ends by itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ends {
    /// Runs until signalled.
    Never,
    /// Exits with this code after this long (zero: at once).
    After(Duration, i32),
}

/// What one fake process does.
#[derive(Clone, Debug)]
pub struct Script {
    pub ends: Ends,
    /// Stays on every signal but SIGKILL.
    pub ignores_stop: bool,
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    /// The spawn fails (a missing program) with this errno.
    pub fails: Option<i32>,
}

impl Script {
    /// Runs until its stop signal.
    pub fn runs() -> Script {
        Script {
            ends: Ends::Never,
            ignores_stop: false,
            stdout: Vec::new(),
            stderr: Vec::new(),
            fails: None,
        }
    }

    /// Exits with `code` at once.
    pub fn exits(code: i32) -> Script {
        Script::runs().exits_after(Duration::ZERO, code)
    }

    /// Exits with `code` after `after`.
    #[must_use]
    pub fn exits_after(mut self, after: Duration, code: i32) -> Script {
        self.ends = Ends::After(after, code);
        self
    }

    /// Survives its stop signal (only SIGKILL ends it).
    #[must_use]
    pub fn ignores_stop(mut self) -> Script {
        self.ignores_stop = true;
        self
    }

    #[must_use]
    pub fn prints(mut self, line: &str) -> Script {
        self.stdout.push(line.to_owned());
        self
    }

    #[must_use]
    pub fn prints_err(mut self, line: &str) -> Script {
        self.stderr.push(line.to_owned());
        self
    }

    /// Cannot start: the spawn returns `errno`.
    pub fn fails(errno: i32) -> Script {
        Script {
            fails: Some(errno),
            ..Script::runs()
        }
    }
}

/// One fake process, while it runs.
struct Proc {
    key: String,
    script: Script,
    exit: Option<oneshot::Sender<Exit>>,
    /// The write ends of its output pipes: closed when it exits.
    _pipes: Vec<OwnedFd>,
}

/// A start, as the tests see it.
#[derive(Clone, Debug)]
pub struct Spawn {
    pub pid: i32,
    pub key: String,
    pub request: SpawnRequest,
    /// When, on tokio's clock.
    pub at: tokio::time::Instant,
}

#[derive(Default)]
struct Inner {
    next_pid: i32,
    defaults: HashMap<String, Script>,
    queued: HashMap<String, VecDeque<Script>>,
    running: BTreeMap<i32, Proc>,
    spawns: Vec<Spawn>,
    /// Every signal that reached a fake process: (pid, signal).
    signals: Vec<(i32, i32)>,
    /// Memory of each key's processes, as the sampler would read it.
    memory: HashMap<String, u64>,
    /// The most processes of each key that ran at once.
    peak: HashMap<String, usize>,
}

/// The fake spawner; cloned handles share one world.
#[derive(Clone, Default)]
pub struct Fake {
    inner: Arc<Mutex<Inner>>,
}

/// The key of a request: the last word of its argv.
fn key_of(request: &SpawnRequest) -> String {
    request.argv.last().cloned().unwrap_or_default()
}

/// Signals a process handles without dying (reloads, user signals).
fn handled(signal: i32) -> bool {
    matches!(
        signal,
        0 | libc::SIGHUP | libc::SIGUSR1 | libc::SIGUSR2 | libc::SIGCHLD | libc::SIGWINCH
    )
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What every process with `key` does (until changed), when no queued
    /// script is left for it. Without one: [`Script::runs`].
    pub fn script(&self, key: &str, script: Script) {
        self.lock().defaults.insert(key.to_owned(), script);
    }

    /// What the next process with `key` does (queued, first in first out).
    pub fn then(&self, key: &str, script: Script) {
        self.lock()
            .queued
            .entry(key.to_owned())
            .or_default()
            .push_back(script);
    }

    /// Sets the memory each running process with `key` reports.
    pub fn set_memory(&self, key: &str, bytes: u64) {
        self.lock().memory.insert(key.to_owned(), bytes);
    }

    /// Every start so far, in order.
    pub fn spawns(&self) -> Vec<Spawn> {
        self.lock().spawns.clone()
    }

    /// How many processes with `key` were started.
    pub fn started(&self, key: &str) -> usize {
        self.lock().spawns.iter().filter(|s| s.key == key).count()
    }

    /// The pids of the processes with `key` that run now.
    pub fn running(&self, key: &str) -> Vec<i32> {
        let inner = self.lock();
        inner
            .running
            .iter()
            .filter(|(_, p)| p.key == key)
            .map(|(pid, _)| *pid)
            .collect()
    }

    /// The most processes with `key` that ever ran at once.
    pub fn peak(&self, key: &str) -> usize {
        self.lock().peak.get(key).copied().unwrap_or(0)
    }

    /// Every pid that runs now.
    pub fn all_running(&self) -> Vec<i32> {
        self.lock().running.keys().copied().collect()
    }

    /// Signals delivered to `pid` so far.
    pub fn signals_to(&self, pid: i32) -> Vec<i32> {
        let inner = self.lock();
        inner
            .signals
            .iter()
            .filter(|(p, _)| *p == pid)
            .map(|(_, s)| *s)
            .collect()
    }

    /// Ends `pid` with `exit` now (a crash from outside).
    pub fn end(&self, pid: i32, exit: Exit) {
        let gone = self.lock().running.remove(&pid);
        if let Some(mut proc) = gone
            && let Some(tx) = proc.exit.take()
        {
            let _ = tx.send(exit);
        }
    }

    fn deliver(&self, pid: i32, signal: i32) {
        let dies = {
            let mut inner = self.lock();
            let Some(proc) = inner.running.get(&pid) else {
                return;
            };
            let dies = signal == libc::SIGKILL || (!proc.script.ignores_stop && !handled(signal));
            inner.signals.push((pid, signal));
            dies
        };
        if dies {
            self.end(pid, Exit::Signal(signal));
        }
    }

    /// Output pipes as the request wants them; lines written at once.
    fn pipes(
        request: &SpawnRequest,
        script: &Script,
    ) -> io::Result<(Option<OwnedFd>, Option<OwnedFd>, Vec<OwnedFd>)> {
        let mut keep = Vec::new();
        let mut open = |wanted: bool, lines: &[String]| -> io::Result<Option<OwnedFd>> {
            if !wanted {
                return Ok(None);
            }
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            for line in lines {
                nix::unistd::write(&write, format!("{line}\n").as_bytes())?;
            }
            keep.push(write);
            Ok(Some(read))
        };
        if request.output.one_pipe() {
            let both: Vec<String> = script
                .stdout
                .iter()
                .chain(&script.stderr)
                .cloned()
                .collect();
            return Ok((open(true, &both)?, None, keep));
        }
        let stdout = open(request.output.stdout, &script.stdout)?;
        let stderr = open(request.output.stderr, &script.stderr)?;
        Ok((stdout, stderr, keep))
    }
}

impl Spawner for Fake {
    fn spawn(&self, request: &SpawnRequest) -> io::Result<Child> {
        request.check()?;
        let key = key_of(request);
        let (pid, script) = {
            let mut inner = self.lock();
            let script = match inner.queued.get_mut(&key).and_then(VecDeque::pop_front) {
                Some(script) => script,
                None => inner
                    .defaults
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(Script::runs),
            };
            if let Some(errno) = script.fails {
                return Err(io::Error::from_raw_os_error(errno));
            }
            inner.next_pid = inner.next_pid.max(FIRST_PID) + 1;
            (inner.next_pid, script)
        };
        let (stdout, stderr, pipes) = Fake::pipes(request, &script)?;
        let key_for_peak = key.clone();
        let (tx, exit) = oneshot::channel();
        {
            let mut inner = self.lock();
            inner.spawns.push(Spawn {
                pid,
                key: key.clone(),
                request: request.clone(),
                at: tokio::time::Instant::now(),
            });
            inner.running.insert(
                pid,
                Proc {
                    key,
                    script: script.clone(),
                    exit: Some(tx),
                    _pipes: pipes,
                },
            );
            let now = inner
                .running
                .values()
                .filter(|p| p.key == key_for_peak)
                .count();
            let peak = inner.peak.entry(key_for_peak).or_default();
            *peak = (*peak).max(now);
        }
        if let Ends::After(after, code) = script.ends {
            if after.is_zero() {
                self.end(pid, Exit::Code(code));
            } else {
                let fake = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    fake.end(pid, Exit::Code(code));
                });
            }
        }
        Ok(Child {
            pid,
            exit,
            stdout,
            stderr,
            born: None,
        })
    }

    fn signal(&self, pid: i32, signal: i32) {
        self.deliver(pid, signal);
    }

    fn signal_group(&self, pgid: i32, signal: i32) {
        // Every fake process leads its own group, alone in it.
        self.deliver(pgid, signal);
    }

    fn group_of(&self, pid: i32) -> Option<i32> {
        self.alive(pid).then_some(pid)
    }

    fn group_alive(&self, pgid: i32) -> bool {
        self.alive(pgid)
    }

    fn alive(&self, pid: i32) -> bool {
        self.lock().running.contains_key(&pid)
    }

    fn descendants(&self, _pid: i32) -> Vec<i32> {
        Vec::new()
    }

    fn strays(&self, _mark: &str) -> Vec<i32> {
        Vec::new()
    }

    fn unowned(&self, _owned: &dyn Fn(i32, Option<&str>) -> bool) -> Vec<i32> {
        Vec::new()
    }

    fn in_exec(&self, _pid: i32) -> bool {
        false
    }

    fn start_time(&self, _pid: i32) -> Option<u64> {
        None
    }

    fn is_tracked(&self, pid: i32) -> bool {
        self.alive(pid)
    }

    fn adopt(&self, _pid: i32) -> oneshot::Receiver<Exit> {
        // Nothing is ever adopted: the exit resolves at once, as for a
        // process already gone.
        oneshot::channel().1
    }

    fn sample(&self, leaders: &[(i32, Duration)]) -> HashMap<i32, Metrics> {
        let inner = self.lock();
        leaders
            .iter()
            .filter_map(|(pid, _)| {
                let proc = inner.running.get(pid)?;
                let memory_bytes = inner.memory.get(&proc.key).copied().unwrap_or(0);
                Some((
                    *pid,
                    Metrics {
                        cpu_percent: 0.0,
                        memory_bytes,
                    },
                ))
            })
            .collect()
    }

    fn reaper(&self) -> Option<Arc<Reaper>> {
        None
    }
}

/// A wall clock that moves with tokio's (paused) clock, from a fixed date.
pub struct FakeClock {
    base: std::time::SystemTime,
    start: tokio::time::Instant,
}

impl FakeClock {
    /// Starts at `base` now (call inside the test's runtime).
    pub fn at(base: std::time::SystemTime) -> FakeClock {
        FakeClock {
            base,
            start: tokio::time::Instant::now(),
        }
    }
}

impl super::Clock for FakeClock {
    fn now(&self) -> std::time::SystemTime {
        self.base + self.start.elapsed()
    }
}
