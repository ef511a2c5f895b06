//! eco's Node shim (`shims/node.cjs`, embedded in the binary): preloaded
//! with `NODE_OPTIONS=--require` into Node apps in cluster mode or with
//! `ready: notify` (or `ECO_NODE_SHIM=1` in env, which `eco import` writes
//! for PM2's fork-mode Node apps), so PM2 apps run unchanged (`listen(PORT)` takes eco's
//! socket; in cluster mode `listen(port)` on any other port asks eco for
//! it, through the runtime's listen broker; `process.send('ready')` is
//! READY=1). Everything is decided
//! here, in the spec's env: the runtime needs to know nothing about it.

use std::path::{Path, PathBuf};

use crate::runtime::listen_broker::BROKER_ENV;
use crate::spec::{Mode, ProjectSpec, Ready};

/// The shim's source.
pub const NODE_SHIM: &str = include_str!("shims/node.cjs");

/// Where the shim lives under `home`: named by its content, so a spec
/// saved by an older eco keeps pointing at the shim it was made with.
pub fn path(home: &Path) -> PathBuf {
    // FNV-1a: a stable name, not a security measure.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in NODE_SHIM.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    home.join("shims").join(format!("node-{hash:016x}.cjs"))
}

/// Whether `argv` runs node.
pub fn is_node(argv: &[String]) -> bool {
    argv.first()
        .and_then(|p| p.rsplit('/').next())
        .is_some_and(|p| p == "node" || p == "nodejs")
}

/// Adds the shim to the env of every Node app that needs it; returns
/// whether any does. `shim` is the file's path, `eco` this binary.
pub fn apply(spec: &mut ProjectSpec, shim: &Path, eco: &Path) -> bool {
    let mut any = false;
    for app in spec.apps.values_mut() {
        let wants = app.process.mode == Mode::Cluster
            || app.settings.ready == Some(Ready::Notify)
            || app
                .process
                .env
                .get("ECO_NODE_SHIM")
                .is_some_and(|v| v == "1");
        if !wants || !is_node(&app.process.argv) {
            continue;
        }
        any = true;
        let env = &mut app.process.env;
        let require = format!("--require {}", quote(&shim.display().to_string()));
        let options = match env.get("NODE_OPTIONS") {
            Some(user) if !user.trim().is_empty() => format!("{require} {user}"),
            _ => require,
        };
        env.insert("NODE_OPTIONS".into(), options);
        env.insert("ECO_BIN".into(), eco.display().to_string());
        if app.process.mode == Mode::Cluster {
            // Asks the runtime for a listen broker: the instance's listen()
            // on a port no `listen` names gets eco's socket from it.
            env.insert(BROKER_ENV.into(), "1".into());
        }
    }
    any
}

/// A path as NODE_OPTIONS reads it (double quotes when it has spaces).
fn quote(path: &str) -> String {
    if path.contains([' ', '"', '\\']) {
        format!("\"{}\"", path.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        path.to_owned()
    }
}

/// Writes the shim under `home` if it is not there yet (atomically: a
/// node starting meanwhile never reads half a file).
pub fn install(home: &Path) -> std::io::Result<PathBuf> {
    let target = path(home);
    if std::fs::read_to_string(&target).is_ok_and(|s| s == NODE_SHIM) {
        return Ok(target);
    }
    let dir = target.parent().unwrap_or(home);
    std::fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(".node-shim-{}.tmp", std::process::id()));
    std::fs::write(&tmp, NODE_SHIM)?;
    std::fs::rename(&tmp, &target)?;
    Ok(target)
}
