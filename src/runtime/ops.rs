//! User commands and triggers on running apps: stop, start, restart,
//! reload, delete, scale, and the restarts that watched sources, memory
//! limits and schedules ask for. Each holds the app (`Engine::lock_app`),
//! so operations on one app never interleave; a stop or delete interrupts
//! a rollout in progress. Targets are resolved by the pure `crate::target`.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::instance::{Control, Gate, InstanceHandle};
use super::rollout::{RolloutError, Target};
use super::{AppRuntime, Engine, ProjectRuntime, replaced_rolling};
use crate::spec::ProjectSpec;
use crate::state::Reason;
use crate::target::{Known, Numbered, Selected, TargetError, resolve};

impl Engine {
    /// Resolves a target against what is applied now.
    pub async fn select(&self, target: &str) -> Result<Vec<Selected>, TargetError> {
        let projects = self.projects.lock().await;
        select_in(&projects, &self.lock_ids(), target)
    }

    /// Stops the targets; whole apps stay stopped across reloads until `start`.
    pub async fn stop(&self, target: &str) -> Result<Vec<Selected>, TargetError> {
        let selected = self.select(target).await?;
        for sel in &selected {
            let _guard = self.lock_app(&sel.project, &sel.app, true).await;
            let mut waiting = Vec::new();
            {
                let mut projects = self.projects.lock().await;
                let Some(app) = app_mut(&mut projects, sel) else {
                    continue;
                };
                if let Some(index) = sel.instance {
                    app.stopped_instances.insert(index);
                } else {
                    app.user_stopped = true;
                    app.stopped_instances.clear();
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
            for done in waiting {
                done.await;
            }
        }
        self.reap_unowned().await;
        Ok(selected)
    }

    /// Starts stopped targets (and clears a user stop).
    pub async fn start(&self, target: &str) -> Result<Vec<Selected>, TargetError> {
        let selected = self.select(target).await?;
        for sel in &selected {
            let _guard = self.lock_app(&sel.project, &sel.app, false).await;
            self.start_locked(sel, Reason::User, false).await;
        }
        Ok(selected)
    }

    /// `start` of one selection, its app already held: ended instances are
    /// launched again, errored ones restarted, and with `restart_running`
    /// the running ones too.
    async fn start_locked(&self, sel: &Selected, reason: Reason, restart_running: bool) {
        let mut projects = self.projects.lock().await;
        // Restored user-stopped apps were not bound yet: bind what they need.
        self.listeners.sync(&super::wanted_sockets(&projects));
        let Some(project) = projects.get_mut(&sel.project) else {
            return;
        };
        let Some(app_spec) = project.apps.get(&sel.app).map(|a| a.spec.clone()) else {
            return;
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
                    Gate::default(),
                    Some(reason.clone()),
                );
                if let Some(app) = project.apps.get_mut(&sel.app) {
                    let slot = index as usize;
                    if slot < app.instances.len() {
                        app.instances[slot] = handle;
                    } else {
                        app.instances.push(handle);
                    }
                }
            } else if let Some(handle) = project
                .apps
                .get(&sel.app)
                .and_then(|a| a.instances.get(index as usize))
            {
                let status = handle.state.borrow().status;
                if restart_running
                    || matches!(
                        status,
                        crate::state::Status::Errored | crate::state::Status::Stopped
                    )
                {
                    handle.send(Control::Restart(reason.clone()));
                }
            }
        }
        if let Some(app) = project.apps.get_mut(&sel.app) {
            match sel.instance {
                Some(index) => {
                    app.stopped_instances.remove(&index);
                }
                None => {
                    app.user_stopped = false;
                    app.stopped_instances.clear();
                }
            }
        }
    }

    /// Stop then start every targeted instance (all at once); stopped ones start.
    pub async fn restart(&self, target: &str) -> Result<Vec<Selected>, TargetError> {
        let selected = self.select(target).await?;
        for sel in &selected {
            let _guard = self.lock_app(&sel.project, &sel.app, false).await;
            self.restart_locked(sel, Reason::User).await;
        }
        Ok(selected)
    }

    async fn restart_locked(&self, sel: &Selected, reason: Reason) {
        self.start_locked(sel, reason, true).await;
    }

