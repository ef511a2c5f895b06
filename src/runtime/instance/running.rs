//! One run of an instance's process, as a state machine (`start` sets it
//! up). [`Running`] holds what the run owns (the process and its exit, the
//! output readers, the notify socket, the listen broker) and [`Phase`] where
//! it stands (starting, online, reloading). [`Actor::run_once`] waits for
//! the next [`Wakeup`] and hands it to one method per event; a method that
//! stops the process (a stop, a restart, a failed check, a missed watchdog)
//! ends the run, so stopping is the last thing a run does rather than a
//! phase it waits in.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;

use super::hand_over::HandOver;
use super::{Actor, Control, RunEnd, log_refusals};
use crate::runtime::cgroup::Cgroup;
use crate::runtime::listen::Lease;
use crate::runtime::listen_broker::Broker;
use crate::runtime::notify::trust::Own;
use crate::runtime::notify::{Datagram, NotifySocket};
use crate::runtime::ready;
use crate::runtime::{Event, RestartRequest, kill, pid_write};
use crate::spec::{Ready, Signal};
use crate::state::{Exit, Reason, Status};

/// What one run owns, and where it stands.
pub(super) struct Running {
    /// The supervised process: the spawned one, until a launcher that
    /// daemonized hands over to its daemon (or `MAINPID=` moves it).
    pub(super) pid: i32,
    /// The run's spawn mark (finds its escaped children).
    pub(super) mark: String,
    pub(super) cgroup: Option<Cgroup>,
    /// Resolves when `pid` has exited.
    pub(super) exit: oneshot::Receiver<Exit>,
    pub(super) pumps: Pumps,
    pub(super) notify: Option<NotifySocket>,
    /// Serves a Node cluster app's `listen()` calls while the run lasts.
    pub(super) _broker: Option<Broker>,
    /// The instance's cluster sockets, held until this run has ended and
    /// its processes are gone.
    pub(super) _lease: Option<Lease>,
    pub(super) started: Instant,
    /// Before the spawned process started, in the kernel's clock ticks: a
    /// daemon it left that hid from eco was born after this.
    pub(super) born: Option<u64>,
    /// A server that writes a pid file is online once it has handed over.
    pub(super) forking: bool,
    pub(super) handed_over: bool,
    /// `ready: notify` (as the run started): a reload is answered on the
    /// `READY=1` that ends it.
    pub(super) notify_ready: bool,
    pub(super) phase: Phase,
    pub(super) watchdog: Watchdog,
    pub(super) health: Option<Health>,
    /// The error the app reported (`ERRNO=`), for `last_error` at its exit.
    pub(super) errno: Option<i32>,
    /// The `write_pid_file` written, removed when the run ends.
    pub(super) pid_written: Option<(std::path::PathBuf, i32)>,
    pub(super) own: Own,
}

/// Where a run stands.
pub(super) enum Phase {
    /// Waiting for the readiness check.
    Starting(Starting),
    /// Ready, or without a check (a forking server's status still shows
    /// `starting` until it has handed over).
    Online,
    /// A `ready: notify` app was sent its reload signal.
    Reloading(Reload),
}

/// How a starting run waits for readiness.
pub(super) enum Starting {
    /// A probe or log check, running in its own task.
    Check(ready::Check),
    /// `ready: notify`, decided here from the datagrams by `deadline`; a
    /// reload asked meanwhile is answered by the same `READY=1`.
    Notify {
        deadline: Instant,
        reload: Option<Reload>,
    },
}

/// A reload waiting for its `READY=1`.
pub(super) struct Reload {
    reply: oneshot::Sender<Result<(), String>>,
    deadline: Instant,
}

/// `WatchdogSec=`: a `WATCHDOG=1` is due every `every`, the next by `at`.
pub(super) struct Watchdog {
    pub(super) every: Option<Duration>,
    pub(super) at: Option<Instant>,
}

impl Watchdog {
    /// The next `WATCHDOG=1` is due a period from now.
    pub(super) fn rearm(&mut self) {
        self.at = self.every.map(|every| Instant::now() + every);
    }
}

