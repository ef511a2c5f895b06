//! `eco export`: renders a validated project as another engine's files
//! (systemd units, Kubernetes manifests). Pure: a [`ProjectSpec`] in, file
//! names, contents and warnings out. Writing the files is the CLI's job.
//!
//! [`ProjectSpec`]: crate::spec::ProjectSpec

pub mod kubernetes;
#[cfg(test)]
mod read_back;
pub mod startup;
pub mod systemd;
mod unit_syntax;

use std::time::Duration;

use crate::spec::ListenAddr;

/// What an export produces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Export {
    /// `(file name, contents)`, in a stable order.
    pub files: Vec<(String, String)>,
    /// What the target engine cannot express (or only approximates), one
    /// sentence each, naming the app and the key.
    pub warnings: Vec<String>,
}

/// Invalid export options (exit code 2 at the CLI).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExportError {
    #[error("--app-image {0:?}: expected APP=IMAGE, e.g. --app-image web=registry.example/web:1.2")]
    BadAppImage(String),
    #[error("--app-image {app}=…: the project has no app {app:?}")]
    UnknownApp { app: String },
    #[error("app {app:?} has no image: pass --image IMAGE, or --app-image {app}=IMAGE")]
    NoImage { app: String },
    #[error(
        "apps {first:?} and {second:?} both become the Kubernetes name {name:?}; rename one of them"
    )]
    NameClash {
        first: String,
        second: String,
        name: String,
    },
    #[error("cannot render the manifests as YAML: {0} (this is a bug in eco, please report)")]
    Yaml(String),
    /// A value a systemd setting cannot hold (see `unit_syntax`).
    #[error("{key}: {value} cannot be written into a systemd unit ({setting}): {reason}; {fix}")]
    Unrepresentable {
        key: String,
        value: String,
        setting: &'static str,
        reason: String,
        fix: &'static str,
    },
    #[error(
        "apps.{app}.increment_var: {var:?} is not a shell variable name, and the StatefulSet \
         computes it with /bin/sh; rename it to letters, digits and _ (not starting with a digit)"
    )]
    ShellName { app: String, var: String },
}

/// The name eco gives a listening socket in LISTEN_FDNAMES, so an app finds
/// its socket under the same name under eco and under systemd.
/// (Same rule as `runtime::listen::fd_name`.)
pub(crate) fn fd_name(addr: &ListenAddr) -> String {
    let text = match addr {
        ListenAddr::Tcp(a) => format!("tcp-{}-{}", a.ip(), a.port()),
        ListenAddr::Unix(p) => format!("unix-{}", p.display()),
    };
    text.replace(':', "_")
}

/// Whole seconds, rounded up: both engines count grace periods in seconds,
/// and rounding down would shorten a grace period the file asks for.
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_names_match_the_runtime() {
        for text in ["127.0.0.1:8080", "[::1]:80", "0.0.0.0:3000"] {
            let addr = ListenAddr::Tcp(text.parse().expect("addr"));
            assert_eq!(fd_name(&addr), crate::runtime::listen::fd_name(&addr));
        }
        let unix = ListenAddr::Unix("/run/a.sock".into());
        assert_eq!(fd_name(&unix), crate::runtime::listen::fd_name(&unix));
    }

    #[test]
    fn seconds_round_up() {
        assert_eq!(ceil_secs(Duration::from_secs(10)), 10);
        assert_eq!(ceil_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }
}
