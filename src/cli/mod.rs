//! `eco`'s commands: one function per subcommand.

pub mod args;
pub mod render;

use std::io::Write;

use anyhow::Result;

use crate::config::{self, ConfigErrors};
use crate::error::UsageError;
use crate::plan;
use crate::state::Observed;
use args::{Cli, Command, FileArgs, ProfileArgs};

/// Runs one command; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Validate { file, profile } => validate(&file, &profile),
        Command::Diff { file, profile } => diff(&file, &profile),
        Command::Up {
            file,
            profile,
            dry_run: true,
            ..
        } => diff(&file, &profile).map(|_| 0),
        Command::Up {
            file,
            profile,
            foreground: true,
            ..
        } => up_foreground(&file, &profile),
        Command::Notify { messages } => notify(&messages),
        Command::Schema => {
            print!("{}", config::raw::schema_json());
            Ok(0)
        }
        other => Err(UsageError(format!("`{other:?}` is not available yet")).into()),
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

/// The plan against what runs now. Exit 0 when empty, 1 otherwise.
fn diff(file: &FileArgs, profile: &ProfileArgs) -> Result<i32> {
    let spec = load(file, profile)?;
    let observed = Observed::new();
    let actions = plan::plan(&spec, &observed);
    let mut out = std::io::stdout().lock();
    for line in render::plan_lines(&actions) {
        writeln!(out, "{line}")?;
    }
    Ok(i32::from(!plan::is_empty(&actions)))
}

fn up_foreground(file: &FileArgs, profile: &ProfileArgs) -> Result<i32> {
    let path = config::locate(file.file.as_deref())?;
    let spec = config::load(&path, profile.profile.as_deref())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(crate::foreground::run(path, profile.profile.clone(), spec))
}

/// `eco notify READY=1`: what systemd-notify does, for shell-script apps.
fn notify(messages: &[String]) -> Result<i32> {
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
