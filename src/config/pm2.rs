//! PM2 ecosystem files, read as they are: a PM2-shaped tree (an `apps:`
//! list, a bare list, a bare app) is translated into eco's shape, keeping
//! each value's position so errors still point into the user's file. What
//! eco approximates or drops becomes a [`Note`] (a warning for `up`, a
//! comment for `eco import`). Pure: JavaScript files are evaluated
//! elsewhere ([`super::js`]) and reach this module as a JSON tree.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::keys::pm2_key;
use super::node::{Node, Pos, Value};

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

/// Translates a PM2 document found in `folder` for `machine` (which
/// resolves `instances` and how each script runs).
pub fn translate(root: &Node, machine: &dyn Machine, folder: &Path) -> Translated {
    let mut t = Translator {
        notes: Vec::new(),
        errors: Vec::new(),
        machine,
        folder: folder.to_path_buf(),
    };
    let mut top: Vec<(Node, Node)> = Vec::new();
    let apps_node: Option<&Node> = match &root.value {
        Value::Seq(_) => Some(root),
        Value::Map(entries) => {
            let get = |name: &str| {
                entries
                    .iter()
                    .find(|(k, _)| k.scalar_string().as_deref() == Some(name))
                    .map(|(_, v)| v)
            };
            if let Some(deploy) = entries
                .iter()
                .find(|(k, _)| k.scalar_string().as_deref() == Some("deploy"))
            {
                t.note(
                    None,
                    "deploy",
                    deploy.0.pos,
                    "not supported: eco does not deploy over SSH; ship the files with your \
                     CI, then use `eco export systemd|kubernetes` or `eco startup` on the host",
                );
            }
            if let Some(stat) = get("static") {
                t.note(
                    None,
                    "static",
                    stat.pos,
                    "not supported: PM2's static file server",
                );
            }
            match (get("apps"), get("pm2")) {
                (Some(apps), _) | (None, Some(apps)) => Some(apps),
                // A bare app: the document is the app.
                (None, None) if get("script").is_some() => Some(root),
                (None, None) => None,
            }
        }
        _ => None,
    };
    let items: Vec<&Node> = match apps_node.map(|n| &n.value) {
        Some(Value::Seq(items)) => items.iter().collect(),
        Some(Value::Map(_)) => apps_node.into_iter().collect(),
        _ => {
            t.errors.push((
                root.pos,
                "apps".into(),
                "a PM2 file needs `apps: [...]`, a list of apps, or one app with `script`".into(),
                Some(
                    "e.g. module.exports = { apps: [{ name: 'api', script: 'server.js' }] }".into(),
                ),
            ));
            Vec::new()
        }
    };
    let items = if !items.is_empty()
        && items.iter().all(|i| !matches!(i.value, Value::Map(_)))
        && let Some(list) = apps_node
    {
        // Neither shape: say both.
        t.error(
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
    };
    let mut apps: Vec<(Node, Node)> = Vec::new();
    let mut names = BTreeSet::new();
    for (i, item) in items.into_iter().enumerate() {
        if let Some((name, app)) = t.app(i, item, &mut names) {
            apps.push((name, app));
        }
    }
    let pos = apps_node.map_or(root.pos, |n| n.pos);
    top.push((key("apps", pos), node(pos, Value::Map(apps))));
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

/// An app's PM2 values, gathered before eco's keys are written.
#[derive(Default)]
struct Gathered<'a> {
    script: Option<&'a Node>,
    args: Option<&'a Node>,
    interpreter: Option<&'a Node>,
    interpreter_args: Vec<&'a Node>,
    port: Option<&'a Node>,
    wait_ready: Option<bool>,
    listen_timeout: Option<&'a Node>,
    cluster: bool,
    instance_var: Option<&'a Node>,
    autostart: Option<bool>,
    exp_backoff: Option<&'a Node>,
    env: Option<&'a Node>,
    stop_signal: bool,
    /// `exec_mode` written (else PM2 picks it: [`pm2_cluster_default`]).
    exec_mode: bool,
    instances: Option<&'a Node>,
    cwd: Option<&'a Node>,
    pid_file: Option<&'a Node>,
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

    /// One PM2 app → (eco name key, eco app mapping).
    #[allow(clippy::too_many_lines)]
    fn app(&mut self, i: usize, item: &Node, names: &mut BTreeSet<String>) -> Option<(Node, Node)> {
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
        let lookup = |name: &str| {
            entries
                .iter()
                .find(|(k, _)| k.scalar_string().as_deref() == Some(name))
        };
        // The name first: notes and errors name the app.
        let script_entry = lookup("script")
            .or_else(|| lookup("exec"))
            .or_else(|| lookup("cmd"))
            .or_else(|| lookup("command"));
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
                let stem = script_entry
                    .and_then(|(_, v)| v.scalar_string())
                    .map(|s| {
                        let last = s.split('/').next_back().unwrap_or_default().to_owned();
                        match last.rsplit_once('.') {
                            Some((stem, _)) if !stem.is_empty() => stem.to_owned(),
                            _ => last,
                        }
                    })
                    .unwrap_or_else(|| format!("app{i}"));
                (stem, item.pos)
            }
        };
        let mut eco_name: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        if eco_name.is_empty() {
            eco_name = format!("app{i}");
        }
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
        let app = eco_name.clone();
        let mut out: Vec<(Node, Node)> = Vec::new();
        let mut g = Gathered::default();
        for (k, v) in entries {
            let Some(pm2) = k.scalar_string() else {
                continue;
            };
            let path = format!("{base}.{pm2}");
            let kp = k.pos;
            let mut put = |eco: &str, value: Node| out.push((key(eco, kp), value));
            match pm2.as_str() {
                "name" => {}
                "script" | "exec" | "cmd" | "command" => g.script = Some(v),
                "args" => g.args = Some(v),
                "interpreter" | "exec_interpreter" => g.interpreter = Some(v),
                "interpreter_args" | "node_args" => g.interpreter_args.push(v),
                "cwd" => {
                    g.cwd = Some(v);
                    put("cwd", v.clone());
                }
                // PM2 writes the pid there itself; `pid` is its alias.
                "pid_file" | "pid" => g.pid_file = Some(v),
                "env" => g.env = Some(v),
                p if p.starts_with("env_") && p.len() > 4 => put(p, self.env_values(v, &app, &path)),
                "instances" => {
                    g.instances = Some(v);
                    match pm2_instances(v) {
                        // PM2: 0 and "max" are one per CPU (kept as `max`).
                        Some(0) => put("instances", str_node(v.pos, "max")),
                        Some(n) => {
                            let count = pm2_instance_count(n, self.machine.cpus());
                            put("instances", node(v.pos, Value::Int(i128::from(count))));
                        }
                        None => put("instances", v.clone()),
                    }
                }
                "exec_mode" => match {
                    g.exec_mode = true;
                    v.scalar_string()
                }
                .as_deref()
                {
                    Some("cluster" | "cluster_mode") => {
                        g.cluster = true;
                        put("mode", str_node(v.pos, "cluster"));
                    }
                    Some("fork" | "fork_mode") => put("mode", str_node(v.pos, "fork")),
                    _ => put("mode", v.clone()),
                },
                "increment_var" => put("increment_var", v.clone()),
                "port" => g.port = Some(v),
                "watch" => put("watch", watch_paths(v)),
                "ignore_watch" => put("watch_ignore", ignore_paths(v)),
                "watch_delay" => put("watch_delay", v.clone()),
                "watch_options" => self.note(
                    Some(&app),
                    &path,
                    kp,
                    "dropped: chokidar options; eco watches with inotify and debounces with watch_delay",
                ),
                "max_memory_restart" => put("max_memory", v.clone()),
                "cron_restart" => put("cron_restart", v.clone()),
                "autorestart" => match v.value {
                    Value::Bool(false) => put("restart", str_node(v.pos, "never")),
                    Value::Bool(true) => put("restart", str_node(v.pos, "always")),
                    _ => put("restart", v.clone()),
                },
                "max_restarts" => put("max_restarts", numeric(v)),
                "min_uptime" => put("min_uptime", numeric(v)),
                "restart_delay" => put("restart_delay", numeric(v)),
                "exp_backoff_restart_delay" => g.exp_backoff = Some(v),
                "stop_exit_codes" => {
                    let codes: Vec<String> = match &v.value {
                        Value::Seq(items) => items.iter().filter_map(Node::scalar_string).collect(),
                        _ => v.scalar_string().into_iter().collect(),
                    };
                    if codes == ["0"] {
                        put("restart", str_node(v.pos, "on-failure"));
                    } else {
                        put("restart", str_node(v.pos, "on-failure"));
                        let text = format!(
                            "approximated: eco's `restart: on-failure` stops restarting after exit code 0 only, not after {}",
                            codes.join(", ")
                        );
                        self.note(Some(&app), &path, kp, &text);
                    }
                }
                "kill_timeout" => put("stop_timeout", numeric(v)),
                "kill_signal" => {
                    g.stop_signal = true;
                    put("stop_signal", v.clone());
                }
                "wait_ready" => g.wait_ready = Some(matches!(v.value, Value::Bool(true))),
                "listen_timeout" => g.listen_timeout = Some(v),
                "time" => {
                    if matches!(v.value, Value::Bool(true)) {
                        put("log_time", v.clone());
                    }
                }
                "log_date_format" => {
                    put("log_time", node(v.pos, Value::Bool(true)));
                    self.note(
                        Some(&app),
                        &path,
                        kp,
                        "approximated: eco prefixes each line with an RFC 3339 timestamp (log_time: true), whatever the format",
                    );
                }
                "out_file" | "output" => put("out_file", v.clone()),
                "error_file" | "error" | "err_file" => put("err_file", v.clone()),
                "log_file" | "log" => self.note(
                    Some(&app),
                    &path,
                    kp,
                    "dropped: eco writes out_file and err_file, no third combined file (eco logs shows both)",
                ),
                "instance_var" => g.instance_var = Some(v),
                "namespace" => self.note(
                    Some(&app),
                    &path,
                    kp,
                    "dropped: eco groups apps by project (the file); act on them all with `eco restart PROJECT`",
                ),
                "autostart" => g.autostart = Some(!matches!(v.value, Value::Bool(false))),
                // eco's own keys in a PM2 file are taken as they are.
                k if super::keys::APP_KEYS.contains(&k) => put(k, v.clone()),
                other => {
                    if let Some((_, why)) = NO_EFFECT.iter().find(|(k, _)| *k == other) {
                        let text = if why.is_empty() {
                            "ignored: no effect in eco".to_owned()
                        } else {
                            format!("ignored: {why}")
                        };
                        self.note(Some(&app), &path, kp, &text);
                    } else {
                        let hint = pm2_key(other)
                            .map(|e| format!(" ({})", e.how))
                            .unwrap_or_default();
                        let text = format!("ignored: not a PM2 key eco knows{hint}");
                        self.note(Some(&app), &path, kp, &text);
                    }
                }
            }
        }
        // env: PM2 stringifies non-scalar values; `port` sets PORT.
        let mut env_entries = match g.env {
            Some(env) => match self.env_values(env, &app, &format!("{base}.env")).value {
                Value::Map(e) => e,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        if let Some(port) = g.port {
            env_entries.retain(|(k, _)| k.scalar_string().as_deref() != Some("PORT"));
            env_entries.push((key("PORT", port.pos), port.clone()));
        }
        if let Some(var) = g.instance_var
            && var.scalar_string().as_deref() != Some("NODE_APP_INSTANCE")
        {
            env_entries.push((key("ECO_INSTANCE_VAR", var.pos), var.clone()));
            self.note(
                Some(&app),
                &format!("{base}.instance_var"),
                var.pos,
                "approximated: eco sets NODE_APP_INSTANCE and ECO_INSTANCE; for Node apps eco's shim also copies the instance number into this variable (ECO_INSTANCE_VAR)",
            );
        }
        // The command: interpreter, its arguments, the script, its arguments.
        let Some(script) = g.script else {
            self.error(
                item.pos,
                &format!("{base}.script"),
                format!("app `{app}` has no `script`"),
                Some("add `script: 'server.js'` (the file or program to run)".into()),
            );
            return None;
        };
        let Some(script_text) = script.scalar_string() else {
            self.error(
                script.pos,
                &format!("{base}.script"),
                "expected a string".into(),
                None,
            );
            return None;
        };
        let (argv, interpreter) = self.command(&g, script, &script_text, &app, &base);
        out.push((key("cmd", script.pos), node(script.pos, Value::Seq(argv))));
        let node_app = interpreter
            .as_deref()
            .is_some_and(|i| i.rsplit('/').next().is_some_and(|b| b.ends_with("node")));
        if interpreter.as_deref().is_some_and(|i| i.contains("python")) {
            // PM2 sets it for Python apps, over the file's env.
            env_entries.retain(|(k, _)| k.scalar_string().as_deref() != Some("PYTHONUNBUFFERED"));
            env_entries.push((
                key("PYTHONUNBUFFERED", script.pos),
                str_node(script.pos, "1"),
            ));
        }
        if !g.exec_mode && node_app && g.instances.is_some_and(pm2_cluster_default) {
            // PM2 runs a Node app with `instances` and no `exec_mode` in
            // cluster mode (Common.determineExecMode).
            g.cluster = true;
            out.push((key("mode", item.pos), str_node(item.pos, "cluster")));
        }
        if let Some(file) = g.pid_file.and_then(|f| f.scalar_string().map(|s| (f, s))) {
            // PM2 resolves it against the app's cwd; eco's key against the
            // file's folder.
            let (pos, text) = (file.0.pos, file.1);
            let path = match g.cwd.and_then(Node::scalar_string) {
                Some(cwd) if !text.starts_with('/') => {
                    format!("{}/{text}", cwd.trim_end_matches('/'))
                }
                _ => text,
            };
            out.push((key("write_pid_file", pos), str_node(pos, &path)));
        }
        if !env_entries.is_empty() {
            let pos = g.env.map_or(item.pos, |e| e.pos);
            out.push((key("env", pos), node(pos, Value::Map(env_entries))));
        }
        // Readiness: PM2's wait_ready is process.send('ready'), which eco's
        // Node shim turns into READY=1; a cluster app is ready once it
        // listens, as in PM2.
        let waits = g.wait_ready == Some(true);
        if waits || (g.cluster && node_app) {
            if !out
                .iter()
                .any(|(k, _)| k.scalar_string().as_deref() == Some("ready"))
            {
                out.push((key("ready", item.pos), str_node(item.pos, "notify")));
            }
            if !waits {
                push_env(&mut out, "ECO_READY_ON_LISTEN", "1", item.pos);
            }
            if waits && !node_app {
                self.note(
                    Some(&app),
                    &format!("{base}.wait_ready"),
                    item.pos,
                    "approximated: process.send('ready') works for Node apps only; others call `eco notify READY=1`",
                );
            }
        }
        if node_app && !waits && !g.cluster {
            // PM2 always gives Node apps an IPC channel: apps call
            // process.send('ready') unguarded. The shim provides it.
            push_env(&mut out, "ECO_NODE_SHIM", "1", item.pos);
        }
        if let Some(timeout) = g.listen_timeout {
            out.push((key("ready_timeout", timeout.pos), numeric(timeout)));
            if !waits && !g.cluster {
                self.note(
                    Some(&app),
                    &format!("{base}.listen_timeout"),
                    timeout.pos,
                    "ignored: without wait_ready or cluster mode there is nothing to wait for",
                );
                out.pop();
            }
        }
        if let Some(delay) = g.exp_backoff {
            if !out
                .iter()
                .any(|(k, _)| k.scalar_string().as_deref() == Some("restart_delay"))
            {
                out.push((key("restart_delay", delay.pos), numeric(delay)));
            }
            out.push((
                key("max_restart_delay", delay.pos),
                str_node(delay.pos, "15s"),
            ));
            self.note(
                Some(&app),
                &format!("{base}.exp_backoff_restart_delay"),
                delay.pos,
                "approximated: eco doubles the delay per crash (PM2: x1.5) up to max_restart_delay (PM2's cap, 15s)",
            );
        }
        if g.autostart == Some(false) {
            out.retain(|(k, _)| k.scalar_string().as_deref() != Some("instances"));
            out.push((key("instances", item.pos), node(item.pos, Value::Int(0))));
            self.note(
                Some(&app),
                &format!("{base}.autostart"),
                item.pos,
                "approximated: `instances: 0` keeps the app defined but not running; `eco scale APP N` starts it",
            );
        }
        if !g.stop_signal {
            // PM2 stops apps with SIGINT (PM2_KILL_SIGNAL); PM2 apps handle it.
            out.push((key("stop_signal", item.pos), str_node(item.pos, "SIGINT")));
        }
        // eco's order (cmd first), profiles after env.
        let rank = |k: &Node| {
            let k = k.scalar_string().unwrap_or_default();
            let env = super::keys::APP_KEYS
                .iter()
                .position(|a| *a == "env")
                .unwrap_or(0);
            super::keys::APP_KEYS
                .iter()
                .position(|a| *a == k)
                .map_or(env * 2 + 1, |i| i * 2)
        };
        out.sort_by_key(|(k, _)| rank(k));
        Some((key(&eco_name, name_pos), node(item.pos, Value::Map(out))))
    }

    /// The argv PM2 runs for `script` (its interpreter, the interpreter's
    /// arguments, the script, `args`), and the interpreter (`None`: the
    /// script runs directly).
    fn command(
        &mut self,
        g: &Gathered<'_>,
        script: &Node,
        script_text: &str,
        app: &str,
        base: &str,
    ) -> (Vec<Node>, Option<String>) {
        let pos = script.pos;
        let explicit = g.interpreter.and_then(Node::scalar_string);
        if script_text.contains(' ') {
            // PM2 (Common.verifyConfs): a script with a space is a command
            // line, run as `bash -c SCRIPT` (`sh` without bash); it sets
            // `args` to `-c SCRIPT`, so the file's args are dropped.
            let shell = if self.machine.has("bash") {
                "bash"
            } else {
                "sh"
            };
            if g.args.is_some() {
                self.note(
                    Some(app),
                    &format!("{base}.args"),
                    pos,
                    "dropped: PM2 runs a script with spaces as `bash -c SCRIPT` and ignores args; put them in the script",
                );
            }
            if explicit.as_deref().is_some_and(|i| i != "none") {
                self.note(
                    Some(app),
                    &format!("{base}.interpreter"),
                    pos,
                    "ignored: a script with spaces is a command line run by bash",
                );
            }
            let argv = [shell, "-c", script_text]
                .iter()
                .map(|w| str_node(pos, w))
                .collect();
            return (argv, None);
        }
        let cwd = g.cwd.and_then(Node::scalar_string).unwrap_or_default();
        let path = self.folder.join(cwd).join(script_text);
        let interpreter = match explicit {
            Some(i) if i == "none" => None,
            Some(i) => Some(i),
            None => {
                let kind = || self.machine.script(&path);
                let (interpreter, how) =
                    pm2_interpreter(script_text, kind, |p| self.machine.has(p));
                if let Some(text) = how {
                    self.note(Some(app), &format!("{base}.script"), pos, text);
                }
                interpreter
            }
        };
        let mut argv = Vec::new();
        if let Some(i) = &interpreter {
            argv.push(str_node(g.interpreter.map_or(pos, |n| n.pos), i));
        }
        for args in &g.interpreter_args {
            argv.extend(words(args));
        }
        // Run directly, `app.bin` would be looked up in PATH; PM2 resolves
        // a script against cwd first (PATH only when nothing is there).
        let local = !script_text.contains('/')
            && (script_text.contains('.') || self.machine.script(&path) != ScriptKind::Missing);
        let script_text = if interpreter.is_none() && local {
            format!("./{script_text}")
        } else {
            script_text.to_owned()
        };
        argv.push(str_node(pos, &script_text));
        if let Some(args) = g.args {
            argv.extend(words(args));
        }
        (argv, interpreter)
    }

    /// An env mapping whose non-scalar values become JSON, as PM2 does.
    fn env_values(&mut self, env: &Node, app: &str, path: &str) -> Node {
        let Value::Map(entries) = &env.value else {
            return env.clone();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let value = match &v.value {
                Value::Seq(_) | Value::Map(_) => {
                    let text = format!(
                        "approximated: {} written as JSON text",
                        k.scalar_string().unwrap_or_default()
                    );
                    self.note(Some(app), path, k.pos, &text);
                    str_node(v.pos, &to_json(v).to_string())
                }
                _ => v.clone(),
            };
            out.push((k.clone(), value));
        }
        node(env.pos, Value::Map(out))
    }
}

fn push_env(out: &mut Vec<(Node, Node)>, name: &str, value: &str, pos: Pos) {
    let entry = (key(name, pos), str_node(pos, value));
    if let Some((_, env)) = out
        .iter_mut()
        .find(|(k, _)| k.scalar_string().as_deref() == Some("env"))
        && let Value::Map(entries) = &mut env.value
    {
        entries.push(entry);
        return;
    }
    out.push((key("env", pos), node(pos, Value::Map(vec![entry]))));
}

/// `instances` as PM2 reads it (Common.verifyConfs): `'max'` is 0, a
/// string is `parseInt(s) || 0`, a number is truncated. `None`: not a
/// number or a string (eco's validation says so).
pub fn pm2_instances(v: &Node) -> Option<i64> {
    match &v.value {
        Value::Int(n) => Some(i64::try_from(*n).unwrap_or(0)),
        #[allow(clippy::cast_possible_truncation)]
        Value::Float(x) if x.is_finite() => Some(x.trunc() as i64),
        Value::Str(s) if s.trim() == "max" => Some(0),
        Value::Str(s) => Some(parse_int(s)),
        _ => None,
    }
}

/// JavaScript's `parseInt(s) || 0`: the leading integer, else 0.
fn parse_int(s: &str) -> i64 {
    let t = s.trim_start();
    let (sign, digits) = match t.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, t.strip_prefix('+').unwrap_or(t)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse::<i64>().map_or(0, |n| sign * n)
}

/// How many instances PM2 starts for `n` (God.prepare): 0 is one per
/// CPU, a negative number that many fewer, and never fewer than one.
pub fn pm2_instance_count(n: i64, cpus: u32) -> u32 {
    let cpus = i64::from(cpus.max(1));
    let count = match n {
        0 => cpus,
        n if n < 0 => n + cpus,
        n => n,
    };
    u32::try_from(count.max(1)).unwrap_or(u32::MAX)
}

/// Whether `instances` makes PM2 pick cluster mode for a Node app with no
/// `exec_mode` (Common.determineExecMode: `instances >= 1 || === 0 ||
/// === -1`, after verifyConfs' parsing).
pub fn pm2_cluster_default(instances: &Node) -> bool {
    pm2_instances(instances).is_some_and(|n| n >= 1 || n == 0 || n == -1)
}

/// How PM2 runs a script without an explicit interpreter
/// (Common.sink.resolveInterpreter): by extension, else node unless it is
/// a binary. `kind` looks at the file only when the extension does not
/// decide; `has` asks PATH. Also a note when eco departs from PM2.
pub fn pm2_interpreter(
    script: &str,
    kind: impl FnOnce() -> ScriptKind,
    has: impl Fn(&str) -> bool,
) -> (Option<String>, Option<&'static str>) {
    let name = script.rsplit('/').next().unwrap_or(script);
    let ext = match name.rfind('.') {
        Some(i) if i > 0 => &name[i..],
        _ => "",
    };
    let by_ext = match ext {
        ".sh" => Some(if has("bash") { "bash" } else { "sh" }),
        // PM2 picks `python`, and `python3` when there is no `python`.
        ".py" => Some(if has("python") || !has("python3") {
            "python"
        } else {
            "python3"
        }),
        ".rb" => Some("ruby"),
        ".php" => Some("php"),
        ".pl" => Some("perl"),
        ".js" => Some("node"),
        ".coffee" => Some("coffee"),
        ".ls" => Some("lsc"),
        // bun, else node's own type stripping (Node >= 22.18), as PM2.
        ".ts" | ".tsx" => Some(if has("bun") { "bun" } else { "node" }),
        _ => None,
    };
    if let Some(i) = by_ext {
        return (Some(i.to_owned()), None);
    }
    match kind() {
        // A program in PATH (`npm`), or a missing file: run directly (a
        // Node program's `#!` line runs node, as PM2 would).
        ScriptKind::Missing | ScriptKind::Binary => (None, None),
        // Node resolves a folder to its index.js or package.json main.
        ScriptKind::Folder => (Some("node".into()), None),
        ScriptKind::Text {
            shebang: Some(line),
        } if !line.contains("node") => (
            None,
            Some(
                "approximated: run by its `#!` line (PM2 would run a script with no extension with node)",
            ),
        ),
        ScriptKind::Text { .. } => (Some("node".into()), None),
    }
}

/// PM2's interpreter for a script, by extension (`None`: run it directly).
pub fn default_interpreter(script: &str) -> Option<&'static str> {
    let ext = script.rsplit_once('.').map(|(_, e)| e)?;
    if ext.contains('/') {
        return None;
    }
    match ext {
        "js" | "cjs" | "mjs" => Some("node"),
        "py" => Some("python3"),
        "sh" => Some(if bash_exists() { "bash" } else { "sh" }),
        "rb" => Some("ruby"),
        "php" => Some("php"),
        "pl" => Some("perl"),
        "coffee" => Some("coffee"),
        _ => None,
    }
}

