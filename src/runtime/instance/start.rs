//! The start of one run: its environment (spawn mark, notify socket,
//! listen broker, watchdog), its one spawn, then what reads its output and
//! checks its readiness.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::running::{Health, Phase, Pumps, Running, Starting, Watchdog};
use super::{Actor, RunEnd};
use crate::runtime::cgroup::Cgroup;
use crate::runtime::listen_broker::{BROKER_ENV, Borrower, Broker};
use crate::runtime::notify::NotifySocket;
use crate::runtime::notify::trust::Own;
use crate::runtime::output::LineMatcher;
use crate::runtime::ready::{self, Awaiting, Probes};
use crate::runtime::spawn::{How, SPAWN_MARK, Spawned, spawn};
use crate::runtime::{Event, Stream};
use crate::spec::Ready;
use crate::state::{Exit, Reason, Status};

static SPAWN_COUNTER: AtomicU64 = AtomicU64::new(0);

/// What a run needs from before its spawn.
struct Prepared {
    mark: String,
    notify: Option<NotifySocket>,
    broker: Option<Broker>,
    matcher: Option<LineMatcher>,
    log_line: Option<oneshot::Receiver<()>>,
}

impl Actor {
    /// Prepares the run's environment and sockets, and spawns the process.
    pub(super) async fn start(&mut self) -> Result<Running, RunEnd> {
        let mark = format!(
            "{}.{}.{}",
            self.mark_prefix,
            std::process::id(),
            SPAWN_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let mut extra = vec![(SPAWN_MARK, mark.clone())];
        let mut notify = self.notify_socket(&mut extra)?;
        if let Some(socket) = &mut notify {
            socket.offer(crate::runtime::feed::notify_key(&self.id, &mark));
        }
        let broker = self.broker(&mut extra);
        if let Some(every) = self.watchdog {
            extra.push(("WATCHDOG_USEC", every.as_micros().to_string()));
        }
        let (matcher, log_line) = ready::log_matcher(self.settings.ready.as_ref());
        self.set(|s| {
            s.status = Status::Starting;
            s.mark.clone_from(&mark);
            s.daemonized = false;
            s.status_text = None;
            s.reloading = false;
        });
        // One spawn at a time, the daemon's sockets served between two.
        let off_thread = crate::runtime::spawn::off_thread_turn(&*self.machine.spawner).await;
        let turn = self.turns.take().await;
        let cgroup = self.cgroup();
        let request = off_thread
            .is_some()
            .then(|| self.off_thread_request(&extra, cgroup.as_ref()))
            .flatten();
        let launched = match (request, off_thread) {
            (Some(request), Some(off_thread)) => {
                turn.pass().await;
                let spawner = Arc::clone(&self.machine.spawner);
                crate::runtime::spawn::spawn_off_thread(spawner, request, off_thread).await
            }
            _ => {
                let launched = self.launch(&extra, cgroup.as_ref());
                turn.pass().await;
                launched
            }
        };
        let spawned = match launched {
            Ok(spawned) => spawned,
            Err(err) => return Err(self.spawn_failed(&err)),
        };
        let prepared = Prepared {
            mark,
            notify,
            broker,
            matcher,
            log_line,
        };
        Ok(self.running(prepared, spawned, cgroup))
    }

    /// The one spawn of a run. The app gets its own copies of the cluster
    /// sockets and stored fds; eco keeps them for the next start.
    fn launch(
        &self,
        extra: &[(&str, String)],
        cgroup: Option<&Cgroup>,
    ) -> std::io::Result<Spawned> {
        spawn(self.how(cgroup), &self.spec, extra, Some(self.sockets()))
    }

    /// The spawn of a run as a request to run off the engine's thread,
    /// when it has no sockets to hand down and the spawner waits for exec.
    fn off_thread_request(
        &self,
        extra: &[(&str, String)],
        cgroup: Option<&Cgroup>,
    ) -> Option<crate::runtime::spawner::SpawnRequest> {
        crate::runtime::spawn::off_thread_request(
            self.how(cgroup),
            &self.spec,
            extra,
            &self.sockets(),
        )
    }

    fn sockets(&self) -> crate::runtime::spawn::Sockets<'_> {
        crate::runtime::spawn::Sockets {
            listeners: &self.listeners,
            addrs: &self.listen,
            slot: self.id.index,
            stored: self.fd_store.fds(),
        }
    }

    fn how<'a>(&'a self, cgroup: Option<&'a Cgroup>) -> How<'a> {
        How {
            spawner: &*self.machine.spawner,
            cgroup,
            output: crate::runtime::output_of(&*self.observer, &self.settings),
            nofile: self.machine.app_nofile,
        }
    }

    /// A run's watchdog and health timers, armed from now: for a spawned
    /// run and for one adopted after `eco update` alike.
    pub(super) fn fresh_timers(&self) -> (Watchdog, Option<Health>) {
        let mut watchdog = Watchdog {
            every: self.watchdog,
            at: None,
        };
        watchdog.rearm();
        let health = self.settings.health.clone().map(|spec| Health {
            at: Some(Instant::now() + spec.interval),
            spec,
            probe: None,
            failures: 0,
        });
        (watchdog, health)
    }

