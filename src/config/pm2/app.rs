//! One PM2 app → eco's app: its name, then each key handed to the concern
//! that owns it ([`Translator::key`]), then what only the whole app
//! decides (the command, readiness, defaults PM2 applies), in eco's key
//! order.

use std::collections::BTreeSet;

use super::ready::ready_key;
use super::{Node, Pos, Translator, Value, key, node, str_node};
use crate::config::keys::pm2_key;

/// PM2 keys eco reads but that change nothing here, with why.
const NO_EFFECT: &[(&str, &str)] = &[
    ("vizion", "PM2's version-control metadata"),
    ("pmx", "PM2.io metrics"),
    ("automation", "PM2.io metrics"),
    (
        "source_map_support",
        "Node loads source maps itself (--enable-source-maps)",
    ),
    ("treekill", "eco always stops the whole process group"),
    ("force", "eco never starts an app twice"),
    ("trace", "PM2.io tracing"),
    ("disable_trace", "PM2.io tracing"),
    ("windowsHide", "Windows only"),
    ("append_env_to_name", "eco names instances app.N"),
    ("instance_var", ""),
    ("log_type", "eco's logs are text lines"),
    (
        "combine_logs",
        "eco merges instances' output into one file per app",
    ),
    (
        "merge_logs",
        "eco merges instances' output into one file per app",
    ),
    (
        "filter_env",
        "eco passes its own environment under the file's env",
    ),
    ("shutdown_with_message", "eco stops apps with a signal"),
    ("post_update", "PM2.io only"),
    ("min_uptime_check", ""),
    ("version", "informational"),
    ("uid", "run eco as that user instead"),
    ("gid", "run eco as that user instead"),
    ("user", "run eco as that user instead"),
    ("disable_logs", "use out_file: /dev/null"),
    ("containerized", ""),
    ("node_version", "use interpreter: with a path"),
    ("exec_interpreter", ""),
];

/// One key of a PM2 app, as the concern reading it sees it.
pub(super) struct Entry<'e, 'a> {
    /// The app's eco name (notes name it).
    pub(super) app: &'e str,
    /// The PM2 key.
    pub(super) name: &'e str,
    pub(super) value: &'a Node,
    /// Where the key itself is.
    pub(super) pos: Pos,
    /// `apps[<i>].<key>`.
    pub(super) path: &'e str,
}

impl Entry<'_, '_> {
    /// Writes eco's key `eco` (at this key's position) with `value`.
    pub(super) fn put(&self, out: &mut Vec<(Node, Node)>, eco: &str, value: Node) {
        out.push((key(eco, self.pos), value));
    }
}

/// An app's PM2 values, gathered before eco's keys are written.
#[derive(Default)]
pub(super) struct Gathered<'a> {
    pub(super) script: Option<&'a Node>,
    pub(super) args: Option<&'a Node>,
    pub(super) interpreter: Option<&'a Node>,
    pub(super) interpreter_args: Vec<&'a Node>,
    pub(super) port: Option<&'a Node>,
    pub(super) wait_ready: Option<bool>,
    pub(super) listen_timeout: Option<&'a Node>,
    pub(super) cluster: bool,
    pub(super) instance_var: Option<&'a Node>,
    pub(super) autostart: Option<bool>,
    pub(super) exp_backoff: Option<&'a Node>,
    pub(super) env: Option<&'a Node>,
    pub(super) stop_signal: bool,
    /// `exec_mode` written (else PM2 picks it: [`super::pm2_cluster_default`]).
    pub(super) exec_mode: bool,
    pub(super) instances: Option<&'a Node>,
    pub(super) cwd: Option<&'a Node>,
    pub(super) pid_file: Option<&'a Node>,
}

