//! The contract between the CLI and the daemon: requests, responses and the
//! protocol version. JSON, one message per line (see `codec`). No I/O here.

use serde::{Deserialize, Serialize};

use crate::plan::Action;
use crate::spec::ProjectSpec;
use crate::target::{Selected, TargetError};
use crate::view::{AppView, Problem, Row, WaitFailure};

/// Bumped on any incompatible change; checked on every request.
pub const PROTOCOL_VERSION: u32 = 5;

/// The largest message accepted, either way (a 1,000-app spec is ~1 MiB).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A request with the sender's protocol version.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub request: Request,
    /// The CLI's eco version (see `crate::version`): a daemon of another
    /// version says so.
    #[serde(default)]
    pub eco: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    Ping,
    /// Converge a project to `spec` (`dry_run`: only return the plan).
    Apply {
        spec: Box<ProjectSpec>,
        dry_run: bool,
    },
    Down {
        project: String,
    },
    List,
    Describe {
        target: String,
    },
    Stop {
        target: String,
    },
    Start {
        target: String,
    },
    Restart {
        target: String,
    },
    /// Rolling restart: one instance at a time, each online before the next.
    Reload {
        target: String,
    },
    Delete {
        target: String,
    },
    Scale {
        target: String,
        instances: u32,
    },
    /// Returns once every instance of the project is online, or one fails.
    Wait {
        project: String,
        timeout_ms: u64,
    },
    /// Log file paths of a target (or everything).
    LogFiles {
        target: Option<String>,
    },
    /// Stream new output lines of a target until the client leaves.
    Follow {
        target: Option<String>,
        out: bool,
        err: bool,
    },
    /// Add (or replace) an ad-hoc app in the `default` project.
    AddApp {
        app: Box<crate::spec::AppSpec>,
    },
    /// Empty the log files of a target (or everything).
    Flush {
        target: Option<String>,
    },
    /// Stop everything, then the daemon.
    Kill,
    /// Counters for `eco serve`'s /metrics: restarts by reason, probe
    /// failures, last config reloads, each instance's start and readiness.
    Stats,
    /// Stream events (state changes, restarts with reason, saves applied
    /// or refused) until the client leaves.
    Events,
    /// The daemon's version, pid and generation (`eco version`).
    Version,
    /// Replace the daemon with the binary on disk, keeping every app.
    Update,
}

impl Request {
    /// Requests still answered while the daemon stops: reads, and `kill`
    /// (which waits for the stop under way).
    pub fn allowed_while_stopping(&self) -> bool {
        matches!(
            self,
            Request::Ping
                | Request::List
                | Request::Describe { .. }
                | Request::LogFiles { .. }
                | Request::Follow { .. }
                | Request::Kill
                | Request::Stats
                | Request::Events
                | Request::Version
        ) || matches!(self, Request::Apply { dry_run: true, .. })
    }
}

/// Every answer of the daemon. Typed facts only: the CLI renders them.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Pong,
    /// A command carried out on these targets (empty: nothing matched).
    Done {
        command: Command,
        targets: Vec<Selected>,
    },
    /// The plan carried out (or, for a dry run, to be carried out).
    Plan {
        project: String,
        actions: Vec<Action>,
    },
    /// A project was taken down.
    Down {
        project: String,
    },
    /// `ls --json` rows, and the projects whose last save was not applied.
    List {
        rows: Vec<Row>,
        #[serde(default)]
        problems: Vec<Problem>,
        /// The daemon's version (`eco ls` shows it, so an update is seen).
        #[serde(default)]
        daemon_version: Option<String>,
    },
    Describe {
        apps: Vec<AppView>,
    },
    /// `up --wait`: every instance is online.
    AllOnline,
    /// `up --wait` gave up: which instance, why, and its last log lines.
    WaitFailed {
        failure: WaitFailure,
        log_tail: Vec<String>,
    },
    LogFiles {
        files: Vec<LogFile>,
    },
    /// Output lines follow.
    Following,
    /// One output line, while following.
    Line {
        text: String,
        /// The app and stream it came from, so `logs -f` can label it.
        #[serde(default)]
        app: Option<String>,
        #[serde(default)]
        stream: Option<LogStream>,
    },
    /// Lines the follower was too slow for (the log files have them).
    Skipped {
        count: u64,
    },
    /// `eco kill` was accepted: every app stops, then the daemon (which
    /// closes the connection once every app has stopped).
    Stopping,
    /// The log files emptied by `eco flush`.
    Flushed {
        files: Vec<std::path::PathBuf>,
    },
    /// Sent every second while a request is in progress, so a client can
    /// tell a busy daemon from a stuck one; clients skip it.
    Working,
    /// Something the user must hear of, before the answer.
    Warning(Warning),
    Error(ErrorReply),
    /// The answer to [`Request::Stats`].
    Stats(Box<Stats>),
    /// Events follow (the answer to [`Request::Events`]).
    Watching,
    /// One event, while watching.
    Event {
        event: FeedEvent,
    },
    /// How far a long request is ("4,212/8,000 online"): sent while it
    /// runs, at most every 200 ms and at least every 400 ms, and once more
    /// when it ends. Like `Working`, it tells a busy daemon from a stuck one.
    Progress(Progress),
    /// `eco version`: the daemon's.
    Version {
        version: String,
        pid: u32,
        /// Handovers this daemon's pid has been through (`eco update`).
        generation: u64,
        /// The binary `eco update` execs.
        exe: Option<std::path::PathBuf>,
    },
    /// `eco update`: the binary on disk can take over; the daemon execs it
    /// once this is sent (the connection then closes).
    Updating {
        from: String,
    },
}