/// The liveness probe of a run (`health`).
pub(super) struct Health {
    pub(super) spec: crate::spec::Health,
    /// When the next probe runs; None while one runs.
    pub(super) at: Option<Instant>,
    pub(super) probe: Option<JoinHandle<bool>>,
    /// Failed probes in a row.
    pub(super) failures: u32,
}

/// A deadline of a run.
#[derive(Clone, Copy, Debug)]
enum Timer {
    /// `ready: notify` without `READY=1` in time.
    NotReady,
    /// A reload without `READY=1` in time.
    Reload,
    /// No `WATCHDOG=1` in time.
    Watchdog,
    /// The next health probe is due.
    Health,
}

/// What woke a run.
enum Wakeup {
    Exited(Exit),
    Checked(Result<(), String>),
    Datagram(Datagram),
    Timer(Timer),
    Probed(bool),
    Control(Option<Control>),
    /// `eco update` began: the notify socket and fd store are parked.
    Quiesced,
}

impl Running {
    /// The earliest deadline that is armed.
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        let not_ready = match &self.phase {
            Phase::Starting(Starting::Notify { deadline, .. }) => {
                Some((*deadline, Timer::NotReady))
            }
            _ => None,
        };
        let reload = self.reload().map(|reload| (reload.deadline, Timer::Reload));
        let watchdog = self.watchdog.at.map(|at| (at, Timer::Watchdog));
        let health = self
            .health
            .as_ref()
            .filter(|health| health.probe.is_none())
            .and_then(|health| health.at)
            .map(|at| (at, Timer::Health));
        [not_ready, reload, watchdog, health]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
    }

    fn reload(&self) -> Option<&Reload> {
        match &self.phase {
            Phase::Starting(Starting::Notify { reload, .. }) => reload.as_ref(),
            Phase::Reloading(reload) => Some(reload),
            _ => None,
        }
    }

    /// Takes the reload waiting for `READY=1`, if any (reloading ends).
    pub(super) fn take_reload(&mut self) -> Option<Reload> {
        match &mut self.phase {
            Phase::Starting(Starting::Notify { reload, .. }) => reload.take(),
            Phase::Reloading(_) => match std::mem::replace(&mut self.phase, Phase::Online) {
                Phase::Reloading(reload) => Some(reload),
                _ => None,
            },
            _ => None,
        }
    }

    /// `EXTEND_TIMEOUT_USEC=`: the readiness and reload deadlines move to
    /// `until` at least.
    pub(super) fn extend(&mut self, until: Instant) {
        let reload = match &mut self.phase {
            Phase::Starting(Starting::Notify { deadline, reload }) => {
                *deadline = (*deadline).max(until);
                reload.as_mut()
            }
            Phase::Reloading(reload) => Some(reload),
            _ => None,
        };
        if let Some(reload) = reload {
            reload.deadline = reload.deadline.max(until);
        }
    }
}

impl Reload {
    pub(super) fn answer(self, result: Result<(), String>) {
        let _ = self.reply.send(result);
    }
}

impl Actor {
    /// Starts the process once (see `start`) and supervises it until it
    /// exits or is stopped.
    pub(super) async fn run_once(&mut self) -> RunEnd {
        let mut run = match self.adopted.take() {
            Some(adoptee) if adoptee.gone => return self.ended_unseen(*adoptee),
            Some(adoptee) => self.adopted_run(*adoptee),
            None => match self.start().await {
                Ok(run) => run,
                Err(end) => return end,
            },
        };
        let end = loop {
            let wakeup = self.next_wakeup(&mut run).await;
            if let ControlFlow::Break(end) = self.on_wakeup(&mut run, wakeup).await {
                break end;
            }
        };
        self.finish(run);
        end
    }

