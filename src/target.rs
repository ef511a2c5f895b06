//! Targets: what `app`, `project/app`, `app:N`, `project` and `all` name on
//! the command line, resolved against what is applied. Pure: no I/O.

use serde::{Deserialize, Serialize};

use crate::config::keys::suggest;

/// A resolved target: one app, or one instance of it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Selected {
    pub project: String,
    pub app: String,
    pub instance: Option<u32>,
}

impl std::fmt::Display for Selected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.instance {
            Some(i) => write!(f, "{}:{i}", self.app),
            None => f.write_str(&self.app),
        }
    }
}

/// One applied app, as targets see it.
#[derive(Clone, Copy, Debug)]
pub struct Known<'a> {
    pub project: &'a str,
    pub app: &'a str,
    pub instances: u32,
}

/// A target that names nothing, or more than one thing (invalid input).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum TargetError {
    #[error("`{index}` in `{target}` is not an instance number")]
    BadInstance { target: String, index: String },
    #[error("no app named `{name}`")]
    NoSuchApp {
        name: String,
        suggestion: Option<String>,
        nothing_runs: bool,
    },
    #[error("`{app}` has no instance {index} (it has {count})")]
    NoInstance { app: String, index: u32, count: u32 },
    #[error("`{name}` exists in {} projects: {}", candidates.len(), candidates.join(", "))]
    Ambiguous {
        name: String,
        candidates: Vec<String>,
    },
    #[error("`{name}` names both a project and an app: project `{name}`, {}", apps.join(", "))]
    ProjectOrApp { name: String, apps: Vec<String> },
    #[error("`{target}` names one instance; this command takes a whole app")]
    WholeAppOnly { target: String },
}

impl TargetError {
    /// The next step for the user.
    pub fn hint(&self) -> Option<String> {
        match self {
            TargetError::BadInstance { .. } => Some("write app:INSTANCE, e.g. web:0".into()),
            TargetError::NoSuchApp {
                suggestion: Some(s),
                ..
            } => Some(format!("did you mean `{s}`?")),
            TargetError::NoSuchApp {
                nothing_runs: true, ..
            } => Some("nothing runs yet: `eco up` starts the apps of ecosystem.yaml".into()),
            TargetError::NoSuchApp { .. } => Some("`eco ls` lists the apps".into()),
            TargetError::NoInstance { .. } => None,
            TargetError::Ambiguous { .. } => Some("name it as project/app".into()),
            TargetError::ProjectOrApp { name, .. } => Some(format!(
                "write `{name}/` for the project, or project/app for the app"
            )),
            TargetError::WholeAppOnly { .. } => Some("name the app without `:N`".into()),
        }
    }
}

/// Resolves `target` against the applied apps (ordered by project, app).
pub fn resolve(known: &[Known<'_>], target: &str) -> Result<Vec<Selected>, TargetError> {
    let select = |filter: &dyn Fn(&Known<'_>) -> bool, instance: Option<u32>| -> Vec<Selected> {
        known
            .iter()
            .filter(|k| filter(k))
            .map(|k| Selected {
                project: k.project.to_owned(),
                app: k.app.to_owned(),
                instance,
            })
            .collect()
    };
    if target == "all" {
        return Ok(select(&|_| true, None));
    }
    let (name, instance) = match target.rsplit_once(':') {
        Some((name, index)) => match index.parse::<u32>() {
            Ok(i) => (name, Some(i)),
            Err(_) => {
                return Err(TargetError::BadInstance {
                    target: target.to_owned(),
                    index: index.to_owned(),
                });
            }
        },
        None => (target, None),
    };
    let (project, app) = match name.split_once('/') {
        Some((p, "")) => return Ok(select(&|k| k.project == p, instance)),
        Some((p, a)) => (Some(p), a),
        None => (None, name),
    };
    let is_project = project.is_none() && known.iter().any(|k| k.project == app);
    let matches: Vec<&Known<'_>> = known
        .iter()
        .filter(|k| k.app == app && project.is_none_or(|want| want == k.project))
        .collect();
    if is_project {
        if matches.is_empty() {
            // A bare project name selects all of its apps.
            return Ok(select(&|k| k.project == app, instance));
        }
        return Err(TargetError::ProjectOrApp {
            name: app.to_owned(),
            apps: matches
                .iter()
                .map(|k| format!("{}/{}", k.project, k.app))
                .collect(),
        });
    }
    match matches.as_slice() {
        [] => {
            let names: Vec<&str> = known.iter().map(|k| k.app).collect();
            Err(TargetError::NoSuchApp {
                name: name.to_owned(),
                suggestion: suggest(app, &names).map(str::to_owned),
                nothing_runs: names.is_empty(),
            })
        }
        [k] => {
            if let Some(i) = instance
                && i >= k.instances
            {
                return Err(TargetError::NoInstance {
                    app: k.app.to_owned(),
                    index: i,
                    count: k.instances,
                });
            }
            Ok(vec![Selected {
                project: k.project.to_owned(),
                app: k.app.to_owned(),
                instance,
            }])
        }
        many => Err(TargetError::Ambiguous {
            name: app.to_owned(),
            candidates: many
                .iter()
                .map(|k| format!("{}/{}", k.project, k.app))
                .collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> Vec<Known<'static>> {
        vec![
            Known {
                project: "p1",
                app: "api",
                instances: 2,
            },
            Known {
                project: "p1",
                app: "p2",
                instances: 1,
            },
            Known {
                project: "p2",
                app: "web",
                instances: 1,
            },
            Known {
                project: "shop",
                app: "web",
                instances: 3,
            },
        ]
    }

    fn sel(project: &str, app: &str, instance: Option<u32>) -> Selected {
        Selected {
            project: project.into(),
            app: app.into(),
            instance,
        }
    }

    #[test]
    fn every_form_resolves() {
        let k = known();
        assert_eq!(
            resolve(&k, "api").expect("valid"),
            vec![sel("p1", "api", None)]
        );
        assert_eq!(
            resolve(&k, "api:1").expect("valid"),
            vec![sel("p1", "api", Some(1))]
        );
        assert_eq!(
            resolve(&k, "shop/web:2").expect("valid"),
            vec![sel("shop", "web", Some(2))]
        );
        assert_eq!(
            resolve(&k, "shop").expect("valid"),
            vec![sel("shop", "web", None)]
        );
        assert_eq!(
            resolve(&k, "p2/").expect("valid"),
            vec![sel("p2", "web", None)]
        );
        assert_eq!(resolve(&k, "all").expect("valid").len(), 4);
    }

    #[test]
    fn wrong_targets_say_why() {
        let k = known();
        assert!(matches!(
            resolve(&k, "web"),
            Err(TargetError::Ambiguous { candidates, .. }) if candidates == ["p2/web", "shop/web"]
        ));
        assert!(matches!(
            resolve(&k, "p2"),
            Err(TargetError::ProjectOrApp { apps, .. }) if apps == ["p1/p2"]
        ));
        assert!(matches!(
            resolve(&k, "apx"),
            Err(TargetError::NoSuchApp { suggestion: Some(s), .. }) if s == "api"
        ));
        assert!(matches!(
            resolve(&k, "api:2"),
            Err(TargetError::NoInstance { count: 2, .. })
        ));
        assert!(matches!(
            resolve(&k, "api:x"),
            Err(TargetError::BadInstance { .. })
        ));
        assert!(matches!(
            resolve(&[], "api"),
            Err(TargetError::NoSuchApp {
                nothing_runs: true,
                ..
            })
        ));
    }
}
