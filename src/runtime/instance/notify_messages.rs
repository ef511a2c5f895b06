//! What a run does with the datagrams on its notify socket (sd_notify):
//! a sender outside the instance is refused, then each message is applied
//! to the run, and descriptors are stored (`FDSTORE=1`) or closed.

use std::os::fd::OwnedFd;
use std::time::Duration;

use tokio::time::Instant;

use super::Actor;
use super::running::{Phase, Running, Starting};
use crate::runtime::cgroup::Cgroup;
use crate::runtime::notify::trust::{self, Own, Procs, Refusal};
use crate::runtime::notify::{Datagram, Message};
use crate::runtime::spawn::SPAWN_MARK;
use crate::state::Status;

/// What a datagram asks of the descriptors it carries.
#[derive(Default)]
struct FdRequest {
    name: Option<String>,
    store: bool,
    remove: bool,
}

impl Actor {
    /// A datagram from the app (or from anyone who found the socket).
    pub(super) fn on_notify(&mut self, run: &mut Running, datagram: Datagram) {
        let members = members(run);
        if let Some(refusal) = trust::refuse_sender(&datagram, run.own, &members) {
            // Its descriptors are closed here, at once.
            drop(datagram);
            self.refuse(refusal);
            return;
        }
        let mut request = FdRequest::default();
        for message in datagram.messages {
            match message {
                Message::FdStore => request.store = true,
                Message::FdStoreRemove => request.remove = true,
                Message::FdName(name) => request.name = Some(name),
                message => self.on_message(run, message),
            }
        }
        self.store_fds(&request, datagram.fds);
    }

    /// One message, other than the fd store's.
    fn on_message(&mut self, run: &mut Running, message: Message) {
        match message {
            Message::Ready => self.on_ready(run),
            Message::Reloading => self.set(|s| s.reloading = true),
            Message::Stopping => self.set(|s| s.status = Status::Stopping),
            Message::Status(text) => self.set(|s| s.status_text = Some(text)),
            Message::Watchdog => run.watchdog.rearm(),
            Message::WatchdogTrigger => run.watchdog.at = Some(Instant::now()),
            Message::WatchdogUsec(usec) => {
                run.watchdog.every = (usec > 0).then(|| Duration::from_micros(usec));
                run.watchdog.rearm();
            }
            Message::MainPid(main) => self.move_main(run, main),
            Message::ExtendTimeoutUsec(usec) => {
                run.extend(Instant::now() + Duration::from_micros(usec));
            }
            Message::Errno(errno) => run.errno = Some(errno),
            // The fds of a barrier are closed with the datagram's, at once;
            // the fd store's messages are read by `on_notify`.
            Message::Barrier | Message::FdStore | Message::FdStoreRemove | Message::FdName(_) => {}
        }
    }

    /// `READY=1`: ends `ready: notify`'s wait, and a reload.
    fn on_ready(&mut self, run: &mut Running) {
        let reload = run.take_reload();
        if matches!(run.phase, Phase::Starting(Starting::Notify { .. })) {
            run.phase = Phase::Online;
            self.became_ready(run);
        }
        self.set(|s| s.reloading = false);
        if let Some(reload) = reload {
            reload.answer(Ok(()));
        }
    }

    /// `MAINPID=`: supervise another process of the instance from now on.
    fn move_main(&mut self, run: &mut Running, main: i32) {
        if main == run.pid {
            return;
        }
        if let Some(why) = trust::refuse_main_pid(main, run.own, &members(run)) {
            self.refuse(Refusal::MainPid { pid: main, why });
            return;
        }
        run.pid = main;
        run.exit = self.exit_of(main);
        self.set(|s| s.pid = Some(main));
    }

    /// Keeps the descriptors of `FDSTORE=1` (up to `fd_store`), drops those
    /// of `FDSTOREREMOVE=1`'s name; any others are closed.
    fn store_fds(&mut self, request: &FdRequest, fds: Vec<OwnedFd>) {
        let name = request.name.as_deref().unwrap_or("stored");
        if request.remove {
            self.fd_store.remove(name);
        }
        if request.store && !fds.is_empty() {
            let cap = usize::try_from(self.settings.fd_store).unwrap_or(usize::MAX);
            if let Err((closed, why)) = self.fd_store.store(name, fds, cap) {
                self.refuse(Refusal::FdStoreFull { closed, why });
            }
        } else {
            // A barrier's pipe, or descriptors sent without FDSTORE=1.
            drop(fds);
        }
    }
}

/// The run's processes, for the trust checks.
fn members(run: &Running) -> Members<'_> {
    Members {
        main: run.pid,
        mark: &run.mark,
        cgroup: run.cgroup.as_ref(),
        own: run.own,
    }
}

/// One run's processes, as the notify checks see them.
struct Members<'a> {
    main: i32,
    mark: &'a str,
    cgroup: Option<&'a Cgroup>,
    own: Own,
}

impl Procs for Members<'_> {
    fn alive(&self, pid: i32) -> bool {
        crate::procfs::alive(pid)
    }

    /// In the cgroup; without one, the supervised process, its process
    /// group (unless that is eco's), a process below it, or one carrying
    /// the run's spawn mark.
    fn inside(&self, pid: i32) -> bool {
        if let Some(cgroup) = self.cgroup {
            return cgroup.procs().contains(&pid);
        }
        let group = self.group(self.main);
        pid == self.main
            || (group.is_some() && group != Some(self.own.group) && self.group(pid) == group)
            || crate::procfs::descendants(self.main).contains(&pid)
            || crate::procfs::env_value(pid, SPAWN_MARK).as_deref() == Some(self.mark)
    }

    fn group(&self, pid: i32) -> Option<i32> {
        nix::unistd::getpgid(Some(nix::unistd::Pid::from_raw(pid)))
            .ok()
            .map(nix::unistd::Pid::as_raw)
    }
}
