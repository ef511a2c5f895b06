//! An instance that starts from a process already running, handed over by
//! the previous daemon (`eco update`, see `runtime::adopt`): no spawn, the
//! same pid, its output pipes read on from the line boundary where the
//! previous daemon stopped. The run it builds is then driven by the same
//! state machine as a spawned one (`running`); after that process ends,
//! the instance goes on as any other (restart by the policy, a spawn each
//! time). Also here: the state machine's quiesce event, which parks the
//! run's notify socket and stored descriptors for the next daemon.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::running::{Phase, Pumps, Running};
use super::{Actor, InstanceHandle, Launch, RunEnd, launch_with};
use crate::runtime::adopt::Adoptee;
use crate::runtime::notify::trust::Own;
use crate::runtime::{Event, Stream};
use crate::spec::Ready;
use crate::state::{Exit, Reason, Status};

/// Starts the task of an instance whose process already runs.
pub fn adopt(launch: Launch, adoptee: Adoptee) -> InstanceHandle {
    launch_with(launch, Some(Box::new(adoptee)))
}

impl Actor {
    /// The run of a handed-over process: online (the previous daemon
    /// waited for starts in progress before handing over), its output read
    /// on, its watchdog and health timers armed afresh (an interval that
    /// passed during the handover is not held against the app).
    pub(super) fn adopted_run(&mut self, adoptee: Adoptee) -> Running {
        let Adoptee {
            pid,
            started,
            status,
            restarts,
            last_reason,
            last_exit,
            history,
            mark,
            stdout,
            stderr,
            notify,
            fd_store,
            gone: _,
        } = adoptee;
        for (name, fd) in fd_store {
            let _ = self.fd_store.store(&name, vec![fd], usize::MAX);
        }
        let mut notify = notify;
        if let Some(socket) = &mut notify {
            socket.offer(crate::runtime::feed::notify_key(&self.id, &mark));
        }
        let ran = started
            .and_then(|s| SystemTime::now().duration_since(s).ok())
            .unwrap_or(Duration::ZERO);
        let since = Instant::now().checked_sub(ran).unwrap_or_else(Instant::now);
        self.set(|s| {
            s.status = if status == Status::Stopping {
                Status::Stopping
            } else {
                Status::Online
            };
            s.pid = Some(pid);
            s.started = started;
            s.restarts = restarts;
            s.last_reason = last_reason;
            s.last_exit = last_exit;
            s.history = history.into_iter().collect();
            s.mark.clone_from(&mark);
        });
        self.event(&Event::Started { pid });
        let hurry = CancellationToken::new();
        let handles = [(stdout, Stream::Out), (stderr, Stream::Err)]
            .into_iter()
            .filter_map(|(pipe, stream)| {
                Some(self.spawn_pump(pipe?, stream, &mark, None, hurry.clone()))
            })
            .collect();
        // The per-instance cluster sockets it started with, counted already.
        let lease = (!self.listen.is_empty())
            .then(|| self.listeners.lease_held(&self.listen, self.id.index));
        let (watchdog, health) = self.fresh_timers();
        Running {
            pid,
            exit: self.adopted_exit(pid),
            pid_written: self.write_pid(pid),
            mark,
            cgroup: None,
            pumps: Pumps { handles, hurry },
            notify,
            // A Node cluster app's broker is not carried over.
            _broker: None,
            _lease: lease,
            started: since,
            born: None,
            forking: false,
            // It is the main process: its exit is not a launcher's.
            handed_over: true,
            notify_ready: matches!(self.settings.ready, Some(Ready::Notify)),
            phase: Phase::Online,
            watchdog,
            health,
            errno: None,
            own: Own::get(),
        }
    }

    /// A handed-over process that ended while no daemon watched it: its
    /// record carries on (restarts, history), its run ends at once with
    /// its exit status unknown, a failure for the restart policy.
    pub(super) fn ended_unseen(&mut self, adoptee: Adoptee) -> RunEnd {
        let ran_for = adoptee
            .started
            .and_then(|s| SystemTime::now().duration_since(s).ok())
            .unwrap_or(Duration::ZERO);
        self.set(|s| {
            s.pid = None;
            s.started = adoptee.started;
            s.restarts = adoptee.restarts;
            s.last_reason = adoptee.last_reason;
            s.last_exit = Some(Exit::Unknown);
            s.history = adoptee.history.into_iter().collect();
            s.mark.clone_from(&adoptee.mark);
        });
        RunEnd::Exited {
            exit: Exit::Unknown,
            ran_for,
            reason: Reason::Crash,
            failed_start: false,
        }
    }

    /// How the end of a handed-over process is learnt: as its parent
    /// after `eco update`; by a pidfd after a crash (re-parented, it is no
    /// child of this daemon, and its exit status is lost).
    fn adopted_exit(&self, pid: i32) -> tokio::sync::oneshot::Receiver<crate::state::Exit> {
        let own = i32::try_from(std::process::id()).unwrap_or(0);
        if crate::procfs::parent(pid) == Some(own) {
            return self.exit_of(pid);
        }
        crate::runtime::stranger::exit_of(&self.tasks, pid)
    }

    /// `eco update` began: this run's notify socket and stored descriptors
    /// go to the next daemon (the app keeps sending to the same address).
    pub(super) fn on_quiesce(&mut self, run: &mut Running) {
        crate::runtime::adopt::park_notify(
            &self.id,
            run.notify.take(),
            std::mem::take(&mut self.fd_store),
        );
    }
}