impl Translator<'_> {
    /// One PM2 app → (eco name key, eco app mapping).
    pub(super) fn app(
        &mut self,
        i: usize,
        item: &Node,
        names: &mut BTreeSet<String>,
    ) -> Option<(Node, Node)> {
        let base = format!("apps[{i}]");
        let Value::Map(entries) = &item.value else {
            self.error(
                item.pos,
                &base,
                format!(
                    "expected an app (a mapping with `script`), found {}",
                    item.value.kind()
                ),
                None,
            );
            return None;
        };
        // The name first: notes and errors name the app.
        let (app, name_pos) = self.app_name(i, item, entries, &base, names)?;
        let mut out: Vec<(Node, Node)> = Vec::new();
        let mut g = Gathered::default();
        for (k, v) in entries {
            let Some(pm2) = k.scalar_string() else {
                continue;
            };
            let path = format!("{base}.{pm2}");
            let entry = Entry {
                app: &app,
                name: &pm2,
                value: v,
                pos: k.pos,
                path: &path,
            };
            self.key(&mut g, &mut out, &entry);
        }
        // env: PM2 stringifies non-scalar values; `port` sets PORT.
        let mut env_entries = self.env_entries(&g, &app, &base);
        let (argv, interpreter, script) = self.argv(&g, item, &app, &base)?;
        out.push((key("cmd", script.pos), node(script.pos, Value::Seq(argv))));
        let node_app = interpreter
            .as_deref()
            .is_some_and(|i| i.rsplit('/').next().is_some_and(|b| b.ends_with("node")));
        python_unbuffered(&mut env_entries, interpreter.as_deref(), script.pos);
        cluster_by_default(&mut g, &mut out, node_app, item.pos);
        write_pid_file(&g, &mut out);
        if !env_entries.is_empty() {
            let pos = g.env.map_or(item.pos, |e| e.pos);
            out.push((key("env", pos), node(pos, Value::Map(env_entries))));
        }
        self.readiness(&g, &mut out, node_app, &app, &base, item.pos);
        self.backoff(&g, &mut out, &app, &base);
        self.autostart(&g, &mut out, &app, &base, item.pos);
        if !g.stop_signal {
            // PM2 stops apps with SIGINT (PM2_KILL_SIGNAL); PM2 apps handle it.
            out.push((key("stop_signal", item.pos), str_node(item.pos, "SIGINT")));
        }
        out.sort_by_key(|(k, _)| rank(k));
        Some((key(&app, name_pos), node(item.pos, Value::Map(out))))
    }

    /// Hands a key to the concern that reads it; eco's own keys are taken
    /// as they are, and anything else is noted as having no effect.
    fn key<'a>(&mut self, g: &mut Gathered<'a>, out: &mut Vec<(Node, Node)>, e: &Entry<'_, 'a>) {
        let claimed = self.script_key(g, e)
            || self.instances_key(g, out, e)
            || self.env_key(g, out, e)
            || self.watch_key(out, e)
            || self.restart_key(g, out, e)
            || self.logs_key(out, e)
            || ready_key(g, e)
            || self.place_key(g, out, e);
        if !claimed {
            self.other_key(out, e);
        }
    }

    /// `name`, `cwd`, `pid_file` and `namespace`: where the app lives.
    fn place_key<'a>(
        &mut self,
        g: &mut Gathered<'a>,
        out: &mut Vec<(Node, Node)>,
        e: &Entry<'_, 'a>,
    ) -> bool {
        let v = e.value;
        match e.name {
            "name" => {}
            "cwd" => {
                g.cwd = Some(v);
                e.put(out, "cwd", v.clone());
            }
            // PM2 writes the pid there itself; `pid` is its alias.
            "pid_file" | "pid" => g.pid_file = Some(v),
            "namespace" => self.note(
                Some(e.app),
                e.path,
                e.pos,
                "dropped: eco groups apps by project (the file); act on them all with `eco restart PROJECT`",
            ),
            _ => return false,
        }
        true
    }

    /// eco's own keys are taken as they are; other keys are noted.
    fn other_key(&mut self, out: &mut Vec<(Node, Node)>, e: &Entry<'_, '_>) {
        if crate::config::keys::APP_KEYS.contains(&e.name) {
            e.put(out, e.name, e.value.clone());
            return;
        }
        let text = if let Some((_, why)) = NO_EFFECT.iter().find(|(k, _)| *k == e.name) {
            if why.is_empty() {
                "ignored: no effect in eco".to_owned()
            } else {
                format!("ignored: {why}")
            }
        } else {
            let hint = pm2_key(e.name)
                .map(|k| format!(" ({})", k.how))
                .unwrap_or_default();
            format!("ignored: not a PM2 key eco knows{hint}")
        };
        self.note(Some(e.app), e.path, e.pos, &text);
    }

    /// The app's eco name (PM2's, or the script's stem, made a valid eco
    /// name) and where it is; `None` when it is not a string or is taken.
    fn app_name(
        &mut self,
        i: usize,
        item: &Node,
        entries: &[(Node, Node)],
        base: &str,
        names: &mut BTreeSet<String>,
    ) -> Option<(String, Pos)> {
        let lookup = |name: &str| {
            entries
                .iter()
                .find(|(k, _)| k.scalar_string().as_deref() == Some(name))
        };
        let (name, name_pos) = match lookup("name") {
            Some((k, v)) => match &v.value {
                Value::Str(s) => (s.clone(), k.pos),
                other => {
                    self.error(
                        v.pos,
                        &format!("{base}.name"),
                        format!("expected a string, found {}", other.kind()),
                        None,
                    );
                    return None;
                }
            },
            None => {
                let script = ["script", "exec", "cmd", "command"]
                    .into_iter()
                    .find_map(lookup)
                    .and_then(|(_, v)| v.scalar_string());
                (script_stem(script.as_deref(), i), item.pos)
            }
        };
        let eco_name = eco_name(&name, i);
        if eco_name != name {
            let text =
                format!("renamed: PM2 name {name:?} is `{eco_name}` in eco (A-Z a-z 0-9 _ . -)");
            self.note(Some(&eco_name), &format!("{base}.name"), name_pos, &text);
        }
        if !names.insert(eco_name.clone()) {
            self.error(
                name_pos,
                &format!("{base}.name"),
                format!("two apps are named `{eco_name}`"),
                Some("give each app its own `name`".into()),
            );
            return None;
        }
        Some((eco_name, name_pos))
    }
}

