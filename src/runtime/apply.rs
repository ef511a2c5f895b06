//! `Engine::apply`: a plan carried out on the live instances, one method
//! per kind of action. Processes start and stop in their own tasks;
//! rolling replacements and the stops of removed apps run once the
//! projects' lock is released.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::instance::{Control, Gate, InstanceHandle};
use super::{
    AppGuard, AppRuntime, Engine, ProjectRuntime, observe, replaced_rolling, rollout, stop_all,
    wanted_sockets,
};
use crate::plan::{self, Action};
use crate::spec::{AppSpec, ProjectSpec};
use crate::state::Reason;

/// What carrying out a plan leaves for after the projects' lock.
#[derive(Default)]
struct Afterwards {
    /// The instances of removed apps, one list per app in the plan's order.
    removed: Vec<Vec<InstanceHandle>>,
    /// Apps replaced rolling, with how many of their instances.
    rollouts: Vec<(String, u32)>,
}

impl Engine {
    /// Converges a project to `spec` and returns the plan carried out.
    /// Returns once the plan is under way: processes start and stop in their
    /// own tasks, rolling replacements in an owned task per app. An app's
    /// operation in progress is interrupted by a change to that app.
    pub async fn apply(self: &Arc<Self>, spec: ProjectSpec) -> Vec<Action> {
        if self.is_closing() {
            return Vec::new();
        }
        let touched: Vec<String> = self
            .preview(&spec)
            .await
            .iter()
            .filter(|a| !a.is_noop() && !matches!(a, Action::Update { .. }))
            .map(|a| a.app().to_owned())
            .collect();
        let mut guards: BTreeMap<String, AppGuard> = BTreeMap::new();
        for app in touched {
            let guard = self.lock_app(&spec.name, &app, true).await;
            guards.insert(app, guard);
        }
        let mut projects = self.projects.lock().await;
        if self.is_closing() {
            return Vec::new();
        }
        let project = projects
            .entry(spec.name.clone())
            .or_insert_with(|| ProjectRuntime {
                spec: spec.clone(),
                apps: BTreeMap::new(),
            });
        let actions = plan::plan(&spec, &observe(project));
        project.spec = spec.clone();
        self.listeners.sync(&wanted_sockets(&projects));
        let Some(project) = projects.get_mut(&spec.name) else {
            return actions;
        };
        let mut after = Afterwards::default();
        for action in &actions {
            self.carry_out(project, &spec, action, &mut after);
        }
        project.spec = spec.clone();
        drop(projects);
        // Removed apps stop one after the other, in the plan's order
        // (dependents before their dependencies).
        if !after.removed.is_empty() {
            let removed = after.removed;
            self.spawn(async move {
                for handles in removed {
                    stop_all(&handles).await;
                }
            });
        }
        self.start_rollouts(&spec.name, after.rollouts, guards)
            .await;
        actions
    }

    /// One owned task per app replaced rolling, holding the app's lock
    /// (taken for the plan, or now).
    async fn start_rollouts(
        self: &Arc<Self>,
        project: &str,
        rollouts: Vec<(String, u32)>,
        mut guards: BTreeMap<String, AppGuard>,
    ) {
        for (app, count) in rollouts {
            let guard = match guards.remove(&app) {
                Some(guard) => guard,
                None => self.lock_app(project, &app, false).await,
            };
            let engine = Arc::clone(self);
            let target = rollout::Target {
                project: project.to_owned(),
                app,
                instances: Some((0..count).collect()),
            };
            self.spawn(async move {
                if let Err(err) = engine.roll(&target, Reason::ConfigChange, &guard).await {
                    tracing::warn!(app = %target.app, %err, "rollout of the new spec stopped");
                }
            });
        }
    }

    fn carry_out(
        &self,
        project: &mut ProjectRuntime,
        spec: &ProjectSpec,
        action: &Action,
        after: &mut Afterwards,
    ) {
        let name = action.app();
        match action {
            Action::Start { instances, .. } => self.start_app(project, spec, name, *instances),
            Action::Stop { .. } => {
                if let Some(handles) = self.remove_app(project, &spec.name, name) {
                    after.removed.push(handles);
                }
            }
            Action::Replace { from, to, .. } => {
                if let Some(count) = self.replace_app(project, spec, name, *from, *to) {
                    after.rollouts.push((name.to_owned(), count));
                }
            }
            Action::Scale { from, to, .. } => self.scale_app(project, spec, name, *from, *to),
            Action::Update { .. } => update_app(project, spec, name),
            Action::KeepStopped { .. } => {
                if let Some(rt) = project.apps.get_mut(name) {
                    rt.spec = spec.apps[name].clone();
                }
            }
            Action::Unchanged { .. } => {}
        }
    }

