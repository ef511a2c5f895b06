//! PM2's hands: `eco start|stop|restart|reload|delete FILE` act on the apps
//! of an ecosystem file, as `pm2 start ecosystem.config.js` does, and
//! `eco reload`/`eco restart` with no file here act on every applied
//! project (`pm2 reload all`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::args::{FileArgs, ProfileArgs};
use super::daemon_cmds::{applied_projects, apply, load, print_done, print_tables};
use crate::config;
use crate::ipc::proto::Request;
use crate::plan::Action;

/// The extensions eco reads an ecosystem file from.
const DATA: &[&str] = &["yaml", "yml", "json", "json5"];
const SCRIPT: &[&str] = &["js", "cjs", "mjs"];

/// Whether a file name is an ecosystem file's rather than an app's or a
/// script's, as PM2 decides (`Common.isConfigFile`): YAML and JSON always;
/// JavaScript only as `NAME.config.js` (`.cjs`, `.mjs`) or `ecosystem*.js`,
/// since `eco start app.js` runs a script.
pub fn ecosystem_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let Some((stem, ext)) = lower.rsplit_once('.') else {
        return false;
    };
    if stem.is_empty() {
        return false;
    }
    DATA.contains(&ext)
        || (SCRIPT.contains(&ext) && (stem.ends_with(".config") || stem.starts_with("ecosystem")))
}

/// A TARGET that names an ecosystem file: an existing file with such a
/// name, or a name starting `ecosystem` (so a missing one is "no such
/// file", not "no app named"). An app may be named `web.json`: without
/// that file on disk, it is the app.
pub fn is_file_target(target: &str) -> bool {
    let path = Path::new(target);
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    ecosystem_name(name) && (path.is_file() || name.to_ascii_lowercase().starts_with("ecosystem"))
}

fn file_args(path: &Path) -> FileArgs {
    FileArgs {
        file: Some(path.to_path_buf()),
    }
}

/// `eco start FILE` = `eco up -f FILE`, then the project's table.
pub fn start_file(path: &Path, profile: &ProfileArgs, silent: bool) -> Result<i32> {
    let (project, _) = apply(&file_args(path), profile, silent)?;
    print_tables(&BTreeSet::from([project]), silent)?;
    Ok(0)
}

/// `eco stop FILE`: every app of the file's project.
pub fn stop_file(path: &Path, silent: bool) -> Result<i32> {
    let project = load(&file_args(path), &ProfileArgs { profile: None })?.name;
    super::daemon_cmds::simple(
        Request::Stop {
            target: format!("{project}/"),
        },
        silent,
    )
}

/// `eco delete FILE` = `eco down -f FILE`.
pub fn delete_file(path: &Path, silent: bool) -> Result<i32> {
    let project = load(&file_args(path), &ProfileArgs { profile: None })?.name;
    let response = super::daemon_cmds::call(Request::Down { project })?;
    print_done(&response, silent)?;
    Ok(0)
}

/// Restart (stop then start) or reload (zero downtime).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Again {
    Restart,
    Reload,
}

impl Again {
    fn request(self, target: String) -> Request {
        match self {
            Again::Restart => Request::Restart { target },
            Again::Reload => Request::Reload { target },
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Again::Restart => "restarting",
            Again::Reload => "reloading",
        }
    }
}

/// The apps of a plan that `restart FILE`/`reload FILE` still act on: those
/// the apply left running as they were (it started or replaced the others
/// already). A restart also starts the apps the user stopped, as PM2's
/// does; a reload leaves them stopped.
pub fn left_as_they_were(actions: &[Action], again: Again) -> Vec<String> {
    actions
        .iter()
        .filter(|a| match a {
            Action::Unchanged { .. } | Action::Update { .. } => true,
            Action::KeepStopped { .. } => again == Again::Restart,
            _ => false,
        })
        .map(|a| a.app().to_owned())
        .collect()
}

