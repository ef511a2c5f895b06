//! The contract between the CLI and the daemon: requests, responses and the
//! protocol version. JSON, one message per line. No I/O here.

use serde::{Deserialize, Serialize};

use crate::spec::ProjectSpec;

/// Bumped on any incompatible change; checked on every request.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest message accepted, either way (a 1,000-app spec is ~1 MiB).
pub const MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A request with the sender's protocol version.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u32,
    pub request: Request,
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
    /// Stop everything, then the daemon.
    Kill,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Ok {
        message: String,
    },
    Error {
        message: String,
        hint: Option<String>,
    },
    /// The plan carried out (or, for a dry run, to be carried out).
    Plan {
        lines: Vec<String>,
        changes: bool,
    },
    /// `ls --json` rows, and per project the error of a save not applied.
    List {
        rows: Vec<serde_json::Value>,
        #[serde(default)]
        problems: Vec<(String, String)>,
    },
    Describe {
        details: serde_json::Value,
    },
    /// `up --wait` gave up: which instance, why, and its last log lines.
    WaitFailed {
        reason: String,
        log_tail: Vec<String>,
    },
    LogFiles {
        files: Vec<LogFile>,
    },
    /// One output line, while following.
    Line {
        text: String,
    },
}

/// One log file of one app.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogFile {
    pub project: String,
    pub app: String,
    pub stream: String,
    pub path: std::path::PathBuf,
}
