//! When an app restarts and how it stops (restart policy, backoff, stop
//! signal, watch, memory and cron restarts), and where its logs go.

use super::Walker;
use super::app::Key;
use super::primitives::{clip, set};
use crate::config::node::{Node, Value};
use crate::config::pm2::Note;
use crate::spec::{RestartPolicy, Settings, Watch};

impl Walker<'_> {
    /// Reads a restart, stop or watch key into `s`; `false` for any other key.
    pub(super) fn lifecycle_key(&mut self, s: &mut Settings, key: &Key<'_>) -> bool {
        let (value, path) = (key.value, key.path);
        match key.name {
            "restart" => self.restart(s, value, path),
            "max_restarts" => set(&mut s.max_restarts, self.count(value, path)),
            "min_uptime" => set(&mut s.min_uptime, self.duration(value, path)),
            "restart_delay" => set(&mut s.restart_delay, self.duration(value, path)),
            "max_restart_delay" => set(&mut s.max_restart_delay, self.duration(value, path)),
            "stop_signal" => {
                if let Some(sig) = self.signal(value, path) {
                    s.stop_signal = sig;
                }
            }
            "stop_timeout" => set(&mut s.stop_timeout, self.duration(value, path)),
            "reload_signal" => s.reload_signal = self.signal(value, path),
            "watch" => match &value.value {
                Value::Bool(true) => s.watch = Watch::All,
                Value::Bool(false) | Value::Null => s.watch = Watch::Off,
                _ => {
                    if let Some(globs) = self.strings(value, path)
                        && self.globs(&globs, value.pos, path)
                    {
                        s.watch = Watch::Globs(globs);
                    }
                }
            },
            "watch_ignore" => {
                if let Some(globs) = self.strings(value, path)
                    && self.globs(&globs, value.pos, path)
                {
                    s.watch_ignore = globs;
                }
            }
            "watch_delay" => set(&mut s.watch_delay, self.duration(value, path)),
            "max_memory" => s.max_memory = self.size(value, path),
            "cron_restart" => self.cron_restart(s, key),
            _ => return false,
        }
        true
    }

    /// Reads a log or pid-file key into `s`; `false` for any other key.
    pub(super) fn logs_key(&mut self, s: &mut Settings, key: &Key<'_>) -> bool {
        let (value, path) = (key.value, key.path);
        match key.name {
            "out_file" => s.out_file = self.string(value, path).map(|p| self.resolve(&p)),
            "err_file" => s.err_file = self.string(value, path).map(|p| self.resolve(&p)),
            "log_time" => set(&mut s.log_time, self.boolean(value, path)),
            "log_max_size" => set(&mut s.log_max_size, self.size(value, path)),
            "log_keep" => set(&mut s.log_keep, self.count(value, path)),
            "write_pid_file" => {
                s.write_pid_file = self.string(value, path).map(|p| self.resolve(&p));
            }
            _ => return false,
        }
        true
    }

    fn restart(&mut self, s: &mut Settings, value: &Node, path: &str) {
        match self.string(value, path).as_deref() {
            Some("always") => s.restart = RestartPolicy::Always,
            Some("on-failure" | "on_failure") => s.restart = RestartPolicy::OnFailure,
            Some("never" | "no") => s.restart = RestartPolicy::Never,
            Some(other) => self.error(
                value.pos,
                path,
                format!(
                    "expected `always`, `on-failure` or `never`, found {:?}",
                    clip(other)
                ),
                None,
            ),
            None => {}
        }
    }

    /// `cron_restart`: a valid expression; one that never fires is kept,
    /// with a note saying so.
    fn cron_restart(&mut self, s: &mut Settings, key: &Key<'_>) {
        let (value, path) = (key.value, key.path);
        let Some(expr) = self.string(value, path) else {
            return;
        };
        if let Err(err) = expr.parse::<croner::Cron>() {
            self.error(
                value.pos,
                path,
                format!("invalid cron expression {:?}: {err}", clip(&expr)),
                Some(
                    "use 5 fields: minute hour day-of-month month day-of-week, e.g. \"0 3 * * *\""
                        .into(),
                ),
            );
            return;
        }
        if !crate::schedule::can_ever_fire(&expr) {
            self.notes.push(Note {
                path: path.to_owned(),
                app: Some(key.app.to_owned()),
                pos: value.pos,
                text: format!(
                    "the schedule {:?} never fires (no date matches it, \
                     e.g. the 30th of February): the app is never restarted by it",
                    clip(&expr)
                ),
            });
        }
        s.cron_restart = Some(expr);
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{errors, spec};
    use crate::spec::{RestartPolicy, Watch};

    #[test]
    fn restart_policies_and_their_spellings() {
        let project = spec("apps:\n  a: {cmd: x, restart: on_failure, watch: [src]}\n");
        let settings = &project.apps["a"].settings;
        assert_eq!(settings.restart, RestartPolicy::OnFailure);
        assert_eq!(settings.watch, Watch::Globs(vec!["src".into()]));
        assert_eq!(
            errors("apps:\n  a: {cmd: x, restart: sometimes}\n"),
            [
                "2:24 apps.a.restart: expected `always`, `on-failure` or `never`, found \"sometimes\""
            ]
        );
    }

    #[test]
    fn cron_restart_must_parse() {
        let found = errors("apps:\n  a: {cmd: x, cron_restart: \"not cron\"}\n");
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].starts_with("2:29 apps.a.cron_restart: invalid cron expression \"not cron\""),
            "{found:?}"
        );
    }
}
