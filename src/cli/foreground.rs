//! `eco up -F`: the reconciler in this process, every app's output on this
//! terminal. The same loop as the daemon's: saves of the file and its env
//! files are applied (an invalid save changes nothing), watched sources
//! restart their app, memory limits and schedules act; Ctrl-C or SIGTERM
//! stops every app gracefully (a second one kills them), SIGHUP re-reads.
//! As a container's PID 1 it is init: the reaper's `waitpid(-1)` reaps
//! every orphan, and `--exit-on-error` ends it (exit 1, the others stopped
//! gracefully) once an app is errored, so the orchestrator restarts it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::console::Console;
use super::render;
use crate::reconcile::signals::Signals;
use crate::reconcile::{Host, Reconciler, Report};
use crate::runtime::Engine;
use crate::runtime::cgroup::Subtree;
use crate::runtime::guard::Guardian;
use crate::runtime::reaper::Reaper;
use crate::runtime::spawner::Machine;
use crate::spec::ProjectSpec;

/// Runs until Ctrl-C or SIGTERM (or, with `exit_on_error`, an errored
/// app); returns the exit code.
pub async fn run(spec: ProjectSpec, exit_on_error: bool) -> anyhow::Result<i32> {
    let mut signals = Signals::install()?;
    let services = TaskTracker::new();
    let services_stop = CancellationToken::new();
    let reaper = Reaper::start(&services, services_stop.clone())?;
    let console = Arc::new(Console::new());
    // This `up -F`'s world: its spawn mark, and its cgroup subtree where the
    // machine allows. Subtrees of `up -F`s that died are cleared first.
    let world = world_name(std::process::id());
    let cgroups = Subtree::create(&format!("eco-{world}")).map(Arc::new);
    if let Some(subtree) = &cgroups {
        clear_dead_worlds(subtree);
    }
    // Whatever ends this process, even `kill -9`, the guardian ends its apps.
    let guardian = Guardian::start(&reaper, cgroups.as_ref().map(|c| c.path()), &world)?;
    let machine = Machine::system(reaper, crate::daemon::startup::app_nofile());
    let engine = Engine::new(machine, console.clone(), world, cgroups);
    let host = Arc::new(Terminal {
        console: Arc::clone(&console),
    });
    let reconciler = Reconciler::start(engine, host, None);
    let project = spec.name.clone();
    let actions = match reconciler.apply(spec).await {
        Ok(actions) => actions,
        Err(err) => {
            guardian.finish().await;
            console.finish();
            return Err(crate::error::DaemonError(crate::daemon::requests::refused(&err)).into());
        }
    };
    for line in render::plan_lines(&actions) {
        console.notice(&format!("eco: {line}"));
    }
    tracing::debug!(%project, "applied");
    let mut errored = false;
    let until = async {
        if exit_on_error {
            console.errored().await;
            errored = true;
            console.notice(&render::exit_on_error());
        } else {
            std::future::pending::<()>().await;
        }
    };
    reconciler.serve(&mut signals, until).await;
    guardian.finish().await;
    services_stop.cancel();
    services.close();
    services.wait().await;
    console.finish();
    Ok(i32::from(errored))
}

/// `fg-<pid>`; as PID 1 (a container, `unshare --pid`) the pid says
/// nothing outside the namespace, and two such `up -F`s sharing a cgroup
/// parent must not share a subtree, so a time suffix makes it unique.
fn world_name(pid: u32) -> String {
    if pid == 1 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("fg-1-{nanos:x}")
    } else {
        format!("fg-{pid}")
    }
}

/// Clears the cgroup subtrees of `up -F`s that are gone (killed before
/// their guardian could act).
fn clear_dead_worlds(own: &Subtree) {
    for other in own.siblings("eco-fg-") {
        let pid = other
            .path()
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("eco-fg-"))
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| !crate::procfs::alive(p)) {
            other.remove();
        }
    }
}

/// The terminal as the reconciler's host.
struct Terminal {
    console: Arc<Console>,
}

impl Host for Terminal {
    fn report(&self, report: Report) {
        for line in render::report(&report) {
            self.console.notice(&line);
        }
    }
}
