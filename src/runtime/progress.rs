//! Counts for the progress of long requests (`up --wait`, `reload`,
//! `restart`, `scale`, `kill`): how many of the instances a request covers
//! are online, online since it began, or still running. Read-only, cheap
//! (one look at each instance's state), so the daemon samples it often.

use std::time::SystemTime;

use super::instance::{InstanceHandle, InstanceState};
use std::collections::BTreeMap;

use super::{Engine, ProjectRuntime};
use crate::state::Status;
use crate::target::Selected;

/// Which instances a count covers.
#[derive(Debug, Clone)]
pub enum Scope {
    /// Every instance of a project, except those of apps the user stopped
    /// (`up --wait` does not wait for them).
    Project(String),
    /// The instances a target selected.
    Targets(Vec<Selected>),
    /// Every instance, retiring ones too (`kill`).
    All,
}

/// The instances of a scope, counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub total: u64,
    /// Online, or ended on their own (`up --wait` counts both as done).
    pub online: u64,
    /// Online, and started at or after the `since` of the count.
    pub fresh: u64,
    /// Their task has not ended yet.
    pub running: u64,
}

impl Tally {
    fn add(&mut self, state: &InstanceState, finished: bool, since: SystemTime) {
        self.total += 1;
        let online = state.status == Status::Online;
        if online || (state.status == Status::Stopped && state.last_exit.is_some()) {
            self.online += 1;
        }
        if online && state.started.is_some_and(|s| s >= since) {
            self.fresh += 1;
        }
        if !finished {
            self.running += 1;
        }
    }
}

impl Engine {
    /// Counts the instances of `scope` now; `since` is when the request began.
    pub async fn tally(&self, scope: &Scope, since: SystemTime) -> Tally {
        count(&*self.projects.lock().await, scope, since)
    }

    /// [`Engine::tally`] if the engine's lock is free now, else None.
    pub fn try_tally(&self, scope: &Scope, since: SystemTime) -> Option<Tally> {
        Some(count(&*self.projects.try_lock().ok()?, scope, since))
    }
}

fn count(projects: &BTreeMap<String, ProjectRuntime>, scope: &Scope, since: SystemTime) -> Tally {
    let mut tally = Tally::default();
    let mut add = |handle: &InstanceHandle| {
        tally.add(&handle.state.borrow(), handle.is_finished(), since);
    };
    match scope {
        Scope::Project(name) => {
            for app in projects.get(name).iter().flat_map(|p| p.apps.values()) {
                if !app.user_stopped {
                    app.instances.iter().for_each(&mut add);
                }
            }
        }
        Scope::Targets(selected) => {
            for sel in selected {
                let app = projects
                    .get(&sel.project)
                    .and_then(|p| p.apps.get(&sel.app));
                for handle in app
                    .iter()
                    .flat_map(|a| super::ops::pick(&a.instances, sel.instance))
                {
                    add(handle);
                }
            }
        }
        Scope::All => {
            for app in projects.values().flat_map(|p| p.apps.values()) {
                app.all_handles().for_each(&mut add);
            }
        }
    }
    tally
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::state::Exit;

    fn state(status: Status, started: Option<SystemTime>) -> InstanceState {
        let mut state = super::super::instance::stopped(0).state.borrow().clone();
        state.status = status;
        state.started = started;
        state
    }

    #[test]
    fn counts_online_fresh_and_running() {
        let since = SystemTime::now();
        let before = since - Duration::from_secs(5);
        let mut tally = Tally::default();
        tally.add(&state(Status::Online, Some(before)), false, since);
        tally.add(&state(Status::Online, Some(since)), false, since);
        tally.add(&state(Status::Starting, Some(since)), false, since);
        let mut ended = state(Status::Stopped, None);
        ended.last_exit = Some(Exit::Code(0));
        tally.add(&ended, true, since);
        tally.add(&state(Status::Stopped, None), true, since);
        assert_eq!(
            tally,
            Tally {
                total: 5,
                online: 3,
                fresh: 1,
                running: 3,
            }
        );
    }
}
