//! `eco`'s commands: one function per subcommand, and all user-facing
//! text (`render`, `console`). `foreground` runs the reconciler in this
//! terminal (`up -F`); the other commands talk to the daemon.

pub mod adhoc;
pub mod args;
pub mod console;
pub mod daemon_cmds;
pub mod export;
pub mod fixture;
pub mod foreground;
pub mod monit;
pub mod render;

use anyhow::Result;

use crate::config::{self, ConfigErrors};
use crate::error::UsageError;
use crate::ipc::proto::Request;
use args::{Cli, Command, FileArgs, ProfileArgs};

/// Runs one command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Validate { file, profile } => validate(&file, &profile),
        Command::Diff { file, profile } => daemon_cmds::diff(&file, &profile),
        Command::Up {
            file,
            profile,
            dry_run: true,
            ..
        } => daemon_cmds::diff(&file, &profile).map(|_| 0),
        Command::Up {
            file,
            profile,
            foreground: true,
            ..
        } => up_foreground(&file, &profile),
        Command::Notify { messages } => notify(&messages),
        Command::Listen { fds, names, argv } => {
            let err = crate::runtime::listen::exec_with_fds(&fds, &names, &argv);
            Err(anyhow::anyhow!("cannot start `{}`: {err}", argv.join(" ")))
        }
        Command::FixtureHttp => fixture::serve_http(),
        Command::Guard { mark, cgroup } => Ok(crate::runtime::guard::run(cgroup, &mark)),
        Command::FixtureDaemonize { pid_file, retitle } => {
            fixture::daemonize(pid_file.as_deref(), retitle)
        }
        Command::Up {
            file,
            profile,
            wait,
            timeout,
            ..
        } => daemon_cmds::up(&file, &profile, wait, timeout.as_deref()),
        Command::Down { file, project } => daemon_cmds::down(&file, project.as_deref()),
        Command::Reload {
            file,
            profile,
            targets,
        } => daemon_cmds::reload(&file, &profile, &targets),
        Command::Ls { json } => daemon_cmds::ls(json),
        Command::Describe { target, json } => daemon_cmds::describe(&target, json),
        Command::Start {
            target,
            name,
            instances,
            watch,
            args,
        } => daemon_cmds::start(&target, name.as_deref(), instances.as_deref(), watch, &args),
        Command::Stop { target } => daemon_cmds::simple(Request::Stop { target }),
        Command::Restart { target } => daemon_cmds::simple(Request::Restart { target }),
        Command::Delete { target } => daemon_cmds::simple(Request::Delete { target }),
        Command::Scale { app, instances } => daemon_cmds::scale(&app, instances),
        Command::Logs {
            target,
            lines,
            follow,
            out,
            err,
        } => daemon_cmds::logs(target.as_deref(), lines, follow, out, err),
        Command::Flush { target } => daemon_cmds::flush(target.as_deref()),
        Command::Kill => daemon_cmds::kill(),
        Command::Monit => monit::run(),
        Command::Daemon => {
            crate::daemon::main(crate::paths::Paths::from_env())?;
            Ok(0)
        }
        Command::Export { target } => export::run(target),
        Command::Schema => {
            print!("{}", config::raw::schema_json());
            Ok(0)
        }
    }
}

fn load(file: &FileArgs, profile: &ProfileArgs) -> Result<crate::spec::ProjectSpec, ConfigErrors> {
    let path = config::locate(file.file.as_deref())?;
    config::load(&path, profile.profile.as_deref())
}

fn validate(file: &FileArgs, profile: &ProfileArgs) -> Result<i32> {
    let spec = load(file, profile)?;
    println!("ok: {}: {}", spec.file.display(), render::summary(&spec));
    Ok(0)
}

fn up_foreground(file: &FileArgs, profile: &ProfileArgs) -> Result<i32> {
    let spec = load(file, profile)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(foreground::run(spec))
}

/// `eco notify READY=1`: what systemd-notify does, for shell-script apps.
pub(crate) fn notify(messages: &[String]) -> Result<i32> {
    use std::os::linux::net::SocketAddrExt;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Err(UsageError(
            "NOTIFY_SOCKET is not set: run this from an app eco started with `ready: notify`"
                .into(),
        )
        .into());
    };
    let target = target.to_string_lossy().into_owned();
    let addr = match target.strip_prefix('@') {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?,
        None => std::os::unix::net::SocketAddr::from_pathname(&target)?,
    };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    socket.send_to_addr(messages.join("\n").as_bytes(), &addr)?;
    Ok(0)
}
