//! The environment: `env` (non-scalar values as JSON, as PM2 writes
//! them), `env_<profile>`, `port` (PORT) and `instance_var`.

use super::app::{Entry, Gathered};
use super::{Node, Pos, Translator, Value, key, node, str_node, to_json};

impl Translator<'_> {
    /// Reads an env key; `false` for any other key.
    pub(super) fn env_key<'a>(
        &mut self,
        g: &mut Gathered<'a>,
        out: &mut Vec<(Node, Node)>,
        e: &Entry<'_, 'a>,
    ) -> bool {
        let v = e.value;
        match e.name {
            "env" => g.env = Some(v),
            p if p.starts_with("env_") && p.len() > 4 => {
                let profile = self.env_values(v, e.app, e.path);
                e.put(out, p, profile);
            }
            "port" => g.port = Some(v),
            "instance_var" => g.instance_var = Some(v),
            _ => return false,
        }
        true
    }

    /// The app's env entries: `env`, then PORT from `port`, then
    /// `ECO_INSTANCE_VAR` from `instance_var`.
    pub(super) fn env_entries(
        &mut self,
        g: &Gathered<'_>,
        app: &str,
        base: &str,
    ) -> Vec<(Node, Node)> {
        let mut env_entries = match g.env {
            Some(env) => match self.env_values(env, app, &format!("{base}.env")).value {
                Value::Map(e) => e,
                _ => Vec::new(),
            },
            None => Vec::new(),
        };
        if let Some(port) = g.port {
            env_entries.retain(|(k, _)| k.scalar_string().as_deref() != Some("PORT"));
            env_entries.push((key("PORT", port.pos), port.clone()));
        }
        if let Some(var) = g.instance_var
            && var.scalar_string().as_deref() != Some("NODE_APP_INSTANCE")
        {
            env_entries.push((key("ECO_INSTANCE_VAR", var.pos), var.clone()));
            self.note(
                Some(app),
                &format!("{base}.instance_var"),
                var.pos,
                "approximated: eco sets NODE_APP_INSTANCE and ECO_INSTANCE; for Node apps eco's shim also copies the instance number into this variable (ECO_INSTANCE_VAR)",
            );
        }
        env_entries
    }

    /// An env mapping whose non-scalar values become JSON, as PM2 does.
    fn env_values(&mut self, env: &Node, app: &str, path: &str) -> Node {
        let Value::Map(entries) = &env.value else {
            return env.clone();
        };
        let mut out = Vec::new();
        for (k, v) in entries {
            let value = match &v.value {
                Value::Seq(_) | Value::Map(_) => {
                    let text = format!(
                        "approximated: {} written as JSON text",
                        k.scalar_string().unwrap_or_default()
                    );
                    self.note(Some(app), path, k.pos, &text);
                    str_node(v.pos, &to_json(v).to_string())
                }
                _ => v.clone(),
            };
            out.push((k.clone(), value));
        }
        node(env.pos, Value::Map(out))
    }
}

/// Adds `name=value` to the app's eco `env` (creating it).
pub(super) fn push_env(out: &mut Vec<(Node, Node)>, name: &str, value: &str, pos: Pos) {
    let entry = (key(name, pos), str_node(pos, value));
    if let Some((_, env)) = out
        .iter_mut()
        .find(|(k, _)| k.scalar_string().as_deref() == Some("env"))
        && let Value::Map(entries) = &mut env.value
    {
        entries.push(entry);
        return;
    }
    out.push((key("env", pos), node(pos, Value::Map(vec![entry]))));
}
