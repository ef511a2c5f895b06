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
    "watchdog",
    "health",
    "reload_signal",
    "fd_store",
];

/// Keys of a `health:` mapping.
pub const HEALTH_KEYS: &[&str] = &["http", "tcp", "exec", "interval", "timeout", "failures"];

/// Keys of a `ready:` mapping.
pub const READY_KEYS: &[&str] = &["tcp", "http", "exec", "log"];

/// PM2 spellings users bring with them, mapped to eco's key.
const PM2_ALIASES: &[(&str, &str)] = &[
    ("script", "cmd"),
    ("args", "cmd"),
    ("exec_mode", "mode"),
    ("max_memory_restart", "max_memory"),
    ("kill_timeout", "stop_timeout"),
    ("kill_signal", "stop_signal"),
    ("autorestart", "restart"),
    ("ignore_watch", "watch_ignore"),
    ("error_file", "err_file"),
    ("instance_var", "increment_var"),
    ("exp_backoff_restart_delay", "restart_delay"),
];

/// The known key nearest to `unknown`, if one is near enough to be a typo.
pub fn suggest<'a>(unknown: &str, known: &[&'a str]) -> Option<&'a str> {
    if let Some((_, target)) = PM2_ALIASES.iter().find(|(alias, _)| *alias == unknown)
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
}
