//! `eco startup`, `eco unstartup`, `eco save`, `eco resurrect`: eco's daemon
//! at boot under systemd, and PM2's habits answered. Gathers the facts
//! (who, where, PATH, the applied projects) for the pure unit renderer in
//! [`crate::export::startup`], writes the unit and drives `systemctl` when
//! systemd is PID 1; otherwise prints what to run.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::daemon::state::SavedState;
use crate::error::UsageError;
use crate::export::startup::{self, DaemonUnit};
use crate::ipc::client::Client;
use crate::paths::Paths;
use crate::spec::ProjectSpec;

/// The machine's init system, as far as `eco startup` cares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Init {
    /// systemd is PID 1: install and start.
    Systemd,
    /// Another init eco has no unit format for (yet).
    Other(&'static str),
    /// No init eco recognises (a container, a chroot): write the unit,
    /// print what to run once systemd boots this system.
    Unknown(String),
}

fn detect_init() -> Init {
    if cfg!(target_os = "macos") {
        return Init::Other("launchd");
    }
    let comm = std::fs::read_to_string("/proc/1/comm")
        .map(|c| c.trim().to_owned())
        .unwrap_or_default();
    if comm == "systemd" || Path::new("/run/systemd/system").is_dir() {
        return Init::Systemd;
    }
    if comm == "openrc-init" || Path::new("/run/openrc").is_dir() {
        return Init::Other("OpenRC");
    }
    match comm.as_str() {
        "runit" | "runsvdir" => Init::Other("runit"),
        "s6-svscan" => Init::Other("s6"),
        "init" if Path::new("/etc/inittab").is_file() => Init::Other("SysV init"),
        _ => Init::Unknown(comm),
    }
}

/// Whom the unit is for and where it goes.
struct Scope {
    user_scope: bool,
    /// `User=` in a system unit.
    run_as: Option<String>,
    /// The daemon's user's name (for the unit's name and hints).
    user: String,
    home: PathBuf,
    eco_home: PathBuf,
    unit_dir: PathBuf,
    unit_name: String,
}

impl Scope {
    fn unit_path(&self) -> PathBuf {
        self.unit_dir.join(&self.unit_name)
    }

    /// `systemctl` or `systemctl --user`, as the user types it.
    fn systemctl(&self) -> &'static str {
        if self.user_scope {
            "systemctl --user"
        } else {
            "systemctl"
        }
    }
}

fn scope(user_scope: bool, user_name: Option<&str>) -> Result<Scope> {
    use nix::unistd::{Uid, User};
    let me = User::from_uid(Uid::current()).ok().flatten();
    let my_name = me.as_ref().map_or_else(
        || std::env::var("USER").unwrap_or_else(|_| Uid::current().to_string()),
        |u| u.name.clone(),
    );
    let (run_as, user, home) = match user_name {
        Some(name) => {
            let Some(other) = User::from_name(name).ok().flatten() else {
                return Err(UsageError(format!(
                    "--user-name {name}: there is no user {name:?} on this machine"
                ))
                .into());
            };
            (Some(other.name.clone()), other.name, other.dir)
        }
        None => {
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .or_else(|| me.as_ref().map(|u| u.dir.clone()))
                .unwrap_or_else(|| PathBuf::from("/"));
            // A system unit without User= runs as root: a non-root caller's
            // daemon must keep running as them.
            let run_as = (!user_scope && !Uid::current().is_root()).then(|| my_name.clone());
            (run_as, my_name, home)
        }
    };
    let eco_home = match std::env::var_os("ECO_HOME").filter(|h| !h.is_empty()) {
        Some(_) => crate::paths::home(),
        None => home.join(".eco"),
    };
    let unit_dir = if user_scope {
        std::env::var_os("XDG_CONFIG_HOME")
            .filter(|d| !d.is_empty())
            .map_or_else(|| home.join(".config"), PathBuf::from)
            .join("systemd/user")
    } else {
        PathBuf::from("/etc/systemd/system")
    };
    let unit_name = startup::unit_name(user_scope, &user);
    Ok(Scope {
        user_scope,
        run_as,
        user,
        home,
        eco_home,
        unit_dir,
        unit_name,
    })
}

/// The projects applied under `eco_home`, read without side effects (the
/// daemon's own load sets damaged files aside; this must not).
fn applied_projects(eco_home: &Path) -> Vec<ProjectSpec> {
    let path = Paths::new(eco_home.to_owned()).state();
    match std::fs::read(&path) {
        Ok(bytes) => match serde_json::from_slice::<SavedState>(&bytes) {
            Ok(state) => state.projects.into_iter().map(|p| p.spec).collect(),
            Err(err) => {
                eprintln!(
                    "eco: warning: cannot read {} ({err}); TimeoutStopSec= assumes the default stop_timeout",
                    path.display()
                );
                Vec::new()
            }
        },
        Err(_) => Vec::new(),
    }
}

fn render(scope: &Scope) -> Result<String> {
    let eco = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("cannot find the path of the eco binary")?;
    let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
    let projects = applied_projects(&scope.eco_home);
    // A value no unit can hold (a newline in ECO_HOME, say) is invalid
    // input: exit 2, naming it.
    startup::render(&DaemonUnit {
        eco: &eco,
        eco_home: &scope.eco_home,
        home: &scope.home,
        path: &path,
        user_scope: scope.user_scope,
        run_as: scope.run_as.as_deref(),
        projects: &projects,
    })
    .map_err(|e| UsageError(e.to_string()).into())
}

