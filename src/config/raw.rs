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
    /// Project name ([A-Za-z0-9_.-], at most 64 characters). Default: the
    /// file's folder name.
    name: Option<String>,
    /// Environment merged under every app's env (values become strings).
    /// Default: none.
    env: Option<Env>,
    /// Required: the apps, by name ([A-Za-z0-9_.-], at most 64 characters;
    /// `all` is reserved).
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
    /// Required: the command, a string (split like a shell, run without
    /// one) or a list of words.
    cmd: Cmd,
    /// true: run cmd with /bin/sh -c. Default: false.
    #[schemars(extend("default" = false))]
    shell: Option<bool>,
    /// The folder the app runs in, relative to the file's folder. Default:
    /// the file's folder.
    cwd: Option<String>,
    /// Environment variables (values become strings), over the top-level
    /// env and env files. Default: none.
    env: Option<Env>,
    /// dotenv file(s) of KEY=value lines, merged under env. Default: none.
    env_file: Option<OneOrMany>,
    /// fork: each instance binds its own sockets; cluster: eco binds
    /// `listen` once and shares it. Default: fork.
    #[schemars(extend("default" = "fork"))]
    mode: Option<Mode>,
    /// How many instances run: an integer >= 0 (0 keeps the app defined but
    /// stopped) or "max" (one per CPU). Default: 1.
    #[schemars(extend("default" = 1))]
    instances: Option<Instances>,
    /// Instance i gets this variable's value + i (e.g. PORT for fork-mode
    /// servers). Default: none.
    increment_var: Option<String>,
    /// Sockets eco binds once and hands to cluster instances as fds 3, 4, ...
    /// (LISTEN_FDS). Default: the env's PORT in cluster mode.
    listen: Option<ListenList>,
    /// When an instance counts as online: notify (READY=1), or a tcp, http,
    /// exec or log check. Default: once spawned.
    ready: Option<Ready>,
    /// How long an instance may take to become ready before it counts as a
    /// crash. Default: 30s.
    #[schemars(extend("default" = "30s"))]
    ready_timeout: Option<Duration>,
    /// Apps this one starts after (once online/ready) and stops before.
    /// Default: none.
    depends_on: Option<OneOrMany>,
    /// When an exited instance is restarted. Default: always.
    #[schemars(extend("default" = "always"))]
    restart: Option<Restart>,
    /// Consecutive crash restarts before the instance is errored. Default: 15.
    #[schemars(extend("default" = 15))]
    max_restarts: Option<u32>,
    /// A run shorter than this counts as a crash. Default: 1s.
    #[schemars(extend("default" = "1s"))]
    min_uptime: Option<Duration>,
    /// The first restart delay; it doubles per consecutive crash. Default:
    /// 100ms.
    #[schemars(extend("default" = "100ms"))]
    restart_delay: Option<Duration>,
    /// The ceiling of the restart delay. Default: 30s.
    #[schemars(extend("default" = "30s"))]
    max_restart_delay: Option<Duration>,
    /// The signal sent to the instance's process group to stop it
    /// (SIGTERM, TERM, or a number). Default: SIGTERM.
    #[schemars(extend("default" = "SIGTERM"))]
    stop_signal: Option<Signal>,
    /// How long a stop may take before SIGKILL. Default: 10s.
    #[schemars(extend("default" = "10s"))]
    stop_timeout: Option<Duration>,
    /// Restart when files change: true (the whole cwd) or globs relative to
    /// cwd. Default: false.
    #[schemars(extend("default" = false))]
    watch: Option<WatchSpec>,
    /// Globs never watched, besides .git, node_modules, target, logs and
    /// editor files. Default: none.
    watch_ignore: Option<OneOrMany>,
    /// Quiet time after the last change before restarting. Default: 200ms.
    #[schemars(extend("default" = "200ms"))]
    watch_delay: Option<Duration>,
    /// Restart an instance whose process tree RSS stays above this (e.g.
    /// 300M). Default: no limit.
    max_memory: Option<Size>,
    /// Restart on this cron schedule (5 fields, local time, e.g. "0 3 * * *").
    /// Default: none.
    cron_restart: Option<String>,
    /// The stdout log file, relative to the file's folder. Default:
    /// ECO_HOME/logs/PROJECT/APP.out.log.
    out_file: Option<String>,
    /// The stderr log file, relative to the file's folder. Default:
    /// ECO_HOME/logs/PROJECT/APP.err.log.
    err_file: Option<String>,
    /// Prefix each captured line with an RFC 3339 timestamp. Default: false.
    #[schemars(extend("default" = false))]
    log_time: Option<bool>,
    /// Rotate a log file at this size. Default: 10M.
    #[schemars(extend("default" = "10M"))]
    log_max_size: Option<Size>,
    /// Rotated log files kept. Default: 5.
    #[schemars(extend("default" = 5))]
    log_keep: Option<u32>,
    /// A server that daemonizes itself writes its pid here (relative to cwd);
    /// eco supervises that pid, as systemd's Type=forking + PIDFile=. Default:
    /// none (eco supervises the process it started).
    pid_file: Option<String>,
    /// eco writes each instance's pid here (relative to the file's folder), as PM2 does with
    /// its `pid_file`: `app.pid` is `app-0.pid`, `app-1.pid`, ... (the instance number before
    /// `.pid`); removed when the instance exits. Default: none.
    write_pid_file: Option<String>,
    /// The app sends WATCHDOG=1 at least this often (WATCHDOG_USEC); late: SIGABRT, then a
    /// restart (reason watchdog). Default: none (no watchdog).
    watchdog: Option<Duration>,
    /// Liveness probes: after `failures` consecutive failures, a graceful restart (reason
    /// health). Default: none.
    health: Option<Health>,
    /// `eco reload` sends this signal to every instance in place instead of replacing it
    /// (systemd's Type=notify-reload). Default: none (reload replaces).
    reload_signal: Option<Signal>,
    /// Max fds kept for an instance via FDSTORE=1, handed back at its next start. Default: 0
    /// (discard, as systemd).
    fd_store: Option<u32>,
    /// How a reload replaces the instances (Kubernetes' maxSurge/maxUnavailable). Default:
    /// `{ max_surge: 1, max_unavailable: 0 }` (one new instance beside the old ones at a time).
    rollout: Option<Rollout>,
}

