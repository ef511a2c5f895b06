//! Targets: what `app`, `project/app`, `app:N`, `project`, `all` and a
//! numeric id (`3`, PM2's `id` column) name on the command line, resolved
//! against what is applied. Pure: no I/O.
//!
//! A target of digits only is an instance's id. App and project names may
//! be digits too (`0` is a valid name): when digits name both an id and an
//! app or project, the target is refused and both spellings are offered
//! (`web:1` for the instance, `shop/0` for the app), rather than guessing
//! (PM2 always takes digits as an id). Digits that name no id but do name
//! an app or project are that name, as before ids existed.

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

/// One instance's id, as targets see it.
#[derive(Clone, Copy, Debug)]
pub struct Numbered<'a> {
    pub id: u32,
    pub project: &'a str,
    pub app: &'a str,
    pub instance: u32,
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
    #[error("no instance has id {id}")]
    NoSuchId {
        id: String,
        /// The ids in use, as ranges (`0-3, 5`); empty when nothing runs.
        in_use: String,
    },
    #[error("`{id}` is both the id of {instance} and the name of {}", names.join(", "))]
    IdOrName {
        id: String,
        /// The instance the id names, as `project/app:N`.
        instance: String,
        /// What the name names: `project/app` for apps, `project/` for a project.
        names: Vec<String>,
    },
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
            TargetError::WholeAppOnly { target } if !target.contains(':') => Some(
                "that is an instance's id: name its app instead (`eco ls` shows the app of each id); `eco scale APP N` sets how many instances run".into(),
            ),
            TargetError::WholeAppOnly { .. } => Some("name the app without `:N`".into()),
            TargetError::NoSuchId { in_use, .. } if in_use.is_empty() => {
                Some("nothing runs yet: `eco up` starts the apps of ecosystem.yaml".into())
            }
            TargetError::NoSuchId { in_use, .. } => Some(format!(
                "`eco ls` shows each instance's id in the `id` column (in use: {in_use})"
            )),
            TargetError::IdOrName {
                instance, names, ..
            } => Some(format!(
                "write `{instance}` for the instance, or `{}` for the {}",
                names.join("` or `"),
                if names.iter().all(|n| n.ends_with('/')) {
                    "project"
                } else {
                    "app"
                }
            )),
        }
    }
}

