//! The planner: a pure function from (desired, observed) to the actions that
//! converge one to the other. No I/O, no clock, no async; deterministic order.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::spec::{AppSpec, ProjectSpec};
use crate::state::Observed;

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// A new app: start instances `0..instances`.
    Start {
        app: String,
        instances: u32,
    },
    /// An app no longer in the file: stop all its instances.
    Stop {
        app: String,
        instances: u32,
    },
    /// What the process receives changed: restart every instance with the new spec.
    Replace {
        app: String,
        from: u32,
        to: u32,
        changes: Vec<String>,
    },
    /// Only the count changed: start or stop the delta, touch nothing else.
    Scale {
        app: String,
        from: u32,
        to: u32,
    },
    /// Fields applied without a restart.
    Update {
        app: String,
        changes: Vec<String>,
    },
    /// Stopped by the user: the new spec is recorded, nothing starts.
    KeepStopped {
        app: String,
    },
    Unchanged {
        app: String,
    },
}

impl Action {
    pub fn app(&self) -> &str {
        match self {
            Action::Start { app, .. }
            | Action::Stop { app, .. }
            | Action::Replace { app, .. }
            | Action::Scale { app, .. }
            | Action::Update { app, .. }
            | Action::KeepStopped { app }
            | Action::Unchanged { app } => app,
        }
    }

    /// True when carrying it out touches no process and no setting.
    pub fn is_noop(&self) -> bool {
        matches!(self, Action::Unchanged { .. } | Action::KeepStopped { .. })
    }
}

/// Computes the plan. Removed apps stop first (dependents before their
/// dependencies), then the rest in dependency order (dependencies first).
pub fn plan(desired: &ProjectSpec, observed: &Observed) -> Vec<Action> {
    let mut actions = Vec::new();
    let removed: BTreeMap<&str, &AppSpec> = observed
        .iter()
        .filter(|(name, _)| !desired.apps.contains_key(*name))
        .map(|(name, app)| (name.as_str(), &app.spec))
        .collect();
    let mut stop_order = dependency_order(&removed);
    stop_order.reverse();
    for name in stop_order {
        actions.push(Action::Stop {
            app: name.to_owned(),
            instances: observed[name].instances,
        });
    }
    let wanted: BTreeMap<&str, &AppSpec> =
        desired.apps.iter().map(|(n, a)| (n.as_str(), a)).collect();
    for name in dependency_order(&wanted) {
        let want = wanted[name];
        let Some(have) = observed.get(name) else {
            actions.push(Action::Start {
                app: name.to_owned(),
                instances: want.instances,
            });
            continue;
        };
        if have.user_stopped {
            actions.push(Action::KeepStopped {
                app: name.to_owned(),
            });
            continue;
        }
        let process_changes = changed_fields(&have.spec.process, &want.process);
        let settings_changes = changed_fields(&have.spec.settings, &want.settings);
        let untouched = process_changes.is_empty()
            && settings_changes.is_empty()
            && have.instances == want.instances;
        if !process_changes.is_empty() {
            actions.push(Action::Replace {
                app: name.to_owned(),
                from: have.instances,
                to: want.instances,
                changes: process_changes,
            });
        } else if have.instances != want.instances {
            actions.push(Action::Scale {
                app: name.to_owned(),
                from: have.instances,
                to: want.instances,
            });
        }
        if !settings_changes.is_empty() {
            actions.push(Action::Update {
                app: name.to_owned(),
                changes: settings_changes,
            });
        }
        if untouched {
            actions.push(Action::Unchanged {
                app: name.to_owned(),
            });
        }
    }
    actions
}

/// True when the plan changes nothing.
pub fn is_empty(actions: &[Action]) -> bool {
    actions.iter().all(Action::is_noop)
}

