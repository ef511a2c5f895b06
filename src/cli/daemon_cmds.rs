//! Commands that talk to the daemon.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::args::{FileArgs, ProfileArgs};
use super::render;
use crate::config;
use crate::error::UsageError;
use crate::ipc::client::{Client, ClientError};
use crate::ipc::proto::{Request, Response};
use crate::paths::Paths;

/// A daemon-side failure, printed with its hint: exit 1.
#[derive(Debug, thiserror::Error)]
#[error("{message}{}", hint.as_ref().map(|h| format!("\n  help: {h}")).unwrap_or_default())]
pub struct DaemonError {
    pub message: String,
    pub hint: Option<String>,
}

/// A target the daemon does not know: invalid input, exit 2.
fn target_error(message: String, hint: Option<String>) -> anyhow::Error {
    let text = match hint {
        Some(h) => format!("{message}\n  help: {h}"),
        None => message,
    };
    UsageError(text).into()
}

fn connect(start: bool) -> Result<Client> {
    Ok(Client::connect(&Paths::from_env(), start)?)
}

/// Sends one request and returns the answer; errors become exit codes.
/// A connection dropped before any answer (a daemon that was dying as we
/// connected) is retried once, against a fresh daemon.
fn call(request: Request) -> Result<Response> {
    let mut client = connect(true)?;
    let answer = match client.call(request.clone()) {
        Err(ClientError::Io(err, _))
            if matches!(
                err.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            std::thread::sleep(Duration::from_millis(50));
            connect(true)?.call(request)?
        }
        other => other?,
    };
    match answer {
        Response::Error { message, hint } => Err(DaemonError { message, hint }.into()),
        other => Ok(other),
    }
}

/// Like `call`, but an error about the target is invalid input (exit 2).
fn call_target(request: Request) -> Result<Response> {
    match call(request) {
        Err(err) => match err.downcast::<DaemonError>() {
            Ok(DaemonError { message, hint })
                if message.starts_with("no app named")
                    || message.contains("exists in")
                    || message.contains("has no instance")
                    || message.contains("is not an instance number") =>
            {
                Err(target_error(message, hint))
            }
            Ok(other) => Err(other.into()),
            Err(err) => Err(err),
        },
        ok => ok,
    }
}

fn print_message(response: &Response) {
    if let Response::Ok { message } = response {
        println!("{message}");
    }
}

fn load(file: &FileArgs, profile: &ProfileArgs) -> Result<crate::spec::ProjectSpec> {
    let path = config::locate(file.file.as_deref())?;
    Ok(config::load(&path, profile.profile.as_deref())?)
}

/// `eco up` (detached), and `eco reload` without targets.
pub fn up(
    file: &FileArgs,
    profile: &ProfileArgs,
    wait: bool,
    timeout: Option<&str>,
) -> Result<i32> {
    let spec = load(file, profile)?;
    let limit = match timeout {
        Some(text) => config::units::parse_duration(text).ok_or_else(|| {
            UsageError(format!("--timeout {text}: expected a duration such as 30s"))
        })?,
        None => Duration::from_secs(60),
    };
    let project = spec.name.clone();
    let response = call(Request::Apply {
        spec: Box::new(spec),
        dry_run: false,
    })?;
    if let Response::Plan { lines, .. } = &response {
        for line in lines {
            println!("{line}");
        }
    }
    if !wait {
        return Ok(0);
    }
    match call(Request::Wait {
        project,
        timeout_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
    })? {
        Response::WaitFailed { reason, log_tail } => {
            eprintln!("error: {reason}");
            if !log_tail.is_empty() {
                eprintln!("last log lines:");
                for line in log_tail {
                    eprintln!("  {line}");
                }
            }
            Ok(1)
        }
        _ => {
            println!("every instance is online");
            Ok(0)
        }
    }
}

pub fn down(file: &FileArgs, project: Option<&str>) -> Result<i32> {
    let project = match project {
        Some(p) => p.to_owned(),
        None => load(file, &ProfileArgs { profile: None })?.name,
    };
    print_message(&call(Request::Down { project })?);
    Ok(0)
}

pub fn reload(file: &FileArgs, profile: &ProfileArgs, targets: &[String]) -> Result<i32> {
    if targets.is_empty() {
        return up(file, profile, false, None);
    }
    for target in targets {
        print_message(&call_target(Request::Reload {
            target: target.clone(),
        })?);
    }
    Ok(0)
}

/// The plan against the live state (or against nothing when no daemon runs).
pub fn diff(file: &FileArgs, profile: &ProfileArgs) -> Result<i32> {
    let spec = load(file, profile)?;
    let (lines, changes) = match Client::connect(&Paths::from_env(), false) {
        Ok(mut client) => match client.call(Request::Apply {
            spec: Box::new(spec),
            dry_run: true,
        })? {
            Response::Plan { lines, changes } => (lines, changes),
            Response::Error { message, hint } => return Err(DaemonError { message, hint }.into()),
            _ => bail!("unexpected answer from the daemon"),
        },
        Err(ClientError::NotRunning { .. }) => {
            let actions = crate::plan::plan(&spec, &crate::state::Observed::new());
            (
                render::plan_lines(&actions),
                !crate::plan::is_empty(&actions),
            )
        }
        Err(err) => return Err(err.into()),
    };
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}")?;
    }
    Ok(i32::from(changes))
}

