//! Who may speak for an instance, decided when its datagram is read: a
//! live process of the instance (its cgroup, or without one its process
//! group, tree or spawn mark) running as eco's user or root. Everyone else
//! is refused, and so is a sender already gone: nothing is left to check,
//! and a pid once freed may name someone else. Short-lived senders stay
//! alive until eco has read them (`BARRIER=1`, as `systemd-notify` and
//! `eco notify` do). The decisions are pure: what a pid is, is asked
//! through the closures.
//!
//! Refusals are counted per instance and logged at most once per
//! [`LOG_EVERY`], with the count and the last reason, never the content.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

use super::Datagram;

/// At most one log line per instance this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a datagram, or one message in it, was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Over the datagram size, or more descriptors than eco reads at once.
    Truncated,
    /// No SCM_CREDENTIALS (cannot happen with SO_PASSCRED; refused anyway).
    Anonymous,
    /// A user other than eco's and root.
    ForeignUser { pid: i32, uid: u32 },
    /// The sender exited before eco read it.
    Gone { pid: i32 },
    /// A live process outside the instance.
    Outside { pid: i32 },
    /// `MAINPID=` that names no process eco may supervise.
    MainPid { pid: i32, why: &'static str },
    /// `FDSTORE=1` descriptors beyond `fd_store` or eco's descriptor budget.
    FdStoreFull { closed: usize, why: &'static str },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Truncated => write!(
                f,
                "a datagram over {} bytes or with over {} descriptors",
                super::MAX_DATAGRAM,
                super::MAX_FDS
            ),
            Refusal::Anonymous => write!(f, "a datagram without its sender's credentials"),
            Refusal::ForeignUser { pid, uid } => write!(
                f,
                "sender pid {pid} runs as {}, not as the instance's user",
                crate::home::user_name(*uid)
            ),
            Refusal::Gone { pid } => {
                write!(
                    f,
                    "sender pid {pid} exited before eco read it (send BARRIER=1 and wait, as `eco notify` does)"
                )
            }
            Refusal::Outside { pid } => {
                write!(f, "sender pid {pid} is not a process of the instance")
            }
            Refusal::MainPid { pid, why } => write!(f, "MAINPID={pid} refused: {why}"),
            Refusal::FdStoreFull { closed, why } => {
                write!(f, "FDSTORE=1: closed {closed} descriptors: {why}")
            }
        }
    }
}

/// What the checks need to know about pids.
pub trait Procs {
    /// Runs and is no zombie.
    fn alive(&self, pid: i32) -> bool;
    /// A process of the instance (its cgroup, or its group, tree or mark).
    fn inside(&self, pid: i32) -> bool;
    /// The process group of `pid`.
    fn group(&self, pid: i32) -> Option<i32>;
}

/// eco itself: never a main pid.
#[derive(Clone, Copy, Debug)]
pub struct Own {
    pub pid: i32,
    pub group: i32,
    pub session: i32,
    pub uid: u32,
}

impl Own {
    pub fn get() -> Own {
        Own {
            pid: nix::unistd::getpid().as_raw(),
            group: nix::unistd::getpgrp().as_raw(),
            session: nix::unistd::getsid(None).map_or(0, nix::unistd::Pid::as_raw),
            uid: nix::unistd::geteuid().as_raw(),
        }
    }
}

/// Why the datagram's sender may not speak for the instance, if so. The
/// cheap checks first: a flood from outside costs no /proc read it can skip.
pub fn refuse_sender(datagram: &Datagram, own: Own, procs: &impl Procs) -> Option<Refusal> {
    if datagram.truncated {
        return Some(Refusal::Truncated);
    }
    let Some(sender) = datagram.sender else {
        return Some(Refusal::Anonymous);
    };
    if sender.uid != own.uid && sender.uid != 0 {
        return Some(Refusal::ForeignUser {
            pid: sender.pid,
            uid: sender.uid,
        });
    }
    if !procs.alive(sender.pid) {
        return Some(Refusal::Gone { pid: sender.pid });
    }
    if !procs.inside(sender.pid) {
        return Some(Refusal::Outside { pid: sender.pid });
    }
    None
}

/// Why `pid` (a `MAINPID=`) may not become the supervised process, if so:
/// it must be a live process of the instance, and never eco, its group or
/// its session (signalling those would stop eco).
pub fn refuse_main_pid(pid: i32, own: Own, procs: &impl Procs) -> Option<&'static str> {
    if pid <= 0 {
        return Some("not a process id (0 or negative names a process group)");
    }
    if pid == own.pid {
        return Some("that is eco itself");
    }
    if pid == own.group || pid == own.session {
        return Some("that names eco's process group or session");
    }
    if !procs.alive(pid) {
        return Some("no such live process");
    }
    if procs.group(pid) == Some(own.group) {
        return Some("it is in eco's process group");
    }
    if !procs.inside(pid) {
        return Some("not a process of this instance");
    }
    None
}

