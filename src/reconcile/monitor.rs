//! Acting on what eco sees: an instance whose tree outgrows `max_memory` for
//! two samples in a row is restarted (reason `memory`), and `cron_restart`
//! apps restart on schedule (reason `cron`). Sleeps until the next thing to
//! do; with no limit and no schedule it does not wake at all.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Trigger;
use crate::runtime::Engine;
use crate::schedule::next_run;
use crate::state::Reason;

/// How often trees are measured while some app has `max_memory`.
const MEMORY_INTERVAL: Duration = Duration::from_secs(1);

/// Consecutive samples over the limit before a restart.
const OVER_LIMIT_SAMPLES: u32 = 2;

type AppKey = (String, String);

/// Runs until `stop`. `changed` is notified after every change of the
/// applied specs; restarts go to the reconciler as triggers.
pub async fn run(
    engine: Arc<Engine>,
    changed: Arc<Notify>,
    triggers: mpsc::UnboundedSender<Trigger>,
    stop: CancellationToken,
) {
    let mut schedule: BTreeMap<AppKey, (String, DateTime<Local>)> = BTreeMap::new();
    let mut over: HashMap<(AppKey, u32, i32), u32> = HashMap::new();
    loop {
        let mut limits: BTreeMap<AppKey, u64> = BTreeMap::new();
        let mut next_schedule = BTreeMap::new();
        for project in engine.projects().await {
            for app in project.apps.values() {
                let key = (project.name.clone(), app.name.clone());
                if let Some(limit) = app.settings.max_memory {
                    limits.insert(key.clone(), limit);
                }
                if let Some(expr) = &app.settings.cron_restart {
                    let next = match schedule.get(&key) {
                        Some((old, at)) if old == expr => Some(*at),
                        _ => next_run(expr, &now(&engine)),
                    };
                    if let Some(at) = next {
                        next_schedule.insert(key, (expr.clone(), at));
                    }
                }
            }
        }
        schedule = next_schedule;
        let cron_at = schedule.values().map(|(_, at)| *at).min().map(|at| {
            let wait = (at - now(&engine)).to_std().unwrap_or(Duration::ZERO);
            Instant::now() + wait
        });
        let memory_at = (!limits.is_empty()).then(|| Instant::now() + MEMORY_INTERVAL);
        let wake = match (cron_at, memory_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let far = Instant::now() + Duration::from_secs(86_400 * 365);
        tokio::select! {
            () = stop.cancelled() => return,
            () = changed.notified() => continue,
            () = tokio::time::sleep_until(wake.unwrap_or(far)), if wake.is_some() => {}
        }
        if !limits.is_empty() {
            check_memory(&engine, &limits, &mut over, &triggers).await;
        }
        let now = now(&engine);
        for (key, (expr, at)) in &mut schedule {
            if *at <= now + chrono::Duration::milliseconds(5) {
                let (project, app) = key.clone();
                let _ = triggers.send(Trigger {
                    project,
                    app,
                    instance: None,
                    reason: Reason::Cron,
                });
                match next_run(expr, at) {
                    Some(next) => *at = next,
                    None => *at = now + chrono::Duration::days(365 * 100),
                }
            }
        }
    }
}

/// The engine's wall clock (faked in its tests), in local time.
fn now(engine: &Engine) -> DateTime<Local> {
    DateTime::from(engine.machine().clock.now())
}

async fn check_memory(
    engine: &Arc<Engine>,
    limits: &BTreeMap<AppKey, u64>,
    over: &mut HashMap<(AppKey, u32, i32), u32>,
    triggers: &mpsc::UnboundedSender<Trigger>,
) {
    let metrics = engine.metrics().await;
    let mut still_over = HashMap::new();
    for row in engine.rows().await {
        let key = (row.project.clone(), row.app.clone());
        let (Some(limit), Some(pid)) = (limits.get(&key), row.state.pid) else {
            continue;
        };
        let Some(m) = metrics.get(&pid) else { continue };
        if m.memory_bytes <= *limit {
            continue;
        }
        let id = (key, row.index, pid);
        let count = over.get(&id).copied().unwrap_or(0) + 1;
        if count >= OVER_LIMIT_SAMPLES {
            tracing::warn!(
                project = %row.project, app = %row.app, instance = row.index,
                memory = m.memory_bytes, limit, "over max_memory; restarting"
            );
            let _ = triggers.send(Trigger {
                project: row.project.clone(),
                app: row.app.clone(),
                instance: Some(row.index),
                reason: Reason::Memory,
            });
        } else {
            still_over.insert(id, count);
        }
    }
    *over = still_over;
}