    /// Waits for whatever happens next to the run.
    async fn next_wakeup(&mut self, run: &mut Running) -> Wakeup {
        let timer = run.next_timer();
        let (at, which) = timer.unwrap_or((Instant::now(), Timer::Health));
        let quiesce = crate::runtime::adopt::quiesce_token();
        let parkable = run.notify.is_some() || !self.fd_store.fds().is_empty();
        loop {
            tokio::select! {
                exit = &mut run.exit => {
                    return Wakeup::Exited(exit.unwrap_or(Exit::Signal(libc::SIGKILL)));
                }
                verdict = check_verdict(&mut run.phase) => return Wakeup::Checked(verdict),
                datagram = recv_notify(run.notify.as_ref()) => {
                    if let Ok(datagram) = datagram {
                        return Wakeup::Datagram(datagram);
                    }
                }
                () = tokio::time::sleep_until(at), if timer.is_some() => return Wakeup::Timer(which),
                healthy = join_probe(run.health.as_mut()) => return Wakeup::Probed(healthy),
                control = self.control.recv() => return Wakeup::Control(control),
                () = quiesce.cancelled(), if parkable => return Wakeup::Quiesced,
            }
        }
    }

    async fn on_wakeup(&mut self, run: &mut Running, wakeup: Wakeup) -> ControlFlow<RunEnd> {
        match wakeup {
            Wakeup::Exited(exit) => self.on_exit(run, exit).await,
            Wakeup::Checked(verdict) => self.on_check(run, verdict).await,
            Wakeup::Datagram(datagram) => {
                self.on_notify(run, datagram);
                ControlFlow::Continue(())
            }
            Wakeup::Timer(timer) => self.on_timer(run, timer).await,
            Wakeup::Probed(healthy) => {
                self.on_health(run, healthy);
                ControlFlow::Continue(())
            }
            Wakeup::Control(control) => self.on_control(run, control).await,
            Wakeup::Quiesced => {
                self.on_quiesce(run);
                ControlFlow::Continue(())
            }
        }
    }

    /// The supervised process exited: a launcher that exited 0 may have
    /// left a daemon to supervise instead; otherwise the run ends.
    async fn on_exit(&mut self, run: &mut Running, exit: Exit) -> ControlFlow<RunEnd> {
        let mut failed_start = false;
        if exit.success() && !run.handed_over {
            match self
                .hand_over(run.pid, &run.mark, run.cgroup.as_ref(), run.born)
                .await
            {
                HandOver::To(main) => {
                    self.supervise_daemon(run, main);
                    return ControlFlow::Continue(());
                }
                HandOver::Nothing => {}
                HandOver::Failed(error) => {
                    // Reported as a start that failed: what the launcher
                    // left goes below, before any restart.
                    self.event(&Event::SpawnFailed { error });
                    failed_start = true;
                }
            }
        }
        kill::clean_up_after(self.scope(run.pid, &run.mark, run.cgroup.as_ref())).await;
        run.pumps.drain().await;
        self.exited_with(exit, run.errno);
        ControlFlow::Break(RunEnd::Exited {
            exit,
            ran_for: if failed_start {
                Duration::ZERO
            } else {
                run.started.elapsed()
            },
            reason: if failed_start {
                Reason::NotReady
            } else {
                Reason::Crash
            },
            failed_start,
        })
    }

    /// A server that daemonized itself: supervise the daemon.
    fn supervise_daemon(&mut self, run: &mut Running, main: i32) {
        run.handed_over = true;
        run.pid = main;
        run.exit = self.exit_of(main);
        let guessed = !run.forking;
        let starting = matches!(run.phase, Phase::Starting(_));
        self.set(|s| {
            s.pid = Some(main);
            s.daemonized = guessed;
            if !starting {
                s.status = Status::Online;
            }
        });
        self.event(&Event::HandedOver { pid: main, guessed });
    }

    /// The readiness check (not `ready: notify`) decided.
    async fn on_check(
        &mut self,
        run: &mut Running,
        verdict: Result<(), String>,
    ) -> ControlFlow<RunEnd> {
        match verdict {
            Ok(()) => {
                run.phase = Phase::Online;
                self.became_ready(run);
                ControlFlow::Continue(())
            }
            Err(reason) => ControlFlow::Break(self.not_ready(run, reason).await),
        }
    }

