//! How many and how: `instances`, `exec_mode`, `increment_var` and
//! `autostart`, with PM2's own arithmetic for the count.

use super::app::{Entry, Gathered};
use super::{Node, Pos, Translator, Value, key, node, str_node};

impl Translator<'_> {
    /// Reads an instances or mode key; `false` for any other key.
    pub(super) fn instances_key<'a>(
        &mut self,
        g: &mut Gathered<'a>,
        out: &mut Vec<(Node, Node)>,
        e: &Entry<'_, 'a>,
    ) -> bool {
        let v = e.value;
        match e.name {
            "instances" => {
                g.instances = Some(v);
                match pm2_instances(v) {
                    // PM2: 0 and "max" are one per CPU (kept as `max`).
                    Some(0) => e.put(out, "instances", str_node(v.pos, "max")),
                    Some(n) => {
                        let count = pm2_instance_count(n, self.machine.cpus());
                        e.put(out, "instances", node(v.pos, Value::Int(i128::from(count))));
                    }
                    None => e.put(out, "instances", v.clone()),
                }
            }
            "exec_mode" => {
                g.exec_mode = true;
                match v.scalar_string().as_deref() {
                    Some("cluster" | "cluster_mode") => {
                        g.cluster = true;
                        e.put(out, "mode", str_node(v.pos, "cluster"));
                    }
                    Some("fork" | "fork_mode") => e.put(out, "mode", str_node(v.pos, "fork")),
                    _ => e.put(out, "mode", v.clone()),
                }
            }
            "increment_var" => e.put(out, "increment_var", v.clone()),
            "autostart" => g.autostart = Some(!matches!(v.value, Value::Bool(false))),
            _ => return false,
        }
        true
    }

    /// `autostart: false` is `instances: 0`: defined, not running.
    pub(super) fn autostart(
        &mut self,
        g: &Gathered<'_>,
        out: &mut Vec<(Node, Node)>,
        app: &str,
        base: &str,
        pos: Pos,
    ) {
        if g.autostart != Some(false) {
            return;
        }
        out.retain(|(k, _)| k.scalar_string().as_deref() != Some("instances"));
        out.push((key("instances", pos), node(pos, Value::Int(0))));
        self.note(
            Some(app),
            &format!("{base}.autostart"),
            pos,
            "approximated: `instances: 0` keeps the app defined but not running; `eco scale APP N` starts it",
        );
    }
}

/// `instances` as PM2 reads it (Common.verifyConfs): `'max'` is 0, a
/// string is `parseInt(s) || 0`, a number is truncated. `None`: not a
/// number or a string (eco's validation says so).
pub fn pm2_instances(v: &Node) -> Option<i64> {
    match &v.value {
        Value::Int(n) => Some(i64::try_from(*n).unwrap_or(0)),
        #[allow(clippy::cast_possible_truncation)]
        Value::Float(x) if x.is_finite() => Some(x.trunc() as i64),
        Value::Str(s) if s.trim() == "max" => Some(0),
        Value::Str(s) => Some(parse_int(s)),
        _ => None,
    }
}

/// JavaScript's `parseInt(s) || 0`: the leading integer, else 0.
fn parse_int(s: &str) -> i64 {
    let t = s.trim_start();
    let (sign, digits) = match t.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, t.strip_prefix('+').unwrap_or(t)),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse::<i64>().map_or(0, |n| sign * n)
}

/// How many instances PM2 starts for `n` (God.prepare): 0 is one per
/// CPU, a negative number that many fewer, and never fewer than one.
pub fn pm2_instance_count(n: i64, cpus: u32) -> u32 {
    let cpus = i64::from(cpus.max(1));
    let count = match n {
        0 => cpus,
        n if n < 0 => n + cpus,
        n => n,
    };
    u32::try_from(count.max(1)).unwrap_or(u32::MAX)
}

/// Whether `instances` makes PM2 pick cluster mode for a Node app with no
/// `exec_mode` (Common.determineExecMode: `instances >= 1 || === 0 ||
/// === -1`, after verifyConfs' parsing).
pub fn pm2_cluster_default(instances: &Node) -> bool {
    pm2_instances(instances).is_some_and(|n| n >= 1 || n == 0 || n == -1)
}
