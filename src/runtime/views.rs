//! The typed views `ls` and `describe` are built from (`crate::view`),
//! with CPU and memory sampled on demand.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime};

use super::Engine;
use super::ops::{pick, select_in};
use crate::logs::LogFiles;
use crate::metrics::Metrics;
use crate::spec::{ListenAddr, Watch};
use crate::state::{Exit, Status};
use crate::target::TargetError;
use crate::view::{AppView, HistoryView, InstanceView, MetricsView, Row, epoch_ms};

impl Engine {
    /// CPU and memory of every running instance tree, by leader pid.
    pub async fn metrics(&self) -> HashMap<i32, Metrics> {
        self.metrics_of(&self.rows().await)
    }

    /// CPU and memory of the instance trees of `rows`.
    fn metrics_of(&self, rows: &[super::InstanceRow]) -> HashMap<i32, Metrics> {
        let leaders: Vec<(i32, Duration)> = rows
            .iter()
            .filter_map(|r| {
                let age = r
                    .state
                    .started
                    .and_then(|t| self.machine.clock.now().duration_since(t).ok());
                r.state.pid.map(|p| (p, age.unwrap_or_default()))
            })
            .collect();
        self.machine.spawner.sample(&leaders)
    }

    /// `ls` rows, ordered by project, app, instance.
    pub async fn list(&self) -> Vec<Row> {
        // One pass over the instances: `ls` is polled while thousands start.
        let rows = self.rows().await;
        let metrics = self.metrics_of(&rows);
        let watching = self.watching().await;
        rows.into_iter()
            .map(|row| {
                let s = &row.state;
                let uptime = match (s.status, s.started) {
                    (Status::Online | Status::Starting | Status::Stopping, Some(t)) => {
                        SystemTime::now()
                            .duration_since(t)
                            .ok()
                            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    }
                    _ => None,
                };
                let m = s.pid.and_then(|p| metrics.get(&p));
                let watching = watching.contains(&(row.project.clone(), row.app.clone()));
                Row {
                    id: row.id,
                    project: row.project,
                    app: row.app,
                    instance: row.index,
                    pid: s.pid,
                    status: s.status,
                    restarts: s.restarts,
                    uptime_ms: uptime,
                    exit_code: s.last_exit.and_then(Exit::known_code),
                    cpu_percent: m.map(|m| m.cpu_percent),
                    memory_bytes: m.map(|m| m.memory_bytes),
                    last_restart_reason: s.last_reason.as_ref().map(|r| r.name().to_owned()),
                    daemonized: s.daemonized,
                    last_error: s.last_error.clone(),
                    status_text: s.status_text.clone(),
                    reloading: s.reloading,
                    watching,
                }
            })
            .collect()
    }

    /// The (project, app) pairs a file change restarts: `watch` is set and
    /// the user has not stopped the app (a stopped app is left alone).
    async fn watching(&self) -> HashSet<(String, String)> {
        let projects = self.projects.lock().await;
        projects
            .iter()
            .flat_map(|(project, rt)| {
                rt.apps
                    .iter()
                    .filter(|(_, app)| app.spec.settings.watch != Watch::Off && !app.user_stopped)
                    .map(move |(app, _)| (project.clone(), app.clone()))
            })
            .collect()
    }

    /// `describe` of the target's apps.
    pub async fn describe(
        &self,
        target: &str,
        logs: Option<&LogFiles>,
    ) -> Result<Vec<AppView>, TargetError> {
        let metrics = self.metrics().await;
        let projects = self.projects.lock().await;
        let selected = select_in(&projects, &self.lock_ids(), target)?;
        let mut apps = Vec::new();
        let mut seen = BTreeSet::new();
        for sel in selected {
            if !seen.insert((sel.project.clone(), sel.app.clone())) {
                continue;
            }
            let Some(project) = projects.get(&sel.project) else {
                continue;
            };
            let Some(app) = project.apps.get(&sel.app) else {
                continue;
            };
            let instances = pick(&app.instances, sel.instance)
                .map(|h| {
                    let s = h.state.borrow();
                    InstanceView {
                        instance: h.index,
                        id: self.id_of(&sel.project, &sel.app, h.index),
                        pid: s.pid,
                        status: s.status,
                        restarts: s.restarts,
                        started_at_ms: s.started.map(epoch_ms),
                        exit_code: s.last_exit.and_then(Exit::known_code),
                        last_exit: s.last_exit,
                        last_restart_reason: s.last_reason.as_ref().map(|r| r.name().to_owned()),
                        last_restart_detail: s
                            .last_reason
                            .as_ref()
                            .and_then(|r| r.detail().map(str::to_owned)),
                        daemonized: s.daemonized,
                        last_error: s.last_error.clone(),
                        status_text: s.status_text.clone(),
                        notify_rejected: s.notify_rejected,
                        metrics: s.pid.and_then(|p| metrics.get(&p)).map(|m| MetricsView {
                            cpu_percent: m.cpu_percent,
                            memory_bytes: m.memory_bytes,
                        }),
                        history: s
                            .history
                            .iter()
                            .map(|h| HistoryView {
                                at_ms: epoch_ms(h.at),
                                reason: h.reason.name().to_owned(),
                                detail: h.reason.detail().map(str::to_owned),
                                exit: h.exit,
                            })
                            .collect(),
                        env: app.spec.instance(&sel.project, h.index).env,
                    }
                })
                .collect();
            let (out_log, err_log, log_errors) = match logs {
                Some(logs) => {
                    let log = logs.settings_for(&sel.project, &app.spec);
                    let errors = [&log.out, &log.err]
                        .iter()
                        .filter_map(|f| logs.error_for(f).map(|e| format!("{}: {e}", f.display())))
                        .collect();
                    (log.out, log.err, errors)
                }
                None => Default::default(),
            };
            apps.push(AppView {
                project: sel.project.clone(),
                app: sel.app.clone(),
                file: project.spec.file.clone(),
                profile: project.spec.profile.clone(),
                user_stopped: app.user_stopped,
                spec: app.spec.clone(),
                argv: app.spec.process.argv.clone(),
                cwd: app.spec.process.cwd.clone(),
                out_log,
                err_log,
                log_errors,
                config_error: None,
                containment: self.containment().to_owned(),
                sockets: app
                    .spec
                    .process
                    .listen
                    .iter()
                    .any(ListenAddr::can_split_per_instance)
                    .then(|| self.listeners.sharing().as_str().to_owned()),
                instances,
            });
        }
        Ok(apps)
    }
}