pub fn ls(json: bool) -> Result<i32> {
    let Response::List { rows, problems } = call(Request::List)? else {
        bail!("unexpected answer from the daemon");
    };
    if json {
        println!("{}", serde_json::to_string(&rows)?);
        for (project, error) in problems {
            eprintln!("project {project}: the last save was not applied:\n{error}");
        }
    } else {
        print!("{}", render::table(&rows, render::use_color()));
        for (project, error) in problems {
            println!(
                "\nproject {project}: the last save was not applied (the apps run as before):"
            );
            for line in error.lines() {
                println!("  {line}");
            }
        }
    }
    Ok(0)
}

pub fn describe(target: &str, json: bool) -> Result<i32> {
    let Response::Describe { details } = call_target(Request::Describe {
        target: target.to_owned(),
    })?
    else {
        bail!("unexpected answer from the daemon");
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&details)?);
    } else {
        print!("{}", render::describe(&details));
    }
    Ok(0)
}

pub fn simple(request: Request) -> Result<i32> {
    print_message(&call_target(request)?);
    Ok(0)
}

/// `eco start TARGET`, or an ad-hoc script when TARGET is a file and no app.
pub fn start(
    target: &str,
    name: Option<&str>,
    instances: Option<&str>,
    watch: bool,
    args: &[String],
) -> Result<i32> {
    let is_script = Path::new(target).is_file();
    if !is_script {
        return simple(Request::Start {
            target: target.to_owned(),
        });
    }
    // An app of that name wins over a file of that name.
    if name.is_none()
        && instances.is_none()
        && !watch
        && args.is_empty()
        && let Ok(Response::Ok { message }) = call(Request::Start {
            target: target.to_owned(),
        })
    {
        println!("{message}");
        return Ok(0);
    }
    let app = super::adhoc::app(target, name, instances, watch, args)?;
    let response = call(Request::AddApp { app: Box::new(app) })?;
    if let Response::Plan { lines, .. } = response {
        for line in lines {
            println!("{line}");
        }
    }
    Ok(0)
}

pub fn scale(app: &str, instances: u32) -> Result<i32> {
    let max = crate::config::validate::MAX_INSTANCES;
    if instances > max {
        return Err(UsageError(format!(
            "{instances} instances is more than eco runs per app ({max})"
        ))
        .into());
    }
    simple(Request::Scale {
        target: app.to_owned(),
        instances,
    })
}

pub fn logs(target: Option<&str>, lines: usize, follow: bool, out: bool, err: bool) -> Result<i32> {
    let (want_out, want_err) = if out || err { (out, err) } else { (true, true) };
    let Response::LogFiles { files } = call_target(Request::LogFiles {
        target: target.map(str::to_owned),
    })?
    else {
        bail!("unexpected answer from the daemon");
    };
    let files: Vec<_> = files
        .into_iter()
        .filter(|f| (f.stream == "out" && want_out) || (f.stream == "err" && want_err))
        .collect();
    let mut stdout = std::io::stdout().lock();
    let headers = files.len() > 1 && lines > 0;
    for file in files.iter().filter(|_| lines > 0) {
        let tail = crate::logs::tail(&file.path, lines);
        if headers {
            writeln!(stdout, "==> {} <==", file.path.display())?;
        }
        for line in tail {
            writeln!(stdout, "{line}")?;
        }
    }
    stdout.flush()?;
    drop(stdout);
    if !follow {
        return Ok(0);
    }
    let mut client = connect(true)?;
    client.send(Request::Follow {
        target: target.map(str::to_owned),
        out: want_out,
        err: want_err,
    })?;
    while let Some(response) = client.receive()? {
        match response {
            Response::Line { text } => {
                let mut stdout = std::io::stdout().lock();
                if writeln!(stdout, "{text}")
                    .and_then(|()| stdout.flush())
                    .is_err()
                {
                    return Ok(0);
                }
            }
            Response::Error { message, hint } => return Err(DaemonError { message, hint }.into()),
            _ => {}
        }
    }
    Ok(0)
}

/// Stops everything and the daemon; waits until the daemon is gone.
pub fn kill() -> Result<i32> {
    let paths = Paths::from_env();
    let mut client = match Client::connect(&paths, false) {
        Ok(client) => client,
        Err(ClientError::NotRunning { .. }) => {
            // A daemon that died may have left its apps running.
            let left = crate::daemon::leftovers::stop(&paths.token());
            if left > 0 {
                println!("no eco daemon runs; stopped {left} processes a dead one left behind");
            } else {
                println!("no eco daemon runs");
            }
            return Ok(0);
        }
        Err(err) => return Err(err.into()),
    };
    let pid = std::fs::read_to_string(paths.pid())
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok());
    let response = client.call(Request::Kill)?;
    print_message(&response);
    let deadline = Instant::now() + Duration::from_secs(120);
    if let Some(pid) = pid {
        let pid = nix::unistd::Pid::from_raw(pid);
        while nix::sys::signal::kill(pid, None).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    println!("daemon stopped");
    Ok(0)
}
