//! The file's shape as Rust types, used only to generate the JSON Schema in
//! `schema/ecosystem.schema.json` (editors' completion and validation).
//! Validation itself walks the YAML tree (see `validate`), so that it can
//! report every error at once; a test keeps these keys equal to `keys`.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

/// An eco ecosystem file.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RawFile {
    /// Project name; default: the file's folder name.
    name: Option<String>,
    /// Merged under every app's env.
    env: Option<Env>,
    /// The apps, by name ([A-Za-z0-9_.-]+).
    apps: BTreeMap<String, RawApp>,
}

/// Environment variables; scalar values become strings.
type Env = BTreeMap<String, Scalar>;

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Instances {
    Count(u32),
    /// One per CPU.
    Max(MaxKeyword),
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
enum MaxKeyword {
    #[serde(rename = "max")]
    Max,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
#[allow(dead_code)]
enum Mode {
    Fork,
    Cluster,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
#[allow(dead_code)]
enum Restart {
    Always,
    OnFailure,
    Never,
}

/// A duration such as 250ms, 10s, 5m, 1h, or milliseconds as an integer.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Duration {
    Text(String),
    Millis(u64),
}

/// A size such as 512K, 300M, 2G (binary units), or bytes as an integer.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Size {
    Text(String),
    Bytes(u64),
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Listen {
    Port(u16),
    /// "127.0.0.1:8080", "[::1]:8080" or "unix:/path".
    Address(String),
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ListenList {
    One(Listen),
    Many(Vec<Listen>),
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Ready {
    /// sd_notify READY=1 on NOTIFY_SOCKET.
    Notify(NotifyKeyword),
    Check(ReadyCheck),
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
enum NotifyKeyword {
    #[serde(rename = "notify")]
    Notify,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
#[allow(dead_code)]
enum ReadyCheck {
    /// Ready once a TCP connect to host:port succeeds.
    Tcp(String),
    /// Ready once GET on this http:// URL answers 2xx.
    Http(String),
    /// Ready once this command exits 0.
    Exec(String),
    /// Ready once an output line matches this regex.
    Log(String),
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Cmd {
    /// Split like a shell (no shell features unless `shell: true`).
    Line(String),
    Words(Vec<String>),
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum WatchSpec {
    /// true: the whole cwd.
    All(bool),
    Globs(OneOrMany),
}

#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum Signal {
    Name(String),
    Number(i32),
}

/// One app.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
pub struct RawApp {
    /// The command: a string (split like a shell) or a list of words.
    cmd: Cmd,
    /// true: run cmd with /bin/sh -c.
    shell: Option<bool>,
    /// Working folder; default: the file's folder.
    cwd: Option<String>,
    env: Option<Env>,
    /// dotenv file(s), under env.
    env_file: Option<OneOrMany>,
    mode: Option<Mode>,
    instances: Option<Instances>,
    /// Instance i gets this variable's value + i.
    increment_var: Option<String>,
    /// Sockets eco binds and hands to cluster instances as fds 3, 4, ...
    listen: Option<ListenList>,
    ready: Option<Ready>,
    ready_timeout: Option<Duration>,
    depends_on: Option<OneOrMany>,
    restart: Option<Restart>,
    max_restarts: Option<u32>,
    min_uptime: Option<Duration>,
    restart_delay: Option<Duration>,
    max_restart_delay: Option<Duration>,
    stop_signal: Option<Signal>,
    stop_timeout: Option<Duration>,
    watch: Option<WatchSpec>,
    watch_ignore: Option<OneOrMany>,
    watch_delay: Option<Duration>,
    max_memory: Option<Size>,
    cron_restart: Option<String>,
    out_file: Option<String>,
    err_file: Option<String>,
    log_time: Option<bool>,
    log_max_size: Option<Size>,
    log_keep: Option<u32>,
    /// A server that daemonizes itself writes its pid here (relative to cwd);
    /// eco supervises that pid, as systemd's Type=forking + PIDFile=.
    pid_file: Option<String>,
    /// The app sends WATCHDOG=1 at least this often (WATCHDOG_USEC); late: SIGABRT, then a restart.
    watchdog: Option<Duration>,
    /// Liveness probes: after `failures` consecutive failures, a graceful restart.
    health: Option<Health>,
    /// `eco reload` sends this signal in place instead of replacing instances.
    reload_signal: Option<Signal>,
    /// Max fds kept for an instance via FDSTORE=1 (0 = discard, as systemd).
    fd_store: Option<u32>,
}

/// A liveness probe: one of http, tcp or exec, and its timing.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Health {
    /// Healthy when GET on this http:// URL answers 2xx.
    http: Option<String>,
    /// Healthy when a TCP connect to host:port succeeds.
    tcp: Option<String>,
    /// Healthy when this command exits 0.
    exec: Option<String>,
    /// Between two probes (default 10s).
    interval: Option<Duration>,
    /// One probe's limit (default 2s).
    timeout: Option<Duration>,
    /// Consecutive failures before a restart (default 3).
    failures: Option<u32>,
}

/// The JSON Schema of the file, as committed in `schema/`.
pub fn schema_json() -> String {
    let mut schema = serde_json::to_value(schemars::schema_for!(RawFile)).unwrap_or_default();
    let env_ref = serde_json::json!({
        "^env_[A-Za-z0-9_.-]+$": {
            "description": "Profile: merged over env when selected with --env NAME.",
            "type": "object",
            "additionalProperties": {"type": ["string", "number", "boolean"]}
        }
    });
    schema["patternProperties"] = env_ref.clone();
    if let Some(app) = schema.pointer_mut("/$defs/RawApp") {
        app["patternProperties"] = env_ref;
    }
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::keys::{APP_KEYS, TOP_KEYS};

    fn keys_of(value: &serde_json::Value) -> Vec<String> {
        let mut keys: Vec<String> = value["properties"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default();
        keys.sort();
        keys
    }

    fn sorted(keys: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = keys.iter().map(|s| (*s).to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn schema_keys_match_the_validator() {
        let schema: serde_json::Value =
            serde_json::from_str(&schema_json()).expect("schema is JSON");
        assert_eq!(keys_of(&schema), sorted(TOP_KEYS));
        assert_eq!(keys_of(&schema["$defs"]["RawApp"]), sorted(APP_KEYS));
    }
}
