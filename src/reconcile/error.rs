//! Why the reconciler refuses a project, as data: the daemon maps it to the
//! wire, `cli::hints` says what to do about it.

use std::path::PathBuf;

use crate::runtime::ListenError;

/// A project the reconciler will not apply; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReconcileError {
    /// A `listen` address is another app's, or cannot be bound.
    #[error(transparent)]
    Listen(#[from] ListenError),
    /// The project's name is already applied from another file.
    #[error(
        "project `{project}` is already applied from {}; {} uses the same name",
        running.display(),
        file.display()
    )]
    NameTaken {
        project: String,
        running: PathBuf,
        file: PathBuf,
    },
    /// The instances would need more descriptors than eco may open.
    #[error(
        "{instances} instances need about {needed} descriptors with what already runs, \
         and eco may open {limit} (RLIMIT_NOFILE): this project fits about {room} instances"
    )]
    Descriptors {
        instances: u64,
        needed: u64,
        limit: u64,
        room: u64,
    },
}