    /// Online, unless a forking server has not handed over yet.
    pub(super) fn became_ready(&self, run: &Running) {
        if !run.forking || run.handed_over {
            self.set(|s| s.status = Status::Online);
        }
        self.event(&Event::Ready);
    }

    async fn on_timer(&mut self, run: &mut Running, timer: Timer) -> ControlFlow<RunEnd> {
        match timer {
            Timer::NotReady => {
                let reason = ready::not_ready(self.settings.ready_timeout, &Ready::Notify);
                ControlFlow::Break(self.not_ready(run, reason).await)
            }
            Timer::Reload => {
                if let Some(reload) = run.take_reload() {
                    reload.answer(Err(format!(
                        "no READY=1 within {} of the reload signal",
                        humantime::format_duration(self.settings.ready_timeout)
                    )));
                }
                ControlFlow::Continue(())
            }
            Timer::Watchdog => {
                self.event(&Event::WatchdogTimeout);
                // As systemd: SIGABRT (a core dump shows where it hung).
                self.stop_with(run, Signal(libc::SIGABRT)).await;
                ControlFlow::Break(RunEnd::Restart(Reason::Watchdog))
            }
            Timer::Health => {
                self.probe_health(run);
                ControlFlow::Continue(())
            }
        }
    }

    /// Runs the health probe when online; otherwise tries again an
    /// interval later.
    fn probe_health(&self, run: &mut Running) {
        let Some(health) = run.health.as_mut() else {
            return;
        };
        health.at = None;
        if self.state.borrow().status == Status::Online {
            health.probe = Some(self.tasks.spawn(ready::probe_once(
                health.spec.probe.clone(),
                health.spec.timeout,
                Arc::clone(&self.machine.spawner),
                self.spec.clone(),
                self.probe_cgroup.clone(),
            )));
        } else {
            health.at = Some(Instant::now() + health.spec.interval);
        }
    }

    /// A health probe ended; `failures` in a row ask the engine for a
    /// graceful restart (rolling where the app is replaced rolling).
    fn on_health(&self, run: &mut Running, healthy: bool) {
        let Some(health) = run.health.as_mut() else {
            return;
        };
        health.probe = None;
        health.at = Some(Instant::now() + health.spec.interval);
        if healthy {
            health.failures = 0;
            return;
        }
        health.failures += 1;
        self.event(&Event::Unhealthy {
            failures: health.failures,
        });
        if health.failures >= health.spec.failures {
            health.failures = 0;
            let _ = self.restarts.send(RestartRequest {
                project: self.id.project.clone(),
                app: self.id.app.clone(),
                instance: self.id.index,
                reason: Reason::Health,
            });
        }
    }

    async fn on_control(
        &mut self,
        run: &mut Running,
        control: Option<Control>,
    ) -> ControlFlow<RunEnd> {
        match control {
            None | Some(Control::Stop) => {
                let exit = self.stop(run).await;
                self.event(&Event::Stopped { exit });
                ControlFlow::Break(RunEnd::Stopped)
            }
            Some(Control::Restart(reason)) => {
                let exit = self.stop(run).await;
                self.event(&Event::Stopped { exit });
                ControlFlow::Break(RunEnd::Restart(reason))
            }
            Some(Control::Update(settings)) => {
                self.settings = *settings;
                ControlFlow::Continue(())
            }
            Some(Control::Reload(reply)) => {
                self.reload(run, reply);
                ControlFlow::Continue(())
            }
        }
    }

    /// Sends `reload_signal`; a `ready: notify` app is answered on the
    /// `READY=1` that ends the reload, any other at once.
    fn reload(&self, run: &mut Running, reply: oneshot::Sender<Result<(), String>>) {
        let signal = self.settings.reload_signal.unwrap_or(Signal(libc::SIGHUP));
        self.machine.spawner.signal(run.pid, signal.0);
        if !run.notify_ready {
            let _ = reply.send(Ok(()));
            return;
        }
        let reload = Reload {
            reply,
            deadline: Instant::now() + self.settings.ready_timeout,
        };
        match &mut run.phase {
            Phase::Starting(Starting::Notify {
                reload: waiting, ..
            }) => *waiting = Some(reload),
            _ => run.phase = Phase::Reloading(reload),
        }
    }

