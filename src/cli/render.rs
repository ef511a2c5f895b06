//! All user-facing text formatting for plans, tables and summaries.

use std::fmt::Write;
use std::io::IsTerminal;

use crate::ipc::proto::{Command, LogStream};
use crate::plan::Action;
use crate::reconcile::Report;
use crate::spec::{ProjectSpec, Watch};
use crate::state::Status;
use crate::target::Selected;
use crate::view::{AppView, InstanceView, Row, WaitCause, WaitFailure};

/// Colour on a terminal, unless NO_COLOR is set.
pub fn use_color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// `1h 2m`, `3m 4s`, `5s` – the two largest units.
pub fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// `12.3 MB` style (binary units, as sizes in the file).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn status_color(status: Status) -> &'static str {
    match status {
        Status::Online => "32",
        Status::Starting | Status::Stopping | Status::Backoff => "33",
        Status::Errored => "31",
        Status::Stopped => "90",
    }
}

/// The `eco ls` table.
pub fn table(rows: &[Row], color: bool) -> String {
    if rows.is_empty() {
        return "no apps run: `eco up` starts the apps of ./ecosystem.yaml\n".into();
    }
    let headers = [
        "project",
        "app",
        "id",
        "pid",
        "status",
        "restarts",
        "uptime",
        "cpu",
        "memory",
        "watching",
        "last restart",
    ];
    let dash = || "-".to_owned();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.project.clone(),
                r.app.clone(),
                // The instance's id, as PM2's `id` column: a TARGET.
                r.id.to_string(),
                r.pid.map_or_else(dash, |p| p.to_string()),
                if r.reloading {
                    "reloading".to_owned()
                } else {
                    r.status.as_str().to_owned()
                },
                r.restarts.to_string(),
                r.uptime_ms.map_or_else(dash, uptime),
                r.cpu_percent.map_or_else(dash, |c| format!("{c:.1}%")),
                r.memory_bytes.map_or_else(dash, bytes),
                if r.watching { "yes".to_owned() } else { dash() },
                r.last_restart_reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            cells
                .iter()
                .map(|c| c[i].len())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |out: &mut String, values: &[String], status: Option<Status>| {
        for (i, v) in values.iter().enumerate() {
            let pad = widths[i] - v.len();
            match status {
                Some(status) if i == 4 && color => {
                    let _ = write!(
                        out,
                        "\x1b[{}m{v}\x1b[0m{}",
                        status_color(status),
                        " ".repeat(pad)
                    );
                }
                _ => {
                    let _ = write!(out, "{v}{}", " ".repeat(pad));
                }
            }
            out.push_str(if i + 1 < values.len() { "  " } else { "" });
        }
        let trimmed = out.trim_end_matches(' ').len();
        out.truncate(trimmed);
        out.push('\n');
    };
    let header: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    if color {
        out.push_str("\x1b[1m");
        line(&mut out, &header, None);
        out.insert_str(out.len() - 1, "\x1b[0m");
    } else {
        line(&mut out, &header, None);
    }
    for (c, r) in cells.iter().zip(rows) {
        line(&mut out, c, Some(r.status));
    }
    for r in rows.iter().filter(|r| r.daemonized) {
        let _ = writeln!(out, "warning: {}:{} {DAEMONIZED}", r.app, r.instance);
    }
    for r in rows {
        if let Some(text) = &r.status_text {
            let _ = writeln!(out, "status: {}:{} {text}", r.app, r.instance);
        }
        if let Some(error) = &r.last_error {
            let _ = writeln!(out, "error: {}:{} {error}", r.app, r.instance);
        }
    }
    out
}

/// Said of an instance whose launcher left a daemon eco had to guess.
const DAEMONIZED: &str = "daemonized itself; set pid_file or run it in the foreground";

fn reason_text(reason: &str, detail: Option<&str>) -> String {
    match detail {
        Some(d) => format!("{reason} ({d})"),
        None => reason.to_owned(),
    }
}

/// `eco describe` as text.
pub fn describe(apps: &[AppView]) -> String {
    let mut out = String::new();
    for app in apps {
        describe_app(&mut out, app);
        describe_settings(&mut out, &app.spec.settings, app.user_stopped);
        for inst in &app.instances {
            describe_instance(&mut out, inst);
        }
    }
    out
}

