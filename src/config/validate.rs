//! The YAML tree → [`ProjectSpec`]. Walks every key, collects every error
//! (never stops at the first), and resolves paths, env and defaults.
//! File-system questions go through [`FileSystem`] so this stays testable.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::error::{ConfigError, ConfigErrors};
use super::keys::{APP_KEYS, READY_KEYS, TOP_KEYS, suggest};
use super::node::{self, Node, Pos, Value};
use super::units::{parse_duration, parse_size};
use crate::spec::{
    AppSpec, ListenAddr, Mode, ProcessSpec, ProjectSpec, Ready, RestartPolicy, Settings, Signal,
    Watch,
};

/// The most instances one app may ask for: a typo such as `instances: 40000`
/// should be an error, not 40,000 processes.
pub const MAX_INSTANCES: u32 = 10_000;

/// The file-system questions validation needs answered.
pub trait FileSystem {
    fn is_dir(&self, path: &Path) -> bool;
    fn read_to_string(&self, path: &Path) -> io::Result<String>;
}

/// Everything validation needs besides the text.
pub struct Input<'a> {
    /// Absolute path of the file (for messages and relative paths).
    pub file: PathBuf,
    pub text: &'a str,
    /// `--env NAME`.
    pub profile: Option<&'a str>,
    /// What `instances: "max"` means here.
    pub cpus: u32,
    pub fs: &'a dyn FileSystem,
}

/// Parses and validates a whole file.
pub fn validate(input: &Input<'_>) -> Result<ProjectSpec, ConfigErrors> {
    let mut walker = Walker {
        input,
        lines: input.text.lines().collect(),
        errors: Vec::new(),
        graph: Vec::new(),
        env_files: Vec::new(),
    };
    let spec = match node::parse(input.text) {
        Ok(root) => walker.project(&root),
        Err(syntax) => {
            walker.error(
                syntax.pos,
                "",
                format!("invalid YAML: {}", syntax.message),
                None,
            );
            None
        }
    };
    let mut errors = walker.errors;
    match spec {
        Some(spec) if errors.is_empty() => Ok(spec),
        _ => {
            errors.sort_by_key(|e| (e.pos.line, e.pos.column));
            Err(ConfigErrors(errors))
        }
    }
}

struct Walker<'a> {
    input: &'a Input<'a>,
    lines: Vec<&'a str>,
    errors: Vec<ConfigError>,
    /// Every app's name, key position and dependencies, including apps
    /// with errors, so dependency checks still run on them.
    graph: DependencyGraph,
    /// Env files read (absolute), for the daemon to watch.
    env_files: Vec<PathBuf>,
}

/// Top-level values every app inherits.
struct Shared {
    env: BTreeMap<String, String>,
}

/// An app's name, key position and dependencies (with their positions).
type DependencyGraph = Vec<(String, Pos, Vec<(String, Pos)>)>;

/// An app as read, before cross-app checks.
struct Parsed {
    spec: AppSpec,
    listen_pos: Vec<(ListenAddr, Pos)>,
}

