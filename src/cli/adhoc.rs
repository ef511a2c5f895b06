//! `eco start app.js --name api -i 2 --watch -- 8080`: an app without a file,
//! as PM2 users start them; the interpreter follows the extension.

use std::path::Path;

use anyhow::Result;

use crate::config::validate::{RESERVED_APP_NAMES, name_problem, normalize};
use crate::error::UsageError;
use crate::spec::{AppSpec, Mode, ProcessSpec, Settings, Watch};

/// The interpreter for a script, by extension, as PM2 picks it (none: run
/// it directly).
pub fn interpreter(script: &Path) -> Option<&'static str> {
    crate::config::pm2::default_interpreter(&script.display().to_string())
}

/// The caller's environment, as PM2 passes it to `pm2 start app.js`;
/// without eco's per-instance variables, should eco run inside an app.
fn caller_env() -> std::collections::BTreeMap<String, String> {
    const PER_INSTANCE: &[&str] = &[
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "NODE_APP_INSTANCE",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
    ];
    std::env::vars()
        .filter(|(k, _)| !k.starts_with("ECO_") && !PER_INSTANCE.contains(&k.as_str()))
        .collect()
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
    if let Some(problem) = name_problem(&name) {
        return Err(UsageError(format!("app name {name:?} {problem}; pass --name")).into());
    }
    if RESERVED_APP_NAMES.contains(&name.as_str()) {
        return Err(UsageError(format!(
            "app name {name:?} is reserved (`all` names every app); pass --name"
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
            env: caller_env(),
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