/// Where an app comes from and where its output goes.
fn describe_app(out: &mut String, app: &AppView) {
    let _ = writeln!(out, "{}/{}", app.project, app.app);
    let _ = writeln!(out, "  file:      {}", app.file.display());
    if let Some(p) = &app.profile {
        let _ = writeln!(out, "  profile:   {p}");
    }
    let _ = writeln!(out, "  cmd:       {}", app.argv.join(" "));
    let _ = writeln!(out, "  cwd:       {}", app.cwd.display());
    let _ = writeln!(out, "  contained: {}", app.containment);
    match app.sockets.as_deref() {
        Some("per-instance") => {
            let _ = writeln!(out, "  sockets:   one per instance (SO_REUSEPORT)");
        }
        Some(other) => {
            let _ = writeln!(out, "  sockets:   {other} (one for all instances)");
        }
        None => {}
    }
    let _ = writeln!(out, "  out log:   {}", app.out_log.display());
    let _ = writeln!(out, "  err log:   {}", app.err_log.display());
    for err in &app.log_errors {
        let _ = writeln!(out, "  LOG ERROR: {err}");
    }
    if let Some(err) = &app.config_error {
        let _ = writeln!(out, "  the last save of the file was not applied:");
        for line in err.lines() {
            let _ = writeln!(out, "    {line}");
        }
    }
    if app.user_stopped {
        let _ = writeln!(out, "  stopped by the user (eco start to start it)");
    }
}

/// How an app is restarted, watched and ordered.
fn describe_settings(out: &mut String, settings: &crate::spec::Settings, user_stopped: bool) {
    let _ = writeln!(
        out,
        "  restart:   {} (max {} in a row, delay {} ms up to {} ms)",
        settings.restart.as_str(),
        settings.max_restarts,
        settings.restart_delay.as_millis(),
        settings.max_restart_delay.as_millis()
    );
    let _ = writeln!(out, "  watch:     {}", watch(settings, user_stopped));
    let _ = writeln!(
        out,
        "  max mem:   {}",
        settings.max_memory.map_or_else(
            || "none".to_owned(),
            |m| format!("{} (restarted above it)", bytes(m))
        )
    );
    let _ = writeln!(
        out,
        "  depends:   {}",
        if settings.depends_on.is_empty() {
            "nothing".to_owned()
        } else {
            settings.depends_on.join(", ")
        }
    );
}

/// One instance: its state, why it last restarted, and its env.
fn describe_instance(out: &mut String, inst: &InstanceView) {
    let _ = writeln!(
        out,
        "  instance {} (id {}): {} pid {} restarts {}{}{}",
        inst.instance,
        inst.id,
        inst.status.as_str(),
        inst.pid.map_or("-".into(), |p| p.to_string()),
        inst.restarts,
        inst.last_exit
            .map(|e| format!(", last {e}"))
            .unwrap_or_default(),
        inst.last_restart_reason
            .as_deref()
            .map(|r| format!(
                ", last restart: {}",
                reason_text(r, inst.last_restart_detail.as_deref())
            ))
            .unwrap_or_default(),
    );
    if inst.daemonized {
        let _ = writeln!(out, "    warning: the app {DAEMONIZED}");
    }
    if let Some(text) = &inst.status_text {
        let _ = writeln!(out, "    status: {text}");
    }
    if let Some(error) = &inst.last_error {
        let _ = writeln!(out, "    last start failed: {error}");
    }
    if inst.notify_rejected > 0 {
        let _ = writeln!(
            out,
            "    notify: {} messages refused (from outside the instance, or invalid; see daemon.log)",
            inst.notify_rejected
        );
    }
    for h in &inst.history {
        let at = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(h.at_ms),
        );
        let _ = writeln!(
            out,
            "    {at} restart: {}{}",
            reason_text(&h.reason, h.detail.as_deref()),
            h.exit.map(|e| format!(" after {e}")).unwrap_or_default()
        );
    }
    let _ = writeln!(out, "    env:");
    for (k, v) in &inst.env {
        let _ = writeln!(out, "      {k}={v}");
    }
}

/// What `describe` says of `watch`: what is watched, what is ignored.
fn watch(settings: &crate::spec::Settings, user_stopped: bool) -> String {
    let what = match &settings.watch {
        Watch::Off => return "off".to_owned(),
        Watch::All => "the whole folder".to_owned(),
        Watch::Globs(globs) => globs.join(", "),
    };
    let ignoring = if settings.watch_ignore.is_empty() {
        String::new()
    } else {
        format!(", ignoring {}", settings.watch_ignore.join(", "))
    };
    let paused = if user_stopped {
        " (paused while stopped)"
    } else {
        ""
    };
    format!(
        "{what}{ignoring}, restart {} ms after a change{paused}",
        settings.watch_delay.as_millis()
    )
}

/// `web` for one instance, `web:2` for one of many, `web:0..3` for a range.
pub fn instances(app: &str, from: u32, to: u32) -> String {
    match to.saturating_sub(from) {
        0 => app.to_owned(),
        1 if from == 0 => app.to_owned(),
        1 => format!("{app}:{from}"),
        _ => format!("{app}:{from}..{}", to - 1),
    }
}

