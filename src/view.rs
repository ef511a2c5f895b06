//! What `ls` and `describe` show: plain data, serialised as `ls --json` and
//! `describe --json` (CONTRACT section 3). Built by `runtime::views`,
//! rendered as text by `cli::render`. No I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::AppSpec;
use crate::state::{Exit, Status};

/// One row of `eco ls`: one instance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Row {
    pub project: String,
    pub app: String,
    pub instance: u32,
    /// The instance's numeric id (PM2's `id`): stable across restarts,
    /// reloads and daemon restarts, unique within the daemon, a TARGET.
    #[serde(default)]
    pub id: u32,
    pub pid: Option<i32>,
    pub status: Status,
    pub restarts: u32,
    pub uptime_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub cpu_percent: Option<f64>,
    pub memory_bytes: Option<u64>,
    /// One of `Reason::name`'s names, or null.
    pub last_restart_reason: Option<String>,
    /// The launcher exited 0 and left a daemon eco guessed (no `pid_file`).
    #[serde(default)]
    pub daemonized: bool,
    /// Why the last start failed, until a start works.
    #[serde(default)]
    pub last_error: Option<String>,
    /// The app's last `STATUS=` (sd_notify), or null.
    #[serde(default)]
    pub status_text: Option<String>,
    /// Between the app's `RELOADING=1` and `READY=1`.
    #[serde(default)]
    pub reloading: bool,
    /// A change of the watched files restarts the app (`watch` is set and
    /// the user has not stopped it).
    #[serde(default)]
    pub watching: bool,
}

/// A project whose last save could not be applied (the apps run as before).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    pub project: String,
    pub error: String,
}

/// `eco describe` of one app.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppView {
    pub project: String,
    pub app: String,
    pub file: PathBuf,
    pub profile: Option<String>,
    pub user_stopped: bool,
    pub spec: AppSpec,
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub out_log: PathBuf,
    pub err_log: PathBuf,
    /// Log files eco could not write, with the error.
    pub log_errors: Vec<String>,
    /// The error of the last save of the project's file, if it was not applied.
    pub config_error: Option<String>,
    /// How the instances are contained: `cgroup` or `process-group`.
    pub containment: String,
    /// How the instances share the app's TCP `listen` addresses:
    /// `per-instance` or `shared`; none without them.
    #[serde(default)]
    pub sockets: Option<String>,
    pub instances: Vec<InstanceView>,
}

/// One instance in `describe`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceView {
    pub instance: u32,
    /// See [`Row::id`].
    #[serde(default)]
    pub id: u32,
    pub pid: Option<i32>,
    pub status: Status,
    pub restarts: u32,
    pub started_at_ms: Option<u64>,
    pub exit_code: Option<i32>,
    pub last_exit: Option<Exit>,
    pub last_restart_reason: Option<String>,
    /// What the reason adds (the changed path of a `watch` restart).
    pub last_restart_detail: Option<String>,
    pub metrics: Option<MetricsView>,
    /// See [`Row::daemonized`].
    #[serde(default)]
    pub daemonized: bool,
    /// See [`Row::last_error`].
    #[serde(default)]
    pub last_error: Option<String>,
    /// See [`Row::status_text`].
    #[serde(default)]
    pub status_text: Option<String>,
    /// Notify datagrams and messages eco refused for this instance (from
    /// outside it, an invalid `MAINPID=`, descriptors over the store's cap).
    #[serde(default)]
    pub notify_rejected: u64,
    pub history: Vec<HistoryView>,
    pub env: BTreeMap<String, String>,
}

/// CPU and memory of an instance's process tree.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MetricsView {
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

/// One restart of an instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryView {
    pub at_ms: u64,
    pub reason: String,
    pub detail: Option<String>,
    pub exit: Option<Exit>,
}

/// Milliseconds since the epoch, saturating.
pub fn epoch_ms(at: std::time::SystemTime) -> u64 {
    at.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Why `up --wait` gave up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitFailure {
    pub project: String,
    /// The first app that failed or is not online yet (empty: none runs).
    pub app: String,
    pub cause: WaitCause,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum WaitCause {
    /// The project is not applied.
    NotRunning,
    /// An instance gave up restarting (`error`: why it could not start).
    Errored {
        instance: u32,
        exit: Option<Exit>,
        error: Option<String>,
    },
    /// An instance crashed and is backing off.
    Crashed {
        instance: u32,
        exit: Option<Exit>,
        error: Option<String>,
    },
    /// The time ran out; these instances (`app`, index, status) were not online.
    TimedOut {
        after_ms: u64,
        pending: Vec<(String, u32, Status)>,
    },
}