    /// A spawn that failed, reported where users look.
    fn spawn_failed(&self, err: &std::io::Error) -> RunEnd {
        let error = if self.spec.cwd.is_dir() {
            format!("cannot start `{}`: {err}", self.spec.argv[0])
        } else {
            format!(
                "cannot start `{}`: its folder {} does not exist",
                self.spec.argv[0],
                self.spec.cwd.display()
            )
        };
        self.event(&Event::SpawnFailed { error });
        could_not_start()
    }

    /// The notify socket, for `ready: notify`, the watchdog, the fd store
    /// and reloads.
    fn notify_socket(
        &self,
        extra: &mut Vec<(&'static str, String)>,
    ) -> Result<Option<NotifySocket>, RunEnd> {
        let wanted = matches!(self.settings.ready, Some(Ready::Notify))
            || self.watchdog.is_some()
            || self.settings.fd_store > 0
            || self.settings.reload_signal.is_some();
        if !wanted {
            return Ok(None);
        }
        match NotifySocket::bind() {
            Ok(socket) => {
                extra.push(("NOTIFY_SOCKET", socket.env_value.clone()));
                Ok(Some(socket))
            }
            Err(err) => {
                self.event(&Event::SpawnFailed {
                    error: format!("cannot create the notify socket: {err}"),
                });
                Err(could_not_start())
            }
        }
    }

    /// A Node cluster app asks for its ports at `listen()` time.
    fn broker(&self, extra: &mut Vec<(&'static str, String)>) -> Option<Broker> {
        if !self.spec.env.contains_key(BROKER_ENV) {
            return None;
        }
        match Broker::bind() {
            Ok(bound) => {
                extra.push((BROKER_ENV, bound.env_value.clone()));
                Some(bound)
            }
            Err(err) => {
                tracing::warn!(%err, "cannot create the listen broker's socket");
                None
            }
        }
    }

    /// The run of a process just spawned: its output read, its readiness
    /// check started, its timers armed.
    fn running(&mut self, prepared: Prepared, spawned: Spawned, cgroup: Option<Cgroup>) -> Running {
        let Prepared {
            mark,
            notify,
            mut broker,
            matcher,
            log_line,
        } = prepared;
        let pid = spawned.pid;
        let born = spawned.born;
        if let Some(broker) = broker.as_mut() {
            broker.serve(
                &self.tasks,
                Borrower {
                    listeners: Arc::clone(&self.listeners),
                    owner: format!("{}/{}", self.id.project, self.id.app),
                    slot: self.id.index,
                    pid,
                },
            );
        }
        let started = Instant::now();
        self.set(|s| {
            s.pid = Some(pid);
            s.started = Some(self.machine.clock.now());
            s.last_error = None;
        });
        self.event(&Event::Started { pid });
        let pid_written = self.write_pid(pid);
        let pumps = self.pumps(spawned.stdout, spawned.stderr, matcher, &mark);
        let forking = self.spec_pid_file.is_some();
        let phase = self.readiness(log_line, forking);
        let (watchdog, health) = self.fresh_timers();
        Running {
            pid,
            mark,
            cgroup,
            exit: spawned.exit,
            pumps,
            notify,
            _broker: broker,
            _lease: spawned.lease,
            started,
            born,
            forking,
            handed_over: false,
            notify_ready: matches!(self.settings.ready, Some(Ready::Notify)),
            phase,
            watchdog,
            health,
            errno: None,
            pid_written,
            own: Own::get(),
        }
    }

    /// Starts the readiness check; without one, the instance is online at
    /// once (a forking server once it has handed over).
    fn readiness(&self, log_line: Option<oneshot::Receiver<()>>, forking: bool) -> Phase {
        let awaiting = ready::start(ready::Setup {
            ready: self.settings.ready.as_ref(),
            limit: self.settings.ready_timeout,
            probes: Probes {
                log_line,
                cgroup: self.probe_cgroup.clone(),
            },
            spawner: &self.machine.spawner,
            spec: &self.spec,
            tasks: &self.tasks,
        });
        match awaiting {
            Awaiting::Nothing => {
                if !forking {
                    self.set(|s| s.status = Status::Online);
                }
                Phase::Online
            }
            Awaiting::Notify { deadline } => Phase::Starting(Starting::Notify {
                deadline,
                reload: None,
            }),
            Awaiting::Check(check) => Phase::Starting(Starting::Check(check)),
        }
    }

    /// The output readers of a run.
    fn pumps(
        &self,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
        matcher: Option<LineMatcher>,
        mark: &str,
    ) -> Pumps {
        let hurry = CancellationToken::new();
        let handles = [(stdout, Stream::Out), (stderr, Stream::Err)]
            .into_iter()
            .filter_map(|(pipe, stream)| {
                Some(self.spawn_pump(
                    (pipe?, Vec::new()),
                    stream,
                    mark,
                    matcher.clone(),
                    hurry.clone(),
                ))
            })
            .collect();
        Pumps { handles, hurry }
    }
}

/// How a run that never started ends: as a crash, so the policy retries.
fn could_not_start() -> RunEnd {
    RunEnd::Exited {
        exit: Exit::Code(127),
        ran_for: Duration::ZERO,
        reason: Reason::Crash,
        failed_start: false,
    }
}
