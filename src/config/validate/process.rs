//! The keys that say what process runs: `cmd`, `shell`, `cwd`, `mode`,
//! `instances`, `increment_var`, `pid_file`, `watchdog` and `depends_on`.

use super::app::{Draft, Key};
use super::primitives::clip;
use super::{MAX_INSTANCES, Walker};
use crate::config::node::{Node, Value};
use crate::spec::Mode;

impl Walker<'_> {
    /// Reads `key` into `d` when it is one of this section's; `false` otherwise.
    pub(super) fn process_key(&mut self, d: &mut Draft, key: &Key<'_>) -> bool {
        let (value, path) = (key.value, key.path);
        match key.name {
            "cmd" => d.cmd = Some(value.clone()),
            "shell" => d.shell = self.boolean(value, path).unwrap_or(false),
            "cwd" => self.cwd(d, value, path),
            "mode" => match self.string(value, path).as_deref() {
                Some("fork") => d.mode = Mode::Fork,
                Some("cluster") => d.mode = Mode::Cluster,
                Some(other) => self.error(
                    value.pos,
                    path,
                    format!("expected `fork` or `cluster`, found {:?}", clip(other)),
                    None,
                ),
                None => {}
            },
            "instances" => self.instances(d, value, path),
            "increment_var" => d.increment_var = self.string(value, path),
            "pid_file" => d.pid_file = self.string(value, path),
            "watchdog" => d.watchdog = self.duration(value, path),
            "depends_on" => {
                if let Some(names) = self.strings(value, path) {
                    let positions = match &value.value {
                        Value::Seq(items) => items.iter().map(|n| n.pos).collect(),
                        _ => vec![value.pos],
                    };
                    d.depends_pos = names.into_iter().zip(positions).collect();
                }
            }
            _ => return false,
        }
        true
    }

    /// `cwd`: a folder that exists, relative to the file's folder.
    fn cwd(&mut self, d: &mut Draft, value: &Node, path: &str) {
        let Some(dir) = self.string(value, path) else {
            return;
        };
        let resolved = self.resolve(&dir);
        if self.input.fs.is_dir(&resolved) {
            d.cwd = resolved;
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
                Some(
                    "create it, or fix the path (relative paths start at the file's folder)".into(),
                ),
            );
        }
    }

    /// `instances`: a count up to [`MAX_INSTANCES`], or `max` (one per CPU).
    fn instances(&mut self, d: &mut Draft, value: &Node, path: &str) {
        match &value.value {
            Value::Str(s) if s == "max" => d.instances = self.input.cpus.max(1),
            Value::Int(_) => match self.count(value, path) {
                Some(n) if n > MAX_INSTANCES => self.error(
                    value.pos,
                    path,
                    format!("{n} instances is more than eco runs per app ({MAX_INSTANCES})"),
                    Some("split the app, or use fewer instances".into()),
                ),
                Some(n) => d.instances = n,
                None => {}
            },
            _ => self.expected(value, path, "a whole number >= 0 or \"max\""),
        }
    }

    /// The argv of `cmd`: split like a shell, or given to `/bin/sh -c`.
    pub(super) fn cmd(&mut self, node: &Node, path: &str, shell: bool) -> Option<Vec<String>> {
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::errors;

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
}