/// Names in an order where every app comes after the apps it depends on
/// (dependencies outside `apps` are ignored); ties broken by name (Kahn's
/// algorithm over a name-ordered queue).
pub fn dependency_order<'a>(apps: &BTreeMap<&'a str, &AppSpec>) -> Vec<&'a str> {
    let mut waiting_on: BTreeMap<&str, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&str, Vec<&'a str>> = BTreeMap::new();
    for (name, app) in apps {
        let deps: BTreeSet<&str> = app
            .settings
            .depends_on
            .iter()
            .map(String::as_str)
            .filter(|d| apps.contains_key(d) && d != name)
            .collect();
        waiting_on.insert(name, deps.len());
        for dep in deps {
            dependents.entry(dep).or_default().push(name);
        }
    }
    let mut ready: BTreeSet<&'a str> = apps
        .keys()
        .filter(|n| waiting_on.get(*n) == Some(&0))
        .copied()
        .collect();
    let mut order = Vec::with_capacity(apps.len());
    while let Some(name) = ready.pop_first() {
        order.push(name);
        for dependent in dependents.get(name).into_iter().flatten() {
            if let Some(count) = waiting_on.get_mut(dependent) {
                *count -= 1;
                if *count == 0 {
                    ready.insert(dependent);
                }
            }
        }
    }
    if order.len() < apps.len() {
        // A cycle (validation rejects them): place the rest by name.
        let placed: BTreeSet<&str> = order.iter().copied().collect();
        order.extend(apps.keys().filter(|n| !placed.contains(*n)).copied());
    }
    order
}

