//! Helpers for the sections' tests: a fixed file system and the errors a
//! file gives, one `line:column path: message` string each.

use std::path::{Path, PathBuf};

use super::{FileSystem, Input, ReadError, validate};

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

/// The errors of `/p/eco.yaml` holding `text`, env files read by `read`.
pub(super) fn errors_with(text: &str, read: fn(&Path) -> Result<String, ReadError>) -> Vec<String> {
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

/// The errors of `/p/eco.yaml` holding `text`, every env file `A=1`.
pub(super) fn errors(text: &str) -> Vec<String> {
    errors_with(text, |_| Ok("A=1\n".into()))
}

/// The project `/p/eco.yaml` holding `text` describes; panics on errors.
pub(super) fn spec(text: &str) -> crate::spec::ProjectSpec {
    let fs = FakeFs {
        read: |_| Ok("A=1\n".into()),
    };
    let input = Input {
        file: PathBuf::from("/p/eco.yaml"),
        text,
        profile: None,
        cpus: 1,
        fs: &fs,
    };
    validate(&input).expect("a valid file")
}
