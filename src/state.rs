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
    /// It ended while no eco daemon ran (it was adopted after a crash and
    /// is no child of the daemon): nobody could read its exit status. It
    /// counts as a failure.
    Unknown,
}

impl Exit {
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }

    /// [`Exit::code`], unless nobody could see it ([`Exit::Unknown`]):
    /// `ls --json` shows null rather than a made-up number.
    pub fn known_code(self) -> Option<i32> {
        (self != Exit::Unknown).then(|| self.code())
    }

    /// The exit code as `ls --json` shows it: the code, or 128 + signal as shells do.
    pub fn code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
            Exit::Unknown => 255,
        }
    }
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit code {c}"),
            Exit::Signal(s) => write!(f, "signal {}", crate::spec::Signal(*s)),
            Exit::Unknown => f.write_str("exit status unknown (not eco's child)"),
        }
    }
}

/// Why an instance was (re)started. `ls --json` shows [`Reason::name`],
/// exactly one of the names CONTRACT section 5 lists; details such as the
/// changed path go to `describe`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Reason {
    /// It exited (crash or normal exit) and the restart policy brought it back.
    Crash,
    /// A watched source changed (the first changed path, relative to the app's cwd).
    Watch(String),
    /// Its spec changed in the ecosystem file.
    ConfigChange,
    /// `eco restart`, `eco reload`, `eco start`.
    User,
    /// Its tree outgrew `max_memory`.
    Memory,
    /// `cron_restart` came due.
    Cron,
    /// No WATCHDOG=1 within `watchdog`.
    Watchdog,
    /// `health` probes failed `failures` times in a row.
    Health,
    /// Not ready within `ready_timeout`.
    NotReady,
}

impl Reason {
    /// The name `ls --json` shows in `last_restart_reason`.
    pub fn name(&self) -> &'static str {
        match self {
            Reason::Crash => "crash",
            Reason::Watch(_) => "watch",
            Reason::ConfigChange => "config change",
            Reason::User => "user",
            Reason::Memory => "memory",
            Reason::Cron => "cron",
            Reason::Watchdog => "watchdog",
            Reason::Health => "health",
            Reason::NotReady => "not-ready",
        }
    }

    /// What `describe` adds to the name, if anything.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Reason::Watch(path) => Some(path),
            _ => None,
        }
    }
}
