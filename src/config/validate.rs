//! The YAML tree → [`ProjectSpec`]. Walks every key, collects every error
//! (never stops at the first), and resolves paths, env and defaults.
//! File-system questions go through [`FileSystem`] so this stays testable.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use super::error::{ConfigError, ConfigErrors};
use super::keys::{APP_KEYS, HEALTH_KEYS, READY_KEYS, ROLLOUT_KEYS, TOP_KEYS, suggest};
use super::node::{self, Node, Pos, Value};
use super::pm2::{self, Note};
use super::units::{parse_duration, parse_size};
use crate::spec::{
    AppSpec, Health, ListenAddr, Mode, Probe, ProcessSpec, ProjectSpec, Ready, RestartPolicy,
    Rollout, Settings, Signal, Watch,
};

/// The most instances one app may ask for: a typo such as `instances: 40000`
/// should be an error, not 40,000 processes.
pub const MAX_INSTANCES: u32 = 10_000;

/// The most bytes eco reads from an ecosystem file or an env file. Both are
/// a few KB; the cap keeps `/dev/zero` or a mistaken `-f` on a log file from
/// growing the daemon without bound.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The longest project or app name: names become log file names
/// (`<project>/<app>-<instance>.out.log`), which the file system caps at 255
/// bytes, and they must fit in a status table.
pub const MAX_NAME_LEN: usize = 64;

/// App names the CLI gives a meaning of its own: `all` is the "every app"
/// target, so an app called `all` could never be named alone.
pub const RESERVED_APP_NAMES: &[&str] = &["all"];

/// The most characters of a source line shown under an error: a 200 KB line
/// would bury the message.
pub const MAX_SNIPPET_CHARS: usize = 200;

/// The most characters of one error message (a backstop: values quoted in
/// messages are clipped to [`MAX_SNIPPET_CHARS`] where they are quoted).
const MAX_MESSAGE_CHARS: usize = 1000;

/// Why a file could not be read (eco reads every file a user controls
/// through [`crate::untrusted`]).
pub use crate::untrusted::ReadError;

/// The file-system questions validation needs answered.
pub trait FileSystem {
    fn is_dir(&self, path: &Path) -> bool;
    /// Whether anything (file, folder, FIFO …) is at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// Reads a regular file of at most `limit` bytes, without blocking on a
    /// FIFO and without reading (or allocating) more than `limit + 1` bytes.
    fn read_limited(&self, path: &Path, limit: u64) -> Result<String, ReadError>;
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
    validate_with_notes(input).map(|(spec, _)| spec)
}

/// Parses and validates a whole file; also returns what a PM2 file says
/// that eco approximates or drops.
pub fn validate_with_notes(input: &Input<'_>) -> Result<(ProjectSpec, Vec<Note>), ConfigErrors> {
    let mut walker = Walker::new(input);
    let spec = if let Some(pos) = nul_byte(input.text) {
        walker.error(
            pos,
            "",
            "the file contains a NUL byte".into(),
            Some("an ecosystem file is YAML text; check that -f names the right file".into()),
        );
        None
    } else {
        walker.parsed(input.text)
    };
    walker.finish(spec)
}

/// Validates a tree that was not read from `input.text` (a JavaScript
/// file's exports): errors name the app and key, with no line.
pub fn validate_tree(
    input: &Input<'_>,
    root: &Node,
) -> Result<(ProjectSpec, Vec<Note>), ConfigErrors> {
    let mut walker = Walker::new(input);
    let spec = walker.walk(root);
    walker.finish(spec)
}

