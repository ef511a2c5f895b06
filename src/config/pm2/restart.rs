//! When an app restarts and how it stops: `autorestart`,
//! `stop_exit_codes`, the restart counts and delays (with PM2's
//! exponential backoff), memory and cron restarts, and the kill signal
//! and timeout.

use super::app::{Entry, Gathered};
use super::{Node, Translator, Value, key, numeric, str_node};

impl Translator<'_> {
    /// Reads a restart or stop key; `false` for any other key.
    pub(super) fn restart_key<'a>(
        &mut self,
        g: &mut Gathered<'a>,
        out: &mut Vec<(Node, Node)>,
        e: &Entry<'_, 'a>,
    ) -> bool {
        let v = e.value;
        match e.name {
            "max_memory_restart" => e.put(out, "max_memory", v.clone()),
            "cron_restart" => e.put(out, "cron_restart", v.clone()),
            "autorestart" => match v.value {
                Value::Bool(false) => e.put(out, "restart", str_node(v.pos, "never")),
                Value::Bool(true) => e.put(out, "restart", str_node(v.pos, "always")),
                _ => e.put(out, "restart", v.clone()),
            },
            "max_restarts" => e.put(out, "max_restarts", numeric(v)),
            "min_uptime" => e.put(out, "min_uptime", numeric(v)),
            "restart_delay" => e.put(out, "restart_delay", numeric(v)),
            "exp_backoff_restart_delay" => g.exp_backoff = Some(v),
            "stop_exit_codes" => self.stop_exit_codes(out, e),
            "kill_timeout" => e.put(out, "stop_timeout", numeric(v)),
            "kill_signal" => {
                g.stop_signal = true;
                e.put(out, "stop_signal", v.clone());
            }
            _ => return false,
        }
        true
    }

    /// `stop_exit_codes` is `restart: on-failure`, exact for `[0]` only.
    fn stop_exit_codes(&mut self, out: &mut Vec<(Node, Node)>, e: &Entry<'_, '_>) {
        let v = e.value;
        let codes: Vec<String> = match &v.value {
            Value::Seq(items) => items.iter().filter_map(Node::scalar_string).collect(),
            _ => v.scalar_string().into_iter().collect(),
        };
        e.put(out, "restart", str_node(v.pos, "on-failure"));
        if codes != ["0"] {
            let text = format!(
                "approximated: eco's `restart: on-failure` stops restarting after exit code 0 only, not after {}",
                codes.join(", ")
            );
            self.note(Some(e.app), e.path, e.pos, &text);
        }
    }

    /// `exp_backoff_restart_delay`: eco's doubling delay, capped as PM2 caps it.
    pub(super) fn backoff(
        &mut self,
        g: &Gathered<'_>,
        out: &mut Vec<(Node, Node)>,
        app: &str,
        base: &str,
    ) {
        let Some(delay) = g.exp_backoff else {
            return;
        };
        if !out
            .iter()
            .any(|(k, _)| k.scalar_string().as_deref() == Some("restart_delay"))
        {
            out.push((key("restart_delay", delay.pos), numeric(delay)));
        }
        out.push((
            key("max_restart_delay", delay.pos),
            str_node(delay.pos, "15s"),
        ));
        self.note(
            Some(app),
            &format!("{base}.exp_backoff_restart_delay"),
            delay.pos,
            "approximated: eco doubles the delay per crash (PM2: x1.5) up to max_restart_delay (PM2's cap, 15s)",
        );
    }
}
