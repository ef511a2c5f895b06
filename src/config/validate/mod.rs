//! The YAML tree → [`ProjectSpec`]. Walks every key, collects every error
//! (never stops at the first), and resolves paths, env and defaults.
//! File-system questions go through [`FileSystem`] so this stays testable.
//!
//! One file per section of the file: [`primitives`] reads single values,
//! [`project`] the top level, [`app`] one app (with [`process`], [`env`],
//! [`lifecycle`], [`probes`], [`rollout`] and [`listen`] for its keys), and
//! [`graph`] checks what spans apps.

mod app;
mod env;
mod graph;
mod lifecycle;
mod listen;
mod primitives;
mod probes;
mod process;
mod project;
mod rollout;
#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, ConfigErrors};
use super::node::{self, Node, Pos, Value};
use super::pm2::{self, Note};
use crate::spec::{AppSpec, ListenAddr, ProjectSpec};
use primitives::clip;
pub use primitives::{name_problem, normalize, valid_name};

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
}

#[cfg(test)]
mod tests {
    use super::testing::errors;

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
    fn duplicate_keys_name_the_first_line() {
        assert_eq!(
            errors("apps:\n  a: {cmd: x}\nname: p\napps: {}\n"),
            ["4:1 apps: duplicate key `apps`, first at line 1"]
        );
    }
}
