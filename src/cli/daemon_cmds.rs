//! Commands that talk to the daemon.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::args::{FileArgs, ProfileArgs};
use super::progress::Meter;
use super::render;
use crate::config;
use crate::error::{DaemonError, UsageError};
use crate::ipc::client::{Client, ClientError};
use crate::ipc::proto::{LogStream, Request, Response};
use crate::paths::Paths;
use crate::view::Problem;

fn connect(start: bool) -> Result<Client> {
    Ok(Client::connect(&Paths::from_env(), start)?)
}

/// Sends one request and returns the answer; an error answer becomes an
/// error whose kind gives the exit code. A connection dropped before any
/// answer (a daemon that was dying as we connected) is retried once,
/// against a fresh daemon. The long requests show their progress on
/// stderr meanwhile (see `progress`).
pub(super) fn call(request: Request) -> Result<Response> {
    let long = matches!(
        request,
        Request::Wait { .. }
            | Request::Reload { .. }
            | Request::Restart { .. }
            | Request::Scale { .. }
    );
    let mut client = connect(true)?;
    let mut meter = long.then(|| Meter::attach(&mut client));
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
            client = connect(true)?;
            meter = long.then(|| Meter::attach(&mut client));
            client.call(request.clone())?
        }
        other => other?,
    };
    drop(meter);
    warn(&request, client.take_warnings());
    match answer {
        Response::Error(reply) => Err(DaemonError(reply).into()),
        other => Ok(other),
    }
}

/// Prints the daemon's warnings (a state not saved, a state not restored).
fn warn(request: &Request, warnings: Vec<crate::ipc::proto::Warning>) {
    for warning in warnings {
        eprintln!("warning: {}", render::warning(request, &warning));
    }
}

fn unexpected(response: &Response) -> anyhow::Error {
    anyhow::anyhow!("unexpected answer from the daemon: {response:?}")
}

/// Prints what a command did (nothing when `silent`); returns the projects
/// it touched.
pub(super) fn print_done(response: &Response, silent: bool) -> Result<BTreeSet<String>> {
    match response {
        Response::Done { command, targets } => {
            if !silent {
                println!("{}", render::done(*command, targets));
            }
            Ok(targets.iter().map(|t| t.project.clone()).collect())
        }
        Response::Down { project } => {
            if !silent {
                println!("project {project} is down");
            }
            Ok(BTreeSet::new())
        }
        other => Err(unexpected(other)),
    }
}

