//! Readiness: PM2's `wait_ready` is `process.send('ready')`, which eco's
//! Node shim turns into READY=1; a cluster app is ready once it listens,
//! as in PM2; `listen_timeout` is how long eco waits.

use super::app::{Entry, Gathered};
use super::env::push_env;
use super::{Node, Pos, Translator, Value, key, numeric, str_node};

/// Gathers `wait_ready` or `listen_timeout`; `false` for any other key.
pub(super) fn ready_key<'a>(g: &mut Gathered<'a>, e: &Entry<'_, 'a>) -> bool {
    match e.name {
        "wait_ready" => g.wait_ready = Some(matches!(e.value.value, Value::Bool(true))),
        "listen_timeout" => g.listen_timeout = Some(e.value),
        _ => return false,
    }
    true
}

impl Translator<'_> {
    /// eco's `ready` (and the shim's switches) for what PM2 waits for.
    pub(super) fn readiness(
        &mut self,
        g: &Gathered<'_>,
        out: &mut Vec<(Node, Node)>,
        node_app: bool,
        app: &str,
        base: &str,
        pos: Pos,
    ) {
        let waits = g.wait_ready == Some(true);
        if waits || (g.cluster && node_app) {
            if !out
                .iter()
                .any(|(k, _)| k.scalar_string().as_deref() == Some("ready"))
            {
                out.push((key("ready", pos), str_node(pos, "notify")));
            }
            if !waits {
                push_env(out, "ECO_READY_ON_LISTEN", "1", pos);
            }
            if waits && !node_app {
                self.note(
                    Some(app),
                    &format!("{base}.wait_ready"),
                    pos,
                    "approximated: process.send('ready') works for Node apps only; others call `eco notify READY=1`",
                );
            }
        }
        if node_app && !waits && !g.cluster {
            // PM2 always gives Node apps an IPC channel: apps call
            // process.send('ready') unguarded. The shim provides it.
            push_env(out, "ECO_NODE_SHIM", "1", pos);
        }
        if let Some(timeout) = g.listen_timeout {
            out.push((key("ready_timeout", timeout.pos), numeric(timeout)));
            if !waits && !g.cluster {
                self.note(
                    Some(app),
                    &format!("{base}.listen_timeout"),
                    timeout.pos,
                    "ignored: without wait_ready or cluster mode there is nothing to wait for",
                );
                out.pop();
            }
        }
    }
}