    /// Readiness failed: the process is stopped, and restarts (by the
    /// policy) with reason `not-ready`.
    async fn not_ready(&mut self, run: &mut Running, reason: String) -> RunEnd {
        self.set(|s| s.last_error = Some(reason.clone()));
        self.event(&Event::NotReady { reason });
        let exit = self.stop(run).await;
        RunEnd::Exited {
            exit,
            ran_for: Duration::ZERO,
            reason: Reason::NotReady,
            failed_start: false,
        }
    }

    /// Stops the process with `stop_signal`.
    async fn stop(&self, run: &mut Running) -> Exit {
        let signal = self.settings.stop_signal;
        self.stop_with(run, signal).await
    }

    /// Stops the process with `signal` (SIGKILL after `stop_timeout`) and
    /// lets its output drain.
    async fn stop_with(&self, run: &mut Running, signal: Signal) -> Exit {
        self.set(|s| s.status = Status::Stopping);
        let scope = self.scope(run.pid, &run.mark, run.cgroup.as_ref());
        let exit = kill::stop(scope, &mut run.exit, signal, self.settings.stop_timeout).await;
        self.set(|s| {
            s.last_exit = Some(exit);
            s.pid = None;
        });
        run.pumps.drain().await;
        exit
    }

    /// Ends a run: its probe stops (a readiness check stops with its
    /// phase), refusals not yet logged are, the pid file goes.
    fn finish(&mut self, run: Running) {
        if let Some(probe) = run.health.as_ref().and_then(|h| h.probe.as_ref()) {
            probe.abort();
        }
        if let Some(report) = self.refusals.flush() {
            log_refusals(&self.id, &report);
        }
        if let Some((file, written)) = &run.pid_written {
            pid_write::remove(file, *written);
        }
    }
}

/// The verdict of the running readiness check; never when none runs.
async fn check_verdict(phase: &mut Phase) -> Result<(), String> {
    match phase {
        Phase::Starting(Starting::Check(check)) => check.verdict().await,
        _ => std::future::pending().await,
    }
}

/// The next datagram on the notify socket; never when there is none.
async fn recv_notify(socket: Option<&NotifySocket>) -> std::io::Result<Datagram> {
    match socket {
        Some(socket) => socket.recv().await,
        None => std::future::pending().await,
    }
}

/// The result of the running health probe; never when none runs.
async fn join_probe(health: Option<&mut Health>) -> bool {
    match health.and_then(|health| health.probe.as_mut()) {
        Some(handle) => handle.await.unwrap_or(false),
        None => std::future::pending().await,
    }
}

/// How long an exit waits for the last output of its process: the pipes
/// close once the group is gone, unless an escaped process still holds them.
const DRAIN_LIMIT: Duration = Duration::from_secs(1);

/// The output readers of one run.
pub(super) struct Pumps {
    pub(super) handles: Vec<JoinHandle<()>>,
    /// Cancelled once the process has exited: read without pausing.
    pub(super) hurry: CancellationToken,
}

