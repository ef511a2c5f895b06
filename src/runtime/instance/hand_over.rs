//! A launcher that exited 0: the daemon it left, if any (`pid_file`, or
//! systemd's GuessMainPID), and how eco learns that daemon's end.

use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Actor;
use crate::runtime::cgroup::Cgroup;
use crate::runtime::kill;
use crate::state::Exit;
use crate::untrusted::{self, Rules};

impl Actor {
    /// After the launcher exited 0: the daemon it left, if any. With
    /// `pid_file`, the live process of the instance the file names, waited
    /// for up to `ready_timeout`; a file that never names one, or that is
    /// not a plain file (a FIFO, a device, a link, a huge file), fails the
    /// start. Without, the oldest process it left (systemd's GuessMainPID).
    /// The file is read off the loop (see [`crate::untrusted`]).
    pub(super) async fn hand_over(
        &self,
        launcher: i32,
        mark: &str,
        cgroup: Option<&Cgroup>,
        born: Option<u64>,
    ) -> HandOver {
        let scope = self.scope(launcher, mark, cgroup);
        let Some(file) = &self.spec_pid_file else {
            let left = if cgroup.is_some() {
                kill::left_behind(scope).first().copied()
            } else {
                self.left_without_cgroup(scope, born).await
            };
            return left.map_or(HandOver::Nothing, HandOver::To);
        };
        let waited = self.settings.ready_timeout;
        let deadline = Instant::now() + waited;
        let mut seen = PidFileSeen::Nothing;
        loop {
            match untrusted::read_off_loop(file.clone(), Rules::PID_FILE, PID_FILE_READ_LIMIT).await
            {
                Ok(text) => match text.trim().parse::<i32>() {
                    Ok(named)
                        if named > 0
                            && crate::procfs::alive(named)
                            && (kill::left_behind(scope).contains(&named)
                                || (cgroup.is_none() && self.adopted(named))) =>
                    {
                        return HandOver::To(named);
                    }
                    Ok(named) => seen = PidFileSeen::Pid(named),
                    Err(_) => seen = PidFileSeen::Text(text),
                },
                Err(err) if err.is_missing() => {}
                Err(err) => return HandOver::Failed(pid_file_refused(file, &err)),
            }
            if Instant::now() >= deadline {
                return HandOver::Failed(pid_file_missed(file, &seen, waited));
            }
            tokio::time::sleep(PID_FILE_POLL).await;
        }
    }

    /// Without cgroups, what a launcher left is found by its process group
    /// and eco's mark in its environment. An orphan caught inside an exec
    /// shows no environment yet: the search first waits (briefly) until no
    /// orphan is. A daemon that left the group and hid the mark (a title
    /// written over its environment, or an exec that began since) is then
    /// the oldest orphan eco adopted, with this mark or none, that was
    /// born after the launcher: without that guess, the sweep of unowned
    /// orphans would kill the very daemon the app left.
    async fn left_without_cgroup(&self, scope: kill::Scope<'_>, born: Option<u64>) -> Option<i32> {
        let spawner = &*self.machine.spawner;
        let deadline = Instant::now() + EXEC_SETTLE_LIMIT;
        while Instant::now() < deadline
            && spawner
                .unowned(&|_, _| false)
                .iter()
                .any(|pid| spawner.in_exec(*pid))
        {
            tokio::time::sleep(EXEC_SETTLE_POLL).await;
        }
        if let Some(left) = kill::left_behind(scope).first() {
            return Some(*left);
        }
        let born = born?;
        let mut hidden: Vec<(u64, i32)> = spawner
            .unowned(&|_, mark| mark.is_some_and(|m| m != scope.mark))
            .into_iter()
            .filter_map(|pid| Some((spawner.start_time(pid)?, pid)))
            .filter(|(start, _)| *start >= born)
            .collect();
        hidden.sort_unstable();
        hidden.first().map(|(_, pid)| *pid)
    }

    /// True when `pid` is an orphan eco adopted and nothing else claims:
    /// without cgroups, the best sign that a pid file names this instance's
    /// daemon when the daemon hid its spawn mark.
    fn adopted(&self, pid: i32) -> bool {
        let own = i32::try_from(std::process::id()).unwrap_or(0);
        crate::procfs::parent(pid) == Some(own) && !self.machine.spawner.is_tracked(pid)
    }

    /// The exit of a daemon eco adopted (as subreaper, it is eco's child
    /// once its launcher exited); a process eco did not adopt is watched
    /// for its end instead.
    pub(super) fn exit_of(&self, pid: i32) -> oneshot::Receiver<Exit> {
        if crate::procfs::parent(pid) == Some(i32::try_from(std::process::id()).unwrap_or(0)) {
            return self.machine.spawner.adopt(pid);
        }
        let (tx, rx) = oneshot::channel();
        self.tasks.spawn(async move {
            while crate::procfs::alive(pid) {
                tokio::time::sleep(FOREIGN_POLL).await;
            }
            let _ = tx.send(Exit::Code(0));
        });
        rx
    }
}

/// How long a hand-over waits for orphans caught inside their exec.
const EXEC_SETTLE_LIMIT: Duration = Duration::from_millis(200);

/// How often it looks again meanwhile.
const EXEC_SETTLE_POLL: Duration = Duration::from_millis(2);

/// How often a pid file is read while waiting for it.
const PID_FILE_POLL: Duration = Duration::from_millis(20);

/// How long one read of a pid file may take (a hung network mount).
const PID_FILE_READ_LIMIT: Duration = Duration::from_secs(2);

/// What a launcher that exited 0 left.
pub(super) enum HandOver {
    /// The daemon to supervise from now on.
    To(i32),
    /// Nothing, and no `pid_file` was expected: the app simply exited.
    Nothing,
    /// The `pid_file` failed the start; why, for `last_error`.
    Failed(String),
}

/// What a pid file held the last time it was read.
enum PidFileSeen {
    /// Nothing: no file.
    Nothing,
    /// A pid, but not one of a live process of the app.
    Pid(i32),
    /// Something that is not a pid.
    Text(String),
}

/// `last_error` for a pid file eco will not read.
fn pid_file_refused(file: &std::path::Path, err: &untrusted::ReadError) -> String {
    format!(
        "pid file {} refused: {err}; the app must write its pid into a regular file there",
        file.display()
    )
}

/// `last_error` for a pid file that never named a live process of the app.
fn pid_file_missed(file: &std::path::Path, seen: &PidFileSeen, waited: Duration) -> String {
    let within = humantime::format_duration(waited);
    match seen {
        PidFileSeen::Nothing => format!(
            "pid file {} never written within {within} of the launcher's exit; check that `pid_file` names the file the app writes",
            file.display()
        ),
        PidFileSeen::Pid(pid) => format!(
            "pid file {} names no live process of the app (it names {pid}) within {within} of the launcher's exit",
            file.display()
        ),
        PidFileSeen::Text(text) => format!(
            "pid file {} never held a pid within {within} of the launcher's exit (it holds {:?})",
            file.display(),
            text.chars().take(40).collect::<String>()
        ),
    }
}

/// How often a supervised process that is not eco's child is checked.
const FOREIGN_POLL: Duration = Duration::from_millis(200);
