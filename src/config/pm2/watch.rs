//! `watch`, `ignore_watch`, `watch_delay` and `watch_options`: PM2's
//! chokidar paths as eco's globs.

use super::app::Entry;
use super::{Node, Translator, Value, node, str_node};

impl Translator<'_> {
    /// Reads a watch key; `false` for any other key.
    pub(super) fn watch_key(&mut self, out: &mut Vec<(Node, Node)>, e: &Entry<'_, '_>) -> bool {
        let v = e.value;
        match e.name {
            "watch" => e.put(out, "watch", watch_paths(v)),
            "ignore_watch" => e.put(out, "watch_ignore", ignore_paths(v)),
            "watch_delay" => e.put(out, "watch_delay", v.clone()),
            "watch_options" => self.note(
                Some(e.app),
                e.path,
                e.pos,
                "dropped: chokidar options; eco watches with inotify and debounces with watch_delay",
            ),
            _ => return false,
        }
        true
    }
}

/// PM2's `watch` (true, or paths that chokidar watches recursively) as
/// eco globs.
fn watch_paths(v: &Node) -> Node {
    let globs = |p: &str| -> Vec<String> {
        let p = p.trim_start_matches("./").trim_end_matches('/');
        if p.is_empty() || p == "." {
            vec!["**".into()]
        } else if p.contains('*') {
            vec![p.to_owned()]
        } else {
            vec![p.to_owned(), format!("{p}/**")]
        }
    };
    match &v.value {
        Value::Str(_) | Value::Seq(_) => globs_node(v, globs),
        _ => v.clone(),
    }
}

/// PM2's `ignore_watch` (names, paths or globs, matched anywhere) as eco
/// globs.
fn ignore_paths(v: &Node) -> Node {
    let globs = |p: &str| -> Vec<String> {
        let p = p.trim_start_matches("./").trim_end_matches('/');
        if p.contains('*') || p.contains('/') {
            vec![p.to_owned(), format!("{p}/**")]
        } else {
            vec![format!("**/{p}"), format!("**/{p}/**")]
        }
    };
    globs_node(v, globs)
}

/// A path or a list of paths as one list of globs, each from `globs`,
/// keeping every item's position for error messages.
fn globs_node(v: &Node, globs: impl Fn(&str) -> Vec<String>) -> Node {
    let items: Vec<&Node> = match &v.value {
        Value::Seq(items) => items.iter().collect(),
        _ => vec![v],
    };
    node(
        v.pos,
        Value::Seq(
            items
                .into_iter()
                .flat_map(|n| {
                    globs(&n.scalar_string().unwrap_or_default())
                        .into_iter()
                        .map(|g| str_node(n.pos, &g))
                        .collect::<Vec<_>>()
                })
                .collect(),
        ),
    )
}