/// After an action, the table of the projects it touched, as PM2 prints
/// its list after `pm2 start` (`-s`: not). A restart answers once its
/// instances are told to stop: the table waits (a little, bounded) for
/// them to be past `stopping`, so it shows the new pids.
pub(super) fn print_tables(projects: &BTreeSet<String>, silent: bool) -> Result<()> {
    if silent || projects.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + SETTLE;
    let rows = loop {
        let response = call(Request::List)?;
        let Response::List { rows, .. } = response else {
            return Err(unexpected(&response));
        };
        let rows: Vec<_> = rows
            .into_iter()
            .filter(|r| projects.contains(&r.project))
            .collect();
        let settled = rows
            .iter()
            .all(|r| r.status != crate::state::Status::Stopping);
        if settled || Instant::now() >= deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if !rows.is_empty() {
        print!("{}", render::table(&rows, render::use_color()));
    }
    Ok(())
}

/// How long the table after an action waits for stopping instances.
const SETTLE: Duration = Duration::from_secs(2);

/// The projects that have an instance in the daemon.
pub(super) fn applied_projects() -> Result<BTreeSet<String>> {
    let response = call(Request::List)?;
    let Response::List { rows, .. } = response else {
        return Err(unexpected(&response));
    };
    Ok(rows.into_iter().map(|r| r.project).collect())
}

pub(super) fn load(file: &FileArgs, profile: &ProfileArgs) -> Result<crate::spec::ProjectSpec> {
    let path = config::locate(file.file.as_deref())?;
    Ok(config::load(&path, profile.profile.as_deref())?)
}

/// The file as `up`, `reload` and `diff` apply it. The profile sticks:
/// without `--env`, a live project keeps the profile it was applied with
/// (asked of the daemon, if one runs); `--env ""` means no profile. A
/// switch is printed.
fn load_for_run(file: &FileArgs, profile: &ProfileArgs) -> Result<crate::spec::ProjectSpec> {
    let path = config::locate(file.file.as_deref())?;
    let home = Paths::from_env().home;
    let given = profile.profile.as_deref();
    let (mut spec, mut notes) =
        config::load_for_run(&path, given.filter(|p| !p.is_empty()), &home)?;
    let saved = saved_profile(&spec.name);
    match (given, saved) {
        (None, Some(Some(saved))) => {
            eprintln!(
                "eco: project {} keeps profile `{saved}` (--env NAME switches, --env \"\" drops it)",
                spec.name
            );
            (spec, notes) = config::load_for_run(&path, Some(&saved), &home)?;
        }
        (Some(given), Some(saved)) if saved.as_deref().unwrap_or("") != given => {
            let name = |p: Option<&str>| p.map_or("(none)".to_owned(), |p| format!("`{p}`"));
            eprintln!(
                "eco: project {}: profile {} -> {}",
                spec.name,
                name(saved.as_deref()),
                name(Some(given).filter(|g| !g.is_empty()))
            );
        }
        _ => {}
    }
    super::warn_notes(&spec.file, &notes);
    Ok(spec)
}

/// The profile a live project was applied with: `None` when no daemon
/// runs or it does not know the project; `Some(None)` for no profile.
fn saved_profile(project: &str) -> Option<Option<String>> {
    let mut client = Client::connect(&Paths::from_env(), false).ok()?;
    let answer = client
        .call(Request::Describe {
            // `project/` names the whole project, even when an app of
            // another project has the same name.
            target: format!("{project}/"),
        })
        .ok()?;
    let Response::Describe { apps } = answer else {
        return None;
    };
    apps.into_iter()
        .find(|a| a.project == project)
        .map(|a| a.profile)
}

/// Applies the file (as `up`); returns the project and the plan carried
/// out, printed unless `silent`.
pub(super) fn apply(
    file: &FileArgs,
    profile: &ProfileArgs,
    silent: bool,
) -> Result<(String, Vec<crate::plan::Action>)> {
    let spec = load_for_run(file, profile)?;
    let project = spec.name.clone();
    let response = call(Request::Apply {
        spec: Box::new(spec),
        dry_run: false,
    })?;
    let Response::Plan { actions, .. } = response else {
        return Err(unexpected(&response));
    };
    if !silent {
        for line in render::plan_lines(&actions) {
            println!("{line}");
        }
    }
    Ok((project, actions))
}

/// `eco up` (detached), and `eco reload` without targets.
pub fn up(
    file: &FileArgs,
    profile: &ProfileArgs,
    wait: bool,
    timeout: Option<&str>,
) -> Result<i32> {
    let limit = match timeout {
        Some(text) => config::units::parse_duration(text).ok_or_else(|| {
            UsageError(format!("--timeout {text}: expected a duration such as 30s"))
        })?,
        None => Duration::from_secs(60),
    };
    let (project, _) = apply(file, profile, false)?;
    if !wait {
        return Ok(0);
    }
    match call(Request::Wait {
        project,
        timeout_ms: u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
    })? {
        Response::WaitFailed { failure, log_tail } => {
            eprintln!("error: {}", render::wait_failure(&failure));
            if !log_tail.is_empty() {
                eprintln!("last log lines:");
                for line in log_tail {
                    eprintln!("  {line}");
                }
            }
            Ok(1)
        }
        Response::AllOnline => {
            println!("every instance is online");
            Ok(0)
        }
        other => Err(unexpected(&other)),
    }
}

pub fn down(file: &FileArgs, project: Option<&str>) -> Result<i32> {
    let project = match project {
        Some(p) => p.to_owned(),
        None => load(file, &ProfileArgs { profile: None })?.name,
    };
    print_done(&call(Request::Down { project })?, false)?;
    Ok(0)
}

/// `eco reload`: the file converges (with no file here and no -f, every
/// applied project reloads); with targets, each reloads, an ecosystem file
/// as PM2 reloads one.
pub fn reload(
    file: &FileArgs,
    profile: &ProfileArgs,
    targets: &[String],
    silent: bool,
) -> Result<i32> {
    if targets.is_empty() {
        if file.file.is_none() && config::locate(None).is_err() {
            return super::hands::every_project(super::hands::Again::Reload, silent);
        }
        let (project, _) = apply(file, profile, silent)?;
        print_tables(&BTreeSet::from([project]), silent)?;
        return Ok(0);
    }
    let mut touched = BTreeSet::new();
    for target in targets {
        if super::hands::is_file_target(target) {
            touched.insert(super::hands::again_file(
                Path::new(target),
                profile,
                super::hands::Again::Reload,
                silent,
            )?);
            continue;
        }
        touched.extend(print_done(
            &call(Request::Reload {
                target: target.clone(),
            })?,
            silent,
        )?);
    }
    print_tables(&touched, silent)?;
    Ok(0)
}

/// The plan against the live state (or against nothing when no daemon runs).
pub fn diff(file: &FileArgs, profile: &ProfileArgs) -> Result<i32> {
    let spec = load_for_run(file, profile)?;
    let actions = match Client::connect(&Paths::from_env(), false) {
        Ok(mut client) => match client.call(Request::Apply {
            spec: Box::new(spec),
            dry_run: true,
        })? {
            Response::Plan { actions, .. } => actions,
            Response::Error(reply) => return Err(DaemonError(reply).into()),
            other => return Err(unexpected(&other)),
        },
        Err(ClientError::NotRunning { .. }) => {
            crate::plan::plan(&spec, &crate::state::Observed::new())
        }
        Err(err) => return Err(err.into()),
    };
    let mut out = std::io::stdout().lock();
    for line in render::plan_lines(&actions) {
        writeln!(out, "{line}")?;
    }
    Ok(i32::from(!crate::plan::is_empty(&actions)))
}

pub fn ls(json: bool) -> Result<i32> {
    let response = call(Request::List)?;
    let Response::List {
        rows,
        problems,
        daemon_version,
    } = response
    else {
        return Err(unexpected(&response));
    };
    if json {
        println!("{}", serde_json::to_string(&rows)?);
        for Problem { project, error } in problems {
            eprintln!("project {project}: the last save was not applied:\n{error}");
        }
    } else {
        print!("{}", render::table(&rows, render::use_color()));
        if let Some(version) = daemon_version {
            println!("daemon: eco {version}");
        }
        for Problem { project, error } in problems {
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
    let response = call(Request::Describe {
        target: target.to_owned(),
    })?;
    let Response::Describe { apps } = response else {
        return Err(unexpected(&response));
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&apps)?);
    } else {
        print!("{}", render::describe(&apps));
    }
    Ok(0)
}

/// stop, restart, delete, scale: one request, what was done printed, then
/// the table of the projects it touched.
pub fn simple(request: Request, silent: bool) -> Result<i32> {
    let touched = print_done(&call(request)?, silent)?;
    print_tables(&touched, silent)?;
    Ok(0)
}

/// `eco start TARGET`, or an ad-hoc script when TARGET is a file and no app.
pub fn start(
    target: &str,
    name: Option<&str>,
    instances: Option<&str>,
    watch: bool,
    args: &[String],
    silent: bool,
) -> Result<i32> {
    let is_script = Path::new(target).is_file();
    if !is_script {
        return simple(
            Request::Start {
                target: target.to_owned(),
            },
            silent,
        );
    }
    // An app of that name wins over a file of that name.
    if name.is_none()
        && instances.is_none()
        && !watch
        && args.is_empty()
        && let Ok(response @ Response::Done { .. }) = call(Request::Start {
            target: target.to_owned(),
        })
    {
        let touched = print_done(&response, silent)?;
        print_tables(&touched, silent)?;
        return Ok(0);
    }
    let app = super::adhoc::app(target, name, instances, watch, args)?;
    let response = call(Request::AddApp { app: Box::new(app) })?;
    let Response::Plan { project, actions } = &response else {
        return Err(unexpected(&response));
    };
    if !silent {
        for line in render::plan_lines(actions) {
            println!("{line}");
        }
    }
    print_tables(&BTreeSet::from([project.clone()]), silent)?;
    Ok(0)
}

pub fn scale(app: &str, instances: u32, silent: bool) -> Result<i32> {
    let max = crate::config::validate::MAX_INSTANCES;
    if instances > max {
        return Err(UsageError(format!(
            "{instances} instances is more than eco runs per app ({max})"
        ))
        .into());
    }
    simple(
        Request::Scale {
            target: app.to_owned(),
            instances,
        },
        silent,
    )
}

/// `eco logs`: the tail of each log file, then with `-f` new lines, each
/// labelled `APP out | ` or `APP err | ` when more than one file is
/// followed (one app's one stream needs no label). Nothing running is said
/// on stderr, and is no error (exit 0), as `ls` and `flush` treat it.
pub fn logs(target: Option<&str>, lines: usize, follow: bool, out: bool, err: bool) -> Result<i32> {
    let (want_out, want_err) = if out || err { (out, err) } else { (true, true) };
    let response = call(Request::LogFiles {
        target: target.map(str::to_owned),
    })?;
    let Response::LogFiles { files } = response else {
        return Err(unexpected(&response));
    };
    if files.is_empty() {
        eprintln!("{}", render::no_logs());
        return Ok(0);
    }
    let files: Vec<_> = files
        .into_iter()
        .filter(|f| match f.stream {
            LogStream::Out => want_out,
            LogStream::Err => want_err,
        })
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
    let labelled = files.len() > 1;
    let mut client = connect(true)?;
    client.send(Request::Follow {
        target: target.map(str::to_owned),
        out: want_out,
        err: want_err,
    })?;
    while let Some(response) = client.receive()? {
        let text = match response {
            Response::Line { text, app, stream } if labelled => {
                render::followed(&text, app.as_deref(), stream)
            }
            Response::Line { text, .. } => text,
            Response::Skipped { count } => render::skipped(count),
            Response::Error(reply) => return Err(DaemonError(reply).into()),
            _ => continue,
        };
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, "{text}")
            .and_then(|()| stdout.flush())
            .is_err()
        {
            return Ok(0);
        }
    }
    Ok(0)
}