/// Whether `bash` is on this machine (PM2 runs .sh with bash; eco falls
/// back to sh where there is none, as in small containers).
fn bash_exists() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("bash").is_file()))
}

/// `args`/`interpreter_args` as words: a string is split like a shell.
fn words(args: &Node) -> Vec<Node> {
    match &args.value {
        Value::Seq(items) => items
            .iter()
            .map(|n| str_node(n.pos, &n.scalar_string().unwrap_or_default()))
            .collect(),
        _ => {
            let text = args.scalar_string().unwrap_or_default();
            shlex::split(&text)
                .unwrap_or_else(|| text.split_whitespace().map(str::to_owned).collect())
                .into_iter()
                .map(|w| str_node(args.pos, &w))
                .collect()
        }
    }
}

/// PM2 writes numbers as strings too (`"3000"`).
fn numeric(v: &Node) -> Node {
    match &v.value {
        Value::Str(s) => match s.trim().parse::<i128>() {
            Ok(n) => node(v.pos, Value::Int(n)),
            Err(_) => v.clone(),
        },
        _ => v.clone(),
    }
}

/// PM2's `watch` (true, or paths that chokidar watches recursively) as
/// eco globs.
fn watch_paths(v: &Node) -> Node {
    let globs = |p: &str| -> Vec<String> {
        let p = p.trim_start_matches("./").trim_end_matches('/');
        if p.is_empty() || p == "." {
            vec!["**".into()]
        } else if p.contains('*') {
            vec![p.to_owned()]
        } else {
            vec![p.to_owned(), format!("{p}/**")]
        }
    };
    match &v.value {
        Value::Str(_) | Value::Seq(_) => globs_node(v, globs),
        _ => v.clone(),
    }
}