    /// Zero-downtime restart of the targets (see `rollout`), app by app.
    pub async fn reload(
        self: &Arc<Self>,
        target: &str,
    ) -> Result<Result<Vec<Selected>, RolloutError>, TargetError> {
        let selected = self.select(target).await?;
        for sel in &selected {
            let guard = self.lock_app(&sel.project, &sel.app, false).await;
            if let Some(replies) = self.reload_in_place(sel).await {
                for (index, reply) in replies {
                    let answer = reply.await.unwrap_or_else(|_| Err("it stopped".into()));
                    if let Err(why) = answer {
                        return Ok(Err(RolloutError::NotBack {
                            app: format!("{} ({why})", sel.app),
                            index,
                        }));
                    }
                }
                continue;
            }
            let target = Target {
                project: sel.project.clone(),
                app: sel.app.clone(),
                instances: sel.instance.map(|i| vec![i]),
            };
            if let Err(err) = self.roll(&target, Reason::User, &guard).await {
                return Ok(Err(err));
            }
        }
        Ok(Ok(selected))
    }

    /// `reload_signal`: the signal to every targeted instance in place
    /// (systemd's `Type=notify-reload`); None when the app has none.
    async fn reload_in_place(
        &self,
        sel: &Selected,
    ) -> Option<Vec<(u32, tokio::sync::oneshot::Receiver<Result<(), String>>)>> {
        let projects = self.projects.lock().await;
        let app = projects.get(&sel.project)?.apps.get(&sel.app)?;
        app.spec.settings.reload_signal?;
        Some(
            pick(&app.instances, sel.instance)
                .filter(|h| !h.is_finished())
                .map(|h| {
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    h.send(Control::Reload(tx));
                    (h.index, rx)
                })
                .collect(),
        )
    }

    /// A restart asked for by a watched source, a memory limit or a
    /// schedule: rolling for cluster and ready-gated apps, at once otherwise.
    /// Apps the user stopped are left alone.
    pub async fn restart_for(
        self: &Arc<Self>,
        project: &str,
        app: &str,
        instance: Option<u32>,
        reason: Reason,
    ) -> Result<(), RolloutError> {
        let guard = self.lock_app(project, app, false).await;
        let rolling = {
            let projects = self.projects.lock().await;
            let Some(rt) = projects.get(project).and_then(|p| p.apps.get(app)) else {
                return Ok(());
            };
            if rt.user_stopped {
                return Ok(());
            }
            replaced_rolling(&rt.spec)
        };
        tracing::info!(%project, %app, ?instance, reason = reason.name(), "restarting");
        let sel = Selected {
            project: project.to_owned(),
            app: app.to_owned(),
            instance,
        };
        if rolling {
            let target = Target {
                project: sel.project,
                app: sel.app,
                instances: instance.map(|i| vec![i]),
            };
            self.roll(&target, reason, &guard).await
        } else {
            self.restart_locked(&sel, reason).await;
            Ok(())
        }
    }

    /// Stops and removes whole apps (from the applied spec too).
    pub async fn delete(&self, target: &str) -> Result<Vec<Selected>, TargetError> {
        let selected = self.select(target).await?;
        let mut guards = Vec::new();
        for sel in &selected {
            guards.push(self.lock_app(&sel.project, &sel.app, true).await);
        }
        let mut removed = Vec::new();
        {
            let mut projects = self.projects.lock().await;
            for sel in &selected {
                if let Some(project) = projects.get_mut(&sel.project) {
                    if let Some(app) = project.apps.remove(&sel.app) {
                        removed.extend(app.all_handles().cloned());
                    }
                    self.free_ids(&sel.project, &sel.app, 0);
                    project.spec.apps.remove(&sel.app);
                }
            }
            projects.retain(|_, p| !p.apps.is_empty() || !p.spec.apps.is_empty());
            self.listeners.sync(&super::wanted_sockets(&projects));
        }
        super::stop_all(&removed).await;
        // Ports the deleted apps asked for at listen() were held until
        // their last process ended: they close now.
        self.listeners
            .sync(&super::wanted_sockets(&*self.projects.lock().await));
        self.reap_unowned().await;
        Ok(selected)
    }