/// `eco restart FILE` / `eco reload FILE`, as PM2 does them: the file is
/// applied (new apps start, changed ones are replaced), then every other
/// app of the file restarts or reloads, so new code on disk runs. Returns
/// the project.
pub fn again_file(
    path: &Path,
    profile: &ProfileArgs,
    again: Again,
    silent: bool,
) -> Result<String> {
    let (project, actions) = apply(&file_args(path), profile, true)?;
    let again_apps = left_as_they_were(&actions, again);
    if !silent {
        // The rest of the plan; the apps acted on again say so below.
        let rest: Vec<Action> = actions
            .into_iter()
            .filter(|a| !again_apps.iter().any(|app| app == a.app()))
            .collect();
        for line in super::render::plan_lines(&rest) {
            println!("{line}");
        }
    }
    for app in again_apps {
        let response = super::daemon_cmds::call(again.request(format!("{project}/{app}")))?;
        print_done(&response, silent)?;
    }
    Ok(project)
}

/// `eco restart` / `eco reload` with nothing named: the ecosystem file in
/// this folder if there is one, else every applied project.
pub fn here(again: Again, profile: &ProfileArgs, silent: bool) -> Result<i32> {
    match config::locate(None) {
        Ok(path) => {
            let project = again_file(&path, profile, again, silent)?;
            print_tables(&BTreeSet::from([project]), silent)?;
            Ok(0)
        }
        Err(_) => every_project(again, silent),
    }
}

/// `pm2 reload all`: every applied project, said on stderr. With none
/// applied, the error is the missing file's.
pub fn every_project(again: Again, silent: bool) -> Result<i32> {
    let projects = applied_projects()?;
    if projects.is_empty() {
        // No file and nothing applied: say what is missing.
        config::locate(None)?;
    }
    let names: Vec<&str> = projects.iter().map(String::as_str).collect();
    eprintln!(
        "eco: no ecosystem file in this folder: {} every applied project: {}",
        again.verb(),
        names.join(", ")
    );
    let mut touched = BTreeSet::new();
    for project in &projects {
        let response = super::daemon_cmds::call(again.request(format!("{project}/")))?;
        touched.extend(print_done(&response, silent)?);
    }
    print_tables(&touched, silent)?;
    Ok(0)
}

/// The file a TARGET names, for the commands that take one.
pub fn file_target(target: Option<&str>) -> Option<PathBuf> {
    target.filter(|t| is_file_target(t)).map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pm2s_config_file_names() {
        // PM2's Common.isConfigFile: .json/.yml/.yaml, and *.config.js.
        for name in [
            "ecosystem.config.js",
            "ecosystem.config.cjs",
            "ecosystem.config.mjs",
            "pm2.config.js",
            "process.json",
            "ecosystem.json5",
            "ecosystem.yaml",
            "apps.yml",
            "ecosystem.js",
            "ecosystem.prod.js",
            "Ecosystem.Config.JS",
        ] {
            assert!(ecosystem_name(name), "{name}");
        }
        // Scripts and app names stay what they are.
        for name in [
            "app.js",
            "server.mjs",
            "index.cjs",
            "web",
            "main.py",
            ".json",
        ] {
            assert!(!ecosystem_name(name), "{name}");
        }
    }

    #[test]
    fn restart_file_acts_on_what_the_apply_left() {
        let actions = vec![
            Action::Start {
                app: "new".into(),
                instances: 1,
            },
            Action::Replace {
                app: "changed".into(),
                from: 1,
                to: 1,
                changes: vec!["env.A".into()],
            },
            Action::Unchanged { app: "same".into() },
            Action::Update {
                app: "tuned".into(),
                changes: vec!["max_restarts".into()],
            },
            Action::KeepStopped {
                app: "stopped".into(),
            },
        ];
        assert_eq!(
            left_as_they_were(&actions, Again::Restart),
            vec!["same", "tuned", "stopped"]
        );
        assert_eq!(
            left_as_they_were(&actions, Again::Reload),
            vec!["same", "tuned"]
        );
    }
}