/// PM2's `ignore_watch` (names, paths or globs, matched anywhere) as eco
/// globs.
fn ignore_paths(v: &Node) -> Node {
    let globs = |p: &str| -> Vec<String> {
        let p = p.trim_start_matches("./").trim_end_matches('/');
        if p.contains('*') || p.contains('/') {
            vec![p.to_owned(), format!("{p}/**")]
        } else {
            vec![format!("**/{p}"), format!("**/{p}/**")]
        }
    };
    globs_node(v, globs)
}

/// A path or a list of paths as one list of globs, each from `globs`,
/// keeping every item's position for error messages.
fn globs_node(v: &Node, globs: impl Fn(&str) -> Vec<String>) -> Node {
    let items: Vec<&Node> = match &v.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![v],
    };
    node(
        v.pos,
        Value::Seq(
            items
                .into_iter()
                .flat_map(|n| {
                    globs(&n.scalar_string().unwrap_or_default())
                        .into_iter()
                        .map(|g| str_node(n.pos, &g))
                        .collect::<Vec<_>>()
                })
                .collect(),
        ),
    )
}

/// A tree as JSON (for env values PM2 would stringify).
pub fn to_json(v: &Node) -> serde_json::Value {
    use serde_json::Value as J;
    match &v.value {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => i64::try_from(*i).map_or_else(|_| J::String(i.to_string()), J::from),
        Value::Float(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Value::Str(s) => J::String(s.clone()),
        Value::Seq(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(entries) => J::Object(
            entries
                .iter()
                .map(|(k, v)| (k.scalar_string().unwrap_or_default(), to_json(v)))
                .collect(),
        ),
    }
}

/// A JSON value as a tree with no positions (JavaScript files, JSON5).
pub fn from_json(v: &serde_json::Value) -> Node {
    use serde_json::Value as J;
    let value = match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::Int(i.into()),
            (_, Some(u), _) => Value::Int(u.into()),
            (_, _, Some(x)) if x.fract() == 0.0 && x.abs() < 1e15 =>
            {
                #[allow(clippy::cast_possible_truncation)]
                Value::Int(x as i128)
            }
            (_, _, x) => Value::Float(x.unwrap_or_default()),
        },
        J::String(s) => Value::Str(s.clone()),
        J::Array(items) => Value::Seq(items.iter().map(from_json).collect()),
        J::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| (node(Pos::default(), Value::Str(k.clone())), from_json(v)))
                .collect(),
        ),
    };
    node(Pos::default(), value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::parse;

    /// A machine with 4 CPUs, bash, python3 (no `python`), and these files
    /// under /srv.
    struct Fake(Vec<(&'static str, ScriptKind)>);

    impl Machine for Fake {
        fn cpus(&self) -> u32 {
            4
        }
        fn script(&self, path: &Path) -> ScriptKind {
            self.0
                .iter()
                .find(|(p, _)| Path::new(p) == path)
                .map_or(ScriptKind::Missing, |(_, k)| k.clone())
        }
        fn has(&self, program: &str) -> bool {
            matches!(program, "bash" | "python3" | "node")
        }
    }

    fn eco(yaml: &str) -> (serde_json::Value, Vec<String>) {
        eco_on(&Fake(Vec::new()), yaml)
    }

    fn eco_on(machine: &Fake, yaml: &str) -> (serde_json::Value, Vec<String>) {
        let root = parse(yaml).expect("yaml");
        assert!(is_pm2(&root));
        let t = translate(&root, machine, Path::new("/srv"));
        assert!(t.errors.is_empty(), "{:?}", t.errors);
        (
            to_json(&t.root),
            t.notes
                .iter()
                .map(|n| format!("{}: {}", n.path, n.text))
                .collect(),
        )
    }

    #[test]
    fn shapes() {
        for doc in [
            "apps:\n  - {name: web, script: app.js}\n",
            "- {name: web, script: app.js}\n",
            "name: web\nscript: app.js\n",
            "pm2:\n  - {name: web, script: app.js}\n",
        ] {
            let (json, _) = eco(doc);
            assert_eq!(
                json["apps"]["web"]["cmd"],
                serde_json::json!(["node", "app.js"]),
                "{doc}"
            );
        }
        assert!(!is_pm2(&parse("apps:\n  web: {cmd: x}\n").expect("yaml")));
    }

    #[test]
    fn keys_map_to_eco() {
        let (json, notes) = eco(
            "apps:\n  - name: api\n    script: ./server.py\n    args: --port 80 -v\n    instances: -1\n    exec_mode: cluster_mode\n    \
             max_memory_restart: 300M\n    kill_timeout: 3000\n    autorestart: false\n    port: 8080\n    \
             wait_ready: true\n    listen_timeout: 5000\n    vizion: false\n    merge_logs: true\n    time: true\n    error_file: e.log\n",
        );
        let app = &json["apps"]["api"];
        assert_eq!(
            app["cmd"],
            serde_json::json!(["python3", "./server.py", "--port", "80", "-v"])
        );
        assert_eq!(app["instances"], 3);
        assert_eq!(app["mode"], "cluster");
        assert_eq!(app["max_memory"], "300M");
        assert_eq!(app["stop_timeout"], 3000);
        assert_eq!(app["restart"], "never");
        assert_eq!(app["env"]["PORT"], 8080);
        assert_eq!(app["ready"], "notify");
        assert_eq!(app["ready_timeout"], 5000);
        assert_eq!(app["log_time"], true);
        assert_eq!(app["err_file"], "e.log");
        assert_eq!(app["stop_signal"], "SIGINT");
        assert_eq!(notes.len(), 3, "{notes:?}");
    }

    #[test]
    fn deploy_is_reported_and_names_default_to_the_script() {
        let (json, notes) = eco("apps:\n  - script: bin/www.js\ndeploy:\n  production: {}\n");
        assert!(json["apps"]["www"].is_object());
        assert!(notes[0].starts_with("deploy: not supported"), "{notes:?}");
    }

    fn app(yaml: &str) -> serde_json::Value {
        let (json, _) = eco(yaml);
        json["apps"]["a"].clone()
    }

    /// PM2 Common.determineExecMode: `instances` (>= 1, 0 or -1 once
    /// parsed) with no `exec_mode` on a Node script is cluster mode; no
    /// `instances`, or a script that is not Node, is fork mode.
    #[test]
    fn instances_without_exec_mode_is_cluster_for_node() {
        let mode =
            |extra: &str| app(&format!("- {{name: a, script: s.js, {extra}}}\n"))["mode"].clone();
        for cluster in [
            "instances: 2",
            "instances: 1",
            "instances: 0",
            "instances: -1",
            "instances: '0'",
            "instances: max",
            "instances: '4'",
        ] {
            assert_eq!(mode(cluster), "cluster", "{cluster}");
        }
        assert_eq!(mode("instances: -2"), serde_json::Value::Null, "-2 is fork");
        assert_eq!(
            mode("port: 80"),
            serde_json::Value::Null,
            "no instances: fork"
        );
        assert_eq!(mode("instances: 2, exec_mode: fork"), "fork");
        assert_eq!(
            mode("instances: 2, interpreter: none"),
            serde_json::Value::Null
        );
        let py = app("- {name: a, script: w.py, instances: 2}\n");
        assert_eq!(py["mode"], serde_json::Value::Null, "not Node: fork");
        // Cluster by default waits for listen, as an explicit cluster app.
        let web = app("- {name: a, script: s.js, instances: 2, env: {PORT: 3000}}\n");
        assert_eq!(web["ready"], "notify");
        assert_eq!(web["env"]["ECO_READY_ON_LISTEN"], "1");
    }

    /// PM2 God.prepare: parseInt(instances); 0 is all CPUs, a negative
    /// number that many fewer, never fewer than 1; 'max' and '0' are 0.
    #[test]
    fn instance_counts_as_pm2_computes_them() {
        let count = |v: &str| {
            app(&format!(
                "- {{name: a, script: s.js, exec_mode: fork, instances: {v}}}\n"
            ))["instances"]
                .clone()
        };
        assert_eq!(count("-1"), 3);
        assert_eq!(count("'-1'"), 3);
        assert_eq!(count("-3"), 1);
        assert_eq!(count("-9"), 1);
        assert_eq!(count("0"), "max");
        assert_eq!(count("'0'"), "max");
        assert_eq!(count("max"), "max");
        assert_eq!(count("'3'"), 3);
        assert_eq!(count("'3 workers'"), 3);
        assert_eq!(count("2.7"), 2);
        assert_eq!(count("lots"), "max", "parseInt('lots') || 0");
        assert_eq!(pm2_instance_count(0, 2), 2);
        assert_eq!(pm2_instance_count(-1, 1), 1);
    }

    /// PM2 Common.prepareAppConf + God.js: `pid_file` (alias `pid`) is
    /// the file PM2 writes, relative to the app's cwd; never eco's
    /// `pid_file` (which the app writes).
    #[test]
    fn pid_file_and_pid_are_the_file_pm2_writes() {
        let a = app("- {name: a, script: s.js, pid_file: ./run/a.pid}\n");
        assert_eq!(a["write_pid_file"], "./run/a.pid");
        assert_eq!(a["pid_file"], serde_json::Value::Null);
        let (json, notes) = eco("- {name: a, script: s.js, pid: /run/a.pid, cwd: sub}\n");
        assert_eq!(json["apps"]["a"]["write_pid_file"], "/run/a.pid");
        assert!(notes.is_empty(), "`pid` is a PM2 key: {notes:?}");
        let a = app("- {name: a, script: s.js, pid: run/a.pid, cwd: ./sub/}\n");
        assert_eq!(a["write_pid_file"], "./sub/run/a.pid");
    }

    /// PM2 Common.verifyConfs: a script with a space is run as
    /// `bash -c SCRIPT` (sh without bash), and `args` are replaced.
    #[test]
    fn a_script_with_spaces_is_a_bash_command_line() {
        let a = app("- {name: a, script: node server.js, exec_interpreter: none}\n");
        assert_eq!(
            a["cmd"],
            serde_json::json!(["bash", "-c", "node server.js"])
        );
        assert_eq!(a["shell"], serde_json::Value::Null);
        let (json, notes) = eco("- {name: a, script: npm run start, args: --port 3000}\n");
        assert_eq!(
            json["apps"]["a"]["cmd"],
            serde_json::json!(["bash", "-c", "npm run start"])
        );
        assert!(
            notes.iter().any(|n| n.starts_with("apps[0].args: dropped")),
            "{notes:?}"
        );
    }

    /// PM2 Common.sink.resolveInterpreter: by extension (interpreter.json),
    /// else node unless the file is a binary (a folder too: node resolves
    /// it); `none` runs the script itself; Python gets PYTHONUNBUFFERED=1.
    #[test]
    fn interpreters_as_pm2_picks_them() {
        let machine = Fake(vec![
            ("/srv/bin/www", ScriptKind::Text { shebang: None }),
            (
                "/srv/bin/node-cli",
                ScriptKind::Text {
                    shebang: Some("/usr/bin/env node".into()),
                },
            ),
            (
                "/srv/bin/run",
                ScriptKind::Text {
                    shebang: Some("/bin/sh".into()),
                },
            ),
            ("/srv/dist", ScriptKind::Folder),
            ("/srv/sub/dist", ScriptKind::Folder),
            ("/srv/server", ScriptKind::Binary),
            ("/srv/app.cjs", ScriptKind::Text { shebang: None }),
            ("/srv/app.mjs", ScriptKind::Text { shebang: None }),
        ]);
        let cmd = |doc: &str| {
            let (json, _) = eco_on(&machine, doc);
            json["apps"]["a"]["cmd"].clone()
        };
        let j = |v: &[&str]| serde_json::json!(v);
        assert_eq!(
            cmd("- {name: a, script: ./bin/www}\n"),
            j(&["node", "./bin/www"])
        );
        assert_eq!(
            cmd("- {name: a, script: bin/node-cli}\n"),
            j(&["node", "bin/node-cli"])
        );
        assert_eq!(cmd("- {name: a, script: ./dist}\n"), j(&["node", "./dist"]));
        assert_eq!(
            cmd("- {name: a, script: dist, cwd: sub}\n"),
            j(&["node", "dist"])
        );
        assert_eq!(cmd("- {name: a, script: server}\n"), j(&["./server"]));
        assert_eq!(
            cmd("- {name: a, script: npm, args: run start}\n"),
            j(&["npm", "run", "start"])
        );
        assert_eq!(
            cmd("- {name: a, script: app.cjs}\n"),
            j(&["node", "app.cjs"])
        );
        assert_eq!(
            cmd("- {name: a, script: app.mjs, node_args: --inspect}\n"),
            j(&["node", "--inspect", "app.mjs"])
        );
        assert_eq!(cmd("- {name: a, script: w.py}\n"), j(&["python3", "w.py"]));
        assert_eq!(cmd("- {name: a, script: w.sh}\n"), j(&["bash", "w.sh"]));
        assert_eq!(cmd("- {name: a, script: a.ts}\n"), j(&["node", "a.ts"]));
        assert_eq!(
            cmd("- {name: a, script: app.js, interpreter: none}\n"),
            j(&["./app.js"])
        );
        assert_eq!(
            cmd(
                "- {name: a, script: w.py, interpreter: python3, interpreter_args: -u, args: [--queue, mail]}\n"
            ),
            j(&["python3", "-u", "w.py", "--queue", "mail"])
        );
        let (json, notes) = eco_on(&machine, "- {name: a, script: bin/run}\n");
        assert_eq!(json["apps"]["a"]["cmd"], j(&["bin/run"]));
        assert!(notes[0].contains("`#!` line"), "{notes:?}");
        let (json, _) = eco("- {name: a, script: w.py, env: {PYTHONUNBUFFERED: '0'}}\n");
        assert_eq!(json["apps"]["a"]["env"]["PYTHONUNBUFFERED"], "1");
    }

    /// PM2 (shell-quote): `args` as a string is split like a shell; a list
    /// is kept word for word.
    #[test]
    fn args_as_a_string_and_as_a_list() {
        let a = app("- {name: a, script: s.js, args: '--mode fast \"two words\"'}\n");
        assert_eq!(
            a["cmd"],
            serde_json::json!(["node", "s.js", "--mode", "fast", "two words"])
        );
        let a = app("- {name: a, script: s.js, args: [--mode, 'two words']}\n");
        assert_eq!(
            a["cmd"],
            serde_json::json!(["node", "s.js", "--mode", "two words"])
        );
    }
}