impl Walker<'_> {
    fn error(&mut self, pos: Pos, path: &str, message: String, hint: Option<String>) {
        let source_line = usize::try_from(pos.line)
            .ok()
            .and_then(|l| l.checked_sub(1))
            .and_then(|l| self.lines.get(l))
            .map(|l| (*l).to_owned());
        self.errors.push(ConfigError {
            file: self.input.file.clone(),
            pos,
            path: path.to_owned(),
            message,
            hint,
            source_line,
        });
    }

    fn expected(&mut self, node: &Node, path: &str, expected: &str) {
        let found = match &node.value {
            Value::Str(s) => format!("the string {s:?}"),
            Value::Int(i) => format!("the integer {i}"),
            Value::Float(x) => format!("the number {x}"),
            Value::Bool(b) => format!("the boolean {b}"),
            other => other.kind().to_owned(),
        };
        self.error(
            node.pos,
            path,
            format!("expected {expected}, found {found}"),
            None,
        );
    }

    fn folder(&self) -> PathBuf {
        self.input
            .file
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
    }

    fn resolve(&self, relative: &str) -> PathBuf {
        normalize(&self.folder().join(relative))
    }

    fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [(Node, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            _ => {
                self.expected(node, path, "a mapping of keys to values");
                None
            }
        }
    }

    /// Checks that every key is a string and known; returns (key, value) pairs.
    fn keyed<'n>(
        &mut self,
        entries: &'n [(Node, Node)],
        path: &str,
        known: &[&str],
        profiles: bool,
    ) -> Vec<(String, &'n Node, Pos)> {
        let mut out = Vec::new();
        for (key, value) in entries {
            let Some(name) = key.scalar_string() else {
                self.expected(key, path, "a key name");
                continue;
            };
            let full = join(path, &name);
            let is_profile = profiles && name.starts_with("env_") && name.len() > 4;
            if !known.contains(&name.as_str()) && !is_profile {
                let hint = suggest(&name, known).map(|s| format!("did you mean `{s}`?"));
                let message = match &hint {
                    Some(_) => format!("unknown key `{name}`"),
                    None => format!(
                        "unknown key `{name}`; the known keys here are: {}",
                        known.join(", ")
                    ),
                };
                self.error(key.pos, &full, message, hint);
                continue;
            }
            out.push((name, value, key.pos));
        }
        out
    }

    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.expected(node, path, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.expected(node, path, "true or false");
                None
            }
        }
    }

    fn count(&mut self, node: &Node, path: &str) -> Option<u32> {
        match node.value {
            Value::Int(i) if i >= 0 => match u32::try_from(i) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.error(node.pos, path, format!("{i} is too large"), None);
                    None
                }
            },
            _ => {
                self.expected(node, path, "a whole number >= 0");
                None
            }
        }
    }

    fn duration(&mut self, node: &Node, path: &str) -> Option<std::time::Duration> {
        let parsed = match &node.value {
            Value::Int(i) if *i >= 0 => {
                u64::try_from(*i).ok().map(std::time::Duration::from_millis)
            }
            Value::Str(s) => parse_duration(s),
            _ => None,
        };
        if parsed.is_none() {
            self.expected(node, path, "a duration such as 250ms, 10s, 5m or 1h");
        }
        parsed
    }

    fn size(&mut self, node: &Node, path: &str) -> Option<u64> {
        let parsed = match &node.value {
            Value::Int(i) if *i >= 0 => u64::try_from(*i).ok(),
            Value::Str(s) => parse_size(s),
            _ => None,
        };
        if parsed.is_none() {
            self.expected(node, path, "a size such as 512K, 300M or 2G (binary units)");
        }
        parsed
    }

    /// A string or a list of strings.
    fn strings(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        match &node.value {
            Value::Str(s) => Some(vec![s.clone()]),
            Value::Seq(items) => {
                let mut out = Vec::new();
                let mut ok = true;
                for (i, item) in items.iter().enumerate() {
                    match self.string(item, &format!("{path}[{i}]")) {
                        Some(s) => out.push(s),
                        None => ok = false,
                    }
                }
                ok.then_some(out)
            }
            _ => {
                self.expected(node, path, "a string or a list of strings");
                None
            }
        }
    }

    /// An env mapping; scalar values become strings.
    fn env(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        if matches!(node.value, Value::Null) {
            return env;
        }
        let Some(entries) = self.map(node, path) else {
            return env;
        };
        for (key, value) in entries {
            let Some(name) = key.scalar_string() else {
                self.expected(key, path, "a variable name");
                continue;
            };
            let full = join(path, &name);
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                self.error(
                    key.pos,
                    &full,
                    format!("{name:?} is not a valid environment variable name"),
                    None,
                );
                continue;
            }
            match value.scalar_string() {
                Some(v) => {
                    env.insert(name, v);
                }
                None => self.expected(value, &full, "a string, number or boolean"),
            }
        }
        env
    }

    fn project(&mut self, root: &Node) -> Option<ProjectSpec> {
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
        let keys = self.keyed(entries, "", TOP_KEYS, true);
        let mut name = None;
        let mut env = BTreeMap::new();
        let mut profile_env = BTreeMap::new();
        let mut apps_node = None;
        let mut profiles_seen = BTreeSet::new();
        for (key, value, _) in &keys {
            match key.as_str() {
                "name" => {
                    if let Some(n) = self.string(value, "name") {
                        if valid_name(&n) {
                            name = Some(n);
                        } else {
                            self.error(
                                value.pos,
                                "name",
                                format!("project name {n:?} may only use A-Z a-z 0-9 _ . -"),
                                None,
                            );
                        }
                    }
                }
                "env" => env = self.env(value, "env"),
                "apps" => apps_node = Some(*value),
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
        env.extend(profile_env);
        let name = name.unwrap_or_else(|| self.folder_project_name());
        let Some(apps_node) = apps_node else {
            self.error(
                root.pos,
                "apps",
                "missing required key `apps`".into(),
                Some("add `apps:` with at least one app, e.g. `apps: { web: { cmd: node server.js } }`".into()),
            );
            return None;
        };
        let shared = Shared { env };
        let mut parsed = Vec::new();
        if let Some(entries) = self.map(apps_node, "apps") {
            let mut seen = BTreeSet::new();
            for (key, value) in entries {
                let Some(app) = key.scalar_string() else {
                    self.expected(key, "apps", "an app name");
                    continue;
                };
                if !valid_name(&app) {
                    self.error(
                        key.pos,
                        &join("apps", &app),
                        format!("app name {app:?} may only use A-Z a-z 0-9 _ . -"),
                        Some("rename the app, e.g. `my-app`".into()),
                    );
                    continue;
                }
                if !seen.insert(app.clone()) {
                    self.error(
                        key.pos,
                        &join("apps", &app),
                        format!("app `{app}` is defined twice"),
                        None,
                    );
                    continue;
                }
                if let Some(p) = self.app(&app, key.pos, value, &shared, &mut profiles_seen) {
                    parsed.push(p);
                }
            }
        }
        if let Some(wanted) = self.input.profile
            && !profiles_seen.contains(wanted)
        {
            let known: Vec<&str> = profiles_seen.iter().map(String::as_str).collect();
            self.error(
                    Pos::default(),
                    "",
                    format!("profile `{wanted}` (--env {wanted}) is not defined: no `env_{wanted}` key in the file"),
                    suggest(wanted, &known)
                        .map(|s| format!("did you mean `--env {s}`?"))
                        .or_else(|| Some(format!("add `env_{wanted}:` at the top or in an app"))),
                );
        }
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
            cleaned
        }
    }

    #[allow(clippy::too_many_lines)]
    fn app(
        &mut self,
        app: &str,
        key_pos: Pos,
        node: &Node,
        shared: &Shared,
        profiles_seen: &mut BTreeSet<String>,
    ) -> Option<Parsed> {
        let base = join("apps", app);
        let entries = self.map(node, &base)?;
        let keys = self.keyed(entries, &base, APP_KEYS, true);
        let errors_before = self.errors.len();
        let mut settings = Settings::default();
        let mut cmd: Option<(Node, Pos)> = None;
        let mut shell = false;
        let mut cwd = self.folder();
        let mut app_env = BTreeMap::new();
        let mut app_profile_env = BTreeMap::new();
        let mut file_env = BTreeMap::new();
        let mut mode = Mode::Fork;
        let mut listen_key_pos = key_pos;
        let mut instances = 1;
        let mut increment_var = None;
        let mut listen = Vec::new();
        let mut depends_pos = Vec::new();
        for (key, value, kpos) in &keys {
            let path = join(&base, key);
            let path = path.as_str();
            match key.as_str() {
                "cmd" => cmd = Some(((*value).clone(), *kpos)),
                "shell" => shell = self.boolean(value, path).unwrap_or(false),
                "cwd" => {
                    if let Some(dir) = self.string(value, path) {
                        let resolved = self.resolve(&dir);
                        if self.input.fs.is_dir(&resolved) {
                            cwd = resolved;
                        } else {
                            self.error(
                                value.pos,
                                path,
                                format!("folder {} does not exist", resolved.display()),
                                Some("create it, or fix the path (relative paths start at the file's folder)".into()),
                            );
                        }
                    }
                }
                "env" => app_env = self.env(value, path),
                "env_file" => {
                    if let Some(files) = self.strings(value, path) {
                        for file in files {
                            self.env_file(&file, value.pos, path, &mut file_env);
                        }
                    }
                }
                "mode" => match self.string(value, path).as_deref() {
                    Some("fork") => mode = Mode::Fork,
                    Some("cluster") => mode = Mode::Cluster,
                    Some(other) => self.error(
                        value.pos,
                        path,
                        format!("expected `fork` or `cluster`, found {other:?}"),
                        None,
                    ),
                    None => {}
                },
                "instances" => match &value.value {
                    Value::Str(s) if s == "max" => instances = self.input.cpus.max(1),
                    Value::Int(_) => match self.count(value, path) {
                        Some(n) if n > MAX_INSTANCES => self.error(
                            value.pos,
                            path,
                            format!(
                                "{n} instances is more than eco runs per app ({MAX_INSTANCES})"
                            ),
                            Some("split the app, or use fewer instances".into()),
                        ),
                        Some(n) => instances = n,
                        None => {}
                    },
                    _ => self.expected(value, path, "a whole number >= 0 or \"max\""),
                },
                "increment_var" => increment_var = self.string(value, path),
                "listen" => {
                    listen_key_pos = *kpos;
                    listen = self.listen(value, path);
                }
                "ready" => settings.ready = self.ready(value, path),
                "ready_timeout" => set(&mut settings.ready_timeout, self.duration(value, path)),
                "depends_on" => {
                    if let Some(names) = self.strings(value, path) {
                        let positions = match &value.value {
                            Value::Seq(items) => items.iter().map(|n| n.pos).collect(),
                            _ => vec![value.pos],
                        };
                        depends_pos = names.into_iter().zip(positions).collect();
                    }
                }
                "restart" => match self.string(value, path).as_deref() {
                    Some("always") => settings.restart = RestartPolicy::Always,
                    Some("on-failure" | "on_failure") => {
                        settings.restart = RestartPolicy::OnFailure;
                    }
                    Some("never" | "no") => settings.restart = RestartPolicy::Never,
                    Some(other) => self.error(
                        value.pos,
                        path,
                        format!("expected `always`, `on-failure` or `never`, found {other:?}"),
                        None,
                    ),
                    None => {}
                },
                "max_restarts" => set(&mut settings.max_restarts, self.count(value, path)),
                "min_uptime" => set(&mut settings.min_uptime, self.duration(value, path)),
                "restart_delay" => set(&mut settings.restart_delay, self.duration(value, path)),
                "max_restart_delay" => {
                    set(&mut settings.max_restart_delay, self.duration(value, path));
                }
                "stop_signal" => {
                    let parsed = match &value.value {
                        Value::Str(s) => Signal::parse(s),
                        Value::Int(i) => i32::try_from(*i)
                            .ok()
                            .and_then(|n| Signal::parse(&n.to_string())),
                        _ => None,
                    };
                    match parsed {
                        Some(sig) => settings.stop_signal = sig,
                        None => self.error(
                            value.pos,
                            path,
                            format!("expected a signal name such as SIGTERM or SIGINT, found {}", value.value),
                            Some("use one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL".into()),
                        ),
                    }
                }
                "stop_timeout" => set(&mut settings.stop_timeout, self.duration(value, path)),
                "watch" => match &value.value {
                    Value::Bool(true) => settings.watch = Watch::All,
                    Value::Bool(false) | Value::Null => settings.watch = Watch::Off,
                    _ => {
                        if let Some(globs) = self.strings(value, path)
                            && self.globs(&globs, value.pos, path)
                        {
                            settings.watch = Watch::Globs(globs);
                        }
                    }
                },
                "watch_ignore" => {
                    if let Some(globs) = self.strings(value, path)
                        && self.globs(&globs, value.pos, path)
                    {
                        settings.watch_ignore = globs;
                    }
                }
                "watch_delay" => set(&mut settings.watch_delay, self.duration(value, path)),
                "max_memory" => settings.max_memory = self.size(value, path),
                "cron_restart" => {
                    if let Some(expr) = self.string(value, path) {
                        match expr.parse::<croner::Cron>() {
                            Ok(_) => settings.cron_restart = Some(expr),
                            Err(err) => self.error(
                                value.pos,
                                path,
                                format!("invalid cron expression {expr:?}: {err}"),
                                Some("use 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\"".into()),
                            ),
                        }
                    }
                }
                "out_file" => {
                    settings.out_file = self.string(value, path).map(|p| self.resolve(&p))
                }
                "err_file" => {
                    settings.err_file = self.string(value, path).map(|p| self.resolve(&p))
                }
                "log_time" => set(&mut settings.log_time, self.boolean(value, path)),
                "log_max_size" => set(&mut settings.log_max_size, self.size(value, path)),
                "log_keep" => set(&mut settings.log_keep, self.count(value, path)),
                profile => {
                    let wanted = profile.strip_prefix("env_");
                    profiles_seen.insert(wanted.unwrap_or_default().to_owned());
                    let parsed = self.env(value, path);
                    if wanted == self.input.profile {
                        app_profile_env = parsed;
                    }
                }
            }
        }
        let argv = match cmd {
            Some((node, _)) => self.cmd(&node, &join(&base, "cmd"), shell),
            None => {
                self.error(
                    key_pos,
                    &join(&base, "cmd"),
                    "missing required key `cmd`".into(),
                    Some(format!("add e.g. `cmd: node server.js` under `{app}:`")),
                );
                None
            }
        };
        if mode == Mode::Fork && !listen.is_empty() {
            self.error(
                listen_key_pos,
                &join(&base, "listen"),
                "`listen` needs `mode: cluster` (eco hands the sockets to cluster instances)"
                    .into(),
                Some(
                    "add `mode: cluster`, or remove `listen` and let the app bind its own port"
                        .into(),
                ),
            );
        }
        let mut env = shared.env.clone();
        env.extend(file_env);
        env.extend(app_env);
        env.extend(app_profile_env);
        if let Some(var) = &increment_var {
            let ok = env
                .get(var)
                .is_some_and(|v| v.trim().parse::<i64>().is_ok());
            if !ok {
                self.error(
                    key_pos,
                    &join(&base, "increment_var"),
                    format!("increment_var `{var}` needs `{var}` set to an integer in env (the first instance's value)"),
                    Some(format!("add e.g. `env: {{ {var}: 3000 }}`")),
                );
            }
        }
        settings.depends_on = depends_pos.iter().map(|(n, _)| n.clone()).collect();
        self.graph.push((app.to_owned(), key_pos, depends_pos));
        if self.errors.len() > errors_before {
            return None;
        }
        Some(Parsed {
            spec: AppSpec {
                name: app.to_owned(),
                process: ProcessSpec {
                    argv: argv?,
                    cwd,
                    env,
                    mode,
                    increment_var,
                    listen: listen.iter().map(|(a, _)| a.clone()).collect(),
                },
                instances,
                settings,
            },
            listen_pos: listen,
        })
    }

    fn cmd(&mut self, node: &Node, path: &str, shell: bool) -> Option<Vec<String>> {
        let words = match &node.value {
            Value::Str(s) if shell => {
                if s.trim().is_empty() {
                    None
                } else {
                    return Some(vec!["/bin/sh".into(), "-c".into(), s.clone()]);
                }
            }
            Value::Str(s) => match shlex::split(s) {
                Some(words) => Some(words),
                None => {
                    self.error(
                        node.pos,
                        path,
                        format!("cannot split {s:?} into words: a quote is not closed"),
                        Some("close the quote, or write cmd as a list".into()),
                    );
                    return None;
                }
            },
            Value::Seq(_) => {
                let words = self.strings(node, path)?;
                if shell && !words.is_empty() {
                    return Some(vec!["/bin/sh".into(), "-c".into(), words.join(" ")]);
                }
                Some(words)
            }
            _ => {
                self.expected(node, path, "a command string or a list of words");
                return None;
            }
        };
        match words {
            Some(w) if !w.is_empty() && !w[0].is_empty() => Some(w),
            _ => {
                self.error(
                    node.pos,
                    path,
                    "cmd is empty".into(),
                    Some("give the program to run, e.g. `cmd: node server.js`".into()),
                );
                None
            }
        }
    }

    fn env_file(&mut self, file: &str, pos: Pos, path: &str, into: &mut BTreeMap<String, String>) {
        let resolved = self.resolve(file);
        if !self.env_files.contains(&resolved) {
            self.env_files.push(resolved.clone());
        }
        let text = match self.input.fs.read_to_string(&resolved) {
            Ok(text) => text,
            Err(err) => {
                self.error(
                    pos,
                    path,
                    format!("cannot read env file {}: {err}", resolved.display()),
                    Some(
                        "create it, or fix the path (relative paths start at the file's folder)"
                            .into(),
                    ),
                );
                return;
            }
        };
        for item in dotenvy::from_read_iter(text.as_bytes()) {
            match item {
                Ok((k, v)) => {
                    into.insert(k, v);
                }
                Err(err) => {
                    self.error(
                        pos,
                        path,
                        format!("env file {} is not valid dotenv: {err}", resolved.display()),
                        None,
                    );
                    return;
                }
            }
        }
    }

    fn globs(&mut self, globs: &[String], pos: Pos, path: &str) -> bool {
        let mut ok = true;
        for glob in globs {
            if let Err(err) = globset::Glob::new(glob) {
                self.error(
                    pos,
                    path,
                    format!("invalid glob {glob:?}: {}", err.kind()),
                    None,
                );
                ok = false;
            }
        }
        ok
    }

    fn listen(&mut self, node: &Node, path: &str) -> Vec<(ListenAddr, Pos)> {
        let items: Vec<&Node> = match &node.value {
            Value::Seq(items) => items.iter().collect(),
            _ => vec![node],
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            let item_path = format!("{path}[{i}]");
            let addr = match &item.value {
                Value::Int(port) => u16::try_from(*port).ok().filter(|p| *p > 0).map(|p| {
                    ListenAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), p))
                }),
                Value::Str(s) => parse_listen(s, &self.folder()),
                _ => None,
            };
            match addr {
                Some(addr) => out.push((addr, item.pos)),
                None => self.expected(
                    item,
                    &item_path,
                    "a port (1-65535), \"127.0.0.1:8080\", \"[::1]:8080\" or \"unix:/path\"",
                ),
            }
        }
        out
    }

    fn ready(&mut self, node: &Node, path: &str) -> Option<Ready> {
        const FORMS: &str = "use `notify`, `{tcp: \"127.0.0.1:8080\"}`, `{http: \"http://127.0.0.1:8080/health\"}`, `{exec: \"cmd\"}` or `{log: \"regex\"}`";
        match &node.value {
            Value::Str(s) if s == "notify" => Some(Ready::Notify),
            Value::Map(entries) if entries.len() == 1 => {
                let keys = self.keyed(entries, path, READY_KEYS, false);
                let (kind, value, _) = keys.into_iter().next()?;
                let path = join(path, &kind);
                let text = self.string(value, &path)?;
                match kind.as_str() {
                    "tcp" => {
                        if valid_host_port(&text) {
                            Some(Ready::Tcp(text))
                        } else {
                            self.error(
                                value.pos,
                                &path,
                                format!("expected host:port, found {text:?}"),
                                None,
                            );
                            None
                        }
                    }
                    "http" => {
                        let rest = text.strip_prefix("http://");
                        let host = rest.map(|r| r.split('/').next().unwrap_or_default());
                        if host.is_some_and(|h| !h.is_empty()) {
                            Some(Ready::Http(text))
                        } else {
                            self.error(
                                value.pos,
                                &path,
                                format!("expected an http:// URL, found {text:?}"),
                                Some("e.g. http://127.0.0.1:8080/health (https is not supported for readiness)".into()),
                            );
                            None
                        }
                    }
                    "exec" => {
                        if text.trim().is_empty() {
                            self.error(
                                value.pos,
                                &path,
                                "the readiness command is empty".into(),
                                None,
                            );
                            None
                        } else {
                            Some(Ready::Exec(text))
                        }
                    }
                    _ => match regex::Regex::new(&text) {
                        Ok(_) => Some(Ready::Log(text)),
                        Err(err) => {
                            let text = err.to_string();
                            let last = text.lines().last().unwrap_or_default();
                            let first = last.trim().trim_start_matches("error: ").to_owned();
                            self.error(
                                value.pos,
                                &path,
                                format!("invalid regex {text:?}: {first}"),
                                None,
                            );
                            None
                        }
                    },
                }
            }
            _ => {
                self.error(
                    node.pos,
                    path,
                    format!("expected a readiness check, found {}", node.value),
                    Some(FORMS.into()),
                );
                None
            }
        }
    }

    fn cross_checks(&mut self, parsed: &[Parsed]) {
        let graph = std::mem::take(&mut self.graph);
        let names: Vec<&str> = graph.iter().map(|(n, _, _)| n.as_str()).collect();
        for (name, _, deps) in &graph {
            for (dep, pos) in deps {
                let path = join(&join("apps", name), "depends_on");
                if dep == name {
                    self.error(*pos, &path, format!("app `{dep}` depends on itself"), None);
                } else if !names.contains(&dep.as_str()) {
                    let hint = suggest(dep, &names).map(|s| format!("did you mean `{s}`?"));
                    self.error(
                        *pos,
                        &path,
                        format!("no app named `{dep}` in this file"),
                        hint,
                    );
                }
            }
        }
        if let Some(cycle) = find_cycle(&graph) {
            let first = &cycle[0];
            let pos = graph
                .iter()
                .find(|(n, _, _)| n == first)
                .map_or_else(Pos::default, |(_, p, _)| *p);
            self.error(
                pos,
                &join(&join("apps", first), "depends_on"),
                format!("dependency cycle: {}", cycle.join(" -> ")),
                Some("remove one of these depends_on entries".into()),
            );
        }
        let mut bound: Vec<(&ListenAddr, &str)> = Vec::new();
        for p in parsed {
            for (addr, pos) in &p.listen_pos {
                if let Some((_, other)) = bound.iter().find(|(a, _)| listen_conflict(a, addr)) {
                    let path = join(&join("apps", &p.spec.name), "listen");
                    self.error(
                        *pos,
                        &path,
                        format!("address {addr} is already used by app `{other}`"),
                        Some("give each app its own address; instances of one app share it".into()),
                    );
                } else {
                    bound.push((addr, &p.spec.name));
                }
            }
        }
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

/// App and project names: `[A-Za-z0-9_.-]+`, not `.` or `..` (they are path parts).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && name.chars().all(is_name_char)
}

