//! The ecosystem file → a validated [`ProjectSpec`].
//! Pure except [`load`], which reads the file (and its env files).

pub mod emit;
pub mod error;
pub mod host;
pub mod js;
pub mod keys;
pub mod node;
pub mod pm2;
pub mod raw;
pub mod shim;
pub mod units;
pub mod validate;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors};
pub use pm2::Note;
pub use validate::{FileSystem, Input, MAX_FILE_BYTES, ReadError, validate};

use crate::spec::ProjectSpec;
use crate::untrusted;

/// The real file system.
pub struct RealFs;

impl FileSystem for RealFs {
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn read_limited(&self, path: &Path, limit: u64) -> Result<String, ReadError> {
        untrusted::read_text(path, untrusted::Rules::config(limit))
    }
}

/// Finds the file to use: `-f FILE`, else `./ecosystem.yaml`, else
/// `./ecosystem.yml`, else PM2's `ecosystem.config.js` (`.cjs`, `.mjs`) or
/// `ecosystem.json`.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigErrors> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        // Then PM2's names, so a PM2 project needs no -f.
        None => [
            "ecosystem.yaml",
            "ecosystem.yml",
            "ecosystem.config.js",
            "ecosystem.config.cjs",
            "ecosystem.config.mjs",
            "ecosystem.json",
        ]
        .iter()
        .map(PathBuf::from)
        .collect(),
    };
    for candidate in &candidates {
        let absolute = validate::normalize(&cwd.join(candidate));
        // Anything that exists is taken; `load` says why a FIFO or a folder
        // cannot be read rather than calling it missing.
        if absolute.exists() {
            return Ok(absolute);
        }
    }
    let (file, message, hint) = match explicit {
        Some(p) => (
            p.to_path_buf(),
            "no such file".to_owned(),
            "check the path given to -f".to_owned(),
        ),
        None => (
            cwd.join("ecosystem.yaml"),
            "no ecosystem.yaml or ecosystem.yml in this folder".to_owned(),
            "run eco from your project's folder, or pass -f FILE".to_owned(),
        ),
    };
    Err(ConfigErrors(vec![ConfigError {
        file,
        pos: node::Pos::default(),
        path: String::new(),
        message,
        hint: Some(hint),
        source_line: None,
    }]))
}

/// Reads and validates the file.
pub fn load(file: &Path, profile: Option<&str>) -> Result<ProjectSpec, ConfigErrors> {
    load_with_notes(file, profile).map(|(spec, _)| spec)
}

/// Reads and validates the file for running it: Node apps that need eco's
/// shim get it (written under `home`). What `up`, `reload`, `diff` and the
/// daemon use; `validate` and `export` show the file as written.
pub fn load_for_run(
    file: &Path,
    profile: Option<&str>,
    home: &Path,
) -> Result<(ProjectSpec, Vec<Note>), ConfigErrors> {
    load_for_run_with(file, profile, home, &js::OwnChild)
}

/// [`load_for_run`], with node (for a JavaScript file) started by
/// `runner`: the daemon's reaper there. Blocks for up to [`js::TIMEOUT`]
/// and more on a hung mount: the daemon calls it off its loop.
pub fn load_for_run_with(
    file: &Path,
    profile: Option<&str>,
    home: &Path,
    runner: &dyn js::Runner,
) -> Result<(ProjectSpec, Vec<Note>), ConfigErrors> {
    let (mut spec, notes) = validate_source(file, profile, &read_source_with(file, runner)?)?;
    let eco = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("eco"));
    if shim::apply(&mut spec, &shim::path(home), &eco)
        && let Err(err) = shim::install(home)
    {
        return Err(one_error(
            file,
            format!(
                "cannot write eco's Node shim under {}: {err}",
                home.display()
            ),
            Some("check that ECO_HOME is writable".into()),
        ));
    }
    Ok((spec, notes))
}

fn one_error(file: &Path, message: String, hint: Option<String>) -> ConfigErrors {
    ConfigErrors(vec![ConfigError {
        file: file.to_path_buf(),
        pos: node::Pos::default(),
        path: String::new(),
        message,
        hint,
        source_line: None,
    }])
}

/// A file as read: text (YAML, or JSON that YAML reads, with positions),
/// or a tree with no positions (a JavaScript file's exports, JSON5).
pub enum Source {
    Text(String),
    /// With notes about the reading (what a JavaScript file printed).
    Tree(node::Node, Vec<Note>),
}

/// Reads the file: JavaScript is evaluated by node; `.json` that YAML
/// cannot read (PM2 evaluates `.json` as JavaScript, so comments and
/// trailing commas occur) is read as JSON5.
pub fn read_source(file: &Path) -> Result<Source, ConfigErrors> {
    read_source_with(file, &js::OwnChild)
}