/// An app with no `name` is named after its script's file, without the
/// extension (PM2's default); `app<i>` when there is no script.
fn script_stem(script: Option<&str>, i: usize) -> String {
    script.map_or_else(
        || format!("app{i}"),
        |s| {
            let last = s.split('/').next_back().unwrap_or_default().to_owned();
            match last.rsplit_once('.') {
                Some((stem, _)) if !stem.is_empty() => stem.to_owned(),
                _ => last,
            }
        },
    )
}

/// PM2's `name` as an eco name: other characters become `-`.
fn eco_name(name: &str, i: usize) -> String {
    let eco: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    if eco.is_empty() {
        format!("app{i}")
    } else {
        eco
    }
}

/// PM2 sets `PYTHONUNBUFFERED=1` for Python apps, over the file's env.
fn python_unbuffered(env: &mut Vec<(Node, Node)>, interpreter: Option<&str>, pos: Pos) {
    if interpreter.is_some_and(|i| i.contains("python")) {
        env.retain(|(k, _)| k.scalar_string().as_deref() != Some("PYTHONUNBUFFERED"));
        env.push((key("PYTHONUNBUFFERED", pos), str_node(pos, "1")));
    }
}

/// PM2 runs a Node app with `instances` and no `exec_mode` in cluster
/// mode (Common.determineExecMode).
fn cluster_by_default(g: &mut Gathered<'_>, out: &mut Vec<(Node, Node)>, node_app: bool, pos: Pos) {
    if !g.exec_mode && node_app && g.instances.is_some_and(super::pm2_cluster_default) {
        g.cluster = true;
        out.push((key("mode", pos), str_node(pos, "cluster")));
    }
}

/// PM2's `pid_file` is the file PM2 writes, which is eco's
/// `write_pid_file`. PM2 resolves it against the app's cwd; eco's key
/// against the file's folder.
fn write_pid_file(g: &Gathered<'_>, out: &mut Vec<(Node, Node)>) {
    let Some((file, text)) = g.pid_file.and_then(|f| f.scalar_string().map(|s| (f, s))) else {
        return;
    };
    let path = match g.cwd.and_then(Node::scalar_string) {
        Some(cwd) if !text.starts_with('/') => format!("{}/{text}", cwd.trim_end_matches('/')),
        _ => text,
    };
    out.push((key("write_pid_file", file.pos), str_node(file.pos, &path)));
}

/// eco's order (cmd first), profiles after env.
fn rank(k: &Node) -> usize {
    let k = k.scalar_string().unwrap_or_default();
    let app_keys = crate::config::keys::APP_KEYS;
    let env = app_keys.iter().position(|a| *a == "env").unwrap_or(0);
    app_keys
        .iter()
        .position(|a| *a == k)
        .map_or(env * 2 + 1, |i| i * 2)
}
