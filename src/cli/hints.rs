//! What to do next, in words, for errors raised below the CLI as data. The
//! daemon sends these with its answer (so a client of any version prints
//! them); `eco up -F` prints them itself.

use crate::reconcile::ReconcileError;
use crate::runtime::ListenError;

/// The advice for a project the reconciler refused.
pub fn reconcile(err: &ReconcileError) -> &'static str {
    match err {
        ReconcileError::Listen(ListenError::Taken { .. }) => "give one of the apps another address",
        ReconcileError::Listen(ListenError::Bind { .. }) => {
            "another program holds the address: stop it, or pick another"
        }
        ReconcileError::NameTaken { .. } => {
            "give one of the files another `name:`, or `eco down` the other project"
        }
        ReconcileError::Descriptors { .. } => {
            "raise the hard limit (`ulimit -Hn` before the first eco command, `LimitNOFILE=` \
             in a systemd unit; as root eco raises it up to fs.nr_open itself), then `eco kill` \
             so the daemon starts with it; or run fewer instances"
        }
    }
}