/// The top-level fields (and `env.KEY`s) that differ between two values.
fn changed_fields<T: Serialize>(old: &T, new: &T) -> Vec<String> {
    let (Ok(serde_json::Value::Object(old)), Ok(serde_json::Value::Object(new))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return vec!["spec".into()];
    };
    let mut changes = Vec::new();
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    for key in keys {
        let (a, b) = (old.get(key), new.get(key));
        if a == b {
            continue;
        }
        match (a, b) {
            (Some(serde_json::Value::Object(a)), Some(serde_json::Value::Object(b)))
                if key == "env" =>
            {
                let vars: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
                for var in vars {
                    if a.get(var) != b.get(var) {
                        changes.push(format!("env.{var}"));
                    }
                }
            }
            _ => changes.push(if key == "argv" {
                "cmd".into()
            } else {
                key.clone()
            }),
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::spec::{Mode, ProcessSpec, Settings};
    use crate::state::ObservedApp;

    fn app(name: &str, instances: u32) -> AppSpec {
        AppSpec {
            name: name.into(),
            process: ProcessSpec {
                argv: vec!["sleep".into(), "100".into()],
                cwd: PathBuf::from("/tmp"),
                env: BTreeMap::new(),
                mode: Mode::Fork,
                increment_var: None,
                listen: vec![],
                pid_file: None,
                watchdog: None,
            },
            instances,
            settings: Settings::default(),
        }
    }

    fn project(apps: Vec<AppSpec>) -> ProjectSpec {
        ProjectSpec {
            name: "p".into(),
            file: PathBuf::from("/tmp/ecosystem.yaml"),
            profile: None,
            env_files: Vec::new(),
            apps: apps.into_iter().map(|a| (a.name.clone(), a)).collect(),
        }
    }

    fn running(apps: Vec<AppSpec>) -> Observed {
        apps.into_iter()
            .map(|a| {
                (
                    a.name.clone(),
                    ObservedApp {
                        instances: a.instances,
                        spec: a,
                        user_stopped: false,
                    },
                )
            })
            .collect()
    }

    fn unchanged(name: &str) -> Action {
        Action::Unchanged { app: name.into() }
    }

    #[test]
    fn identical_input_is_a_no_op() {
        let apps = vec![app("a", 1), app("b", 3)];
        let actions = plan(&project(apps.clone()), &running(apps));
        assert_eq!(actions, vec![unchanged("a"), unchanged("b")]);
        assert!(is_empty(&actions));
    }

    #[test]
    fn empty_state_starts_everything() {
        let actions = plan(&project(vec![app("a", 2)]), &Observed::new());
        assert_eq!(
            actions,
            vec![Action::Start {
                app: "a".into(),
                instances: 2
            }]
        );
        assert!(!is_empty(&actions));
    }

    #[test]
    fn added_app_starts_alone() {
        let actions = plan(
            &project(vec![app("a", 1), app("b", 1)]),
            &running(vec![app("a", 1)]),
        );
        assert_eq!(
            actions,
            vec![
                unchanged("a"),
                Action::Start {
                    app: "b".into(),
                    instances: 1
                }
            ]
        );
    }

    #[test]
    fn removed_app_stops() {
        let actions = plan(
            &project(vec![app("a", 1)]),
            &running(vec![app("a", 1), app("old", 2)]),
        );
        assert_eq!(
            actions,
            vec![
                Action::Stop {
                    app: "old".into(),
                    instances: 2
                },
                unchanged("a")
            ]
        );
    }

    #[test]
    fn env_change_replaces_only_that_app() {
        let mut changed = app("a", 2);
        changed.process.env.insert("PORT".into(), "3001".into());
        let actions = plan(
            &project(vec![changed, app("b", 1)]),
            &running(vec![app("a", 2), app("b", 1)]),
        );
        assert_eq!(
            actions,
            vec![
                Action::Replace {
                    app: "a".into(),
                    from: 2,
                    to: 2,
                    changes: vec!["env.PORT".into()]
                },
                unchanged("b")
            ]
        );
    }

    #[test]
    fn cmd_change_is_named_cmd() {
        let mut changed = app("a", 1);
        changed.process.argv = vec!["sleep".into(), "5".into()];
        let actions = plan(&project(vec![changed]), &running(vec![app("a", 1)]));
        assert!(
            matches!(&actions[0], Action::Replace { changes, .. } if changes == &["cmd"]),
            "{actions:?}"
        );
    }

    #[test]
    fn scaling_touches_only_the_delta() {
        let up = plan(&project(vec![app("a", 4)]), &running(vec![app("a", 2)]));
        assert_eq!(
            up,
            vec![Action::Scale {
                app: "a".into(),
                from: 2,
                to: 4
            }]
        );
        let down = plan(&project(vec![app("a", 2)]), &running(vec![app("a", 4)]));
        assert_eq!(
            down,
            vec![Action::Scale {
                app: "a".into(),
                from: 4,
                to: 2
            }]
        );
    }

    #[test]
    fn in_place_fields_restart_nothing() {
        let mut changed = app("a", 1);
        changed.settings.max_restarts = 3;
        changed.settings.max_memory = Some(1 << 20);
        let actions = plan(&project(vec![changed]), &running(vec![app("a", 1)]));
        assert_eq!(
            actions,
            vec![Action::Update {
                app: "a".into(),
                changes: vec!["max_memory".into(), "max_restarts".into()]
            }]
        );
    }

    #[test]
    fn rename_is_stop_then_start() {
        let actions = plan(&project(vec![app("new", 1)]), &running(vec![app("old", 1)]));
        assert_eq!(
            actions,
            vec![
                Action::Stop {
                    app: "old".into(),
                    instances: 1
                },
                Action::Start {
                    app: "new".into(),
                    instances: 1
                }
            ]
        );
    }

    #[test]
    fn user_stopped_app_stays_stopped() {
        let mut observed = running(vec![app("a", 1)]);
        if let Some(a) = observed.get_mut("a") {
            a.user_stopped = true;
        }
        let mut changed = app("a", 3);
        changed.process.env.insert("X".into(), "1".into());
        let actions = plan(&project(vec![changed]), &observed);
        assert_eq!(actions, vec![Action::KeepStopped { app: "a".into() }]);
    }

    #[test]
    fn dependencies_start_first_and_stop_last() {
        let mut web = app("web", 1);
        web.settings.depends_on = vec!["db".into()];
        let mut api = app("api", 1);
        api.settings.depends_on = vec!["web".into()];
        let db = app("db", 1);
        let starts = plan(
            &project(vec![web.clone(), api.clone(), db.clone()]),
            &Observed::new(),
        );
        let order: Vec<&str> = starts.iter().map(Action::app).collect();
        assert_eq!(order, vec!["db", "web", "api"]);
        let stops = plan(&project(vec![]), &running(vec![web, api, db]));
        let order: Vec<&str> = stops.iter().map(Action::app).collect();
        assert_eq!(order, vec!["api", "web", "db"]);
    }
}
