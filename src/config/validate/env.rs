//! An app's environment: `env`, `env_file` (read through the
//! [`super::FileSystem`]) and the `env_<profile>` chosen with `--env`.

use std::collections::{BTreeMap, BTreeSet};

use super::app::{Draft, Key};
use super::primitives::clip;
use super::{MAX_FILE_BYTES, ReadError, Walker};
use crate::config::node::{Pos, Value};

impl Walker<'_> {
    /// Reads `env` or `env_file` into `d`; `false` for any other key.
    pub(super) fn env_key(&mut self, d: &mut Draft, key: &Key<'_>) -> bool {
        let (value, path) = (key.value, key.path);
        match key.name {
            "env" => d.env = self.env(value, path),
            "env_file" => {
                let Some(files) = self.strings(value, path) else {
                    return true;
                };
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
                    self.env_file(file, pos, &item_path, &mut d.file_env);
                }
            }
            _ => return false,
        }
        true
    }

    /// `env_<profile>`: kept when `--env` names that profile.
    pub(super) fn profile_key(
        &mut self,
        d: &mut Draft,
        key: &Key<'_>,
        profiles_seen: &mut BTreeSet<String>,
    ) {
        let wanted = key.name.strip_prefix("env_");
        profiles_seen.insert(wanted.unwrap_or_default().to_owned());
        let parsed = self.env(key.value, key.path);
        if wanted == self.input.profile {
            d.profile_env = parsed;
        }
    }

    /// Reads one env file into `into`, and records it for the daemon to watch.
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::errors_with;
    use super::super::{MAX_FILE_BYTES, ReadError};

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
}
