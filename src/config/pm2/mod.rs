//! PM2 ecosystem files, read as they are: a PM2-shaped tree (an `apps:`
//! list, a bare list, a bare app) is translated into eco's shape, keeping
//! each value's position so errors still point into the user's file. What
//! eco approximates or drops becomes a [`Note`] (a warning for `up`, a
//! comment for `eco import`). Pure: JavaScript files are evaluated
//! elsewhere ([`super::js`]) and reach this module as a JSON tree.
//!
//! One app is translated by [`app`], which hands each PM2 key to the
//! concern that owns it: [`script`] (script, args, interpreter),
//! [`instances`] (instances, exec_mode), [`env`], [`logs`], [`restart`]
//! (restart policy and stopping), [`watch`] and [`ready`] (readiness).

mod app;
mod env;
mod instances;
mod json;
mod logs;
mod ready;
mod restart;
mod script;
#[cfg(test)]
mod tests;
mod watch;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::node::{Node, Pos, Value};
pub use instances::{pm2_cluster_default, pm2_instance_count, pm2_instances};
pub use json::{from_json, to_json};
pub use script::{default_interpreter, pm2_interpreter};

/// Something a PM2 file says that eco does differently or not at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The PM2 key path, e.g. `apps[0].merge_logs` (empty: the whole file).
    pub path: String,
    /// The app it belongs to, by its eco name (`None`: the file).
    pub app: Option<String>,
    pub pos: Pos,
    pub text: String,
}

/// A translated file: eco's tree, the notes, and the errors that only
/// make sense in PM2's terms (position, key path, message, hint).
pub struct Translated {
    pub root: Node,
    pub notes: Vec<Note>,
    pub errors: Vec<(Pos, String, String, Option<String>)>,
}

/// Whether `root` is in PM2's shape rather than eco's.
pub fn is_pm2(root: &Node) -> bool {
    match &root.value {
        Value::Seq(_) => true,
        Value::Map(entries) => entries.iter().any(|(k, v)| {
            matches!(
                (k.scalar_string().as_deref(), &v.value),
                (Some("apps" | "pm2"), Value::Seq(_)) | (Some("script" | "deploy"), _)
            )
        }),
        _ => false,
    }
}

/// What is at a script's path, as far as choosing how PM2 runs it goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScriptKind {
    /// Nothing there: a program looked up in PATH, or a file that is missing.
    Missing,
    Folder,
    /// A binary (PM2's `isBinaryFile`): run directly.
    Binary,
    /// A text file, with its `#!` line if it has one.
    Text {
        shebang: Option<String>,
    },
}

/// The machine a PM2 file is translated for: what PM2 asks of it.
pub trait Machine {
    /// CPUs, for `instances: 0 | 'max' | -N`.
    fn cpus(&self) -> u32;
    /// What is at `path` (absolute).
    fn script(&self, path: &Path) -> ScriptKind;
    /// Whether `program` is in PATH (bash, python, bun).
    fn has(&self, program: &str) -> bool;
}

/// Translates a PM2 document found in `folder` for `machine` (which
/// resolves `instances` and how each script runs).
pub fn translate(root: &Node, machine: &dyn Machine, folder: &Path) -> Translated {
    let mut t = Translator {
        notes: Vec::new(),
        errors: Vec::new(),
        machine,
        folder: folder.to_path_buf(),
    };
    let apps_node = t.apps_node(root);
    let items = t.items(root, apps_node);
    let mut apps: Vec<(Node, Node)> = Vec::new();
    let mut names = BTreeSet::new();
    for (i, item) in items.into_iter().enumerate() {
        if let Some((name, app)) = t.app(i, item, &mut names) {
            apps.push((name, app));
        }
    }
    let pos = apps_node.map_or(root.pos, |n| n.pos);
    let top = vec![(key("apps", pos), node(pos, Value::Map(apps)))];
    Translated {
        root: node(root.pos, Value::Map(top)),
        notes: t.notes,
        errors: t.errors,
    }
}

