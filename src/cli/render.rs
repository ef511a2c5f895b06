//! All user-facing text formatting for plans, tables and summaries.

use std::fmt::Write;
use std::io::IsTerminal;

use serde_json::Value;

use crate::plan::Action;
use crate::spec::ProjectSpec;

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

fn status_color(status: &str) -> &'static str {
    match status {
        "online" => "32",
        "starting" | "stopping" | "backoff" => "33",
        "errored" => "31",
        _ => "90",
    }
}

/// The `eco ls` table.
pub fn table(rows: &[Value], color: bool) -> String {
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
        "last restart",
    ];
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let text = |k: &str| r[k].as_str().unwrap_or("").to_owned();
            let num = |k: &str| r[k].as_u64().map_or("-".to_owned(), |n| n.to_string());
            vec![
                text("project"),
                text("app"),
                num("instance"),
                num("pid"),
                text("status"),
                num("restarts"),
                r["uptime_ms"].as_u64().map_or("-".into(), uptime),
                r["cpu_percent"]
                    .as_f64()
                    .map_or("-".into(), |c| format!("{c:.1}%")),
                r["memory_bytes"].as_u64().map_or("-".into(), bytes),
                r["last_restart_reason"].as_str().unwrap_or("").to_owned(),
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
    let line = |out: &mut String, values: &[String], status_col: bool| {
        for (i, v) in values.iter().enumerate() {
            let pad = widths[i] - v.len();
            if status_col && i == 4 && color {
                let _ = write!(
                    out,
                    "\x1b[{}m{v}\x1b[0m{}",
                    status_color(v),
                    " ".repeat(pad)
                );
            } else {
                let _ = write!(out, "{v}{}", " ".repeat(pad));
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
        line(&mut out, &header, false);
        out.insert_str(out.len() - 1, "\x1b[0m");
    } else {
        line(&mut out, &header, false);
    }
    for c in &cells {
        line(&mut out, c, true);
    }
    out
}

/// `eco describe` as text.
pub fn describe(details: &Value) -> String {
    let mut out = String::new();
    for app in details.as_array().into_iter().flatten() {
        let s = |k: &str| {
            app[k]
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| app[k].to_string())
        };
        let _ = writeln!(out, "{}/{}", s("project"), s("app"));
        let _ = writeln!(out, "  file:      {}", s("file"));
        if let Some(p) = app["profile"].as_str() {
            let _ = writeln!(out, "  profile:   {p}");
        }
        let argv: Vec<String> = app["argv"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a.as_str().unwrap_or_default().to_owned())
            .collect();
        let _ = writeln!(out, "  cmd:       {}", argv.join(" "));
        let _ = writeln!(out, "  cwd:       {}", s("cwd"));
        let _ = writeln!(out, "  out log:   {}", s("out_log"));
        let _ = writeln!(out, "  err log:   {}", s("err_log"));
        for err in app["log_errors"].as_array().into_iter().flatten() {
            let _ = writeln!(out, "  LOG ERROR: {}", err.as_str().unwrap_or_default());
        }
        if app["user_stopped"].as_bool() == Some(true) {
            let _ = writeln!(out, "  stopped by the user (eco start to start it)");
        }
        let settings = &app["spec"]["settings"];
        let _ = writeln!(
            out,
            "  restart:   {} (max {} in a row, delay {} ms up to {} ms)",
            settings["restart"].as_str().unwrap_or_default(),
            settings["max_restarts"],
            settings["restart_delay"],
            settings["max_restart_delay"]
        );
        for inst in app["instances"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  instance {}: {} pid {} restarts {}{}{}",
                inst["instance"],
                inst["status"].as_str().unwrap_or_default(),
                inst["pid"].as_i64().map_or("-".into(), |p| p.to_string()),
                inst["restarts"],
                inst["last_exit"]
                    .as_str()
                    .map(|e| format!(", last {e}"))
                    .unwrap_or_default(),
                inst["last_restart_reason"]
                    .as_str()
                    .map(|r| format!(", last restart: {r}"))
                    .unwrap_or_default(),
            );
            for h in inst["history"].as_array().into_iter().flatten() {
                let at = h["at_ms"].as_u64().map_or_else(String::new, |ms| {
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
                    )
                    .to_string()
                });
                let _ = writeln!(
                    out,
                    "    {at} restart: {}{}",
                    h["reason"].as_str().unwrap_or_default(),
                    h["exit"]
                        .as_str()
                        .map(|e| format!(" after {e}"))
                        .unwrap_or_default()
                );
            }
            if let Some(env) = inst["env"].as_object() {
                let _ = writeln!(out, "    env:");
                for (k, v) in env {
                    let _ = writeln!(out, "      {k}={}", v.as_str().unwrap_or_default());
                }
            }
        }
    }
    out
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
        let rows = vec![
            serde_json::json!({"project": "shop", "app": "web", "instance": 0, "pid": 42,
                "status": "online", "restarts": 1, "uptime_ms": 61_000, "cpu_percent": null,
                "memory_bytes": 2_097_152, "last_restart_reason": "crash"}),
            serde_json::json!({"project": "shop", "app": "worker", "instance": 1, "pid": null,
                "status": "stopped", "restarts": 0, "uptime_ms": null, "cpu_percent": null,
                "memory_bytes": null, "last_restart_reason": null}),
        ];
        let text = table(&rows, false);
        assert_eq!(
            text,
            "project  app     id  pid  status   restarts  uptime  cpu  memory   last restart\n\
             shop     web     0   42   online   1         1m 1s   -    2.0 MiB  crash\n\
             shop     worker  1   -    stopped  0         -       -    -\n"
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