/// One line per action, as `eco diff` and `eco up` print them.
/// `up -F --exit-on-error` giving up.
pub fn exit_on_error() -> String {
    "eco: an app is errored and --exit-on-error is set: stopping every app, then exiting 1".into()
}

pub fn plan_lines(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .map(|action| match action {
            Action::Start { app, instances: n } => format!("+ start {}", instances(app, 0, *n)),
            Action::Stop { app, .. } => format!("- stop {app}"),
            Action::Replace {
                app,
                from,
                to,
                changes,
            } => {
                let scale = if from == to {
                    String::new()
                } else {
                    format!(", instances {from} -> {to}")
                };
                format!("~ replace {app} ({} changed{scale})", changes.join(", "))
            }
            Action::Scale { app, from, to } if to > from => {
                format!(
                    "^ scale {app} {from} -> {to} (+ {})",
                    instances(app, *from, *to)
                )
            }
            Action::Scale { app, from, to } => {
                format!(
                    "v scale {app} {from} -> {to} (- {})",
                    instances(app, *to, *from)
                )
            }
            Action::Update { app, changes } => {
                format!("* update {app} in place ({} changed)", changes.join(", "))
            }
            Action::KeepStopped { app } => format!("= {app} stays stopped (eco start {app})"),
            Action::Unchanged { app } => format!("= {app} unchanged"),
        })
        .collect()
}

/// What a command did: `stopped web, api:1`.
pub fn done(command: Command, targets: &[Selected]) -> String {
    if targets.is_empty() {
        return "nothing to do: no app runs".into();
    }
    let mut names: Vec<String> = targets.iter().map(ToString::to_string).collect();
    names.dedup();
    let names = names.join(", ");
    match command {
        Command::Start => format!("started {names}"),
        Command::Stop => format!("stopped {names}"),
        Command::Restart => format!("restarted {names}"),
        Command::Reload => format!("reloaded {names}"),
        Command::Delete => format!("deleted {names}"),
        Command::Scale { instances } => format!("scaled {names} to {instances}"),
    }
}

