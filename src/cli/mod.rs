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
pub mod hands;
pub mod hints;
pub mod monit;
pub mod progress;
pub mod render;
pub mod startup;
pub mod update;

use anyhow::{Context, Result};

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
            exit_on_error,
            ..
        } => up_foreground(&file, &profile, exit_on_error),
        Command::Notify { messages, fd } => notify(&messages, &fd),
        Command::Listen { fds, names, argv } => {
            let err = crate::runtime::listen::exec_with_fds(&fds, &names, &argv);
            Err(anyhow::anyhow!("cannot start `{}`: {err}", argv.join(" ")))
        }
        Command::FixtureHttp => fixture::serve_http(),
        Command::Guard { mark, cgroup } => Ok(crate::runtime::guard::run(cgroup, &mark)),
        Command::FixtureDaemonize { pid_file, retitle } => {
            fixture::daemonize(pid_file.as_deref(), retitle)
        }
        Command::Monit => monit::run(),
        Command::Serve {
            listen,
            token_file,
            read_only,
        } => crate::serve::main(&crate::serve::Options {
            listen,
            token_file,
            read_only,
        }),
        Command::Daemon => {
            crate::daemon::main(crate::paths::Paths::from_env())?;
            Ok(0)
        }
        Command::Update => update::update(),
        Command::Version => update::version(),
        Command::CheckState { path } => update::check_state(&path),
        Command::Holder { socket } => {
            crate::holder::server::run(&socket)?;
            Ok(0)
        }
        Command::Handover { fd } => {
            crate::daemon::update::resume(crate::paths::Paths::from_env(), fd)?;
            Ok(0)
        }
        Command::Startup {
            user,
            print,
            user_name,
        } => startup::startup(user, print, user_name.as_deref()),
        Command::Unstartup { user, user_name } => startup::unstartup(user, user_name.as_deref()),
        Command::Save => Ok(startup::save()),
        Command::Resurrect => startup::resurrect(),
        Command::Export { target } => export::run(target),
        Command::Import { file, env } => {
            let file = config::locate(Some(&file))?;
            print!("{}", config::import(&file, env.as_deref())?);
            Ok(0)
        }
        Command::Schema => {
            print!("{}", config::raw::schema_json());
            Ok(0)
        }
        other => managed(other),
    }
}

/// The commands that act on the daemon's apps.
fn managed(command: Command) -> Result<i32> {
    match command {
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
            silent,
            targets,
        } => daemon_cmds::reload(&file, &profile, &targets, silent.silent),
        Command::Ls { json } => daemon_cmds::ls(json),
        Command::Jlist => daemon_cmds::ls(true),
        Command::Describe { target, json } => daemon_cmds::describe(&target, json),
        Command::Start {
            target,
            name,
            instances,
            watch,
            profile,
            silent,
            args,
        } => start(
            target.as_deref(),
            &AdHoc {
                name: name.as_deref(),
                instances: instances.as_deref(),
                watch,
                args: &args,
            },
            &profile,
            silent.silent,
        ),
        Command::Stop { target, silent } => match hands::file_target(Some(&target)) {
            Some(file) => hands::stop_file(&file, silent.silent),
            None => daemon_cmds::simple(Request::Stop { target }, silent.silent),
        },
        Command::Restart {
            target,
            profile,
            silent,
        } => restart(target, &profile, silent.silent),
        Command::Delete { target, silent } => match hands::file_target(Some(&target)) {
            Some(file) => hands::delete_file(&file, silent.silent),
            None => daemon_cmds::simple(Request::Delete { target }, silent.silent),
        },
        Command::Scale {
            app,
            instances,
            silent,
        } => daemon_cmds::scale(&app, instances, silent.silent),
        Command::Logs {
            target,
            lines,
            follow,
            out,
            err,
        } => daemon_cmds::logs(target.as_deref(), lines, follow, out, err),
        Command::Flush { target } => daemon_cmds::flush(target.as_deref()),
        Command::Kill => daemon_cmds::kill(),
        // `run` answers every other command itself.
        _ => Err(anyhow::anyhow!(
            "internal error: this command has no handler; please report it with the command line"
        )),
    }
}

/// What `eco start SCRIPT` takes for an ad-hoc app.
struct AdHoc<'a> {
    name: Option<&'a str>,
    instances: Option<&'a str>,
    watch: bool,
    args: &'a [String],
}

impl AdHoc<'_> {
    /// The first option given, to name in an error.
    fn given(&self) -> Option<&'static str> {
        if self.name.is_some() {
            Some("--name")
        } else if self.instances.is_some() {
            Some("-i")
        } else if self.watch {
            Some("--watch")
        } else if !self.args.is_empty() {
            Some("-- ARGS")
        } else {
            None
        }
    }
}

