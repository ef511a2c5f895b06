//! The keys the file accepts, and did-you-mean suggestions for the rest.

/// Keys of the top-level mapping (besides `env_<profile>`).
pub const TOP_KEYS: &[&str] = &["name", "env", "apps"];

/// Keys of one app (besides `env_<profile>`).
pub const APP_KEYS: &[&str] = &[
    "cmd",
    "shell",
    "cwd",
    "env",
    "env_file",
    "mode",
    "instances",
    "increment_var",
    "listen",
    "ready",
    "ready_timeout",
    "depends_on",
    "restart",
    "max_restarts",
    "min_uptime",
    "restart_delay",
    "max_restart_delay",
    "stop_signal",
    "stop_timeout",
    "watch",
    "watch_ignore",
    "watch_delay",
    "max_memory",
    "cron_restart",
    "out_file",
    "err_file",
    "log_time",
    "log_max_size",
    "log_keep",
    "pid_file",
    "write_pid_file",
    "watchdog",
    "health",
    "reload_signal",
    "fd_store",
    "rollout",
];

/// Keys of a `health:` mapping.
pub const HEALTH_KEYS: &[&str] = &["http", "tcp", "exec", "interval", "timeout", "failures"];

/// Keys of a `rollout:` mapping.
pub const ROLLOUT_KEYS: &[&str] = &["max_surge", "max_unavailable"];

/// Keys of a `ready:` mapping.
pub const READY_KEYS: &[&str] = &["tcp", "http", "exec", "log"];

/// A PM2 key and what eco says instead.
pub struct Pm2Key {
    pub pm2: &'static str,
    /// The eco key to use (`None`: eco has no such key).
    pub eco: Option<&'static str>,
    /// How, in one line, for the did-you-mean hint.
    pub how: &'static str,
}

/// PM2 spellings users bring with them: eco's key and how to write it.
/// Looked up before spelling distance, which gives wrong answers here
/// (`wait_ready` is not `watch_delay`).
pub const PM2_KEYS: &[Pm2Key] = &[
    Pm2Key {
        pm2: "script",
        eco: Some("cmd"),
        how: "PM2's `script` + `args` is eco's `cmd`, e.g. `cmd: node server.js --port 80`",
    },
    Pm2Key {
        pm2: "args",
        eco: Some("cmd"),
        how: "arguments go at the end of `cmd`, e.g. `cmd: node server.js --port 80`",
    },
    Pm2Key {
        pm2: "interpreter",
        eco: Some("cmd"),
        how: "the interpreter is the first word of `cmd`, e.g. `cmd: python3 app.py`",
    },
    Pm2Key {
        pm2: "exec_interpreter",
        eco: Some("cmd"),
        how: "the interpreter is the first word of `cmd`, e.g. `cmd: python3 app.py`",
    },
    Pm2Key {
        pm2: "interpreter_args",
        eco: Some("cmd"),
        how: "interpreter flags go in `cmd` before the script, e.g. `cmd: node --max-old-space-size=512 server.js`",
    },
    Pm2Key {
        pm2: "node_args",
        eco: Some("cmd"),
        how: "Node flags go in `cmd` before the script, e.g. `cmd: node --inspect server.js`",
    },
    Pm2Key {
        pm2: "name",
        eco: None,
        how: "an app's name is its key under `apps:` (`apps: { api: { cmd: ... } }`); top-level `name:` names the project",
    },
    Pm2Key {
        pm2: "exec_mode",
        eco: Some("mode"),
        how: "`mode: cluster` or `mode: fork`",
    },
    Pm2Key {
        pm2: "max_memory_restart",
        eco: Some("max_memory"),
        how: "`max_memory: 300M`",
    },
    Pm2Key {
        pm2: "kill_timeout",
        eco: Some("stop_timeout"),
        how: "`stop_timeout: 1600ms` (then SIGKILL)",
    },
    Pm2Key {
        pm2: "kill_signal",
        eco: Some("stop_signal"),
        how: "`stop_signal: SIGINT`",
    },
    Pm2Key {
        pm2: "autorestart",
        eco: Some("restart"),
        how: "`autorestart: false` is `restart: never`; `stop_exit_codes: [0]` is `restart: on-failure`",
    },
    Pm2Key {
        pm2: "stop_exit_codes",
        eco: Some("restart"),
        how: "`stop_exit_codes: [0]` is `restart: on-failure`",
    },
    Pm2Key {
        pm2: "ignore_watch",
        eco: Some("watch_ignore"),
        how: "`watch_ignore: [\"**/node_modules/**\"]` (globs relative to cwd)",
    },
    Pm2Key {
        pm2: "error_file",
        eco: Some("err_file"),
        how: "`err_file: ./logs/err.log`",
    },
    Pm2Key {
        pm2: "wait_ready",
        eco: Some("ready"),
        how: "`ready: notify` waits for READY=1; a Node app's process.send('ready') sends it (eco's shim)",
    },
    Pm2Key {
        pm2: "listen_timeout",
        eco: Some("ready_timeout"),
        how: "`ready_timeout: 8s` (not ready in time counts as a crash; PM2 went on)",
    },
    Pm2Key {
        pm2: "instance_var",
        eco: None,
        how: "eco always sets NODE_APP_INSTANCE and ECO_INSTANCE (0..N-1); `increment_var` is something else (PORT+i per instance)",
    },
    Pm2Key {
        pm2: "merge_logs",
        eco: None,
        how: "not needed: eco writes every instance of an app to one out and one err file, lines prefixed `app.N | `",
    },
    Pm2Key {
        pm2: "combine_logs",
        eco: None,
        how: "not needed: eco writes every instance of an app to one out and one err file",
    },
    Pm2Key {
        pm2: "time",
        eco: Some("log_time"),
        how: "`log_time: true` prefixes each line with an RFC 3339 timestamp",
    },
    Pm2Key {
        pm2: "log_date_format",
        eco: Some("log_time"),
        how: "`log_time: true` (RFC 3339 timestamps; the format is fixed)",
    },
    Pm2Key {
        pm2: "exp_backoff_restart_delay",
        eco: Some("restart_delay"),
        how: "eco's backoff is always exponential: `restart_delay: 100ms` doubles up to `max_restart_delay`",
    },
    Pm2Key {
        pm2: "port",
        eco: Some("env"),
        how: "`env: { PORT: 3000 }` (and `listen: [3000]` for cluster mode)",
    },
    Pm2Key {
        pm2: "namespace",
        eco: None,
        how: "eco groups apps by project: top-level `name:`",
    },
    Pm2Key {
        pm2: "autostart",
        eco: Some("instances"),
        how: "`instances: 0` keeps an app defined but not running",
    },
    Pm2Key {
        pm2: "out_file",
        eco: Some("out_file"),
        how: "`out_file: ./logs/out.log`",
    },
    Pm2Key {
        pm2: "log_file",
        eco: None,
        how: "eco writes `out_file` and `err_file`; `eco logs APP` shows both",
    },
];