    /// Sets one app's instance count: the applied spec changes, and the
    /// change is carried out as a save of the file would be.
    pub async fn scale(
        self: &Arc<Self>,
        target: &str,
        instances: u32,
    ) -> Result<(Selected, ProjectSpec), TargetError> {
        let selected = self.select(target).await?;
        let sel = match selected.as_slice() {
            [sel] if sel.instance.is_none() => sel.clone(),
            [_] => {
                return Err(TargetError::WholeAppOnly {
                    target: target.to_owned(),
                });
            }
            many => {
                return Err(TargetError::Ambiguous {
                    name: target.to_owned(),
                    candidates: many
                        .iter()
                        .map(|s| format!("{}/{}", s.project, s.app))
                        .collect(),
                });
            }
        };
        let Some(mut spec) = self.project_spec(&sel.project).await else {
            return Err(TargetError::NoSuchApp {
                name: target.to_owned(),
                suggestion: None,
                nothing_runs: false,
            });
        };
        if let Some(app) = spec.apps.get_mut(&sel.app) {
            app.instances = instances;
        }
        self.apply(spec.clone()).await;
        Ok((sel, spec))
    }

    /// What the daemon persists: each project's applied spec and user
    /// stops, whole apps as `app` and instances as `app:N` (those still
    /// stopped: a reload or restart since may have started them again).
    pub async fn snapshot_for_state(&self) -> Vec<(ProjectSpec, Vec<String>)> {
        self.projects
            .lock()
            .await
            .values()
            .map(|p| {
                let mut stopped = Vec::new();
                for (name, app) in &p.apps {
                    if app.user_stopped {
                        stopped.push(name.clone());
                        continue;
                    }
                    for index in &app.stopped_instances {
                        let still = pick(&app.instances, Some(*index))
                            .any(|h| h.state.borrow().status == crate::state::Status::Stopped);
                        if still {
                            stopped.push(format!("{name}:{index}"));
                        }
                    }
                }
                (p.spec.clone(), stopped)
            })
            .collect()
    }

    /// Re-creates a project from the saved state: apps the user had stopped
    /// are recorded as stopped and not started; so are single instances
    /// (`app:N`).
    pub async fn restore(self: &Arc<Self>, spec: ProjectSpec, user_stopped: &[String]) {
        let instances: Vec<(String, u32)> = user_stopped
            .iter()
            .filter_map(|entry| {
                let (app, index) = entry.rsplit_once(':')?;
                Some((app.to_owned(), index.parse().ok()?))
            })
            .collect();
        let user_stopped: Vec<&String> = user_stopped.iter().filter(|e| !e.contains(':')).collect();
        {
            let mut held = self
                .held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for (app, index) in &instances {
                held.insert((spec.name.clone(), app.clone(), *index));
            }
        }
        let mut running = spec.clone();
        running.apps.retain(|name, _| !user_stopped.contains(&name));
        self.apply(running).await;
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|(project, _, _)| project != &spec.name);
        let mut projects = self.projects.lock().await;
        if let Some(project) = projects.get_mut(&spec.name) {
            for (app, index) in instances {
                if let Some(app) = project.apps.get_mut(&app) {
                    app.stopped_instances.insert(index);
                }
            }
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

/// Resolves `target` in `projects`, numeric ids by `ids`.
pub(super) fn select_in(
    projects: &BTreeMap<String, ProjectRuntime>,
    ids: &super::ids::IdTable,
    target: &str,
) -> Result<Vec<Selected>, TargetError> {
    let numbered: Vec<Numbered<'_>> = ids
        .iter()
        .map(|(id, slot)| Numbered {
            id,
            project: &slot.project,
            app: &slot.app,
            instance: slot.instance,
        })
        .collect();
    let known: Vec<Known<'_>> = projects
        .iter()
        .flat_map(|(p, rt)| {
            rt.apps.iter().map(move |(a, app)| Known {
                project: p,
                app: a,
                instances: u32::try_from(app.instances.len())
                    .unwrap_or(u32::MAX)
                    .max(app.spec.instances),
            })
        })
        .collect();
    resolve(&known, &numbered, target)
}

fn app_mut<'a>(
    projects: &'a mut BTreeMap<String, ProjectRuntime>,
    sel: &Selected,
) -> Option<&'a mut AppRuntime> {
    projects.get_mut(&sel.project)?.apps.get_mut(&sel.app)
}

/// The handles a selection names: one instance, or all.
pub(super) fn pick(
    handles: &[InstanceHandle],
    instance: Option<u32>,
) -> impl Iterator<Item = &InstanceHandle> {
    handles
        .iter()
        .filter(move |h| instance.is_none_or(|i| h.index == i))
}
