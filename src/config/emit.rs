//! A tree in eco's shape written as ecosystem.yaml text (`eco import`),
//! with each note as a comment at the app (or file) it concerns.

use std::fmt::Write;

use super::node::{Node, Value};
use super::pm2::Note;

/// The YAML text of `root` (eco's shape), with `notes` as comments.
pub fn yaml(root: &Node, notes: &[Note], header: &str) -> String {
    let mut out = String::new();
    for line in header.lines() {
        let _ = writeln!(out, "# {line}");
    }
    for note in notes.iter().filter(|n| n.app.is_none()) {
        if note.path.is_empty() {
            let _ = writeln!(out, "# PM2: {}", note.text);
        } else {
            let _ = writeln!(out, "# PM2 {}: {}", note.path, note.text);
        }
    }
    if let Value::Map(entries) = &root.value {
        for (k, v) in entries {
            let name = k.scalar_string().unwrap_or_default();
            if name == "apps" {
                let _ = writeln!(out, "apps:");
                if let Value::Map(apps) = &v.value {
                    for (app, body) in apps {
                        let app = app.scalar_string().unwrap_or_default();
                        for note in notes.iter().filter(|n| n.app.as_deref() == Some(&app)) {
                            let key = note.path.rsplit('.').next().unwrap_or_default();
                            let _ = writeln!(out, "  # PM2 {key}: {}", note.text);
                        }
                        let _ = writeln!(out, "  {}:", scalar(&app));
                        block(&mut out, body, 4);
                    }
                }
            } else {
                entry(&mut out, &name, v, 0);
            }
        }
    }
    out
}

/// `--env NAME` baked in: in the file and in each app, `env_NAME` is
/// merged over `env` (as PM2 does at start), and every `env_*` profile
/// is left out.
pub fn bake_profile(root: &mut Node, profile: &str) {
    bake(root, profile);
    if let Value::Map(entries) = &mut root.value
        && let Some((_, apps)) = entries
            .iter_mut()
            .find(|(k, _)| k.scalar_string().as_deref() == Some("apps"))
        && let Value::Map(apps) = &mut apps.value
    {
        for (_, app) in apps {
            bake(app, profile);
        }
    }
}

fn bake(map: &mut Node, profile: &str) {
    let Value::Map(entries) = &mut map.value else {
        return;
    };
    let wanted = format!("env_{profile}");
    let chosen = entries
        .iter()
        .find(|(k, _)| k.scalar_string().as_deref() == Some(wanted.as_str()))
        .map(|(_, v)| v.clone());
    entries.retain(|(k, _)| {
        !k.scalar_string()
            .is_some_and(|k| k.starts_with("env_") && k.len() > 4)
    });
    let Some(Node {
        value: Value::Map(over),
        pos,
    }) = chosen
    else {
        return;
    };
    let env = match entries
        .iter_mut()
        .find(|(k, _)| k.scalar_string().as_deref() == Some("env"))
    {
        Some((_, env)) => env,
        None => {
            let key = Node {
                pos,
                value: Value::Str("env".into()),
            };
            entries.push((
                key,
                Node {
                    pos,
                    value: Value::Map(Vec::new()),
                },
            ));
            &mut entries.last_mut().expect("just pushed").1
        }
    };
    if let Value::Map(base) = &mut env.value {
        for (k, v) in over {
            match base
                .iter_mut()
                .find(|(b, _)| b.scalar_string() == k.scalar_string())
            {
                Some(slot) => slot.1 = v,
                None => base.push((k, v)),
            }
        }
    }
}

fn entry(out: &mut String, key: &str, v: &Node, indent: usize) {
    let pad = " ".repeat(indent);
    match &v.value {
        Value::Map(entries) if !entries.is_empty() => {
            let _ = writeln!(out, "{pad}{}:", scalar(key));
            block(out, v, indent + 2);
        }
        _ => {
            let why = match key {
                "ECO_NODE_SHIM" => "  # eco's Node shim: process.send('ready') works as under PM2",
                "ECO_READY_ON_LISTEN" => "  # ready once the app listens (PM2's cluster readiness)",
                "ECO_INSTANCE_VAR" => {
                    "  # PM2's instance_var: this variable gets the instance number"
                }
                _ => "",
            };
            let _ = writeln!(out, "{pad}{}: {}{why}", scalar(key), inline(v));
        }
    }
}

fn block(out: &mut String, v: &Node, indent: usize) {
    if let Value::Map(entries) = &v.value {
        for (k, v) in entries {
            entry(out, &k.scalar_string().unwrap_or_default(), v, indent);
        }
    }
}

/// A value on one line (flow style for lists and mappings).
fn inline(v: &Node) -> String {
    match &v.value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Str(s) => scalar(s),
        Value::Seq(items) => format!(
            "[{}]",
            items.iter().map(inline).collect::<Vec<_>>().join(", ")
        ),
        Value::Map(entries) => format!(
            "{{ {} }}",
            entries
                .iter()
                .map(|(k, v)| format!(
                    "{}: {}",
                    scalar(&k.scalar_string().unwrap_or_default()),
                    inline(v)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// A string, plain when YAML reads it back as the same string, else
/// double-quoted (JSON escapes are YAML escapes).
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_./-@%+".contains(c))
        && !s.starts_with(['-', '.', '@', '%'])
        && !matches!(
            s,
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n"
        )
        && s.parse::<f64>().is_err()
        && !s.starts_with("0x")
        && !s.starts_with("0o");
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("{s:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::node::parse;
    use crate::config::pm2::to_json;

    #[test]
    fn round_trips() {
        let text = "apps:\n  web:\n    cmd: [node, \"a b.js\", \"--x=1\"]\n    env:\n      PORT: 3000\n      FLAG: \"true\"\n    instances: max\n";
        let root = parse(text).expect("yaml");
        let out = yaml(&root, &[], "");
        let again = parse(&out).expect("again");
        assert_eq!(to_json(&again), to_json(&root), "{out}");
        assert!(out.contains("FLAG: \"true\""), "{out}");
        assert!(out.contains("cmd: [node, \"a b.js\", \"--x=1\"]"), "{out}");
    }

    /// PM2 (`pm2 start FILE --env production`): env_production over env.
    #[test]
    fn a_profile_is_merged_into_env() {
        let mut root = parse(
            "apps:\n  web:\n    cmd: x\n    env: {A: 1, B: 2}\n    env_production: {B: 3, C: 4}\n    env_staging: {B: 5}\n  job:\n    cmd: y\n    env_production: {D: 6}\n",
        )
        .expect("yaml");
        bake_profile(&mut root, "production");
        let json = to_json(&root);
        assert_eq!(
            json["apps"]["web"]["env"],
            serde_json::json!({"A": 1, "B": 3, "C": 4})
        );
        assert_eq!(json["apps"]["web"]["env_staging"], serde_json::Value::Null);
        assert_eq!(json["apps"]["job"]["env"], serde_json::json!({"D": 6}));
    }
}