/// The PM2 key `name`, if it is one.
pub fn pm2_key(name: &str) -> Option<&'static Pm2Key> {
    PM2_KEYS.iter().find(|k| k.pm2 == name)
}

/// The did-you-mean for an unknown key: a PM2 key gets its eco
/// equivalent and how, anything else the nearest known key.
pub fn hint(unknown: &str, known: &[&str]) -> Option<String> {
    if let Some(k) = pm2_key(unknown)
        && k.eco.is_none_or(|e| known.contains(&e))
    {
        return Some(match k.eco {
            Some(eco) if eco != unknown => {
                format!("PM2's `{unknown}` is `{eco}` in eco: {}", k.how)
            }
            _ => format!("PM2's `{unknown}`: {}", k.how),
        });
    }
    suggest(unknown, known).map(|s| format!("did you mean `{s}`?"))
}

/// The known key nearest to `unknown`, if one is near enough to be a typo.
pub fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    if let Some(Pm2Key {
        eco: Some(target), ..
    }) = pm2_key(unknown)
        && let Some(k) = known.iter().find(|k| *k == target)
    {
        return Some(k);
    }
    let near = |k: &str| {
        strsim::jaro_winkler(unknown, k) >= 0.8
            || strsim::damerau_levenshtein(unknown, k) <= (unknown.len() / 4).max(1)
    };
    known
        .iter()
        .filter(|k| near(k))
        .max_by(|a, b| {
            strsim::jaro_winkler(unknown, a).total_cmp(&strsim::jaro_winkler(unknown, b))
        })
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions() {
        assert_eq!(suggest("instance", APP_KEYS), Some("instances"));
        assert_eq!(suggest("restart_dealy", APP_KEYS), Some("restart_delay"));
        assert_eq!(suggest("script", APP_KEYS), Some("cmd"));
        assert_eq!(suggest("zzzzzz", APP_KEYS), None);
        assert_eq!(suggest("tpc", READY_KEYS), Some("tcp"));
    }

    /// PM2 keys get eco's key from the table, never a near spelling.
    #[test]
    fn pm2_keys_come_from_the_table() {
        let h = |k: &str| hint(k, APP_KEYS).unwrap_or_default();
        assert!(h("wait_ready").starts_with("PM2's `wait_ready` is `ready` in eco"));
        assert!(h("listen_timeout").starts_with("PM2's `listen_timeout` is `ready_timeout`"));
        assert!(h("instance_var").contains("NODE_APP_INSTANCE"));
        for key in [
            "interpreter",
            "node_args",
            "merge_logs",
            "time",
            "name",
            "script",
            "error_file",
            "max_memory_restart",
            "kill_timeout",
            "exec_mode",
            "autorestart",
            "ignore_watch",
        ] {
            assert!(
                h(key).starts_with(&format!("PM2's `{key}`")),
                "{key}: {}",
                h(key)
            );
        }
        assert_eq!(
            hint("restart_dealy", APP_KEYS).as_deref(),
            Some("did you mean `restart_delay`?")
        );
    }
}