/// What a [`Response::Progress`] reports: `done` of `total` instances are
/// in the state `step` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub step: Step,
    pub done: u64,
    pub total: u64,
}

/// What a [`Progress`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Instances online (`up --wait`, `restart`, `scale`).
    Online,
    /// Instances replaced and online since the request began (`reload`).
    Reloaded,
    /// Instances ended (`kill`).
    Stopped,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Online => "online",
            Step::Reloaded => "reloaded",
            Step::Stopped => "stopped",
        }
    }
}

/// What a [`Response::Warning`] reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "warning", rename_all = "snake_case")]
pub enum Warning {
    /// The change was made but not saved (a full disk); the daemon retries.
    NotSaved { error: String },
    /// The daemon started without the saved state (damaged, refused).
    NotRestored { message: String },
    /// The CLI's version is not the daemon's.
    VersionDiffers { cli: String, daemon: String },
}

/// The commands answered with [`Response::Done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Start,
    Stop,
    Restart,
    Reload,
    Delete,
    Scale { instances: u32 },
}

/// What kind of failure an error is; the exit code follows from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The request named something that does not exist, or is ambiguous (exit 2).
    Target,
    /// The request asks for something invalid, e.g. an address another
    /// project listens on (exit 2).
    Invalid,
    /// The operation was tried and failed (exit 1).
    Failed,
    /// The request was refused: another user, another protocol version (exit 1).
    Refused,
}

/// A failed request: what, and what to do next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ErrorReply {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl ErrorReply {
    pub fn failed(message: impl Into<String>, hint: Option<String>) -> ErrorReply {
        ErrorReply {
            kind: ErrorKind::Failed,
            message: message.into(),
            hint,
        }
    }
}

impl From<TargetError> for ErrorReply {
    fn from(err: TargetError) -> ErrorReply {
        ErrorReply {
            kind: ErrorKind::Target,
            message: err.to_string(),
            hint: err.hint(),
        }
    }
}

/// Which stream of an app a log file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    Out,
    Err,
}

/// One log file of one app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogFile {
    pub project: String,
    pub app: String,
    pub stream: LogStream,
    pub path: std::path::PathBuf,
}

/// What `eco serve` needs for /metrics beyond `ls --json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Stats {
    /// The daemon's pid, for its `process_*` metrics.
    pub daemon_pid: u32,
    pub instances: Vec<InstanceStats>,
    /// One per applied project whose file was applied (or refused) at
    /// least once since the daemon started.
    pub reloads: Vec<ReloadStats>,
}

/// The counters of one instance slot (`replica` = its index).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStats {
    pub project: String,
    pub app: String,
    pub replica: u32,
    /// `fork` or `cluster`.
    pub mode: String,
    pub status: crate::state::Status,
    pub pid: Option<i32>,
    pub started_at_ms: Option<u64>,
    /// Online and not between `RELOADING=1` and `READY=1`.
    pub ready: bool,
    /// Restarts since the daemon started, by `last_restart_reason` name.
    pub restarts_by_reason: std::collections::BTreeMap<String, u64>,
    /// Health probes that failed since the daemon started.
    pub probe_failures: u64,
}

/// The last time a project's file was applied, or refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadStats {
    pub project: String,
    pub successful: bool,
    pub at_ms: u64,
}

/// One event of the daemon's event stream (`eco serve`'s /api/v1/events).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FeedEvent {
    /// Something happened to an instance: `started`, `ready`, `not_ready`,
    /// `exited`, `backoff`, `errored`, `stopped`, `spawn_failed`,
    /// `handed_over`, `watchdog_timeout`, `unhealthy`.
    State {
        at_ms: u64,
        project: String,
        app: String,
        replica: u32,
        state: String,
        detail: Option<String>,
    },
    /// An instance was restarted; `reason` is a `last_restart_reason` name.
    Restart {
        at_ms: u64,
        project: String,
        app: String,
        replica: u32,
        reason: String,
        detail: Option<String>,
    },
    /// A project's file was applied, or refused (`error` says why).
    Save {
        at_ms: u64,
        project: String,
        applied: bool,
        error: Option<String>,
    },
    /// Events this subscriber was too slow for were dropped.
    Lagged { at_ms: u64, count: u64 },
}
