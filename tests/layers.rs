//! Imports go down only: the engine (`runtime`) and the wire (`ipc`) never
//! reach up into the daemon, the reconciler or the commands, and the
//! reconciler never into the wire or the daemon. Read from the sources, so
//! an import that comes back fails here, not in a review.

use std::path::{Path, PathBuf};

/// Which top-level modules each layer must not name.
const RULES: &[(&str, &[&str])] = &[
    ("runtime", &["daemon", "cli", "reconcile"]),
    ("ipc", &["daemon", "cli", "reconcile"]),
    ("reconcile", &["daemon", "cli", "ipc"]),
];

/// Known crossings still to remove; each entry is `file: module`. None:
/// the apps' descriptor limit now comes into `Engine::new` with the spawner.
const PENDING: &[&str] = &[];

#[test]
fn runtime_ipc_and_reconcile_import_nothing_above_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut crossings = Vec::new();
    for (layer, banned) in RULES {
        for file in rust_files(&src.join(layer)) {
            let text = std::fs::read_to_string(&file).expect("a readable source file");
            let rel = file.strip_prefix(&src).expect("under src").to_path_buf();
            for module in crate_modules(&code_only(&text), depth(&rel)) {
                let entry = format!("{}: {module}", rel.display());
                if banned.contains(&module.as_str()) && !PENDING.contains(&entry.as_str()) {
                    crossings.push(entry);
                }
            }
        }
    }
    crossings.dedup();
    assert!(
        crossings.is_empty(),
        "imports that go up a layer (move the item down, or pass it in): {crossings:?}"
    );
}

/// The scanner itself sees every spelling of an import.
#[test]
fn the_layer_scanner_sees_grouped_nested_and_relative_paths() {
    let found = |text: &str, depth| crate_modules(&code_only(text), depth);
    assert_eq!(found("use crate::daemon::leftovers;", 1), ["daemon"]);
    assert_eq!(
        found("use crate::{\n    ipc::proto,\n    daemon::x,\n};", 1),
        ["ipc", "daemon"]
    );
    assert_eq!(
        found("let n = crate :: daemon::startup::f();", 1),
        ["daemon"]
    );
    assert_eq!(found("use super::super::daemon::x;", 2), ["daemon"]);
    assert_eq!(found("use super::spawn::X;", 2), Vec::<String>::new());
    assert_eq!(found("// see crate::daemon\nuse crate::spec;", 1), ["spec"]);
    assert_eq!(
        found("use crate::{ipc::{proto::{A, B}}, spec};", 1),
        ["ipc", "spec"]
    );
}

/// Every `.rs` file under `dir`.
/// A layer's `tests/` folder is exempt: its in-process scenarios compose the
/// engine with what drives it from above (the daemon's monitor), as the
/// daemon itself does.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable source folder") {
            let path = entry.expect("a folder entry").path();
            if path.is_dir() {
                if !path.ends_with("tests") {
                    dirs.push(path);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// How many `super::` reach the crate root from a file (`runtime/x.rs`: 2,
/// `runtime/mod.rs`: 1).
fn depth(rel: &Path) -> usize {
    let parts = rel.components().count();
    if rel.file_name().is_some_and(|n| n == "mod.rs") {
        parts - 1
    } else {
        parts
    }
}

/// The source without comments and with no whitespace (a path may be split
/// over lines or spaced around `::`).
fn code_only(text: &str) -> String {
    text.lines()
        .map(|line| line.split("//").next().unwrap_or_default())
        .collect::<String>()
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect()
}

/// The top-level modules named after `crate::` (or enough `super::`),
/// grouped imports included, in order.
fn crate_modules(code: &str, depth: usize) -> Vec<String> {
    let root = "super::".repeat(depth);
    let mut found = Vec::new();
    for prefix in ["crate::".to_owned(), root] {
        if prefix.is_empty() {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find(&prefix) {
            rest = &rest[at + prefix.len()..];
            if let Some(group) = rest.strip_prefix('{') {
                found.extend(group_heads(group));
            } else {
                found.push(ident(rest));
            }
        }
    }
    found.retain(|m| !m.is_empty() && m != "super" && m != "self");
    found
}

/// The first segment of each path in a `{…}` group (up to its closing brace).
fn group_heads(group: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut level = 0usize;
    let mut at_start = true;
    for (i, c) in group.char_indices() {
        match c {
            '{' => level += 1,
            '}' if level == 0 => break,
            '}' => level -= 1,
            ',' if level == 0 => at_start = true,
            _ if at_start && level == 0 => {
                heads.push(ident(&group[i..]));
                at_start = false;
            }
            _ => {}
        }
    }
    heads
}

fn ident(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}