impl<'a> Walker<'a> {
    fn new(input: &'a Input<'a>) -> Walker<'a> {
        Walker {
            input,
            lines: input.text.lines().collect(),
            errors: Vec::new(),
            graph: Vec::new(),
            env_files: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn finish(self, spec: Option<ProjectSpec>) -> Result<(ProjectSpec, Vec<Note>), ConfigErrors> {
        let mut errors = self.errors;
        match spec {
            Some(spec) if errors.is_empty() => Ok((spec, self.notes)),
            _ => {
                errors.sort_by_key(|e| (e.pos.line, e.pos.column));
                Err(ConfigErrors(errors))
            }
        }
    }

    /// The project of a parsed tree, in eco's shape or PM2's.
    fn walk(&mut self, root: &Node) -> Option<ProjectSpec> {
        if !pm2::is_pm2(root) {
            return self.project(root);
        }
        let host = super::host::Host {
            cpus: self.input.cpus,
        };
        let translated = pm2::translate(root, &host, &self.folder());
        for (pos, path, message, hint) in translated.errors {
            self.error(pos, &path, message, hint);
        }
        self.notes = translated.notes;
        self.project(&translated.root)
    }
}

/// Where the first raw NUL byte is in `text`.
fn nul_byte(text: &str) -> Option<Pos> {
    text.lines().enumerate().find_map(|(i, line)| {
        let at = line.find('\0')?;
        Some(Pos {
            line: u64::try_from(i + 1).unwrap_or(u64::MAX),
            column: u64::try_from(line[..at].chars().count() + 1).unwrap_or(u64::MAX),
        })
    })
}

/// `s`, cut to [`MAX_SNIPPET_CHARS`] characters with an ellipsis.
fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_SNIPPET_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

impl Walker<'_> {
    /// Parses the text and walks the tree; `None` when it is not YAML.
    fn parsed(&mut self, text: &str) -> Option<ProjectSpec> {
        match node::parse(text) {
            Ok(root) => {
                for dup in node::duplicate_keys(&root) {
                    self.error(
                        dup.again,
                        &dup.path,
                        format!(
                            "duplicate key `{}`, first at line {}",
                            clip(&dup.key),
                            dup.first.line
                        ),
                        Some("remove one of the two, or merge them".into()),
                    );
                }
                for (path, pos) in node::nul_strings(&root) {
                    self.error(
                        pos,
                        &path,
                        "contains a NUL byte (\\0), which no argument or environment value can carry"
                            .into(),
                        Some("remove the \\0 (or \\x00) escape".into()),
                    );
                }
                self.walk(&root)
            }
            Err(syntax) => {
                if syntax.message.starts_with("file too large") {
                    let hint = "an ecosystem file is a few KB; check that -f names the right file";
                    self.error(syntax.pos, "", syntax.message, Some(hint.into()));
                } else {
                    let message = format!("invalid YAML: {}", syntax.message);
                    self.error(syntax.pos, "", message, js_hint(text));
                }
                None
            }
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
    /// What a PM2 file says that eco approximates or drops.
    notes: Vec<Note>,
}

/// The hint for a YAML syntax error in a file that is JavaScript.
fn js_hint(text: &str) -> Option<String> {
    let js = [
        "module.exports",
        "export default",
        "require(",
        "const ",
        "//",
    ]
    .iter()
    .any(|w| text.contains(w));
    js.then(|| {
        "this looks like JavaScript (a PM2 ecosystem.config.js): name the file \
         `ecosystem.config.js` (or .cjs/.mjs) and eco evaluates it with node, \
         or convert it once with `eco import FILE > ecosystem.yaml`"
            .to_owned()
    })
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
            .map(|l| clip(l));
        // Messages quote values; a value of a few hundred KB must not be echoed whole.
        let message = match message.char_indices().nth(MAX_MESSAGE_CHARS) {
            Some((at, _)) => format!("{}…", &message[..at]),
            None => message,
        };
        self.errors.push(ConfigError {
            file: self.input.file.clone(),
            pos,
            path: clip(path),
            message,
            hint,
            source_line,
        });
    }

    fn expected(&mut self, node: &Node, path: &str, expected: &str) {
        let found = match &node.value {
            Value::Str(s) => format!("the string {:?}", clip(s)),
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
                let hint = super::keys::hint(&name, known);
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

    /// A string value; `None` for one holding a NUL byte (already reported
    /// by `parsed`), so no path or command is built from it.
    fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) if s.contains('\0') => None,
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
            Value::Str(_) => self.string(node, path).map(|s| vec![s]),
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
                    format!("{:?} is not a valid environment variable name", clip(&name)),
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
                        if let Some(problem) = name_problem(&n) {
                            self.error(
                                value.pos,
                                "name",
                                format!("project name {:?} {problem}", clip(&n)),
                                Some("rename the project, e.g. `my-project`".into()),
                            );
                        } else {
                            name = Some(n);
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
                if let Some(problem) = name_problem(&app) {
                    self.error(
                        key.pos,
                        &join("apps", &clip(&app)),
                        format!("app name {:?} {problem}", clip(&app)),
                        Some("rename the app, e.g. `my-app`".into()),
                    );
                    continue;
                }
                if RESERVED_APP_NAMES.contains(&app.as_str()) {
                    self.error(
                        key.pos,
                        &join("apps", &app),
                        format!("`{app}` is reserved: on the command line it means every app"),
                        Some(format!("rename the app, e.g. `{app}-app` or `main`")),
                    );
                    continue;
                }
                // A repeated app is reported as a duplicate key (see `parsed`).
                if !seen.insert(app.clone()) {
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
            // A long folder name must not make log paths too long either.
            cleaned.chars().take(MAX_NAME_LEN).collect()
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
        let mut pid_file: Option<String> = None;
        let mut watchdog = None;
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
                        } else if self.input.fs.exists(&resolved) {
                            self.error(
                                value.pos,
                                path,
                                format!("{} is a file, not a folder", resolved.display()),
                                Some("cwd names the folder the app runs in; give that folder (relative paths start at the file's folder)".into()),
                            );
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
                        // Each error points at its own list item.
                        let at: Vec<(Pos, String)> = match &value.value {
                            Value::Seq(items) => items
                                .iter()
                                .enumerate()
                                .map(|(i, n)| (n.pos, format!("{path}[{i}]")))
                                .collect(),
                            _ => vec![(value.pos, path.to_owned())],
                        };
                        for (file, (pos, item_path)) in files.iter().zip(at) {
                            self.env_file(file, pos, &item_path, &mut file_env);
                        }
                    }
                }
                "mode" => match self.string(value, path).as_deref() {
                    Some("fork") => mode = Mode::Fork,
                    Some("cluster") => mode = Mode::Cluster,
                    Some(other) => self.error(
                        value.pos,
                        path,
                        format!("expected `fork` or `cluster`, found {:?}", clip(other)),
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
                "pid_file" => pid_file = self.string(value, path),
                "watchdog" => watchdog = self.duration(value, path),
                "health" => settings.health = self.health(value, path),
                "reload_signal" => settings.reload_signal = self.signal(value, path),
                "fd_store" => set(&mut settings.fd_store, self.count(value, path)),
                "rollout" => set(&mut settings.rollout, self.rollout(value, path)),
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
                        format!(
                            "expected `always`, `on-failure` or `never`, found {:?}",
                            clip(other)
                        ),
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
                    if let Some(sig) = self.signal(value, path) {
                        settings.stop_signal = sig;
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
                            Ok(_) => {
                                if !crate::schedule::can_ever_fire(&expr) {
                                    self.notes.push(Note {
                                        path: path.to_owned(),
                                        app: Some(app.to_owned()),
                                        pos: value.pos,
                                        text: format!(
                                            "the schedule {:?} never fires (no date matches it, \
                                             e.g. the 30th of February): the app is never restarted by it",
                                            clip(&expr)
                                        ),
                                    });
                                }
                                settings.cron_restart = Some(expr);
                            }
                            Err(err) => self.error(
                                value.pos,
                                path,
                                format!("invalid cron expression {:?}: {err}", clip(&expr)),
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
                "write_pid_file" => {
                    settings.write_pid_file = self.string(value, path).map(|p| self.resolve(&p));
                }
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
        if mode == Mode::Cluster && listen.is_empty() {
            // PM2 cluster apps listen on PORT; eco binds it for them.
            // Without one, a Node app (eco's shim) asks eco for whatever
            // port it listens on, as Node's cluster module shares it.
            let node = argv.as_deref().is_some_and(super::shim::is_node);
            match env.get("PORT").and_then(|p| p.trim().parse::<u16>().ok()).filter(|p| *p > 0) {
                Some(port) => listen.push((
                    ListenAddr::Tcp(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port)),
                    key_pos,
                )),
                None if node => {}
                None => self.error(
                    key_pos,
                    &join(&base, "listen"),
                    "`mode: cluster` needs `listen` (the sockets eco binds once and shares between instances), or a PORT in env to listen on: only a Node app (`cmd: node …`) gets the port it listens on from eco by itself".into(),
                    Some("add e.g. `listen: [8080]`, or `env: { PORT: 8080 }` for an app that calls listen(PORT)".into()),
                ),
            }
        }
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
        let pid_file = pid_file.map(|p| normalize(&cwd.join(p)));
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
                    pid_file,
                    watchdog,
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
                        format!(
                            "cannot split {:?} into words: a quote is not closed",
                            clip(s)
                        ),
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
        let text = match self.input.fs.read_limited(&resolved, MAX_FILE_BYTES) {
            Ok(text) => text,
            Err(err) => {
                let hint = match err {
                    ReadError::NotRegular { .. } => {
                        "env_file must name a regular file of KEY=value lines"
                    }
                    ReadError::TooLarge { .. } => {
                        "an env file holds a few KEY=value lines; check the path"
                    }
                    ReadError::Symlink | ReadError::NotUtf8 | ReadError::Io(_) => {
                        "create it, or fix the path (relative paths start at the file's folder)"
                    }
                    ReadError::TimedOut { .. } => {
                        "check the mount that holds it, or copy the file to a local disk"
                    }
                };
                self.error(
                    pos,
                    path,
                    format!("cannot read env file {}: {err}", resolved.display()),
                    Some(hint.into()),
                );
                return;
            }
        };
        for item in dotenvy::from_read_iter(text.as_bytes()) {
            match item {
                Ok((k, v)) if k.contains('\0') || v.contains('\0') => {
                    self.error(
                        pos,
                        path,
                        format!(
                            "env file {}: variable {:?} contains a NUL byte, which no environment value can carry",
                            resolved.display(),
                            clip(&k)
                        ),
                        None,
                    );
                    return;
                }
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
                    format!("invalid glob {:?}: {}", clip(glob), err.kind()),
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

    fn signal(&mut self, value: &Node, path: &str) -> Option<Signal> {
        let parsed = match &value.value {
            Value::Str(s) => Signal::parse(s),
            Value::Int(i) => i32::try_from(*i)
                .ok()
                .and_then(|n| Signal::parse(&n.to_string())),
            _ => None,
        };
        if parsed.is_none() {
            self.error(
                value.pos,
                path,
                format!(
                    "expected a signal name such as SIGTERM or SIGINT, found {}",
                    value.value
                ),
                Some(
                    "use one of SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL".into(),
                ),
            );
        }
        parsed
    }

    /// `health: { http|tcp|exec: …, interval, timeout, failures }`.
    fn rollout(&mut self, node: &Node, path: &str) -> Option<Rollout> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                path,
                format!("expected a mapping, found {}", node.value),
                Some("e.g. `rollout: { max_surge: 2, max_unavailable: 0 }`".into()),
            );
            return None;
        };
        let mut rollout = Rollout::default();
        for (key, value, _) in self.keyed(entries, path, ROLLOUT_KEYS, false) {
            let path = join(path, &key);
            match key.as_str() {
                "max_surge" => set(&mut rollout.max_surge, self.count(value, &path)),
                _ => set(&mut rollout.max_unavailable, self.count(value, &path)),
            }
        }
        if rollout.max_surge == 0 && rollout.max_unavailable == 0 {
            self.error(
                node.pos,
                path,
                "`max_surge` and `max_unavailable` are both 0: nothing could be replaced".into(),
                Some("allow one new instance beside the old ones (`max_surge: 1`), or one old instance stopped first (`max_unavailable: 1`)".into()),
            );
            return None;
        }
        Some(rollout)
    }

    fn health(&mut self, node: &Node, path: &str) -> Option<Health> {
        let Value::Map(entries) = &node.value else {
            self.error(
                node.pos,
                path,
                format!("expected a mapping, found {}", node.value),
                Some(
                    "e.g. `health: { http: \"http://127.0.0.1:8080/health\", interval: 10s }`"
                        .into(),
                ),
            );
            return None;
        };
        let mut probe = None;
        let mut health = Health {
            probe: Probe::Tcp(String::new()),
            interval: std::time::Duration::from_secs(10),
            timeout: std::time::Duration::from_secs(2),
            failures: 3,
        };
        for (key, value, _) in self.keyed(entries, path, HEALTH_KEYS, false) {
            let path = join(path, &key);
            match key.as_str() {
                "interval" => set(&mut health.interval, self.duration(value, &path)),
                "timeout" => set(&mut health.timeout, self.duration(value, &path)),
                "failures" => set(&mut health.failures, self.count(value, &path)),
                kind => {
                    let Some(text) = self.string(value, &path) else {
                        continue;
                    };
                    if probe.is_some() {
                        self.error(
                            value.pos,
                            &path,
                            "give one probe: `http`, `tcp` or `exec`".into(),
                            None,
                        );
                    }
                    probe = match kind {
                        "http" if text.starts_with("http://") => Some(Probe::Http(text)),
                        "tcp" if valid_host_port(&text) => Some(Probe::Tcp(text)),
                        "exec" if !text.trim().is_empty() => Some(Probe::Exec(text)),
                        _ => {
                            self.error(
                                value.pos,
                                &path,
                                format!("invalid {kind} probe {:?}", clip(&text)),
                                Some(
                                    "http needs an http:// URL, tcp host:port, exec a command"
                                        .into(),
                                ),
                            );
                            None
                        }
                    };
                }
            }
        }
        if health.failures == 0 {
            self.error(node.pos, path, "`failures` must be at least 1".into(), None);
        }
        match probe {
            Some(probe) => Some(Health { probe, ..health }),
            None => {
                self.error(
                    node.pos,
                    path,
                    "a health check needs a probe: `http`, `tcp` or `exec`".into(),
                    None,
                );
                None
            }
        }
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
                                format!("expected host:port, found {:?}", clip(&text)),
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
                                format!("expected an http:// URL, found {:?}", clip(&text)),
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

/// What is wrong with a project or app name, said after the name
/// (`app name "x" …`); `None` when it is fine.
pub fn name_problem(name: &str) -> Option<String> {
    if !valid_name(name) {
        return Some("may only use A-Z a-z 0-9 _ . - (and is not `.` or `..`)".into());
    }
    let len = name.chars().count();
    (len > MAX_NAME_LEN).then(|| {
        format!(
            "is {len} characters long; the limit is {MAX_NAME_LEN} (names become log file names)"
        )
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A file system of fixed answers: `/p/dir` is a folder, `/p/file` a
    /// file, and env files answer what `read` says.
    struct FakeFs {
        read: fn(&Path) -> Result<String, ReadError>,
    }

    impl FileSystem for FakeFs {
        fn is_dir(&self, path: &Path) -> bool {
            path == Path::new("/p") || path == Path::new("/p/dir")
        }
        fn exists(&self, path: &Path) -> bool {
            self.is_dir(path) || path == Path::new("/p/file")
        }
        fn read_limited(&self, path: &Path, _limit: u64) -> Result<String, ReadError> {
            (self.read)(path)
        }
    }

    fn errors_with(text: &str, read: fn(&Path) -> Result<String, ReadError>) -> Vec<String> {
        let fs = FakeFs { read };
        let input = Input {
            file: PathBuf::from("/p/eco.yaml"),
            text,
            profile: None,
            cpus: 1,
            fs: &fs,
        };
        match validate(&input) {
            Ok(_) => Vec::new(),
            Err(errors) => errors
                .0
                .iter()
                .map(|e| format!("{}:{} {}: {}", e.pos.line, e.pos.column, e.path, e.message))
                .collect(),
        }
    }

    fn errors(text: &str) -> Vec<String> {
        errors_with(text, |_| Ok("A=1\n".into()))
    }

    #[test]
    fn env_file_read_errors_point_at_the_entry() {
        let text = "apps:\n  a:\n    cmd: x\n    env_file: e.env\n";
        let not_regular = errors_with(text, |_| {
            Err(ReadError::NotRegular {
                kind: "a named pipe",
            })
        });
        assert_eq!(
            not_regular,
            [
                "4:15 apps.a.env_file: cannot read env file /p/e.env: not a regular file (it is a named pipe)"
            ]
        );
        let too_large = errors_with(text, |_| {
            Err(ReadError::TooLarge {
                size: 2_000_000,
                limit: MAX_FILE_BYTES,
            })
        });
        assert_eq!(
            too_large,
            [
                "4:15 apps.a.env_file: cannot read env file /p/e.env: file too large (2000000 bytes; the limit is 1 MiB)"
            ]
        );
    }

    #[test]
    fn a_nul_in_an_env_file_is_an_error() {
        let text = "apps:\n  a:\n    cmd: x\n    env_file: e.env\n";
        let found = errors_with(text, |_| Ok("A=1\nRAW=x\0y\n".into()));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("4:15 apps.a.env_file: env file /p/e.env: variable ")
                && found[0].ends_with("contains a NUL byte, which no environment value can carry"),
            "{found:?}"
        );
    }

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

    #[test]
    fn nul_bytes_in_values_are_errors() {
        assert_eq!(
            errors("apps:\n  a:\n    cmd: \"x\\0\"\n    cwd: \"dir\\0\"\n    env: {K: \"\\0\"}\n"),
            [
                "3:10 apps.a.cmd: contains a NUL byte (\\0), which no argument or environment value can carry",
                "4:10 apps.a.cwd: contains a NUL byte (\\0), which no argument or environment value can carry",
                "5:14 apps.a.env.K: contains a NUL byte (\\0), which no argument or environment value can carry",
            ]
        );
        assert_eq!(
            errors("apps:\n  a: {cmd: x}\n  b: {cmd: \0}\n"),
            ["3:12 : the file contains a NUL byte"]
        );
    }

    #[test]
    fn cwd_naming_a_file_says_so() {
        assert!(errors("apps:\n  a: {cmd: x, cwd: dir}\n").is_empty());
        assert_eq!(
            errors("apps:\n  a: {cmd: x, cwd: file}\n"),
            ["2:20 apps.a.cwd: /p/file is a file, not a folder"]
        );
        assert_eq!(
            errors("apps:\n  a: {cmd: x, cwd: gone}\n"),
            ["2:20 apps.a.cwd: folder /p/gone does not exist"]
        );
    }

    #[test]
    fn duplicate_keys_name_the_first_line() {
        assert_eq!(
            errors("apps:\n  a: {cmd: x}\nname: p\napps: {}\n"),
            ["4:1 apps: duplicate key `apps`, first at line 1"]
        );
    }

    #[test]
    fn clip_cuts_at_200_characters() {
        assert_eq!(clip("short"), "short");
        let cut = clip(&"é".repeat(500));
        assert_eq!(cut.chars().count(), MAX_SNIPPET_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