/// `eco startup [--user] [--print] [--user-name NAME]`.
pub fn startup(user_scope: bool, print: bool, user_name: Option<&str>) -> Result<i32> {
    let scope = scope(user_scope, user_name)?;
    let unit = render(&scope)?;
    if print {
        print!("{unit}");
        return Ok(0);
    }
    let init = detect_init();
    if let Init::Other(name) = init {
        eprintln!(
            "error: eco startup writes systemd units; this machine's init is {name}: not supported yet.\n  \
             help: have {name} run `eco daemon` (it stays in the foreground and restores every \
             project), or see `eco startup --print` for what the unit does"
        );
        return Ok(1);
    }
    let path = scope.unit_path();
    std::fs::create_dir_all(&scope.unit_dir)
        .with_context(|| format!("cannot create the folder {}", scope.unit_dir.display()))
        .with_context(|| permission_hint(&scope))?;
    std::fs::write(&path, &unit)
        .with_context(|| format!("cannot write {}", path.display()))
        .with_context(|| permission_hint(&scope))?;
    println!("wrote {}", path.display());
    let systemctl = scope.systemctl();
    let name = &scope.unit_name;
    match init {
        Init::Systemd => {
            run_systemctl(&scope, &["daemon-reload"])?;
            // systemd's daemon would find the home taken: hand over by hand.
            if let Some(pid) = daemon_running(&scope.eco_home) {
                run_systemctl(&scope, &["enable", name])?;
                println!(
                    "enabled {name}: eco's daemon starts at boot.\n\
                     A daemon started by hand runs already (pid {pid}); to hand it over to systemd \
                     now: eco kill && {systemctl} start {name} (the apps restart)"
                );
            } else {
                run_systemctl(&scope, &["enable", "--now", name])?;
                println!("enabled and started {name}: eco's daemon starts at boot");
            }
        }
        Init::Unknown(pid1) => {
            let pid1 = if pid1.is_empty() {
                "unknown".into()
            } else {
                pid1
            };
            println!(
                "systemd is not running here (PID 1 is `{pid1}`): nothing was enabled.\n\
                 Once this system runs systemd, run:\n  {systemctl} daemon-reload && {systemctl} enable --now {name}"
            );
        }
        Init::Other(_) => {}
    }
    if scope.user_scope {
        println!(
            "To start it at boot rather than at your first login, run once: sudo loginctl enable-linger {}",
            scope.user
        );
    }
    Ok(0)
}

/// `eco unstartup [--user]`: disables and removes the unit. A running
/// daemon keeps running (its apps too) until `eco kill` or the next boot.
pub fn unstartup(user_scope: bool, user_name: Option<&str>) -> Result<i32> {
    let scope = scope(user_scope, user_name)?;
    let path = scope.unit_path();
    let name = &scope.unit_name;
    let systemd = detect_init() == Init::Systemd;
    if systemd && path.exists() {
        run_systemctl(&scope, &["disable", name])?;
    }
    match std::fs::remove_file(&path) {
        Ok(()) => {
            if systemd {
                run_systemctl(&scope, &["daemon-reload"])?;
            }
            println!(
                "removed {}: eco's daemon no longer starts at boot (a running one keeps running; \
                 `eco kill` stops it)",
                path.display()
            );
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            println!("no unit at {}: nothing to remove", path.display());
        }
        Err(err) => {
            return Err(anyhow::Error::new(err)
                .context(format!("cannot remove {}", path.display()))
                .context(permission_hint(&scope)));
        }
    }
    Ok(0)
}

/// `eco save`: nothing to do, said plainly.
pub fn save() -> i32 {
    let paths = Paths::from_env();
    println!(
        "nothing to save: eco saves what it runs continuously, in {} (every up, down, scale, \
         stop and start is written at once). After a reboot, `eco resurrect` or any eco command \
         brings every project back; `eco startup` does it at boot.",
        paths.state().display()
    );
    0
}

/// `eco resurrect`: starts the daemon (which restores every project) and
/// lists what runs.
pub fn resurrect() -> Result<i32> {
    let paths = Paths::from_env();
    if daemon_running(&paths.home).is_some() {
        eprintln!("eco: the daemon runs already; what it restored:");
    } else {
        eprintln!(
            "eco: starting the daemon; it restores every project from {}",
            paths.state().display()
        );
    }
    let code = super::daemon_cmds::ls(false)?;
    Ok(code)
}

/// The pid of the daemon serving `eco_home`, if one answers.
fn daemon_running(eco_home: &Path) -> Option<i32> {
    let paths = Paths::new(eco_home.to_owned());
    Client::connect(&paths, false).ok()?;
    std::fs::read_to_string(paths.pid())
        .ok()
        .and_then(|p| p.trim().parse().ok())
}

fn run_systemctl(scope: &Scope, args: &[&str]) -> Result<()> {
    let mut cmd = Command::new("systemctl");
    if scope.user_scope {
        cmd.arg("--user");
    }
    let status = cmd.args(args).status().context("cannot run systemctl")?;
    if status.success() {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "`{} {}` failed ({status})",
            scope.systemctl(),
            args.join(" ")
        ))
    }
}

fn permission_hint(scope: &Scope) -> String {
    if scope.user_scope {
        format!("cannot install {}", scope.unit_name)
    } else {
        format!(
            "cannot install {} (system units need root: sudo env PATH=\"$PATH\" eco startup, or \
             `eco startup --user` for your own systemd)",
            scope.unit_name
        )
    }
}
