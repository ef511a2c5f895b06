//! The ecosystem file → a validated [`ProjectSpec`].
//! Pure except [`load`], which reads the file (and its env files).

pub mod error;
pub mod keys;
pub mod node;
pub mod raw;
pub mod units;
pub mod validate;

use std::io;
use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigErrors};
pub use validate::{FileSystem, Input, validate};

use crate::spec::ProjectSpec;

/// The real file system.
pub struct RealFs;

impl FileSystem for RealFs {
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn read_to_string(&self, path: &Path) -> io::Result<String> {
        std::fs::read_to_string(path)
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
        if absolute.is_file() {
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
    let text = std::fs::read_to_string(file).map_err(|err| {
        ConfigErrors(vec![ConfigError {
            file: file.to_path_buf(),
            pos: node::Pos::default(),
            path: String::new(),
            message: format!("cannot read the file: {err}"),
            hint: None,
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
