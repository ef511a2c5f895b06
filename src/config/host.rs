//! The machine a PM2 file is translated on ([`super::pm2::Machine`]): what
//! is at a script's path, which programs are in PATH, how many CPUs. The
//! I/O that the pure translation asks for.

use std::io::Read;
use std::path::Path;

use super::pm2::{Machine, ScriptKind};
use crate::untrusted;

/// This machine.
pub struct Host {
    pub cpus: u32,
}

impl Machine for Host {
    fn cpus(&self) -> u32 {
        self.cpus
    }

    fn script(&self, path: &Path) -> ScriptKind {
        let Ok(meta) = std::fs::metadata(path) else {
            return ScriptKind::Missing;
        };
        if meta.is_dir() {
            return ScriptKind::Folder;
        }
        // Never blocks on a FIFO; reads the first bytes only, as PM2.
        let mut head = Vec::with_capacity(512);
        let read = untrusted::open(path, untrusted::Rules::config(u64::MAX))
            .and_then(|file| Ok(file.take(512).read_to_end(&mut head)?));
        if read.is_err() {
            return ScriptKind::Binary;
        }
        kind_of(&head)
    }

    fn has(&self, program: &str) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| {
                std::fs::metadata(dir.join(program))
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
        })
    }
}

/// A file's first bytes as PM2's `isBinaryFile` judges them: a NUL byte,
/// or more than 10% control characters, is a binary.
pub fn kind_of(head: &[u8]) -> ScriptKind {
    let suspicious = head
        .iter()
        .filter(|b| **b < 7 || (**b > 14 && **b < 32))
        .count();
    if head.contains(&0) || (!head.is_empty() && suspicious * 100 / head.len() > 10) {
        return ScriptKind::Binary;
    }
    let shebang = head.strip_prefix(b"#!").map(|rest| {
        let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
        String::from_utf8_lossy(line).trim().to_owned()
    });
    ScriptKind::Text { shebang }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// PM2 (isbinaryfile): NUL bytes or >10% control bytes are a binary.
    #[test]
    fn binaries_and_scripts_as_pm2_tells_them_apart() {
        assert_eq!(kind_of(b"\x7fELF\x02\x01\x01\0\0\0"), ScriptKind::Binary);
        assert_eq!(
            kind_of(b"#!/usr/bin/env node\nrequire('x')\n"),
            ScriptKind::Text {
                shebang: Some("/usr/bin/env node".into())
            }
        );
        assert_eq!(
            kind_of(b"const x = 1;\n"),
            ScriptKind::Text { shebang: None }
        );
        let host = Host { cpus: 1 };
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(host.script(dir.path()), ScriptKind::Folder);
        assert_eq!(
            host.script(&dir.path().join("nothing")),
            ScriptKind::Missing
        );
        assert!(host.has("sh"));
        assert!(!host.has("no-such-program-eco"));
    }
}
