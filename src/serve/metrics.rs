//! `/metrics` in the Prometheus text format 0.0.4, written here: each
//! family once, its HELP and TYPE first, label values escaped. The stats
//! come from the daemon (`Request::Stats`); CPU and memory of each
//! instance's tree and the daemon's `process_*` are read from /proc by
//! this process, so the daemon does no work for them. Pure but `proc_*`.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::ipc::proto::{InstanceStats, Stats};
use crate::state::Status;

/// Every `last_restart_reason` name: each counter series exists from the
/// start (at 0), so `increase()` sees the first restart.
pub const REASONS: [&str; 9] = [
    "crash",
    "watch",
    "config change",
    "user",
    "memory",
    "cron",
    "watchdog",
    "health",
    "not-ready",
];

const STATES: [Status; 6] = [
    Status::Starting,
    Status::Online,
    Status::Backoff,
    Status::Stopping,
    Status::Stopped,
    Status::Errored,
];

/// Clock ticks per second in /proc/PID/stat (USER_HZ).
const TICKS: f64 = 100.0;

/// One instance's tree: (CPU seconds, resident bytes), read from /proc.
pub type Usage = (f64, u64);

/// The daemon's own process, as the standard `process_*` metrics say it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessMetrics {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_seconds: f64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
}

/// A text exposition being written.
struct Text(String);

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                self.0.push_str(key);
                self.0.push_str("=\"");
                escape_into(&mut self.0, value);
                self.0.push('"');
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape_into(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The whole exposition. `usage` is each instance's tree usage by pid.
pub fn render(
    stats: &Stats,
    usage: &BTreeMap<i32, Usage>,
    daemon: Option<&ProcessMetrics>,
) -> String {
    let mut t = Text(String::with_capacity(256 + stats.instances.len() * 1400));
    t.family("eco_build_info", "gauge", "eco's version; always 1.");
    t.sample(
        "eco_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );
    apps(&mut t, &stats.instances);
    instances(&mut t, &stats.instances, usage);
    reloads(&mut t, stats);
    if let Some(daemon) = daemon {
        process(&mut t, daemon);
    }
    t.0
}

/// The apps, once each: info and instances per state.
fn apps(t: &mut Text, instances: &[InstanceStats]) {
    let mut apps: BTreeMap<(&str, &str), (&str, [u32; STATES.len()])> = BTreeMap::new();
    for i in instances {
        let entry = apps
            .entry((i.project.as_str(), i.app.as_str()))
            .or_insert((i.mode.as_str(), [0; STATES.len()]));
        if let Some(k) = STATES.iter().position(|s| *s == i.status) {
            entry.1[k] += 1;
        }
    }
    t.family(
        "eco_app_info",
        "gauge",
        "One series per app, with its mode; always 1.",
    );
    for ((project, app), (mode, _)) in &apps {
        t.sample(
            "eco_app_info",
            &[("project", project), ("app", app), ("mode", mode)],
            1.0,
        );
    }
    t.family(
        "eco_app_instances",
        "gauge",
        "Instances of the app in each state.",
    );
    for ((project, app), (_, counts)) in &apps {
        for (state, count) in STATES.iter().zip(counts) {
            let labels = [
                ("project", *project),
                ("app", *app),
                ("state", state.as_str()),
            ];
            t.sample("eco_app_instances", &labels, f64::from(*count));
        }
    }
}

/// One family at a time (the format wants each family's samples together).
fn instances(t: &mut Text, instances: &[InstanceStats], usage: &BTreeMap<i32, Usage>) {
    let replicas: Vec<String> = instances.iter().map(|i| i.replica.to_string()).collect();
    let labels = |k: usize| {
        let i = &instances[k];
        [
            ("project", i.project.as_str()),
            ("app", i.app.as_str()),
            ("replica", replicas[k].as_str()),
        ]
    };
    let usage_of = |i: &InstanceStats| i.pid.and_then(|p| usage.get(&p)).copied();
    t.family(
        "eco_instance_up",
        "gauge",
        "1 when the instance's process runs.",
    );
    for (k, i) in instances.iter().enumerate() {
        t.sample("eco_instance_up", &labels(k), flag(i.pid.is_some()));
    }
    t.family(
        "eco_instance_ready",
        "gauge",
        "1 when the instance is online and ready.",
    );
    for (k, i) in instances.iter().enumerate() {
        t.sample("eco_instance_ready", &labels(k), flag(i.ready));
    }
    t.family(
        "eco_instance_restarts_total",
        "counter",
        "Restarts since the daemon started, by reason (the last_restart_reason names).",
    );
    for (k, i) in instances.iter().enumerate() {
        let [p, a, r] = labels(k);
        for reason in REASONS {
            let n = i.restarts_by_reason.get(reason).copied().unwrap_or(0);
            t.sample(
                "eco_instance_restarts_total",
                &[p, a, r, ("reason", reason)],
                n as f64,
            );
        }
    }
    t.family(
        "eco_health_probe_failures_total",
        "counter",
        "Health probes of the instance that failed since the daemon started.",
    );
    for (k, i) in instances.iter().enumerate() {
        t.sample(
            "eco_health_probe_failures_total",
            &labels(k),
            i.probe_failures as f64,
        );
    }
    t.family(
        "eco_instance_start_time_seconds",
        "gauge",
        "When the instance's current process started, in seconds since the epoch.",
    );
    for (k, i) in instances.iter().enumerate() {
        if let Some(ms) = i.started_at_ms.filter(|_| i.pid.is_some()) {
            t.sample(
                "eco_instance_start_time_seconds",
                &labels(k),
                ms as f64 / 1000.0,
            );
        }
    }
    t.family(
        "eco_instance_cpu_seconds_total",
        "counter",
        "CPU time of the instance's process tree (user and system), in seconds.",
    );
    for (k, i) in instances.iter().enumerate() {
        if let Some((cpu, _)) = usage_of(i) {
            t.sample("eco_instance_cpu_seconds_total", &labels(k), cpu);
        }
    }
    t.family(
        "eco_instance_memory_bytes",
        "gauge",
        "Resident memory of the instance's process tree, in bytes.",
    );
    for (k, i) in instances.iter().enumerate() {
        if let Some((_, rss)) = usage_of(i) {
            t.sample("eco_instance_memory_bytes", &labels(k), rss as f64);
        }
    }
}

fn reloads(t: &mut Text, stats: &Stats) {
    t.family(
        "eco_config_last_reload_successful",
        "gauge",
        "1 when the project's file was last applied, 0 when it was refused.",
    );
    for r in &stats.reloads {
        t.sample(
            "eco_config_last_reload_successful",
            &[("project", &r.project)],
            flag(r.successful),
        );
    }
    t.family(
        "eco_config_last_reload_timestamp_seconds",
        "gauge",
        "When the project's file was last applied or refused, in seconds since the epoch.",
    );
    for r in &stats.reloads {
        let at = r.at_ms as f64 / 1000.0;
        t.sample(
            "eco_config_last_reload_timestamp_seconds",
            &[("project", &r.project)],
            at,
        );
    }
}

fn process(t: &mut Text, p: &ProcessMetrics) {
    let gauges: [(&str, &str, &str, Option<f64>); 6] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time of the eco daemon, in seconds.",
            Some(p.cpu_seconds),
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size of the eco daemon, in bytes.",
            Some(p.resident_bytes as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size of the eco daemon, in bytes.",
            Some(p.virtual_bytes as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the eco daemon since the epoch, in seconds.",
            Some(p.start_time_seconds),
        ),
        (
            "process_open_fds",
            "gauge",
            "Open file descriptors of the eco daemon.",
            Some(p.open_fds as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "The eco daemon's limit of open file descriptors.",
            p.max_fds.map(|m| m as f64),
        ),
    ];
    for (name, kind, help, value) in gauges {
        if let Some(value) = value {
            t.family(name, kind, help);
            t.sample(name, &[], value);
        }
    }
}

/// The tree usage of each pid (an instance's process and descendants).
/// A scrape of 1,000 instances is mostly these /proc reads (about 35 ms
/// on one core): they are shared among the cores, at most four threads.
pub fn proc_usage(pids: impl Iterator<Item = i32>) -> BTreeMap<i32, Usage> {
    let pids: Vec<i32> = pids.collect();
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZeroUsize::get)
        .clamp(1, 4);
    let chunk = pids.len().div_ceil(threads).max(64);
    let read = |part: &[i32]| -> Vec<(i32, Usage)> {
        part.iter()
            .filter_map(|&pid| tree_usage(pid).map(|usage| (pid, usage)))
            .collect()
    };
    std::thread::scope(|scope| {
        let parts: Vec<_> = pids
            .chunks(chunk)
            .skip(1)
            .map(|part| scope.spawn(move || read(part)))
            .collect();
        let mut usage: BTreeMap<i32, Usage> = read(pids.chunks(chunk).next().unwrap_or_default())
            .into_iter()
            .collect();
        for part in parts {
            // A reader that panicked leaves its instances without figures.
            usage.extend(part.join().unwrap_or_default());
        }
        usage
    })
}

/// CPU seconds and resident bytes of `pid` and its descendants.
fn tree_usage(pid: i32) -> Option<Usage> {
    crate::metrics::tree_usage(pid).map(|(rss, ticks)| (ticks as f64 / TICKS, rss))
}

/// The `process_*` metrics of `pid`, from /proc.
pub fn proc_process(pid: u32) -> Option<ProcessMetrics> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command, 0-based: utime 11, stime 12, starttime 19,
    // vsize 20, rss (pages) 21.
    let num = |k: usize| fields.get(k).and_then(|v| v.parse::<u64>().ok());
    let boot = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<u64>().ok())?;
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let max_fds = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .ok()
        .and_then(|l| {
            l.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|v| v.parse().ok())
        });
    Some(ProcessMetrics {
        cpu_seconds: (num(11)? + num(12)?) as f64 / TICKS,
        resident_bytes: num(21)? * crate::metrics::page_size(),
        virtual_bytes: num(20)?,
        start_time_seconds: boot as f64 + num(19)? as f64 / TICKS,
        open_fds,
        max_fds,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_read_in_parts_covers_every_pid_once() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let mut pids: Vec<i32> = (0..300).map(|_| me).collect();
        pids.push(-5);
        let usage = proc_usage(pids.into_iter());
        assert_eq!(usage.keys().copied().collect::<Vec<_>>(), vec![me]);
        assert!(usage[&me].1 > 0);
    }

    #[test]
    fn label_values_are_escaped_and_families_typed_once() {
        let mut counts = BTreeMap::new();
        counts.insert("crash".to_owned(), 2);
        let stats = Stats {
            daemon_pid: 1,
            instances: vec![InstanceStats {
                project: "p\"q".into(),
                app: "a\\b\nc".into(),
                replica: 0,
                mode: "fork".into(),
                status: Status::Online,
                pid: Some(42),
                started_at_ms: Some(1_500),
                ready: true,
                restarts_by_reason: counts,
                probe_failures: 0,
            }],
            reloads: Vec::new(),
        };
        let usage = BTreeMap::from([(42, (1.5, 2048))]);
        let text = render(&stats, &usage, None);
        assert!(
            text.contains(r#"eco_instance_up{project="p\"q",app="a\\b\nc",replica="0"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"reason="crash"} 2"#), "{text}");
        assert!(text.contains(
            r#"eco_instance_cpu_seconds_total{project="p\"q",app="a\\b\nc",replica="0"} 1.5"#
        ));
        assert!(text.contains(
            r#"eco_instance_start_time_seconds{project="p\"q",app="a\\b\nc",replica="0"} 1.5"#
        ));
        assert_eq!(
            text.matches("# TYPE eco_instance_restarts_total counter")
                .count(),
            1
        );
        assert!(!text.contains("instance=") && !text.contains("pid="));
        let me = proc_process(std::process::id()).expect("own /proc");
        assert!(me.resident_bytes > 0 && me.open_fds > 0);
        let own = i32::try_from(std::process::id()).expect("pid");
        let (_, rss) = tree_usage(own).expect("own tree");
        assert!(
            rss >= me.resident_bytes,
            "the tree holds at least the process"
        );
        assert!(tree_usage(-5).is_none());
    }
}
