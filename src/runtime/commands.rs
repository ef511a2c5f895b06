//! The engine's user commands: targets (`app`, `project/app`, `app:N`,
//! `all`), stop/start/restart/reload/delete/scale, waiting for readiness,
//! and the views `ls` and `describe` are built from.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::time::Instant;

use super::instance::{Control, InstanceHandle, InstanceState};
use super::{AppRuntime, Engine, ProjectRuntime};
use crate::config::keys::suggest;
use crate::spec::ProjectSpec;
use crate::state::{Reason, Status};

/// A resolved target: one app, or one instance of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected {
    pub project: String,
    pub app: String,
    pub instance: Option<u32>,
}

/// A target that names nothing, or more than one thing.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct TargetError {
    pub message: String,
    pub hint: Option<String>,
}

/// Why `wait` gave up.
#[derive(Debug)]
pub struct WaitFailure {
    pub project: String,
    pub app: String,
    pub reason: String,
}

/// A new instance without a readiness check must stay up this long before
/// the one it replaces is stopped.
const ROLLOUT_SETTLE: Duration = Duration::from_millis(250);

/// Added to `ready_timeout` for how long a rollout step may take.
const ROLLOUT_SLACK: Duration = Duration::from_secs(2);

/// How long every instance must stay online before `up --wait` succeeds:
/// an app that exits at once is seen crashing instead of briefly online.
const WAIT_SETTLE: Duration = Duration::from_millis(300);

impl Engine {
    /// Resolves a target against what runs now.
    pub async fn select(&self, target: &str) -> Result<Vec<Selected>, TargetError> {
        let projects = self.projects.lock().await;
        select_in(&projects, target)
    }

    /// Stops the targets; whole apps stay stopped across reloads until `start`.
    pub async fn stop(&self, target: &str) -> Result<Vec<Selected>, TargetError> {
        let mut projects = self.projects.lock().await;
        let selected = select_in(&projects, target)?;
        let mut waiting = Vec::new();
        for sel in &selected {
            if let Some(app) = app_mut(&mut projects, sel) {
                if sel.instance.is_none() {
                    app.user_stopped = true;
                    for handle in app.retiring.drain(..) {
                        handle.send(Control::Stop);
                        waiting.push(handle.finished());
                    }
                }
                for handle in pick(&app.instances, sel.instance) {
                    handle.send(Control::Stop);
                    waiting.push(handle.finished());
                }
            }
        }
        drop(projects);
        for done in waiting {
            done.await;
        }
        Ok(selected)
    }

    /// Starts stopped targets (and clears a user stop).
    pub async fn start(&self, target: &str) -> Result<Vec<Selected>, TargetError> {
        let mut projects = self.projects.lock().await;
        let selected = select_in(&projects, target)?;
        // Restored user-stopped apps were not bound yet: bind what they need.
        self.listeners.sync(&super::wanted_sockets(&projects));
        for sel in &selected {
            let Some(project) = projects.get_mut(&sel.project) else {
                continue;
            };
            let Some(app_spec) = project.apps.get(&sel.app).map(|a| a.spec.clone()) else {
                continue;
            };
            let indexes: Vec<u32> = match sel.instance {
                Some(i) => vec![i],
                None => (0..app_spec.instances).collect(),
            };
            for index in indexes {
                let finished = project
                    .apps
                    .get(&sel.app)
                    .and_then(|a| a.instances.get(index as usize))
                    .is_none_or(InstanceHandle::is_finished);
                if finished {
                    let handle = self.launch(
                        project,
                        &sel.project,
                        &app_spec,
                        index,
                        super::instance::Gate::default(),
                        Some(Reason::User),
                    );
                    if let Some(app) = project.apps.get_mut(&sel.app) {
                        let slot = index as usize;
                        if slot < app.instances.len() {
                            app.instances[slot] = handle;
                        } else {
                            app.instances.push(handle);
                        }
                    }
                } else if let Some(app) = project.apps.get(&sel.app) {
                    // Errored or exited for good: start it again.
                    if let Some(handle) = app.instances.get(index as usize) {
                        handle.send(Control::Restart(Reason::User));
                    }
                }
            }
            if let Some(app) = project.apps.get_mut(&sel.app)
                && sel.instance.is_none()
            {
                app.user_stopped = false;
            }
        }
        Ok(selected)
    }

