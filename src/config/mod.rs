//! The ecosystem file → a validated [`ProjectSpec`].
//! Pure except [`load`], which reads the file (and its env files).

pub mod error;
pub mod keys;
pub mod node;
pub mod raw;
pub mod units;
pub mod validate;

use std::fs::{File, FileType};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors};
pub use validate::{FileSystem, Input, MAX_FILE_BYTES, ReadError, validate};

use crate::spec::ProjectSpec;

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
        // O_NONBLOCK: opening a FIFO for reading waits for a writer otherwise.
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)?;
        // Checked on the open file, so a swap after a path check cannot sneak
        // a FIFO or device in.
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(ReadError::NotRegular {
                kind: kind_of(meta.file_type()),
            });
        }
        if meta.len() > limit {
            return Err(ReadError::TooLarge {
                size: meta.len(),
                limit,
            });
        }
        read_at_most(file, limit)
    }
}

/// Reads `file` whole, but never more than `limit + 1` bytes: a file that
/// grew after the size check is still refused without being read.
fn read_at_most(file: File, limit: u64) -> Result<String, ReadError> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > limit {
        return Err(ReadError::TooLarge { size, limit });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

/// How a non-regular file is named in messages.
fn kind_of(kind: FileType) -> &'static str {
    if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "an unknown kind of file"
    }
}

/// Finds the file to use: `-f FILE`, else `./ecosystem.yaml`, else `./ecosystem.yml`.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, ConfigErrors> {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => vec!["ecosystem.yaml".into(), "ecosystem.yml".into()],
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
    let text = RealFs.read_limited(file, MAX_FILE_BYTES).map_err(|err| {
        let hint = match err {
            ReadError::NotRegular { .. } => Some("pass the path of an ecosystem YAML file to -f"),
            ReadError::TooLarge { .. } => {
                Some("an ecosystem file is a few KB; check that -f names the right file")
            }
            ReadError::NotUtf8 | ReadError::Io(_) => None,
        };
        let message = match err {
            ReadError::NotRegular { .. } | ReadError::TooLarge { .. } => err.to_string(),
            ReadError::NotUtf8 | ReadError::Io(_) => format!("cannot read the file: {err}"),
        };
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            pos: node::Pos::default(),
            path: String::new(),
            message,
            hint: hint.map(str::to_owned),
            source_line: None,
        }])
    })?;
    validate(&Input {
        file: file.to_path_buf(),
        text: &text,
        profile,
        cpus: cpu_count(),
        fs: &RealFs,
    })
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

    /// A file that grows after the size check is still read only up to
    /// `limit + 1` bytes.
    #[test]
    fn reading_stops_one_byte_past_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, "x".repeat(10_000)).expect("write");
        let err = read_at_most(File::open(&file).expect("open"), 100).expect_err("over");
        assert!(
            matches!(
                err,
                ReadError::TooLarge {
                    size: 101,
                    limit: 100
                }
            ),
            "{err:?}"
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