/// `eco start`: an ecosystem file's apps (the file here when no TARGET),
/// an app, or an ad-hoc script.
fn start(
    target: Option<&str>,
    adhoc: &AdHoc<'_>,
    profile: &ProfileArgs,
    silent: bool,
) -> Result<i32> {
    let file = match target {
        None => Some(config::locate(None)?),
        Some(t) => hands::file_target(Some(t)),
    };
    if let Some(file) = file {
        if let Some(option) = adhoc.given() {
            return Err(UsageError(format!(
                "{option} is for a script; {} is an ecosystem file, whose apps take their settings from it\n  help: set them in the file, or run the script itself: eco start SCRIPT {option}",
                file.display()
            ))
            .into());
        }
        return hands::start_file(&file, profile, silent);
    }
    let target = target.unwrap_or_default();
    if profile.profile.is_some() {
        return Err(UsageError(format!(
            "--env picks a profile of an ecosystem file; `{target}` is not one\n  help: eco start ecosystem.config.js --env NAME"
        ))
        .into());
    }
    daemon_cmds::start(
        target,
        adhoc.name,
        adhoc.instances,
        adhoc.watch,
        adhoc.args,
        silent,
    )
}

/// `eco restart`: an ecosystem file, the one here (else every project) when
/// no TARGET, or apps.
fn restart(target: Option<String>, profile: &ProfileArgs, silent: bool) -> Result<i32> {
    match target {
        None => hands::here(hands::Again::Restart, profile, silent),
        Some(t) if hands::is_file_target(&t) => {
            let project = hands::again_file(
                std::path::Path::new(&t),
                profile,
                hands::Again::Restart,
                silent,
            )?;
            daemon_cmds::print_tables(&std::collections::BTreeSet::from([project]), silent)?;
            Ok(0)
        }
        Some(target) => {
            if profile.profile.is_some() {
                return Err(UsageError(format!(
                    "--env picks a profile of an ecosystem file; `{target}` is not one\n  help: eco restart ecosystem.config.js --env NAME"
                ))
                .into());
            }
            daemon_cmds::simple(Request::Restart { target }, silent)
        }
    }
}

fn load(file: &FileArgs, profile: &ProfileArgs) -> Result<crate::spec::ProjectSpec, ConfigErrors> {
    let path = config::locate(file.file.as_deref())?;
    let (spec, notes) = config::load_with_notes(&path, profile.profile.as_deref())?;
    warn_notes(&spec.file, &notes);
    Ok(spec)
}

/// What a PM2 file says that eco approximates or drops, on stderr.
pub(crate) fn warn_notes(file: &std::path::Path, notes: &[config::Note]) {
    for note in notes {
        let at = if note.pos.line > 0 {
            format!("{}:{}:{}", file.display(), note.pos.line, note.pos.column)
        } else {
            file.display().to_string()
        };
        let path = if note.path.is_empty() {
            String::new()
        } else {
            format!("{}: ", note.path)
        };
        eprintln!("eco: warning: {at}: {path}{}", note.text);
    }
}

fn validate(file: &FileArgs, profile: &ProfileArgs) -> Result<i32> {
    let spec = load(file, profile)?;
    println!("ok: {}: {}", spec.file.display(), render::summary(&spec));
    Ok(0)
}

fn up_foreground(file: &FileArgs, profile: &ProfileArgs, exit_on_error: bool) -> Result<i32> {
    // The engine's process: its apps get 0, 1, 2 and their sockets only.
    crate::fds::close_inherited();
    crate::fds::presize_table();
    let path = config::locate(file.file.as_deref())?;
    let home = crate::paths::Paths::from_env().home;
    let (spec, notes) = config::load_for_run(&path, profile.profile.as_deref(), &home)?;
    warn_notes(&spec.file, &notes);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(foreground::run(spec, exit_on_error))
}

/// `eco notify READY=1`: what systemd-notify does, for shell-script apps;
/// `--fd N` sends descriptor N along (`FDSTORE=1`). Like systemd-notify it
/// then waits for the receiver to have read the message (`BARRIER=1`): eco
/// trusts only a sender still alive, and inside the instance, when it
/// reads the message.
pub(crate) fn notify(messages: &[String], fds: &[i32]) -> Result<i32> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Err(UsageError(
            "NOTIFY_SOCKET is not set: run this from an app eco started with `ready: notify`, `watchdog` or `fd_store`"
                .into(),
        )
        .into());
    };
    let target = target.to_string_lossy();
    crate::runtime::notify::send_and_wait(
        &target,
        &messages.join("\n"),
        fds,
        crate::runtime::notify::BARRIER_WAIT,
    )
    .with_context(|| format!("cannot notify {target}"))?;
    Ok(0)
}