    /// Stop then start every targeted instance (all at once).
    pub async fn restart(
        &self,
        target: &str,
        reason: Reason,
    ) -> Result<Vec<Selected>, TargetError> {
        let projects = self.projects.lock().await;
        let selected = select_in(&projects, target)?;
        for sel in &selected {
            if let Some(app) = projects
                .get(&sel.project)
                .and_then(|p| p.apps.get(&sel.app))
            {
                for handle in pick(&app.instances, sel.instance) {
                    handle.send(Control::Restart(reason.clone()));
                }
            }
        }
        drop(projects);
        self.start_finished(&selected).await?;
        Ok(selected)
    }

    /// Restarts an app for a file change (or a schedule, or memory):
    /// rolling for cluster and ready-gated apps, all at once otherwise.
    pub async fn restart_for_change(&self, project: &str, app: &str, reason: Reason) {
        let target = format!("{project}/{app}");
        let rolling = {
            let projects = self.projects.lock().await;
            let Some(rt) = projects.get(project).and_then(|p| p.apps.get(app)) else {
                return;
            };
            if rt.user_stopped {
                return;
            }
            super::replaced_rolling(&rt.spec)
        };
        tracing::info!(%target, %reason, "restarting");
        if rolling {
            if let Err(err) = self.reload_with(&target, reason).await {
                tracing::warn!(%target, %err, "rolling restart stopped");
            }
        } else {
            let _ = self.restart(&target, reason).await;
        }
    }

    /// Restarts one instance for a limit or a schedule: rolling (new beside
    /// old) for cluster and ready-gated apps, stop-then-start otherwise.
    pub async fn restart_instance(&self, project: &str, app: &str, index: u32, reason: Reason) {
        let target = format!("{project}/{app}:{index}");
        tracing::info!(%target, %reason, "restarting");
        if let Err(err) = self.reload_with(&target, reason).await {
            tracing::warn!(%target, %err, "restart did not complete");
        }
    }

    /// Restarts instances one at a time, each online again before the next.
    pub async fn reload(&self, target: &str) -> Result<Vec<Selected>, String> {
        self.reload_with(target, Reason::User).await
    }

    async fn reload_with(&self, target: &str, reason: Reason) -> Result<Vec<Selected>, String> {
        let selected = self.select(target).await.map_err(|e| e.message)?;
        for sel in &selected {
            let (handles, rolling, limit) = {
                let projects = self.projects.lock().await;
                let Some(app) = projects
                    .get(&sel.project)
                    .and_then(|p| p.apps.get(&sel.app))
                else {
                    continue;
                };
                let handles: Vec<InstanceHandle> =
                    pick(&app.instances, sel.instance).cloned().collect();
                let limit = app.spec.settings.ready_timeout
                    + app.spec.settings.stop_timeout
                    + ROLLOUT_SLACK;
                (handles, super::replaced_rolling(&app.spec), limit)
            };
            for handle in handles {
                if handle.is_finished() {
                    continue;
                }
                if rolling {
                    self.replace_one(sel, &handle, reason.clone(), limit)
                        .await?;
                    continue;
                }
                let restarts = handle.state.borrow().restarts;
                handle.send(Control::Restart(reason.clone()));
                let mut state = handle.state.clone();
                let outcome = tokio::time::timeout(
                    limit,
                    state.wait_for(|s| {
                        s.restarts > restarts
                            && matches!(
                                s.status,
                                Status::Online | Status::Errored | Status::Backoff
                            )
                    }),
                )
                .await;
                let status = outcome.ok().and_then(Result::ok).map(|s| s.status);
                if status != Some(Status::Online) {
                    return Err(format!(
                        "{}:{} did not come back online; the rollout stopped there",
                        sel.app, handle.index
                    ));
                }
            }
        }
        Ok(selected)
    }