fn valid_host_port(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((host, port)) => !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0),
        None => false,
    }
}

fn parse_listen(text: &str, folder: &Path) -> Option<ListenAddr> {
    if let Some(path) = text.strip_prefix("unix:") {
        return (!path.is_empty()).then(|| ListenAddr::Unix(normalize(&folder.join(path))));
    }
    if let Ok(port) = text.parse::<u16>() {
        return (port > 0)
            .then(|| ListenAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)));
    }
    text.parse::<SocketAddr>()
        .ok()
        .filter(|a| a.port() > 0)
        .map(ListenAddr::Tcp)
}

/// Two addresses collide when equal, or on one port when either is a wildcard.
fn listen_conflict(a: &ListenAddr, b: &ListenAddr) -> bool {
    match (a, b) {
        (ListenAddr::Tcp(x), ListenAddr::Tcp(y)) => {
            x.port() == y.port()
                && (x.ip() == y.ip() || x.ip().is_unspecified() || y.ip().is_unspecified())
        }
        _ => a == b,
    }
}

/// Finds one dependency cycle, returned as `[a, b, a]`.
fn find_cycle(graph: &DependencyGraph) -> Option<Vec<String>> {
    let deps: BTreeMap<&str, Vec<&str>> = graph
        .iter()
        .map(|(name, _, deps)| {
            (
                name.as_str(),
                deps.iter().map(|(d, _)| d.as_str()).collect(),
            )
        })
        .collect();
    // 0 = unvisited, 1 = on the current path, 2 = done.
    let mut state: BTreeMap<&str, u8> = BTreeMap::new();
    let mut stack: Vec<&str> = Vec::new();
    fn visit<'a>(
        node: &'a str,
        deps: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = stack.iter().position(|n| *n == node)?;
                let mut cycle: Vec<String> =
                    stack[start..].iter().map(|s| (*s).to_owned()).collect();
                cycle.push(node.to_owned());
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node, 1);
        stack.push(node);
        for dep in deps.get(node).into_iter().flatten() {
            if *dep != node
                && deps.contains_key(dep)
                && let Some(cycle) = visit(dep, deps, state, stack)
            {
                return Some(cycle);
            }
        }
        stack.pop();
        state.insert(node, 2);
        None
    }
    for name in deps.keys() {
        if let Some(cycle) = visit(name, &deps, &mut state, &mut stack) {
            return Some(cycle);
        }
    }
    None
}

/// `a/./b/../c` → `a/c`, without touching the file system.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