fn node(pos: Pos, value: Value) -> Node {
    Node { pos, value }
}

fn key(name: &str, pos: Pos) -> Node {
    node(pos, Value::Str(name.to_owned()))
}

fn str_node(pos: Pos, s: &str) -> Node {
    node(pos, Value::Str(s.to_owned()))
}

struct Translator<'m> {
    notes: Vec<Note>,
    errors: Vec<(Pos, String, String, Option<String>)>,
    machine: &'m dyn Machine,
    folder: PathBuf,
}

impl Translator<'_> {
    fn note(&mut self, app: Option<&str>, path: &str, pos: Pos, text: &str) {
        self.notes.push(Note {
            path: path.to_owned(),
            app: app.map(str::to_owned),
            pos,
            text: text.to_owned(),
        });
    }

    fn error(&mut self, pos: Pos, path: &str, message: String, hint: Option<String>) {
        self.errors.push((pos, path.to_owned(), message, hint));
    }

    /// The node holding the apps (a list, or the document as one bare
    /// app); notes what eco does not do at the top (`deploy`, `static`).
    fn apps_node<'r>(&mut self, root: &'r Node) -> Option<&'r Node> {
        let entries = match &root.value {
            Value::Seq(_) => return Some(root),
            Value::Map(entries) => entries,
            _ => return None,
        };
        let get = |name: &str| {
            entries
                .iter()
                .find(|(k, _)| k.scalar_string().as_deref() == Some(name))
        };
        if let Some((deploy, _)) = get("deploy") {
            self.note(
                None,
                "deploy",
                deploy.pos,
                "not supported: eco does not deploy over SSH; ship the files with your \
                 CI, then use `eco export systemd|kubernetes` or `eco startup` on the host",
            );
        }
        if let Some((_, stat)) = get("static") {
            self.note(
                None,
                "static",
                stat.pos,
                "not supported: PM2's static file server",
            );
        }
        match (get("apps"), get("pm2")) {
            (Some((_, apps)), _) | (None, Some((_, apps))) => Some(apps),
            // A bare app: the document is the app.
            (None, None) if get("script").is_some() => Some(root),
            (None, None) => None,
        }
    }

    /// The apps to translate; none (with an error) when the file has no
    /// apps or they are neither PM2's shape nor eco's.
    fn items<'r>(&mut self, root: &Node, apps_node: Option<&'r Node>) -> Vec<&'r Node> {
        let items: Vec<&Node> = match apps_node.map(|n| &n.value) {
            Some(Value::Seq(items)) => items.iter().collect(),
            Some(Value::Map(_)) => apps_node.into_iter().collect(),
            _ => {
                self.errors.push((
                    root.pos,
                    "apps".into(),
                    "a PM2 file needs `apps: [...]`, a list of apps, or one app with `script`"
                        .into(),
                    Some(
                        "e.g. module.exports = { apps: [{ name: 'api', script: 'server.js' }] }"
                            .into(),
                    ),
                ));
                Vec::new()
            }
        };
        if !items.is_empty()
            && items.iter().all(|i| !matches!(i.value, Value::Map(_)))
            && let Some(list) = apps_node
        {
            // Neither shape: say both.
            self.error(
                list.pos,
                "apps",
                format!(
                    "expected a mapping of app names to apps, found a list of {}s",
                    items[0]
                        .value
                        .kind()
                        .trim_start_matches("a ")
                        .trim_start_matches("an ")
                ),
                Some(
                    "eco's shape is `apps: { web: { cmd: node server.js } }`; PM2's is \
                     `apps: [{ name: web, script: server.js }]`"
                        .into(),
                ),
            );
            Vec::new()
        } else {
            items
        }
    }
}

/// PM2 writes numbers as strings too (`"3000"`).
pub(super) fn numeric(v: &Node) -> Node {
    match &v.value {
        Value::Str(s) => match s.trim().parse::<i128>() {
            Ok(n) => node(v.pos, Value::Int(n)),
            Err(_) => v.clone(),
        },
        _ => v.clone(),
    }
}
