//! `eco up -F`: the reconciler in this process, every app's output on this
//! terminal. The same loop as the daemon's: saves of the file and its env
//! files are applied (an invalid save changes nothing), watched sources
//! restart their app, memory limits and schedules act; Ctrl-C or SIGTERM
//! stops every app gracefully (a second one kills them), SIGHUP re-reads.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::console::Console;
use super::render;
use crate::reconcile::signals::Signals;
use crate::reconcile::{Host, Reconciler, Report};
use crate::runtime::Engine;
use crate::runtime::reaper::Reaper;
use crate::spec::ProjectSpec;

/// Runs until Ctrl-C or SIGTERM; returns the exit code.
pub async fn run(spec: ProjectSpec) -> anyhow::Result<i32> {
    let mut signals = Signals::install()?;
    let services = TaskTracker::new();
    let services_stop = CancellationToken::new();
    let reaper = Reaper::start(&services, services_stop.clone())?;
    let console = Arc::new(Console::new());
    let engine = Engine::new(reaper, console.clone(), "fg".into());
    let host = Arc::new(Terminal {
        console: Arc::clone(&console),
    });
    let reconciler = Reconciler::start(engine, host, None);
    let project = spec.name.clone();
    let actions = reconciler.apply_unchecked(spec).await;
    for line in render::plan_lines(&actions) {
        console.notice(&format!("eco: {line}"));
    }
    tracing::debug!(%project, "applied");
    reconciler
        .serve(&mut signals, std::future::pending::<()>())
        .await;
    services_stop.cancel();
    services.close();
    services.wait().await;
    console.finish();
    Ok(0)
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