/// Why `up --wait` gave up.
pub fn wait_failure(failure: &WaitFailure) -> String {
    let app = &failure.app;
    let exit =
        |exit: &Option<crate::state::Exit>| exit.map(|e| format!(" ({e})")).unwrap_or_default();
    match &failure.cause {
        WaitCause::NotRunning => format!("project `{}` is not running", failure.project),
        WaitCause::Errored {
            instance,
            exit: e,
            error,
        } => format!(
            "{app}:{instance} errored{}{}",
            exit(e),
            because(error.as_deref())
        ),
        WaitCause::Crashed {
            instance,
            exit: e,
            error,
        } => format!(
            "{app}:{instance} crashed{} and is restarting{}",
            exit(e),
            because(error.as_deref())
        ),
        WaitCause::TimedOut { after_ms, pending } => format!(
            "timed out after {}; not online: {}",
            humantime::format_duration(std::time::Duration::from_millis(*after_ms)),
            pending
                .iter()
                .map(|(app, i, status)| format!("{app}:{i} ({})", status.as_str()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn because(error: Option<&str>) -> String {
    error.map(|e| format!(": {e}")).unwrap_or_default()
}

/// A warning the daemon sent before its answer.
pub fn warning(
    request: &crate::ipc::proto::Request,
    warning: &crate::ipc::proto::Warning,
) -> String {
    use crate::ipc::proto::{Request, Warning};
    match warning {
        Warning::NotSaved { error } => {
            let done = match request {
                Request::Stop { .. } => "stopped",
                Request::Start { .. } => "started",
                Request::Restart { .. } => "restarted",
                Request::Reload { .. } => "reloaded",
                Request::Delete { .. } => "deleted",
                Request::Scale { .. } => "scaled",
                Request::Down { .. } => "taken down",
                Request::Kill => "stopping",
                _ => "applied",
            };
            format!(
                "{done}, but the state could not be saved: {error}; retrying every second until it succeeds (until then a new daemon would restore the previous state)"
            )
        }
        Warning::VersionDiffers { cli, daemon } => format!(
            "this eco is {cli}, the running daemon is {daemon}; run `eco update` to replace the daemon (apps keep running)"
        ),
        Warning::NotRestored { message } => format!(
            "{message}\n  help: `eco up` the projects again; this warning stops after the next `eco up`"
        ),
    }
}

/// What `eco flush` emptied.
pub fn flushed(files: &[std::path::PathBuf]) -> String {
    if files.is_empty() {
        return "nothing to flush: no app runs".into();
    }
    let mut text = format!("emptied {} log files:", files.len());
    for file in files {
        let _ = write!(text, "\n  {}", file.display());
    }
    text
}

/// A followed line labelled by where it came from: `web out | text`.
pub fn followed(text: &str, app: Option<&str>, stream: Option<LogStream>) -> String {
    let stream = match stream {
        Some(LogStream::Out) => "out",
        Some(LogStream::Err) => "err",
        None => "?",
    };
    format!("{} {stream} | {text}", app.unwrap_or("?"))
}

/// `eco logs` with no app applied.
pub fn no_logs() -> String {
    "eco: no app runs, so there is no output to show: `eco up` (or `eco start ecosystem.config.js`) starts the apps of a file".into()
}

/// The line `logs -f` prints when it could not keep up.
pub fn skipped(count: u64) -> String {
    format!(
        "eco: {count} lines skipped (the terminal is slower than the app; the log files have them)"
    )
}

/// What `up -F` prints of the reconciler's reports.
pub fn report(report: &Report) -> Vec<String> {
    match report {
        Report::Applied { actions, .. } if crate::plan::is_empty(actions) => Vec::new(),
        Report::Applied { actions, .. } => std::iter::once("eco: file changed, applying:".into())
            .chain(plan_lines(actions).into_iter().map(|l| format!("eco: {l}")))
            .collect(),
        Report::NotApplied { errors, .. } => vec![format!(
            "{errors}\neco: the edit was not applied; the apps keep running as they are"
        )],
        Report::Restarting(trigger) => {
            let target = match trigger.instance {
                Some(i) => format!("{}:{i}", trigger.app),
                None => trigger.app.clone(),
            };
            let why = match trigger.reason.detail() {
                Some(detail) => format!("{} ({detail})", trigger.reason.name()),
                None => trigger.reason.name().to_owned(),
            };
            vec![format!("eco: restarting {target}: {why}")]
        }
        Report::RolloutFailed { error, .. } => vec![format!("eco: {error}")],
        Report::Stopping => {
            vec!["eco: stopping every app (Ctrl-C again to kill them at once)".into()]
        }
        Report::Killing => vec!["eco: killing every app".into()],
        Report::ReloadBegun | Report::ReloadDone => Vec::new(),
        Report::Stopped => vec!["eco: all apps stopped".into()],
    }
}

/// `project shop: 3 apps, 5 instances`.
pub fn summary(spec: &ProjectSpec) -> String {
    let apps = spec.apps.len();
    let instances: u32 = spec.apps.values().map(|a| a.instances).sum();
    format!(
        "project {}: {apps} app{}, {instances} instance{}",
        spec.name,
        if apps == 1 { "" } else { "s" },
        if instances == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_every_column() {
        let rows: Vec<Row> = serde_json::from_value(serde_json::json!([
            {"project": "shop", "app": "web", "instance": 0, "id": 3, "pid": 42,
                "status": "online", "restarts": 1, "uptime_ms": 61_000, "cpu_percent": null,
                "memory_bytes": 2_097_152, "exit_code": null, "last_restart_reason": "crash",
                "watching": true},
            {"project": "shop", "app": "worker", "instance": 0, "id": 0, "pid": null,
                "status": "stopped", "restarts": 0, "uptime_ms": null, "cpu_percent": null,
                "memory_bytes": null, "exit_code": null, "last_restart_reason": null},
            {"project": "shop", "app": "worker", "instance": 1, "id": 12, "pid": null,
                "status": "stopped", "restarts": 0, "uptime_ms": null, "cpu_percent": null,
                "memory_bytes": null, "exit_code": null, "last_restart_reason": null},
        ]))
        .expect("rows");
        let text = table(&rows, false);
        assert_eq!(
            text,
            "project  app     id  pid  status   restarts  uptime  cpu  memory   watching  last restart\n\
             shop     web     3   42   online   1         1m 1s   -    2.0 MiB  yes       crash\n\
             shop     worker  0   -    stopped  0         -       -    -        -\n\
             shop     worker  12  -    stopped  0         -       -    -        -\n"
        );
        assert!(table(&rows, true).contains("\x1b[32monline\x1b[0m"));
    }

    #[test]
    fn instance_ranges() {
        assert_eq!(instances("web", 0, 1), "web");
        assert_eq!(instances("web", 0, 4), "web:0..3");
        assert_eq!(instances("web", 2, 3), "web:2");
        assert_eq!(instances("web", 2, 4), "web:2..3");
    }

    #[test]
    fn plan_text() {
        let lines = plan_lines(&[
            Action::Start {
                app: "web".into(),
                instances: 4,
            },
            Action::Replace {
                app: "api".into(),
                from: 1,
                to: 1,
                changes: vec!["env.PORT".into()],
            },
            Action::Stop {
                app: "old".into(),
                instances: 1,
            },
            Action::Unchanged { app: "db".into() },
        ]);
        assert_eq!(
            lines,
            vec![
                "+ start web:0..3",
                "~ replace api (env.PORT changed)",
                "- stop old",
                "= db unchanged"
            ]
        );
    }
}
