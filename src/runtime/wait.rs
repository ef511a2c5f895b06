//! `up --wait`: returns once every instance of a project has been online
//! for a short settle time, or as soon as one errors or crashes.

use std::time::Duration;

use tokio::time::Instant;

use super::Engine;
use super::instance::InstanceState;
use crate::state::Status;
use crate::view::{WaitCause, WaitFailure};

/// How long every instance must stay online before `up --wait` succeeds:
/// an app that exits at once is seen crashing instead of briefly online.
const WAIT_SETTLE: Duration = Duration::from_millis(300);

/// The time between two looks at every instance: 50 ms, and 20 µs per
/// instance beyond 2,500. Each look costs one step per instance; while
/// thousands start, every start is a change, and looking at each change
/// (or even waking on it: one poll per instance) costs steps in the square
/// of the instances (9,000: 81 million) and starves the spawns.
fn look_gap(instances: usize) -> Duration {
    let per_instance = Duration::from_micros(20) * u32::try_from(instances).unwrap_or(u32::MAX);
    per_instance.max(Duration::from_millis(50))
}

type Watched = (
    String,
    u32,
    tokio::sync::watch::Receiver<InstanceState>,
    bool,
);

impl Engine {
    /// Waits until every instance of `project` is online, or fails.
    pub async fn wait(&self, project: &str, limit: Duration) -> Result<(), WaitFailure> {
        let deadline = Instant::now() + limit;
        let mut stable_since: Option<Instant> = None;
        let fail = |app: &str, cause| WaitFailure {
            project: project.to_owned(),
            app: app.to_owned(),
            cause,
        };
        loop {
            let mut watches: Vec<Watched> = {
                let projects = self.projects.lock().await;
                let Some(p) = projects.get(project) else {
                    return Err(fail("", WaitCause::NotRunning));
                };
                p.apps
                    .iter()
                    .flat_map(|(name, app)| {
                        app.instances.iter().map(move |h| {
                            (name.clone(), h.index, h.state.clone(), app.user_stopped)
                        })
                    })
                    .collect()
            };
            let mut all_online = true;
            for (app, index, state, user_stopped) in &mut watches {
                let s = state.borrow();
                if *user_stopped {
                    continue;
                }
                match s.status {
                    Status::Online => {}
                    Status::Errored => {
                        return Err(fail(
                            app,
                            WaitCause::Errored {
                                instance: *index,
                                exit: s.last_exit,
                                error: s.last_error.clone(),
                            },
                        ));
                    }
                    Status::Backoff => {
                        return Err(fail(
                            app,
                            WaitCause::Crashed {
                                instance: *index,
                                exit: s.last_exit,
                                error: s.last_error.clone(),
                            },
                        ));
                    }
                    Status::Stopped if s.last_exit.is_some() => {}
                    _ => all_online = false,
                }
            }
            let now = Instant::now();
            if all_online {
                let since = *stable_since.get_or_insert(now);
                if now >= since + WAIT_SETTLE {
                    return Ok(());
                }
            } else {
                stable_since = None;
            }
            if now >= deadline {
                let pending: Vec<(String, u32, Status)> = watches
                    .iter()
                    .filter(|(_, _, s, stopped)| !*stopped && s.borrow().status != Status::Online)
                    .map(|(app, i, s, _)| (app.clone(), *i, s.borrow().status))
                    .collect();
                let app = pending.first().map(|p| p.0.clone()).unwrap_or_default();
                return Err(fail(
                    &app,
                    WaitCause::TimedOut {
                        after_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                        pending,
                    },
                ));
            }
            // Look again after the gap, at the settle time, or at the deadline.
            let next = stable_since.map_or(deadline, |s| (s + WAIT_SETTLE).min(deadline));
            tokio::time::sleep_until((now + look_gap(watches.len())).min(next)).await;
        }
    }
}