/// `eco flush [TARGET]`: empties the captured logs.
pub fn flush(target: Option<&str>) -> Result<i32> {
    let response = call(Request::Flush {
        target: target.map(str::to_owned),
    })?;
    let Response::Flushed { files } = response else {
        return Err(unexpected(&response));
    };
    println!("{}", render::flushed(&files));
    Ok(0)
}

/// Stops everything and the daemon; returns once every app has stopped and
/// the daemon is gone. The daemon keeps the connection (with heartbeats)
/// until its apps have stopped, so a slow stop is never taken for a stuck
/// daemon, and kills in parallel all see the same end.
pub fn kill() -> Result<i32> {
    let paths = Paths::from_env();
    let mut client = match Client::connect(&paths, false) {
        Ok(client) => client,
        Err(ClientError::NotRunning { .. }) => {
            // A daemon whose home was removed may still run (stopping), and
            // a daemon that died may have left its apps running.
            for other in crate::runtime::leftovers::other_daemons(&paths.home) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(other),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            crate::runtime::leftovers::wait_for_others(&paths.home, Duration::from_secs(120));
            // A crashed daemon's descriptor holder lets go first.
            crate::daemon::keeper::quit_holder(&paths);
            let mut left = crate::runtime::leftovers::stop(&paths.token(), &[]);
            if let Some(subtree) =
                crate::runtime::cgroup::Subtree::existing(&format!("eco-{}", paths.token()))
            {
                left += subtree.clear();
                subtree.remove();
            }
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
    let meter = Meter::attach(&mut client);
    let sent = client.send(Request::Kill);
    let answer = match client.receive() {
        Ok(Some(answer)) => answer,
        Ok(None) => {
            sent?;
            // The daemon closed at once: it was past its last request.
            wait_gone(pid);
            println!("daemon stopped");
            return Ok(0);
        }
        Err(err) => {
            sent?;
            return Err(err.into());
        }
    };
    warn(&Request::Kill, client.take_warnings());
    match answer {
        Response::Stopping => println!("stopping every app, then the daemon"),
        Response::Error(reply) => return Err(DaemonError(reply).into()),
        other => return Err(unexpected(&other)),
    }
    // Until every app has stopped: heartbeats, then the end of the stream.
    while client.receive()?.is_some() {}
    drop(meter);
    wait_gone(pid);
    println!("daemon stopped");
    Ok(0)
}

/// Waits (bounded) for the daemon process to have exited after its apps
/// stopped. Not for it to be reaped: that is its parent's business, and an
/// init that reaps once a second (a container's) made every `eco kill`
/// take up to a second longer.
fn wait_gone(pid: Option<i32>) {
    let Some(pid) = pid else { return };
    let deadline = Instant::now() + Duration::from_secs(10);
    while crate::procfs::alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}
