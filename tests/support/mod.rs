//! Shared helpers: running the real `eco` binary with its own ECO_HOME.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The crate's root folder.
pub(crate) fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The built `eco` binary.
pub(crate) fn eco_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_eco"))
}

/// Runs `eco ARGS` in `dir` with `ECO_HOME=home` and returns its output.
pub(crate) fn eco(home: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(eco_bin())
        .args(args)
        .current_dir(dir)
        .env("ECO_HOME", home)
        .env("NO_COLOR", "1")
        .output()
        .expect("eco runs")
}

pub(crate) fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
