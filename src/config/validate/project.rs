//! The top level of the file: the project's name, its shared env and
//! profiles, and the `apps:` mapping, each app's name checked before the
//! app itself is read.

use std::collections::{BTreeMap, BTreeSet};

use super::primitives::{clip, is_name_char, join};
use super::{MAX_NAME_LEN, Parsed, RESERVED_APP_NAMES, Shared, Walker, name_problem};
use crate::config::keys::{TOP_KEYS, suggest};
use crate::config::node::{Node, Pos, Value};
use crate::spec::ProjectSpec;

/// The top-level keys as read: the project's name, its env (profile
/// applied) and the `apps:` node.
struct Top<'n> {
    name: Option<String>,
    env: BTreeMap<String, String>,
    apps: Option<&'n Node>,
}

impl Walker<'_> {
    pub(super) fn project(&mut self, root: &Node) -> Option<ProjectSpec> {
        if matches!(root.value, Value::Null) {
            self.error(
                root.pos,
                "",
                "the file is empty".into(),
                Some(
                    "add an `apps:` mapping, e.g. `apps: { web: { cmd: node server.js } }`".into(),
                ),
            );
            return None;
        }
        let entries = self.map(root, "")?;
        let mut profiles_seen = BTreeSet::new();
        let top = self.top(entries, &mut profiles_seen);
        let name = top.name.unwrap_or_else(|| self.folder_project_name());
        let Some(apps_node) = top.apps else {
            self.error(
                root.pos,
                "apps",
                "missing required key `apps`".into(),
                Some("add `apps:` with at least one app, e.g. `apps: { web: { cmd: node server.js } }`".into()),
            );
            return None;
        };
        let shared = Shared { env: top.env };
        let parsed = self.apps(apps_node, &shared, &mut profiles_seen);
        self.profile_defined(&profiles_seen);
        self.cross_checks(&parsed);
        let apps = parsed
            .into_iter()
            .map(|p| (p.spec.name.clone(), p.spec))
            .collect();
        Some(ProjectSpec {
            name,
            file: self.input.file.clone(),
            profile: self.input.profile.map(str::to_owned),
            env_files: std::mem::take(&mut self.env_files),
            apps,
        })
    }

    /// The top-level keys; records every `env_<profile>` seen.
    fn top<'n>(
        &mut self,
        entries: &'n [(Node, Node)],
        profiles_seen: &mut BTreeSet<String>,
    ) -> Top<'n> {
        let keys = self.keyed(entries, "", TOP_KEYS, true);
        let mut top = Top {
            name: None,
            env: BTreeMap::new(),
            apps: None,
        };
        let mut profile_env = BTreeMap::new();
        for (key, value, _) in &keys {
            match key.as_str() {
                "name" => top.name = self.project_name(value),
                "env" => top.env = self.env(value, "env"),
                "apps" => top.apps = Some(*value),
                profile => {
                    let wanted = profile.strip_prefix("env_");
                    profiles_seen.insert(wanted.unwrap_or_default().to_owned());
                    let parsed = self.env(value, profile);
                    if wanted == self.input.profile {
                        profile_env = parsed;
                    }
                }
            }
        }
        top.env.extend(profile_env);
        top
    }

    /// `name:`, when it is a valid name.
    fn project_name(&mut self, value: &Node) -> Option<String> {
        let n = self.string(value, "name")?;
        if let Some(problem) = name_problem(&n) {
            self.error(
                value.pos,
                "name",
                format!("project name {:?} {problem}", clip(&n)),
                Some("rename the project, e.g. `my-project`".into()),
            );
            return None;
        }
        Some(n)
    }

    /// Every app of the `apps:` mapping that reads without errors.
    fn apps(
        &mut self,
        apps_node: &Node,
        shared: &Shared,
        profiles_seen: &mut BTreeSet<String>,
    ) -> Vec<Parsed> {
        let mut parsed = Vec::new();
        let Some(entries) = self.map(apps_node, "apps") else {
            return parsed;
        };
        let mut seen = BTreeSet::new();
        for (key, value) in entries {
            let Some(app) = self.app_name(key) else {
                continue;
            };
            // A repeated app is reported as a duplicate key (see `parsed`).
            if !seen.insert(app.clone()) {
                continue;
            }
            if let Some(p) = self.app(&app, key.pos, value, shared, profiles_seen) {
                parsed.push(p);
            }
        }
        parsed
    }

    /// An app's key, when it is a name eco can use.
    fn app_name(&mut self, key: &Node) -> Option<String> {
        let Some(app) = key.scalar_string() else {
            self.expected(key, "apps", "an app name");
            return None;
        };
        if let Some(problem) = name_problem(&app) {
            self.error(
                key.pos,
                &join("apps", &clip(&app)),
                format!("app name {:?} {problem}", clip(&app)),
                Some("rename the app, e.g. `my-app`".into()),
            );
            return None;
        }
        if RESERVED_APP_NAMES.contains(&app.as_str()) {
            self.error(
                key.pos,
                &join("apps", &app),
                format!("`{app}` is reserved: on the command line it means every app"),
                Some(format!("rename the app, e.g. `{app}-app` or `main`")),
            );
            return None;
        }
        Some(app)
    }

    /// `--env NAME` must name a profile the file defines somewhere.
    fn profile_defined(&mut self, profiles_seen: &BTreeSet<String>) {
        let Some(wanted) = self.input.profile else {
            return;
        };
        if profiles_seen.contains(wanted) {
            return;
        }
        let known: Vec<&str> = profiles_seen.iter().map(String::as_str).collect();
        self.error(
            Pos::default(),
            "",
            format!(
                "profile `{wanted}` (--env {wanted}) is not defined: no `env_{wanted}` key in the file"
            ),
            suggest(wanted, &known)
                .map(|s| format!("did you mean `--env {s}`?"))
                .or_else(|| Some(format!("add `env_{wanted}:` at the top or in an app"))),
        );
    }

    /// The project's name when the file gives none: its folder's.
    fn folder_project_name(&self) -> String {
        let folder = self.folder();
        let raw = folder
            .file_name()
            .map_or_else(|| "default".into(), |n| n.to_string_lossy().into_owned());
        let cleaned: String = raw
            .chars()
            .map(|c| if is_name_char(c) { c } else { '-' })
            .collect();
        if cleaned.is_empty() {
            "default".into()
        } else {
            // A long folder name must not make log paths too long either.
            cleaned.chars().take(MAX_NAME_LEN).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::MAX_NAME_LEN;
    use super::super::testing::errors;

    #[test]
    fn names_longer_than_64_characters_are_refused() {
        let ok = "a".repeat(MAX_NAME_LEN);
        assert!(errors(&format!("name: {ok}\napps:\n  {ok}: {{cmd: x}}\n")).is_empty());
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(
            errors(&format!("name: {long}\napps:\n  {long}: {{cmd: x}}\n")),
            [
                format!(
                    "1:7 name: project name \"{long}\" is 65 characters long; the limit is 64 (names become log file names)"
                ),
                format!(
                    "3:3 apps.{long}: app name \"{long}\" is 65 characters long; the limit is 64 (names become log file names)"
                ),
            ]
        );
    }

    #[test]
    fn all_is_a_reserved_app_name() {
        assert_eq!(
            errors("apps:\n  all: {cmd: x}\n"),
            ["2:3 apps.all: `all` is reserved: on the command line it means every app"]
        );
        assert!(errors("apps:\n  all-apps: {cmd: x}\n").is_empty());
    }
}
