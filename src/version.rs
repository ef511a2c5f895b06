//! eco's version, as `eco version` shows it for the CLI and the daemon.
//!
//! `ECO_VERSION_SUFFIX` (TEST-ONLY) is appended when set, read once per
//! process: the tests of `eco update` use it to make "another build" of
//! the same binary, and check that the daemon answering after the update
//! is the new one.

use std::sync::OnceLock;

/// Appended to the version when set (tests only).
pub const SUFFIX_ENV: &str = "ECO_VERSION_SUFFIX";

/// This process's eco version.
pub fn current() -> &'static str {
    static VERSION: OnceLock<String> = OnceLock::new();
    VERSION.get_or_init(|| {
        let suffix = std::env::var(SUFFIX_ENV).unwrap_or_default();
        format!("{}{suffix}", env!("CARGO_PKG_VERSION"))
    })
}
