//! Single values: strings, numbers, durations, sizes, lists, env maps and
//! signals, each read with a precise "expected …, found …" error, and the
//! small path and name helpers every section shares.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{MAX_NAME_LEN, MAX_SNIPPET_CHARS, Walker};
use crate::config::node::{Node, Pos, Value};
use crate::config::units::{parse_duration, parse_size};
use crate::spec::Signal;

impl Walker<'_> {
    pub(super) fn folder(&self) -> PathBuf {
        self.input
            .file
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
    }

    pub(super) fn resolve(&self, relative: &str) -> PathBuf {
        normalize(&self.folder().join(relative))
    }

    pub(super) fn map<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [(Node, Node)]> {
        match &node.value {
            Value::Map(entries) => Some(entries),
            _ => {
                self.expected(node, path, "a mapping of keys to values");
                None
            }
        }
    }

    /// Checks that every key is a string and known; returns (key, value) pairs.
    pub(super) fn keyed<'n>(
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
                let hint = crate::config::keys::hint(&name, known);
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
    pub(super) fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) if s.contains('\0') => None,
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.expected(node, path, "a string");
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.expected(node, path, "true or false");
                None
            }
        }
    }

    pub(super) fn count(&mut self, node: &Node, path: &str) -> Option<u32> {
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

    pub(super) fn duration(&mut self, node: &Node, path: &str) -> Option<std::time::Duration> {
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

    pub(super) fn size(&mut self, node: &Node, path: &str) -> Option<u64> {
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
    pub(super) fn strings(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
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
    pub(super) fn env(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
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

    pub(super) fn globs(&mut self, globs: &[String], pos: Pos, path: &str) -> bool {
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

    pub(super) fn signal(&mut self, value: &Node, path: &str) -> Option<Signal> {
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
}

pub(super) fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

pub(super) fn is_name_char(c: char) -> bool {
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

/// `s`, cut to [`MAX_SNIPPET_CHARS`] characters with an ellipsis.
pub(super) fn clip(s: &str) -> String {
    match s.char_indices().nth(MAX_SNIPPET_CHARS) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
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
    use super::super::MAX_SNIPPET_CHARS;
    use super::clip;

    #[test]
    fn clip_cuts_at_200_characters() {
        assert_eq!(clip("short"), "short");
        let cut = clip(&"é".repeat(500));
        assert_eq!(cut.chars().count(), MAX_SNIPPET_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