/// One instance's refusals: the count, and when to log.
#[derive(Debug, Default)]
pub struct Refusals {
    pub total: u64,
    /// Since the last log line.
    unlogged: u64,
    logged_at: Option<Instant>,
    last: Option<Refusal>,
}

/// A log line's worth: `count` refusals since the last line, the last one's reason.
#[derive(Debug, PartialEq, Eq)]
pub struct Report {
    pub count: u64,
    pub total: u64,
    pub last: Refusal,
}

impl Refusals {
    /// Counts one; a report when a line is due (the first, then one per
    /// [`LOG_EVERY`]).
    pub fn record(&mut self, now: Instant, refusal: Refusal) -> Option<Report> {
        self.total += 1;
        self.unlogged += 1;
        self.last = Some(refusal);
        let due = self
            .logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= LOG_EVERY);
        if !due {
            return None;
        }
        self.logged_at = Some(now);
        self.flush()
    }

    /// What was not logged yet (at the end of a run).
    pub fn flush(&mut self) -> Option<Report> {
        if self.unlogged == 0 {
            return None;
        }
        let count = std::mem::take(&mut self.unlogged);
        Some(Report {
            count,
            total: self.total,
            last: self.last.clone()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::Sender;
    use super::*;

    struct Fake {
        alive: Vec<i32>,
        inside: Vec<i32>,
        group: i32,
    }

    impl Procs for Fake {
        fn alive(&self, pid: i32) -> bool {
            self.alive.contains(&pid)
        }
        fn inside(&self, pid: i32) -> bool {
            self.inside.contains(&pid)
        }
        fn group(&self, _pid: i32) -> Option<i32> {
            Some(self.group)
        }
    }

    const OWN: Own = Own {
        pid: 100,
        group: 90,
        session: 80,
        uid: 1000,
    };

    fn from(pid: i32, uid: u32) -> Datagram {
        Datagram {
            sender: Some(Sender { pid, uid }),
            messages: Vec::new(),
            fds: Vec::new(),
            truncated: false,
        }
    }

    #[test]
    fn only_live_processes_of_the_instance_as_its_user_or_root_speak_for_it() {
        let procs = Fake {
            alive: vec![5, 6],
            inside: vec![5, 7],
            group: 5,
        };
        assert_eq!(refuse_sender(&from(5, 1000), OWN, &procs), None);
        assert_eq!(refuse_sender(&from(5, 0), OWN, &procs), None);
        assert_eq!(
            refuse_sender(&from(5, 65534), OWN, &procs),
            Some(Refusal::ForeignUser { pid: 5, uid: 65534 })
        );
        assert_eq!(
            refuse_sender(&from(6, 1000), OWN, &procs),
            Some(Refusal::Outside { pid: 6 })
        );
        // Gone: even one that was inside.
        assert_eq!(
            refuse_sender(&from(7, 1000), OWN, &procs),
            Some(Refusal::Gone { pid: 7 })
        );
        let mut truncated = from(5, 1000);
        truncated.truncated = true;
        assert_eq!(
            refuse_sender(&truncated, OWN, &procs),
            Some(Refusal::Truncated)
        );
        let mut anonymous = from(5, 1000);
        anonymous.sender = None;
        assert_eq!(
            refuse_sender(&anonymous, OWN, &procs),
            Some(Refusal::Anonymous)
        );
    }

    #[test]
    fn main_pid_is_a_live_process_of_the_instance_and_never_eco() {
        let procs = Fake {
            alive: vec![5, 6, 100, 90, 80],
            inside: vec![5, 100, 90, 80],
            group: 5,
        };
        assert_eq!(refuse_main_pid(5, OWN, &procs), None);
        for pid in [0, -1, -90, 100, 90, 80, 6, 4_000_000] {
            assert!(refuse_main_pid(pid, OWN, &procs).is_some(), "{pid}");
        }
        let in_eco_group = Fake {
            alive: vec![5],
            inside: vec![5],
            group: 90,
        };
        assert_eq!(
            refuse_main_pid(5, OWN, &in_eco_group),
            Some("it is in eco's process group")
        );
    }

    #[test]
    fn a_flood_logs_one_line_per_interval_with_the_count() {
        let mut refusals = Refusals::default();
        let start = Instant::now();
        let gone = Refusal::Gone { pid: 1 };
        let first = refusals
            .record(start, gone.clone())
            .expect("the first is logged");
        assert_eq!(first.count, 1);
        let lines = (1..20_000u64)
            .filter_map(|i| {
                let at = start + Duration::from_millis(i);
                refusals.record(at, Refusal::Outside { pid: 2 })
            })
            .collect::<Vec<_>>();
        // 20 s of refusals: one line at 10 s with everything since the first.
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0].count, 10_000);
        assert_eq!(lines[0].last, Refusal::Outside { pid: 2 });
        let rest = refusals.flush().expect("the rest");
        assert_eq!(rest.count, 9_999);
        assert_eq!(rest.total, 20_000);
        assert_eq!(refusals.flush(), None);
    }
}