/// [`read_source`], with node started by `runner`.
pub fn read_source_with(file: &Path, runner: &dyn js::Runner) -> Result<Source, ConfigErrors> {
    let rules = untrusted::Rules::config(MAX_FILE_BYTES);
    if js::is_js(file) {
        // Node would block on a FIFO too: the file is checked first.
        untrusted::open(file, rules).map_err(|err| unreadable(file, err))?;
        let evaluated = js::evaluate_with(file, runner)
            .map_err(|(message, hint)| one_error(file, message, hint))?;
        // PM2 shows what a config prints and goes on: notes, not errors.
        let notes = evaluated
            .printed
            .iter()
            .map(|line| Note {
                path: String::new(),
                app: None,
                pos: node::Pos::default(),
                text: format!("node printed while evaluating the file: {line}"),
            })
            .collect();
        return Ok(Source::Tree(pm2::from_json(&evaluated.exports), notes));
    }
    let text = untrusted::read_text(file, rules).map_err(|err| unreadable(file, err))?;
    let json = matches!(
        file.extension().and_then(|e| e.to_str()),
        Some("json" | "json5")
    );
    if !json || text.contains('\0') || node::parse(&text).is_ok() {
        return Ok(Source::Text(text));
    }
    parse_json5(file, &text).map(|tree| Source::Tree(tree, Vec::new()))
}

/// The deepest `[`/`{` nesting a JSON5 file may have. The JSON5 parser
/// recurses once per level: 50,000 `[` in a 1 MB file overflowed the
/// stack and aborted eco. 128 is serde_json's own limit (what node's
/// output is read with).
pub const MAX_JSON5_DEPTH: usize = 128;

/// A `.json` file that YAML could not read, read as JSON5 (comments,
/// trailing commas) into a tree; refused when nested too deep to parse.
pub fn parse_json5(file: &Path, text: &str) -> Result<node::Node, ConfigErrors> {
    if json5_depth(text) > MAX_JSON5_DEPTH {
        return Err(one_error(
            file,
            format!("invalid JSON: nested deeper than {MAX_JSON5_DEPTH} levels"),
            Some("an ecosystem file nests a few levels; check that -f names the right file".into()),
        ));
    }
    match json5::from_str::<serde_json::Value>(text) {
        Ok(value) => Ok(pm2::from_json(&value)),
        Err(err) => {
            let message = err.to_string();
            let message = message.split(" at ").next().unwrap_or_default();
            let mut errors = one_error(file, format!("invalid JSON: {message}"), None);
            if let Some(p) = err.position() {
                errors.0[0].pos = node::Pos {
                    line: u64::try_from(p.line + 1).unwrap_or(0),
                    column: u64::try_from(p.column + 1).unwrap_or(0),
                };
            }
            Err(errors)
        }
    }
}

/// How deep `text` nests `[` and `{`, JSON5 strings and comments skipped
/// (a bracket in them nests nothing).
fn json5_depth(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            '"' | '\'' => {
                while let Some(s) = chars.next() {
                    if s == '\\' {
                        chars.next();
                    } else if s == c {
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                chars.by_ref().find(|s| *s == '\n');
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut star = false;
                for s in chars.by_ref() {
                    if star && s == '/' {
                        break;
                    }
                    star = s == '*';
                }
            }
            _ => {}
        }
    }
    deepest
}

/// An ecosystem file eco refused to read, in eco's words.
fn unreadable(file: &Path, err: ReadError) -> ConfigErrors {
    let hint = match err {
        ReadError::NotRegular { .. } | ReadError::Symlink => {
            Some("pass the path of an ecosystem YAML file to -f")
        }
        ReadError::TooLarge { .. } => {
            Some("an ecosystem file is a few KB; check that -f names the right file")
        }
        ReadError::TimedOut { .. } => {
            Some("check the mount that holds the file, or copy it to a local disk")
        }
        ReadError::NotUtf8 | ReadError::Io(_) => None,
    };
    let message = match err {
        ReadError::NotUtf8 | ReadError::Io(_) => format!("cannot read the file: {err}"),
        _ => err.to_string(),
    };
    one_error(file, message, hint.map(str::to_owned))
}

/// Validates what [`read_source`] read.
pub fn validate_source(
    file: &Path,
    profile: Option<&str>,
    source: &Source,
) -> Result<(ProjectSpec, Vec<Note>), ConfigErrors> {
    let text = match source {
        Source::Text(text) => text.as_str(),
        Source::Tree(..) => "",
    };
    let input = Input {
        file: file.to_path_buf(),
        text,
        profile,
        cpus: cpu_count(),
        fs: &RealFs,
    };
    match source {
        Source::Text(_) => validate::validate_with_notes(&input),
        Source::Tree(root, read) => validate::validate_tree(&input, root)
            .map(|(spec, notes)| (spec, read.iter().cloned().chain(notes).collect())),
    }
}