    /// One step of a rolling replacement: start a new instance beside `old`,
    /// wait until it is ready (or has run `ROLLOUT_SETTLE` without a
    /// readiness check), then stop `old`. If the new one fails, it is stopped
    /// and `old` keeps serving.
    async fn replace_one(
        &self,
        sel: &Selected,
        old: &InstanceHandle,
        reason: Reason,
        limit: Duration,
    ) -> Result<(), String> {
        let (new, has_ready) = {
            let mut projects = self.projects.lock().await;
            let Some(project) = projects.get_mut(&sel.project) else {
                return Ok(());
            };
            let Some(spec) = project.apps.get(&sel.app).map(|a| a.spec.clone()) else {
                return Ok(());
            };
            let carry = Some(old.state.borrow().clone());
            let new = self.launch_carrying(
                project,
                &sel.project,
                &spec,
                old.index,
                super::instance::Gate::default(),
                Some(reason),
                carry,
            );
            if let Some(app) = project.apps.get_mut(&sel.app) {
                if let Some(slot) = app.instances.iter_mut().find(|h| h.index == old.index) {
                    *slot = new.clone();
                }
                app.retiring.push(old.clone());
            }
            (new, spec.settings.ready.is_some())
        };
        let mut state = new.state.clone();
        let outcome = tokio::time::timeout(
            limit,
            state.wait_for(|s| {
                matches!(s.status, Status::Online | Status::Errored | Status::Backoff)
            }),
        )
        .await;
        let mut ok = outcome.ok().and_then(Result::ok).map(|s| s.status) == Some(Status::Online);
        if ok && !has_ready {
            // No readiness check: make sure it does not die at once.
            tokio::time::sleep(ROLLOUT_SETTLE).await;
            ok = new.state.borrow().status == Status::Online;
        }
        if ok {
            old.send(Control::Stop);
            old.finished().await;
            let mut projects = self.projects.lock().await;
            if let Some(app) = projects
                .get_mut(&sel.project)
                .and_then(|p| p.apps.get_mut(&sel.app))
            {
                app.retiring.retain(|h| !h.is_finished());
            }
            return Ok(());
        }
        {
            let mut projects = self.projects.lock().await;
            if let Some(app) = projects
                .get_mut(&sel.project)
                .and_then(|p| p.apps.get_mut(&sel.app))
            {
                if let Some(slot) = app.instances.iter_mut().find(|h| h.index == old.index) {
                    *slot = old.clone();
                }
                app.retiring
                    .retain(|h| h.index != old.index || h.is_finished());
            }
        }
        let why = {
            let s = new.state.borrow();
            match (s.status, s.last_exit) {
                (Status::Online | Status::Starting, _) => format!(
                    "not ready within {}",
                    humantime::format_duration(limit - ROLLOUT_SLACK)
                ),
                (_, Some(exit)) => format!("it failed ({exit})"),
                (status, None) => format!("it is {}", status.as_str()),
            }
        };
        new.send(Control::Stop);
        new.finished().await;
        Err(format!(
            "the new {}:{} did not become ready: {why}; the rollout stopped and the old instances keep serving",
            sel.app, old.index
        ))
    }

    async fn start_finished(&self, selected: &[Selected]) -> Result<(), TargetError> {
        let any_finished = {
            let projects = self.projects.lock().await;
            selected.iter().any(|sel| {
                projects
                    .get(&sel.project)
                    .and_then(|p| p.apps.get(&sel.app))
                    .is_some_and(|a| {
                        pick(&a.instances, sel.instance).any(InstanceHandle::is_finished)
                    })
            })
        };
        if any_finished {
            for sel in selected {
                let target = match sel.instance {
                    Some(i) => format!("{}/{}:{i}", sel.project, sel.app),
                    None => format!("{}/{}", sel.project, sel.app),
                };
                self.start(&target).await?;
            }
        }
        Ok(())
    }

    /// Stops and removes whole apps (from the applied spec too).
    pub async fn delete(&self, target: &str) -> Result<Vec<Selected>, TargetError> {
        let mut projects = self.projects.lock().await;
        let selected = select_in(&projects, target)?;
        let mut removed = Vec::new();
        for sel in &selected {
            if let Some(project) = projects.get_mut(&sel.project) {
                if let Some(app) = project.apps.remove(&sel.app) {
                    removed.extend(app.all_handles().cloned());
                }
                project.spec.apps.remove(&sel.app);
            }
        }
        projects.retain(|_, p| !p.apps.is_empty() || !p.spec.apps.is_empty());
        self.listeners.sync(&super::wanted_sockets(&projects));
        drop(projects);
        super::stop_all(&removed).await;
        Ok(selected)
    }

