//! `eco start app.js --name api -i 2 --watch -- 8080`: an app without a file,
//! as PM2 users start them; the interpreter follows the extension.

use std::path::Path;

use anyhow::Result;

use crate::config::validate::{normalize, valid_name};
use crate::error::UsageError;
use crate::spec::{AppSpec, Mode, ProcessSpec, Settings, Watch};

/// The interpreter for a script, by extension (none: run it directly).
pub fn interpreter(script: &Path) -> Option<&'static str> {
    match script.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs" | "cjs") => Some("node"),
        Some("py") => Some("python3"),
        Some("sh") => Some("sh"),
        _ => None,
    }
}

pub fn app(
    script: &str,
    name: Option<&str>,
    instances: Option<&str>,
    watch: bool,
    args: &[String],
) -> Result<AppSpec> {
    let cwd = std::env::current_dir()?;
    let path = normalize(&cwd.join(script));
    let name = match name {
        Some(n) => n.to_owned(),
        None => path
            .file_stem()
            .map_or_else(|| "app".to_owned(), |s| s.to_string_lossy().into_owned()),
    };
    if !valid_name(&name) {
        return Err(UsageError(format!(
            "app name {name:?} may only use A-Z a-z 0-9 _ . -; pass --name"
        ))
        .into());
    }
    let instances = match instances {
        None => 1,
        Some("max") => crate::config::cpu_count(),
        Some(n) => n
            .parse::<u32>()
            .map_err(|_| UsageError(format!("-i {n}: expected a whole number or \"max\"")))?,
    };
    let mut argv: Vec<String> = interpreter(&path).map(str::to_owned).into_iter().collect();
    argv.push(path.display().to_string());
    argv.extend(args.iter().cloned());
    Ok(AppSpec {
        name,
        process: ProcessSpec {
            argv,
            cwd,
            env: std::collections::BTreeMap::new(),
            mode: Mode::Fork,
            increment_var: None,
            listen: Vec::new(),
            pid_file: None,
            watchdog: None,
        },
        instances,
        settings: Settings {
            watch: if watch { Watch::All } else { Watch::Off },
            ..Settings::default()
        },
    })
}