/// Reads and validates the file (eco's YAML, or a PM2 file: JavaScript,
/// JSON, JSON5 or YAML); also returns what eco approximates or drops.
pub fn load_with_notes(
    file: &Path,
    profile: Option<&str>,
) -> Result<(ProjectSpec, Vec<Note>), ConfigErrors> {
    validate_source(file, profile, &read_source(file)?)
}

/// `eco import`: the file as eco's ecosystem.yaml, with a comment at each
/// key eco approximates or drops. The file is validated first. With
/// `profile` (`--env NAME`, as `pm2 start FILE --env NAME`), each
/// `env_NAME` is merged into its `env` and the profiles are left out.
pub fn import(file: &Path, profile: Option<&str>) -> Result<String, ConfigErrors> {
    let source = read_source(file)?;
    validate_source(file, profile, &source)?;
    let (root, read_notes) = match source {
        Source::Text(text) => (
            node::parse(&text).map_err(|e| one_error(file, e.message, None))?,
            Vec::new(),
        ),
        Source::Tree(root, notes) => (root, notes),
    };
    let name = file
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let (mut root, mut notes) = if pm2::is_pm2(&root) {
        let folder = file.parent().unwrap_or(Path::new("/"));
        let t = pm2::translate(&root, &host::Host { cpus: cpu_count() }, folder);
        (t.root, t.notes)
    } else {
        (root, Vec::new())
    };
    notes.splice(0..0, read_notes);
    let mut header = format!("Converted from {name} by `eco import`");
    if let Some(profile) = profile {
        emit::bake_profile(&mut root, profile);
        header.push_str(&format!(" --env {profile} (env_{profile} merged into env)"));
    }
    header.push_str(
        ": check the `# PM2` comments.\n\
         yaml-language-server: $schema=https://raw.githubusercontent.com/eco/eco/main/schema/ecosystem.schema.json",
    );
    Ok(emit::yaml(&root, &notes, &header))
}

/// What `instances: "max"` resolves to on this machine.
pub fn cpu_count() -> u32 {
    std::thread::available_parallelism()
        .ok()
        .and_then(|n| u32::try_from(n.get()).ok())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by fuzzing: a `.json` file of 50,000 `[` overflowed the JSON5
    /// parser's stack and aborted eco (`eco validate`, `eco import`).
    #[test]
    fn json5_nested_too_deep_is_an_error_not_a_stack_overflow() {
        let file = Path::new("/p/ecosystem.json");
        let deep = format!("{}{} // PM2 style", "[".repeat(50_000), "]".repeat(50_000));
        let errors = parse_json5(file, &deep).expect_err("too deep");
        assert!(
            errors.0[0]
                .message
                .contains("nested deeper than 128 levels"),
            "{}",
            errors.0[0].message
        );
        // Brackets in strings and comments nest nothing.
        let fine = format!(
            "{{apps: [{{name: 'a', script: \"{}\"}}]}} // {} /* {} */",
            "[".repeat(500),
            "{".repeat(500),
            "[".repeat(500)
        );
        assert!(parse_json5(file, &fine).is_ok());
        assert_eq!(json5_depth(&"[".repeat(MAX_JSON5_DEPTH)), MAX_JSON5_DEPTH);
    }

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo.env");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        // No writer ever opens it: a blocking open would hang this test.
        let err = RealFs
            .read_limited(&fifo, MAX_FILE_BYTES)
            .expect_err("fifo");
        assert_eq!(err.to_string(), "not a regular file (it is a named pipe)");
    }

    #[test]
    fn devices_and_folders_are_refused() {
        let err = RealFs
            .read_limited(Path::new("/dev/zero"), MAX_FILE_BYTES)
            .expect_err("device");
        assert_eq!(
            err.to_string(),
            "not a regular file (it is a character device)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let err = RealFs
            .read_limited(dir.path(), MAX_FILE_BYTES)
            .expect_err("folder");
        assert_eq!(err.to_string(), "not a regular file (it is a folder)");
    }

    #[test]
    fn the_limit_is_inclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, "x".repeat(1024 * 1024)).expect("write");
        assert_eq!(
            RealFs
                .read_limited(&file, MAX_FILE_BYTES)
                .expect("at the limit")
                .len(),
            1024 * 1024
        );
        std::fs::write(&file, "x".repeat(1024 * 1024 + 1)).expect("write");
        let err = RealFs
            .read_limited(&file, MAX_FILE_BYTES)
            .expect_err("over");
        assert_eq!(
            err.to_string(),
            "file too large (1048577 bytes; the limit is 1 MiB)"
        );
    }

    #[test]
    fn load_names_the_problem_in_eco_words() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("eco.yaml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        let located = locate(Some(&fifo)).expect("a FIFO is located, then refused");
        let err = load(&located, None).expect_err("fifo");
        assert_eq!(err.0[0].message, "not a regular file (it is a named pipe)");
    }
}