impl Pumps {
    /// Lets the output readers finish, so an exit is reported after the
    /// last line.
    async fn drain(&mut self) {
        self.hurry.cancel();
        let handles = std::mem::take(&mut self.handles);
        let _ = timeout(DRAIN_LIMIT, async {
            for pump in handles {
                let _ = pump.await;
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn run_in(phase: Phase) -> Running {
        let (_, exit) = oneshot::channel();
        Running {
            pid: 1,
            mark: String::new(),
            cgroup: None,
            exit,
            pumps: Pumps {
                handles: Vec::new(),
                hurry: CancellationToken::new(),
            },
            notify: None,
            _broker: None,
            _lease: None,
            started: Instant::now(),
            born: None,
            forking: false,
            handed_over: false,
            notify_ready: true,
            phase,
            watchdog: Watchdog {
                every: None,
                at: None,
            },
            health: None,
            errno: None,
            pid_written: None,
            own: Own::get(),
        }
    }

    fn reload(deadline: Instant) -> (Reload, oneshot::Receiver<Result<(), String>>) {
        let (reply, answer) = oneshot::channel();
        (Reload { reply, deadline }, answer)
    }

    fn notify_start(deadline: Instant, reload: Option<Reload>) -> Phase {
        Phase::Starting(Starting::Notify { deadline, reload })
    }

    #[test]
    fn the_earliest_armed_deadline_is_the_next_timer() {
        let now = Instant::now();
        let mut run = run_in(notify_start(now + 5 * SECOND, None));
        run.watchdog.every = Some(3 * SECOND);
        run.watchdog.at = Some(now + 3 * SECOND);
        assert!(matches!(run.next_timer(), Some((at, Timer::Watchdog)) if at == now + 3 * SECOND));
        run.watchdog.at = None;
        assert!(matches!(run.next_timer(), Some((at, Timer::NotReady)) if at == now + 5 * SECOND));
        run.phase = Phase::Online;
        assert!(run.next_timer().is_none());
        let (waiting, _answer) = reload(now + 7 * SECOND);
        run.phase = Phase::Reloading(waiting);
        assert!(matches!(run.next_timer(), Some((_, Timer::Reload))));
    }

    #[tokio::test]
    async fn a_running_health_probe_disarms_the_health_timer() {
        let now = Instant::now();
        let mut run = run_in(Phase::Online);
        run.health = Some(Health {
            spec: crate::spec::Health {
                probe: crate::spec::Probe::Tcp("127.0.0.1:1".into()),
                interval: SECOND,
                timeout: SECOND,
                failures: 3,
            },
            at: Some(now + SECOND),
            probe: None,
            failures: 0,
        });
        assert!(matches!(run.next_timer(), Some((_, Timer::Health))));
        if let Some(health) = run.health.as_mut() {
            health.probe = Some(tokio::spawn(std::future::pending()));
        }
        assert!(run.next_timer().is_none());
    }

    #[test]
    fn extend_timeout_only_ever_moves_deadlines_later() {
        let now = Instant::now();
        let (waiting, _answer) = reload(now + 5 * SECOND);
        let mut run = run_in(notify_start(now + 5 * SECOND, Some(waiting)));
        run.extend(now + 2 * SECOND);
        let Phase::Starting(Starting::Notify { deadline, reload }) = &run.phase else {
            panic!("still starting");
        };
        assert_eq!(*deadline, now + 5 * SECOND);
        assert_eq!(reload.as_ref().map(|r| r.deadline), Some(now + 5 * SECOND));
        run.extend(now + 9 * SECOND);
        let Phase::Starting(Starting::Notify { deadline, reload }) = &run.phase else {
            panic!("still starting");
        };
        assert_eq!(*deadline, now + 9 * SECOND);
        assert_eq!(reload.as_ref().map(|r| r.deadline), Some(now + 9 * SECOND));
    }

    #[test]
    fn the_reload_taken_ends_reloading_and_can_be_answered() {
        let (waiting, mut answer) = reload(Instant::now() + SECOND);
        let mut run = run_in(Phase::Reloading(waiting));
        let taken = run.take_reload();
        assert!(matches!(run.phase, Phase::Online));
        taken.expect("a reload was waiting").answer(Ok(()));
        assert_eq!(answer.try_recv(), Ok(Ok(())));
        assert!(run.take_reload().is_none());
    }

    #[test]
    fn a_reload_while_starting_leaves_the_readiness_wait_in_place() {
        let now = Instant::now();
        let (waiting, _answer) = reload(now + SECOND);
        let mut run = run_in(notify_start(now + 5 * SECOND, Some(waiting)));
        assert!(run.take_reload().is_some());
        assert!(matches!(
            run.phase,
            Phase::Starting(Starting::Notify { reload: None, .. })
        ));
    }
}
