//! The observed state: what is actually applied and running, as the planner
//! and the command line see it. Plain data, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::AppSpec;

/// What the planner needs to know about one app that exists now.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedApp {
    /// The spec its processes were started with.
    pub spec: AppSpec,
    /// How many instance slots exist (running, starting or backing off).
    pub instances: u32,
    /// Stopped by `eco stop`: stays stopped across reloads until `eco start`.
    pub user_stopped: bool,
}

/// Every app of one project that exists now, by name.
pub type Observed = BTreeMap<String, ObservedApp>;

/// The life-cycle status of one instance (CONTRACT section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Starting,
    Online,
    Backoff,
    Stopping,
    Stopped,
    Errored,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Online => "online",
            Status::Backoff => "backoff",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Errored => "errored",
        }
    }
}

/// How a process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// The exit code as `ls --json` shows it: the code, or 128 + signal as shells do.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {}", crate::spec::Signal(*s)),
        }
    }
}

/// Why an instance was (re)started, for `ls` and `describe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Reason {
    /// It exited (crash or normal exit) and the restart policy brought it back.
    Crash,
    /// A watched file changed (the first changed path).
    FileChange(String),
    /// Its spec changed in the ecosystem file.
    ConfigChange,
    /// `eco restart` / `eco reload`.
    User,
    Memory,
    Cron,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Crash => f.write_str("crash"),
            Reason::FileChange(path) => write!(f, "file change ({path})"),
            Reason::ConfigChange => f.write_str("config change"),
            Reason::User => f.write_str("user command"),
            Reason::Memory => f.write_str("memory"),
            Reason::Cron => f.write_str("cron"),
        }
    }
}