    /// A new app: its instances start (each once its dependencies are online).
    fn start_app(&self, project: &mut ProjectRuntime, spec: &ProjectSpec, name: &str, count: u32) {
        let app = spec.apps[name].clone();
        let handles = (0..count)
            .map(|i| self.launch(project, &spec.name, &app, i, Gate::default(), None))
            .collect();
        project
            .apps
            .insert(name.to_owned(), AppRuntime::new(app, handles, false));
    }

    /// An app gone from the spec: told to stop; its handles, to wait for.
    fn remove_app(
        &self,
        project: &mut ProjectRuntime,
        project_name: &str,
        name: &str,
    ) -> Option<Vec<InstanceHandle>> {
        self.free_ids(project_name, name, 0);
        let app = project.apps.remove(name)?;
        let handles: Vec<InstanceHandle> = app.all_handles().cloned().collect();
        for handle in &handles {
            handle.send(Control::Stop);
        }
        Some(handles)
    }

    /// A changed app: old instances beyond the new count stop now, new ones
    /// beyond the old count start; the others are replaced in place, or
    /// rolling (how many is returned, for the rollout).
    fn replace_app(
        &self,
        project: &mut ProjectRuntime,
        spec: &ProjectSpec,
        name: &str,
        from: u32,
        to: u32,
    ) -> Option<u32> {
        let app = spec.apps[name].clone();
        let rolling = replaced_rolling(&app);
        let rt = project.apps.get_mut(name)?;
        rt.retiring.retain(|h| !h.is_finished());
        self.free_ids(&spec.name, name, to);
        for h in rt.instances.split_off(to.min(from) as usize) {
            h.send(Control::Stop);
            rt.retiring.push(h);
        }
        rt.spec = app.clone();
        // Rolling, 0..min(from, to) are replaced one by one by the rollout,
        // each new instance beside the old one until it is ready.
        if !rolling {
            self.replace_in_place(project, &spec.name, &app, name);
        }
        self.add_instances(project, &spec.name, &app, name, from..to);
        rolling.then_some(from.min(to))
    }

    /// Same ports, same files: each new instance starts once the old one
    /// has ended, carrying its restart count and history.
    fn replace_in_place(
        &self,
        project: &mut ProjectRuntime,
        project_name: &str,
        app: &AppSpec,
        name: &str,
    ) {
        let Some(rt) = project.apps.get_mut(name) else {
            return;
        };
        let old = std::mem::take(&mut rt.instances);
        for h in &old {
            h.send(Control::Stop);
        }
        let handles: Vec<InstanceHandle> = old
            .iter()
            .map(|previous| {
                let gate = Gate {
                    after: Some(previous.state.clone()),
                    ..Gate::default()
                };
                let carry = Some(previous.state.borrow().clone());
                self.launch_carrying(
                    project,
                    project_name,
                    app,
                    previous.index,
                    gate,
                    Some(Reason::ConfigChange),
                    carry,
                )
            })
            .collect();
        if let Some(rt) = project.apps.get_mut(name) {
            rt.retiring.extend(old);
            rt.instances = handles;
        }
    }

    /// More instances: the new ones start.
    fn add_instances(
        &self,
        project: &mut ProjectRuntime,
        project_name: &str,
        app: &AppSpec,
        name: &str,
        indexes: std::ops::Range<u32>,
    ) {
        let added: Vec<InstanceHandle> = indexes
            .map(|i| self.launch(project, project_name, app, i, Gate::default(), None))
            .collect();
        if let Some(rt) = project.apps.get_mut(name) {
            rt.instances.extend(added);
        }
    }

    /// A new instance count alone: instances start, or the last ones stop.
    fn scale_app(
        &self,
        project: &mut ProjectRuntime,
        spec: &ProjectSpec,
        name: &str,
        from: u32,
        to: u32,
    ) {
        if to > from {
            let app = spec.apps[name].clone();
            self.add_instances(project, &spec.name, &app, name, from..to);
        } else if let Some(rt) = project.apps.get_mut(name) {
            self.free_ids(&spec.name, name, to);
            let gone = rt.instances.split_off(to as usize);
            for handle in &gone {
                handle.send(Control::Stop);
            }
            rt.retiring.extend(gone);
        }
        if let Some(rt) = project.apps.get_mut(name) {
            rt.spec.instances = to;
        }
    }
}

/// Settings changed in place: each instance takes them without a restart.
fn update_app(project: &mut ProjectRuntime, spec: &ProjectSpec, name: &str) {
    if let Some(rt) = project.apps.get_mut(name) {
        rt.spec.settings = spec.apps[name].settings.clone();
        for handle in &rt.instances {
            handle.send(Control::Update(Box::new(rt.spec.settings.clone())));
        }
    }
}
