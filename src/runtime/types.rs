//! The engine's domain types: which instance something belongs to, the
//! events instances report, and the observer that receives them with the
//! instances' output.

use std::sync::Arc;
use std::time::Duration;

use super::output;
use super::pipe_head::Receipt;
use crate::state::{Exit, Reason};

/// Which instance a line or event belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    pub project: String,
    pub app: String,
    pub index: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Out,
    Err,
}

/// Life-cycle facts reported by instances.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Started {
        pid: i32,
    },
    Ready,
    NotReady {
        reason: String,
    },
    Exited {
        exit: Exit,
    },
    Restarting {
        delay: Duration,
    },
    Errored {
        exit: Exit,
    },
    Stopped {
        exit: Exit,
    },
    SpawnFailed {
        error: String,
    },
    /// The launcher exited 0 and eco now supervises the daemon it left
    /// (`guessed`: without a `pid_file`, the oldest process left).
    HandedOver {
        pid: i32,
        guessed: bool,
    },
    /// No WATCHDOG=1 in time: SIGABRT, then a restart.
    WatchdogTimeout,
    /// A health probe failed (`failures` in a row so far).
    Unhealthy {
        failures: u32,
    },
    /// It was (re)started for this reason (counted by `eco serve`'s
    /// `eco_instance_restarts_total`; told in its event stream).
    Restarted {
        reason: Reason,
    },
}

/// An instance asks for a graceful restart of itself (a failing health
/// check): carried out by the engine like any other (rolling where the app
/// is replaced rolling).
#[derive(Clone, Debug)]
pub struct RestartRequest {
    pub project: String,
    pub app: String,
    pub instance: u32,
    pub reason: Reason,
}

/// Receives output and events: the terminal in `up -F`, log files in the daemon.
pub trait Observer: Send + Sync {
    /// `lines` holds one or more complete lines, each ending in `\n`. Their
    /// bytes stay in the app's pipe until `receipt` drops: drop it once
    /// they are written (so a killed daemon loses none).
    fn output(&self, id: &InstanceId, stream: Stream, lines: &[u8], receipt: Receipt);
    fn event(&self, id: &InstanceId, event: &Event);
    /// False when the stream's output would be thrown away (`/dev/null`):
    /// the instance then writes to /dev/null itself, with no pipe, and eco
    /// reads nothing, as systemd's `StandardOutput=null`.
    fn captures(&self, _settings: &crate::spec::Settings, _stream: Stream) -> bool {
        true
    }
    /// The stream's bounded queue to its log, if output waits in one: the
    /// pump reads no more while it is full (backpressure to the app).
    fn backlog(&self, _id: &InstanceId, _stream: Stream) -> Option<Arc<output::Backlog>> {
        None
    }
    /// True when both streams end up in one place (the same log file):
    /// the instance then gets one pipe for both, read as its stdout.
    fn merges(&self, _settings: &crate::spec::Settings) -> bool {
        false
    }
}