/// Resolves `target` against the applied apps (ordered by project, app)
/// and the instances' ids.
pub fn resolve(
    known: &[Known<'_>],
    ids: &[Numbered<'_>],
    target: &str,
) -> Result<Vec<Selected>, TargetError> {
    if let Some(by_id) = resolve_id(known, ids, target) {
        return by_id;
    }
    resolve_name(known, target)
}

/// A target of digits only: the instance with that id. None when it is
/// not an id but names an app or a project.
fn resolve_id(
    known: &[Known<'_>],
    ids: &[Numbered<'_>],
    target: &str,
) -> Option<Result<Vec<Selected>, TargetError>> {
    if target.is_empty() || !target.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let numbered = target
        .parse::<u32>()
        .ok()
        .and_then(|id| ids.iter().find(|n| n.id == id));
    let mut names: Vec<String> = known
        .iter()
        .filter(|k| k.app == target)
        .map(|k| format!("{}/{}", k.project, k.app))
        .collect();
    if names.is_empty() && known.iter().any(|k| k.project == target) {
        names.push(format!("{target}/"));
    }
    match (numbered, names.is_empty()) {
        (Some(n), true) => Some(Ok(vec![Selected {
            project: n.project.to_owned(),
            app: n.app.to_owned(),
            instance: Some(n.instance),
        }])),
        (Some(n), false) => Some(Err(TargetError::IdOrName {
            id: target.to_owned(),
            instance: format!("{}/{}:{}", n.project, n.app, n.instance),
            names,
        })),
        (None, false) => None,
        (None, true) => Some(Err(TargetError::NoSuchId {
            id: target.to_owned(),
            in_use: ranges(ids.iter().map(|n| n.id)),
        })),
    }
}

/// `0-3, 5, 7-8`: numbers as ranges, ascending.
fn ranges(ids: impl Iterator<Item = u32>) -> String {
    let mut ids: Vec<u32> = ids.collect();
    ids.sort_unstable();
    ids.dedup();
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(", ")
}

/// A target by name: `app`, `project/app`, `app:N`, `project`, `all`.
fn resolve_name(known: &[Known<'_>], target: &str) -> Result<Vec<Selected>, TargetError> {
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
            resolve(&k, &[], "api").expect("valid"),
            vec![sel("p1", "api", None)]
        );
        assert_eq!(
            resolve(&k, &[], "api:1").expect("valid"),
            vec![sel("p1", "api", Some(1))]
        );
        assert_eq!(
            resolve(&k, &[], "shop/web:2").expect("valid"),
            vec![sel("shop", "web", Some(2))]
        );
        assert_eq!(
            resolve(&k, &[], "shop").expect("valid"),
            vec![sel("shop", "web", None)]
        );
        assert_eq!(
            resolve(&k, &[], "p2/").expect("valid"),
            vec![sel("p2", "web", None)]
        );
        assert_eq!(resolve(&k, &[], "all").expect("valid").len(), 4);
    }

    #[test]
    fn wrong_targets_say_why() {
        let k = known();
        assert!(matches!(
            resolve(&k, &[], "web"),
            Err(TargetError::Ambiguous { candidates, .. }) if candidates == ["p2/web", "shop/web"]
        ));
        assert!(matches!(
            resolve(&k, &[], "p2"),
            Err(TargetError::ProjectOrApp { apps, .. }) if apps == ["p1/p2"]
        ));
        assert!(matches!(
            resolve(&k, &[], "apx"),
            Err(TargetError::NoSuchApp { suggestion: Some(s), .. }) if s == "api"
        ));
        assert!(matches!(
            resolve(&k, &[], "api:2"),
            Err(TargetError::NoInstance { count: 2, .. })
        ));
        assert!(matches!(
            resolve(&k, &[], "api:x"),
            Err(TargetError::BadInstance { .. })
        ));
        assert!(matches!(
            resolve(&[], &[], "api"),
            Err(TargetError::NoSuchApp {
                nothing_runs: true,
                ..
            })
        ));
    }

    fn numbered() -> Vec<Numbered<'static>> {
        [
            ("p1", "api", 0),
            ("p1", "api", 1),
            ("shop", "web", 2),
            ("p2", "web", 0),
        ]
        .into_iter()
        .zip([0, 1, 3, 4])
        .map(|((project, app, instance), id)| Numbered {
            id,
            project,
            app,
            instance,
        })
        .collect()
    }

    #[test]
    fn an_id_names_its_instance() {
        let (k, ids) = (known(), numbered());
        for (target, want) in [
            ("0", sel("p1", "api", Some(0))),
            ("1", sel("p1", "api", Some(1))),
            ("3", sel("shop", "web", Some(2))),
            ("4", sel("p2", "web", Some(0))),
        ] {
            assert_eq!(resolve(&k, &ids, target), Ok(vec![want]), "{target}");
        }
        // Names still resolve as names when ids are there.
        assert_eq!(
            resolve(&k, &ids, "api:1"),
            Ok(vec![sel("p1", "api", Some(1))])
        );
    }

    #[test]
    fn an_id_that_names_nothing_says_which_ids_exist() {
        let (k, ids) = (known(), numbered());
        for target in ["2", "5", "99999999999999999999"] {
            let err = resolve(&k, &ids, target).expect_err(target);
            assert!(
                matches!(&err, TargetError::NoSuchId { id, in_use } if id == target && in_use == "0-1, 3-4"),
                "{err:?}"
            );
            assert_eq!(err.to_string(), format!("no instance has id {target}"));
            assert!(
                err.hint().is_some_and(|h| h.contains("0-1, 3-4")),
                "{err:?}"
            );
        }
        let err = resolve(&[], &[], "0").expect_err("nothing runs");
        assert!(
            err.hint().is_some_and(|h| h.contains("nothing runs yet")),
            "{err:?}"
        );
        // Not digits only: a name, as before.
        assert!(matches!(
            resolve(&k, &ids, "+1"),
            Err(TargetError::NoSuchApp { .. })
        ));
    }

    #[test]
    fn digits_that_are_both_an_id_and_a_name_are_refused_with_both_spellings() {
        let mut k = known();
        k.push(Known {
            project: "nums",
            app: "0",
            instances: 1,
        });
        k.push(Known {
            project: "7",
            app: "x",
            instances: 1,
        });
        let mut ids = numbered();
        ids.push(Numbered {
            id: 7,
            project: "nums",
            app: "0",
            instance: 0,
        });
        let err = resolve(&k, &ids, "0").expect_err("both");
        assert_eq!(
            err.to_string(),
            "`0` is both the id of p1/api:0 and the name of nums/0"
        );
        assert_eq!(
            err.hint().as_deref(),
            Some("write `p1/api:0` for the instance, or `nums/0` for the app")
        );
        let err = resolve(&k, &ids, "7").expect_err("both");
        assert!(
            matches!(&err, TargetError::IdOrName { names, .. } if names == &["7/"]),
            "{err:?}"
        );
        assert!(err.hint().is_some_and(|h| h.ends_with("for the project")));
        // Each spelling then resolves.
        assert_eq!(
            resolve(&k, &ids, "nums/0"),
            Ok(vec![sel("nums", "0", None)])
        );
        assert_eq!(
            resolve(&k, &ids, "p1/api:0"),
            Ok(vec![sel("p1", "api", Some(0))])
        );
        // Digits that are no id but an app's name are the app.
        assert_eq!(resolve(&k, &[], "0"), Ok(vec![sel("nums", "0", None)]));
    }

    #[test]
    fn ranges_are_compact() {
        assert_eq!(ranges([5, 0, 1, 2, 7, 8].into_iter()), "0-2, 5, 7-8");
        assert_eq!(ranges(std::iter::empty()), "");
    }
}
