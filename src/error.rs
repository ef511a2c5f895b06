//! Errors that map to exit codes at the binary's edge.

use crate::ipc::proto::{ErrorKind, ErrorReply};

/// Invalid input on the command line: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// An error the daemon answered, printed with its hint; its kind gives the
/// exit code (a wrong target is invalid input).
#[derive(Debug, thiserror::Error)]
#[error("{}{}", .0.message, .0.hint.as_ref().map(|h| format!("\n  help: {h}")).unwrap_or_default())]
pub struct DaemonError(pub ErrorReply);

/// The exit code for an error: 2 for invalid input, 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let usage = err.is::<UsageError>()
        || err.is::<crate::config::ConfigErrors>()
        || err
            .downcast_ref::<DaemonError>()
            .is_some_and(|e| matches!(e.0.kind, ErrorKind::Target | ErrorKind::Invalid));
    if usage { 2 } else { 1 }
}
