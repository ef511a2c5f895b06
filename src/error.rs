//! Errors that map to exit codes at the binary's edge.

/// Invalid input on the command line: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// The exit code for an error: 2 for invalid input, 1 for everything else.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    if err.is::<UsageError>() || err.is::<crate::config::ConfigErrors>() {
        2
    } else {
        1
    }
}
