//! The two requests `eco serve` adds: `stats` (counters for /metrics) and
//! `events` (the live event stream).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::observe::Observed;
use super::requests::Daemon;
use crate::ipc::proto::{FeedEvent, InstanceStats, Response, Stats};
use crate::ipc::server::Reply;
use crate::spec::Mode;
use crate::state::Status;
use crate::view::epoch_ms;

/// How often an idle event stream tells the client it is still there.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Every instance's counters, and each project's last reload.
pub async fn stats(daemon: &Daemon) -> Response {
    let engine = daemon.reconciler.engine();
    let modes: HashMap<(String, String), Mode> = engine
        .projects()
        .await
        .into_iter()
        .flat_map(|p| {
            let project = p.name;
            p.apps
                .into_values()
                .map(move |a| ((project.clone(), a.name), a.process.mode))
        })
        .collect();
    let rows = engine.rows().await;
    let slots: HashSet<(&str, &str, u32)> = rows
        .iter()
        .map(|r| (r.project.as_str(), r.app.as_str(), r.index))
        .collect();
    daemon
        .observed
        .retain(|project, app, replica| slots.contains(&(project, app, replica)));
    let instances = rows
        .iter()
        .map(|row| {
            let s = &row.state;
            let counters = daemon.observed.counters(&row.project, &row.app, row.index);
            let mode = modes.get(&(row.project.clone(), row.app.clone()));
            InstanceStats {
                project: row.project.clone(),
                app: row.app.clone(),
                replica: row.index,
                mode: match mode {
                    Some(Mode::Cluster) => "cluster",
                    _ => "fork",
                }
                .to_owned(),
                status: s.status,
                pid: s.pid,
                started_at_ms: s.started.map(epoch_ms),
                ready: s.status == Status::Online && !s.reloading,
                restarts_by_reason: counters.restarts_by_reason,
                probe_failures: counters.probe_failures,
            }
        })
        .collect();
    Response::Stats(Box::new(Stats {
        daemon_pid: std::process::id(),
        instances,
        reloads: daemon.observed.reloads(),
    }))
}

/// Streams events until the client leaves; a subscriber too slow for the
/// bounded buffer is told how many it missed, and goes on.
pub async fn events(observed: &Observed, mut reply: Reply) {
    let mut events = observed.subscribe();
    if !reply.send(&Response::Watching).await {
        return;
    }
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + HEARTBEAT, HEARTBEAT);
    loop {
        let response = tokio::select! {
            received = events.recv() => match received {
                Ok(event) => Response::Event { event },
                Err(RecvError::Lagged(count)) => Response::Event {
                    event: FeedEvent::Lagged {
                        at_ms: epoch_ms(std::time::SystemTime::now()),
                        count,
                    },
                },
                Err(RecvError::Closed) => return,
            },
            _ = tick.tick() => Response::Working,
        };
        if !reply.send(&response).await {
            return;
        }
    }
}