/// The limits of a rolling replacement.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Rollout {
    /// New instances started beside the old ones at once. Default: 1.
    #[schemars(extend("default" = 1))]
    max_surge: Option<u32>,
    /// Old instances stopped before their new one starts, at once (a fork app on a fixed
    /// port needs `max_surge: 0, max_unavailable: 1`). Default: 0.
    #[schemars(extend("default" = 0))]
    max_unavailable: Option<u32>,
}

/// A liveness probe: one of http, tcp or exec, and its timing.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)]
struct Health {
    /// Healthy when GET on this http:// URL answers 2xx. Default: none.
    http: Option<String>,
    /// Healthy when a TCP connect to host:port succeeds. Default: none.
    tcp: Option<String>,
    /// Healthy when this command exits 0 (contained, killed at `timeout`). Default: none.
    exec: Option<String>,
    /// Between two probes. Default: 10s.
    interval: Option<Duration>,
    /// One probe's limit. Default: 2s.
    timeout: Option<Duration>,
    /// Consecutive failures before a restart. Default: 3.
    failures: Option<u32>,
}

/// The JSON Schema of the file, as committed in `schema/`.
pub fn schema_json() -> String {
    let mut schema = serde_json::to_value(schemars::schema_for!(RawFile)).unwrap_or_default();
    let env_ref = serde_json::json!({
        // Not `env_file`: patternProperties apply besides properties.
        "^env_(?!file$)[A-Za-z0-9_.-]+$": {
            "description": "Profile env_NAME: merged over env when selected with --env NAME (which must name a profile in the file). Default: none.",
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