    /// Sets an app's instance count (the applied spec changes with it).
    pub async fn scale(&self, target: &str, instances: u32) -> Result<ProjectSpec, TargetError> {
        let spec = {
            let projects = self.projects.lock().await;
            let selected = select_in(&projects, target)?;
            let [sel] = selected.as_slice() else {
                return Err(TargetError {
                    message: format!(
                        "`{target}` names {} apps; scale one app at a time",
                        selected.len()
                    ),
                    hint: Some("name it as project/app".into()),
                });
            };
            let mut spec = projects
                .get(&sel.project)
                .map(|p| p.spec.clone())
                .ok_or_else(|| TargetError {
                    message: format!("no project `{}`", sel.project),
                    hint: None,
                })?;
            if let Some(app) = spec.apps.get_mut(&sel.app) {
                app.instances = instances;
            }
            spec
        };
        self.apply(spec.clone()).await;
        Ok(spec)
    }

    /// Waits until every instance of `project` has been online for a short
    /// settle time, or fails as soon as one errors or crashes.
    pub async fn wait(&self, project: &str, limit: Duration) -> Result<(), WaitFailure> {
        let deadline = Instant::now() + limit;
        let mut stable_since: Option<Instant> = None;
        loop {
            let watches: Vec<(
                String,
                u32,
                tokio::sync::watch::Receiver<InstanceState>,
                bool,
            )> = {
                let projects = self.projects.lock().await;
                let Some(p) = projects.get(project) else {
                    return Err(WaitFailure {
                        project: project.to_owned(),
                        app: String::new(),
                        reason: format!("project `{project}` is not running"),
                    });
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
            for (app, index, state, user_stopped) in &watches {
                if *user_stopped {
                    continue;
                }
                let s = state.borrow();
                match s.status {
                    Status::Online => {}
                    Status::Errored => {
                        return Err(WaitFailure {
                            project: project.to_owned(),
                            app: app.clone(),
                            reason: format!(
                                "{app}:{index} errored{}",
                                s.last_exit.map(|e| format!(" ({e})")).unwrap_or_default()
                            ),
                        });
                    }
                    Status::Backoff => {
                        return Err(WaitFailure {
                            project: project.to_owned(),
                            app: app.clone(),
                            reason: format!(
                                "{app}:{index} crashed{} and is restarting",
                                s.last_exit.map(|e| format!(" ({e})")).unwrap_or_default()
                            ),
                        });
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
                let pending: Vec<String> = watches
                    .iter()
                    .filter(|(_, _, s, stopped)| !*stopped && s.borrow().status != Status::Online)
                    .map(|(app, i, s, _)| format!("{app}:{i} ({})", s.borrow().status.as_str()))
                    .collect();
                return Err(WaitFailure {
                    project: project.to_owned(),
                    app: watches
                        .iter()
                        .find(|(_, _, s, _)| s.borrow().status != Status::Online)
                        .map(|(a, ..)| a.clone())
                        .unwrap_or_default(),
                    reason: format!(
                        "timed out after {}; not online: {}",
                        humantime::format_duration(limit),
                        pending.join(", ")
                    ),
                });
            }
            // Wake on any state change, on the settle time, or on the deadline.
            let mut changes: Vec<_> = watches.into_iter().map(|(_, _, s, _)| s).collect();
            let next = stable_since.map_or(deadline, |s| (s + WAIT_SETTLE).min(deadline));
            let any_change = futures_any(&mut changes);
            let _ = tokio::time::timeout_at(next, any_change).await;
        }
    }

    /// CPU and memory of every running instance tree, by leader pid.
    pub async fn metrics(&self) -> std::collections::HashMap<i32, crate::metrics::Metrics> {
        let rows = self.rows().await;
        let leaders: Vec<(i32, Duration)> = rows
            .iter()
            .filter_map(|r| {
                let age = r
                    .state
                    .started
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                r.state.pid.map(|p| (p, age.unwrap_or_default()))
            })
            .collect();
        self.sampler
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .sample(&leaders)
    }

    /// `ls --json` rows.
    pub async fn list_json(&self) -> Vec<Value> {
        let metrics = self.metrics().await;
        self.rows()
            .await
            .iter()
            .map(|row| {
                let s = &row.state;
                let uptime = match (s.status, s.started) {
                    (Status::Online | Status::Starting | Status::Stopping, Some(t)) => {
                        SystemTime::now()
                            .duration_since(t)
                            .ok()
                            .map(|d| d.as_millis())
                    }
                    _ => None,
                };
                json!({
                    "project": row.project,
                    "app": row.app,
                    "instance": row.index,
                    "pid": s.pid,
                    "status": s.status.as_str(),
                    "restarts": s.restarts,
                    "uptime_ms": uptime,
                    "exit_code": s.last_exit.map(crate::state::Exit::code),
                    "cpu_percent": s.pid.and_then(|p| metrics.get(&p)).map(|m| m.cpu_percent),
                    "memory_bytes": s.pid.and_then(|p| metrics.get(&p)).map(|m| m.memory_bytes),
                    "last_restart_reason": s.last_reason.as_ref().map(ToString::to_string),
                })
            })
            .collect()
    }

    /// `describe` details of one app.
    pub async fn describe(
        &self,
        target: &str,
        logs: &crate::logs::LogFiles,
    ) -> Result<Value, TargetError> {
        let metrics = self.metrics().await;
        let projects = self.projects.lock().await;
        let selected = select_in(&projects, target)?;
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
            let log = logs.settings_for(&sel.project, &app.spec);
            let instances: Vec<Value> = pick(&app.instances, sel.instance)
                .map(|h| {
                    let s = h.state.borrow();
                    json!({
                        "instance": h.index,
                        "pid": s.pid,
                        "status": s.status.as_str(),
                        "restarts": s.restarts,
                        "started_at_ms": s.started.and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_millis()),
                        "exit_code": s.last_exit.map(crate::state::Exit::code),
                        "last_exit": s.last_exit.map(|e| e.to_string()),
                        "last_restart_reason": s.last_reason.as_ref().map(ToString::to_string),
                        "metrics": s.pid.and_then(|p| metrics.get(&p)).map(|m| json!({
                            "cpu_percent": m.cpu_percent,
                            "memory_bytes": m.memory_bytes,
                        })),
                        "history": s.history.iter().map(|h| json!({
                            "at_ms": h.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis()),
                            "reason": h.reason.to_string(),
                            "exit": h.exit.map(|e| e.to_string()),
                        })).collect::<Vec<_>>(),
                        "env": app.spec.instance(&sel.project, h.index).env,
                    })
                })
                .collect();
            let errors: Vec<String> = [&log.out, &log.err]
                .iter()
                .filter_map(|f| logs.error_for(f).map(|e| format!("{}: {e}", f.display())))
                .collect();
            apps.push(json!({
                "project": sel.project,
                "app": sel.app,
                "file": project.spec.file,
                "profile": project.spec.profile,
                "user_stopped": app.user_stopped,
                "spec": app.spec,
                "argv": app.spec.process.argv,
                "cwd": app.spec.process.cwd,
                "out_log": log.out,
                "err_log": log.err,
                "log_errors": errors,
                "instances": instances,
            }));
        }
        Ok(Value::Array(apps))
    }

    /// What the daemon persists: each project's applied spec and user stops.
    pub async fn snapshot_for_state(&self) -> Vec<(ProjectSpec, Vec<String>)> {
        self.projects
            .lock()
            .await
            .values()
            .map(|p| {
                let stopped = p
                    .apps
                    .iter()
                    .filter(|(_, a)| a.user_stopped)
                    .map(|(n, _)| n.clone())
                    .collect();
                (p.spec.clone(), stopped)
            })
            .collect()
    }

    /// Re-creates a project from the saved state: apps the user had stopped
    /// are recorded as stopped and not started.
    pub async fn restore(&self, spec: ProjectSpec, user_stopped: &[String]) {
        let mut running = spec.clone();
        running.apps.retain(|name, _| !user_stopped.contains(name));
        self.apply(running).await;
        let mut projects = self.projects.lock().await;
        if let Some(project) = projects.get_mut(&spec.name) {
            for name in user_stopped {
                if let Some(app) = spec.apps.get(name) {
                    project.apps.insert(
                        name.clone(),
                        AppRuntime::new(
                            app.clone(),
                            (0..app.instances).map(super::instance::stopped).collect(),
                            true,
                        ),
                    );
                }
            }
            project.spec = spec;
        }
    }

    /// The applied spec of a project, if it runs.
    pub async fn project_spec(&self, name: &str) -> Option<ProjectSpec> {
        self.projects.lock().await.get(name).map(|p| p.spec.clone())
    }
}

/// Resolves `target` in `projects`.
fn select_in(
    projects: &BTreeMap<String, ProjectRuntime>,
    target: &str,
) -> Result<Vec<Selected>, TargetError> {
    let all_apps: Vec<(String, String)> = projects
        .iter()
        .flat_map(|(p, rt)| rt.apps.keys().map(move |a| (p.clone(), a.clone())))
        .collect();
    if target == "all" {
        return Ok(all_apps
            .into_iter()
            .map(|(project, app)| Selected {
                project,
                app,
                instance: None,
            })
            .collect());
    }
    let (name, instance) = match target.rsplit_once(':') {
        Some((name, index)) => match index.parse::<u32>() {
            Ok(i) => (name, Some(i)),
            Err(_) => {
                return Err(TargetError {
                    message: format!("`{index}` in `{target}` is not an instance number"),
                    hint: Some("write app:INSTANCE, e.g. web:0".into()),
                });
            }
        },
        None => (target, None),
    };
    let (project, app) = match name.split_once('/') {
        Some((p, a)) => (Some(p), a),
        None => (None, name),
    };
    if project.is_none() && projects.contains_key(app) {
        // A bare project name selects all of its apps.
        return Ok(all_apps
            .into_iter()
            .filter(|(p, _)| p == app)
            .map(|(project, app)| Selected {
                project,
                app,
                instance,
            })
            .collect());
    }
    let matches: Vec<&(String, String)> = all_apps
        .iter()
        .filter(|(p, a)| a == app && project.is_none_or(|want| want == p))
        .collect();
    match matches.as_slice() {
        [] => {
            let names: Vec<String> = all_apps.iter().map(|(_, a)| a.clone()).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let hint = suggest(app, &refs)
                .map(|s| format!("did you mean `{s}`?"))
                .or_else(|| {
                    Some(if names.is_empty() {
                        "nothing runs yet: `eco up` starts the apps of ecosystem.yaml".into()
                    } else {
                        "`eco ls` lists the apps".into()
                    })
                });
            Err(TargetError {
                message: format!("no app named `{name}`"),
                hint,
            })
        }
        [(p, a)] => {
            if let Some(i) = instance {
                let count = projects[p].apps[a].instances.len();
                if i as usize >= count.max(projects[p].apps[a].spec.instances as usize) {
                    return Err(TargetError {
                        message: format!("`{a}` has no instance {i} (it has {count})"),
                        hint: None,
                    });
                }
            }
            Ok(vec![Selected {
                project: p.clone(),
                app: a.clone(),
                instance,
            }])
        }
        many => Err(TargetError {
            message: format!(
                "`{app}` exists in {} projects: {}",
                many.len(),
                many.iter()
                    .map(|(p, a)| format!("{p}/{a}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            hint: Some("name it as project/app".into()),
        }),
    }
}

fn app_mut<'a>(
    projects: &'a mut BTreeMap<String, ProjectRuntime>,
    sel: &Selected,
) -> Option<&'a mut AppRuntime> {
    projects.get_mut(&sel.project)?.apps.get_mut(&sel.app)
}

/// The handles a selection names: one instance, or all.
fn pick(
    handles: &[InstanceHandle],
    instance: Option<u32>,
) -> impl Iterator<Item = &InstanceHandle> {
    handles
        .iter()
        .filter(move |h| instance.is_none_or(|i| h.index == i))
}

/// Resolves when any of the watches changes (or all are closed).
async fn futures_any(watches: &mut [tokio::sync::watch::Receiver<InstanceState>]) {
    if watches.is_empty() {
        return std::future::pending().await;
    }
    let futures: Vec<_> = watches
        .iter_mut()
        .map(|w| Box::pin(async move { w.changed().await }))
        .collect();
    let mut futures = futures;
    std::future::poll_fn(move |cx| {
        for f in &mut futures {
            if f.as_mut().poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await;
}
