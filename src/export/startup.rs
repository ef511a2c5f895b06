//! `eco startup`'s unit: the systemd service that runs eco's own daemon at
//! boot. Pure: the facts gathered by the CLI (where eco is, its home, the
//! PATH, the applied projects) in, the unit's name and text out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use super::ExportError;
use super::systemd::{command, span};
use super::unit_syntax;
use crate::spec::ProjectSpec;

/// How often systemd expects a WATCHDOG=1 (the daemon pings at half this).
const WATCHDOG: Duration = Duration::from_secs(30);

/// Descriptors for the daemon: two pipes per instance, logs, sockets.
const NOFILE: u64 = 524_288;

/// The soft limit apps get back (`ECO_APP_NOFILE`), as from a login shell
/// and as systemd gives its services: select(2) users keep working, and
/// apps may raise it up to [`NOFILE`].
const APP_NOFILE: u64 = 1024;

/// Time on top of the apps' stop timeouts: the kill step, reaping, the
/// state's last save. Without it systemd's SIGKILL would race eco's own.
const STOP_MARGIN: Duration = Duration::from_secs(20);

/// The stop timeout eco gives an app that sets none: the budget when no
/// project is applied yet.
const DEFAULT_STOP: Duration = Duration::from_secs(10);

/// A restore starts every app and may wait for readiness before READY=1.
const START_TIMEOUT: Duration = Duration::from_secs(300);

/// What the unit is made of.
#[derive(Clone, Debug)]
pub struct DaemonUnit<'a> {
    /// The eco binary (absolute).
    pub eco: &'a Path,
    pub eco_home: &'a Path,
    /// HOME of the user the daemon runs as.
    pub home: &'a Path,
    /// PATH at generation time: apps find their programs as in the shell.
    pub path: &'a str,
    /// A unit for `systemctl --user`.
    pub user_scope: bool,
    /// `User=`: root writing the unit for another user.
    pub run_as: Option<&'a str>,
    /// The applied projects (state.json), for the stop budget.
    pub projects: &'a [ProjectSpec],
}

/// The unit's file name: `eco.service` for the user manager, `eco-USER.service`
/// in the system one (one per user, as PM2's `pm2-USER`).
pub fn unit_name(user_scope: bool, user: &str) -> String {
    if user_scope {
        return "eco.service".to_owned();
    }
    let clean: String = user
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_-.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("eco-{clean}.service")
}

/// How long eco may take to stop everything: projects stop one after the
/// other, and within one, dependents stop before what they depend on.
pub fn stop_budget(projects: &[ProjectSpec]) -> Duration {
    projects.iter().map(longest_stop_chain).sum()
}

/// The slowest chain of stops in a project (each app waits for its
/// dependents to stop first).
fn longest_stop_chain(project: &ProjectSpec) -> Duration {
    fn chain(
        project: &ProjectSpec,
        app: &str,
        memo: &mut BTreeMap<String, Duration>,
        depth: usize,
    ) -> Duration {
        if let Some(known) = memo.get(app) {
            return *known;
        }
        let Some(spec) = project.apps.get(app) else {
            return Duration::ZERO;
        };
        // Validation forbids cycles; the depth bound keeps a hand-edited
        // state from looping.
        let before = if depth > project.apps.len() {
            Duration::ZERO
        } else {
            project
                .apps
                .values()
                .filter(|other| other.settings.depends_on.iter().any(|d| d == app))
                .map(|other| chain(project, &other.name, memo, depth + 1))
                .max()
                .unwrap_or_default()
        };
        let total = before + spec.settings.stop_timeout;
        memo.insert(app.to_owned(), total);
        total
    }
    let mut memo = BTreeMap::new();
    project
        .apps
        .keys()
        .map(|app| chain(project, app, &mut memo, 0))
        .max()
        .unwrap_or_default()
}

/// The unit's text, or the error naming what cannot be written into it
/// (a newline in ECO_HOME, say): every value goes through [`unit_syntax`].
pub fn render(unit: &DaemonUnit<'_>) -> Result<String, ExportError> {
    let stop = stop_budget(unit.projects).max(DEFAULT_STOP) + STOP_MARGIN;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# eco's daemon, written by `eco startup` (eco {}).\n\
         # Run `eco startup` again after moving eco, changing PATH or raising a\n\
         # stop_timeout; `eco unstartup` removes this unit.",
        env!("CARGO_PKG_VERSION")
    );
    out.push_str("[Unit]\n");
    let eco_home = unit_syntax::utf8(unit.eco_home)
        .and_then(|home| unit_syntax::text(&format!("eco process supervisor (ECO_HOME={home})")))
        .map_err(|e| e.at("ECO_HOME", &unit.eco_home, "Description="))?;
    let _ = writeln!(out, "Description={eco_home}");
    out.push_str("Documentation=https://github.com/eco/eco#production\n");
    if !unit.user_scope {
        // Apps usually want the network; the user manager has no such target.
        out.push_str("Wants=network-online.target\nAfter=network-online.target\n");
    }
    out.push_str("\n[Service]\n");
    // The daemon sends READY=1 once every project is restored.
    out.push_str("Type=notify\nNotifyAccess=main\n");
    if let Some(user) = unit.run_as {
        let user = unit_syntax::text(user).map_err(|e| e.at("--user-name", &user, "User="))?;
        let _ = writeln!(out, "User={user}");
    }
    let exec = command(unit.eco, &["daemon".to_owned()])
        .map_err(|e| e.at("the eco binary's path", &unit.eco, "ExecStart="))?;
    let _ = writeln!(out, "ExecStart={exec}");
    out.push_str("ExecReload=/bin/kill -HUP $MAINPID\n");
    // SIGTERM to eco alone: it stops its apps itself, gracefully and in
    // dependency order; systemd's SIGKILL to the rest comes only after.
    out.push_str("KillMode=mixed\n");
    let _ = writeln!(out, "TimeoutStopSec={}", span(stop));
    let _ = writeln!(out, "TimeoutStartSec={}", span(START_TIMEOUT));
    // eco owns its cgroup subtree: one cgroup per instance.
    out.push_str("Delegate=yes\n");
    let _ = writeln!(out, "WatchdogSec={}", span(WATCHDOG));
    out.push_str("Restart=on-failure\nRestartSec=1s\n");
    let _ = writeln!(out, "LimitNOFILE={NOFILE}");
    let utf8 = |key: &str, path: &Path| {
        unit_syntax::utf8(path)
            .map(str::to_owned)
            .map_err(|e| e.at(key, &path, "Environment="))
    };
    for (key, value) in [
        ("ECO_HOME", utf8("ECO_HOME", unit.eco_home)?),
        ("HOME", utf8("HOME", unit.home)?),
        ("PATH", unit.path.to_owned()),
        (crate::paths::APP_NOFILE_ENV, APP_NOFILE.to_string()),
    ] {
        let assignment = unit_syntax::env_assignment(key, &value)
            .map_err(|e| e.at(key, &value, "Environment="))?;
        let _ = writeln!(out, "Environment={assignment}");
    }
    out.push_str(&super::systemd::install_section(unit.user_scope));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{AppSpec, Mode, ProcessSpec, Settings};

    fn app(name: &str, stop: u64, depends_on: &[&str]) -> (String, AppSpec) {
        let mut spec = AppSpec {
            name: name.into(),
            process: ProcessSpec {
                argv: vec!["sleep".into(), "1".into()],
                cwd: "/srv/p".into(),
                env: BTreeMap::new(),
                mode: Mode::Fork,
                increment_var: None,
                listen: Vec::new(),
                pid_file: None,
                watchdog: None,
            },
            instances: 1,
            settings: Settings::default(),
        };
        spec.settings.stop_timeout = Duration::from_secs(stop);
        spec.settings.depends_on = depends_on.iter().map(|d| (*d).to_owned()).collect();
        (name.to_owned(), spec)
    }

    fn project(apps: Vec<(String, AppSpec)>) -> ProjectSpec {
        ProjectSpec {
            name: "p".into(),
            file: "/srv/p/ecosystem.yaml".into(),
            profile: None,
            env_files: Vec::new(),
            apps: apps.into_iter().collect(),
        }
    }

    fn unit<'a>(projects: &'a [ProjectSpec], user_scope: bool) -> DaemonUnit<'a> {
        DaemonUnit {
            eco: Path::new("/opt/my tools/eco"),
            eco_home: Path::new("/home/al/.eco"),
            home: Path::new("/home/al"),
            path: "/home/al/.nvm/versions/node/v22/bin:/usr/bin:/bin",
            user_scope,
            run_as: None,
            projects,
        }
    }

    #[test]
    fn stop_budget_follows_dependency_chains_and_sums_projects() {
        // web depends on db: web stops (5s), then db (30s); cache in parallel.
        let one = project(vec![
            app("db", 30, &[]),
            app("web", 5, &["db"]),
            app("cache", 20, &[]),
        ]);
        assert_eq!(
            stop_budget(std::slice::from_ref(&one)),
            Duration::from_secs(35)
        );
        let two = project(vec![app("job", 7, &[])]);
        assert_eq!(stop_budget(&[one, two]), Duration::from_secs(42));
        assert_eq!(stop_budget(&[]), Duration::ZERO);
    }

    #[test]
    fn unit_has_what_systemd_needs() {
        let projects = [project(vec![app("db", 60, &[])])];
        let text = render(&unit(&projects, false)).expect("render");
        for line in [
            "Type=notify",
            "ExecStart=\"/opt/my tools/eco\" daemon",
            "ExecReload=/bin/kill -HUP $MAINPID",
            "KillMode=mixed",
            "TimeoutStopSec=80s",
            "Delegate=yes",
            "WatchdogSec=30s",
            "Restart=on-failure",
            "LimitNOFILE=524288",
            "Environment=\"ECO_APP_NOFILE=1024\"",
            "Environment=\"ECO_HOME=/home/al/.eco\"",
            "Environment=\"HOME=/home/al\"",
            "Environment=\"PATH=/home/al/.nvm/versions/node/v22/bin:/usr/bin:/bin\"",
            "WantedBy=multi-user.target",
            "After=network-online.target",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        assert!(!text.contains("User="));
    }

    #[test]
    fn user_units_and_other_users() {
        let text = render(&unit(&[], true)).expect("render");
        assert!(text.contains("WantedBy=default.target\n"));
        assert!(!text.contains("network-online"));
        assert!(
            text.contains("TimeoutStopSec=30s\n"),
            "default budget: {text}"
        );
        let mut other = unit(&[], false);
        other.run_as = Some("alice");
        assert!(render(&other).expect("render").contains("\nUser=alice\n"));
    }

    #[test]
    fn values_are_escaped() {
        let mut odd = unit(&[], false);
        odd.path = "/a b:/100%:/q\"x";
        let text = render(&odd).expect("render");
        assert!(
            text.contains("Environment=\"PATH=/a b:/100%%:/q\\\"x\"\n"),
            "{text}"
        );
    }

    /// ECO_HOME, HOME, PATH and the eco binary's path come back from the
    /// unit as themselves, by systemd's rules.
    #[test]
    fn hostile_paths_round_trip() {
        use crate::export::read_back;
        let mut odd = unit(&[], false);
        odd.eco = Path::new("/opt/100% $x \"q\"/eco");
        odd.eco_home = Path::new("/home/al/.eco 100% $HOME ${HOME} 'x' \\ é");
        odd.home = Path::new("/home/%i $$");
        odd.path = "/a b:/100%:/q\"x:$PATH";
        let text = render(&odd);
        // The eco binary's path has a quote: systemd cannot run it.
        assert!(text.is_err(), "{text:?}");
        odd.eco = Path::new("/opt/100% $x é/eco");
        let text = render(&odd).expect("render");
        let all = read_back::assignments(&text).expect("reads");
        let mut env = BTreeMap::new();
        for line in read_back::values(&all, "Service", "Environment") {
            env.extend(read_back::environment(line, "0").expect("Environment= reads"));
        }
        assert_eq!(env["ECO_HOME"], "/home/al/.eco 100% $HOME ${HOME} 'x' \\ é");
        assert_eq!(env["HOME"], "/home/%i $$");
        assert_eq!(env["PATH"], "/a b:/100%:/q\"x:$PATH");
        let exec = read_back::values(&all, "Service", "ExecStart")[0];
        let (program, argv) = read_back::exec(exec, "0", &env).expect("reads");
        assert_eq!(program, "/opt/100% $x é/eco");
        assert_eq!(argv, ["/opt/100% $x é/eco", "daemon"]);
        let description = read_back::values(&all, "Unit", "Description")[0];
        assert_eq!(
            read_back::specifiers(description, "0").expect("no specifier"),
            "eco process supervisor (ECO_HOME=/home/al/.eco 100% $HOME ${HOME} 'x' \\ é)"
        );
    }

    /// A newline in ECO_HOME (the description) or in the eco binary's path
    /// is an error naming it; in HOME or PATH, Environment= quotes it.
    #[test]
    fn newlines_are_errors_naming_the_variable() {
        let evil = "/x\nExecStartPre=/bin/touch /tmp/pwned";
        for (key, eco_home) in [("ECO_HOME", true), ("the eco binary's path", false)] {
            let mut odd = unit(&[], false);
            if eco_home {
                odd.eco_home = Path::new(evil);
            } else {
                odd.eco = Path::new(evil);
            }
            let err = render(&odd).expect_err(key);
            assert!(err.to_string().starts_with(&format!("{key}: ")), "{err}");
        }
        let mut odd = unit(&[], false);
        odd.home = Path::new(evil);
        odd.path = evil;
        let text = render(&odd).expect("render");
        assert!(
            text.contains("\nEnvironment=\"PATH=/x\\nExecStartPre=/bin/touch /tmp/pwned\"\n"),
            "{text}"
        );
        assert!(!text.contains("\nExecStartPre"), "{text}");
    }

    #[test]
    fn unit_names() {
        assert_eq!(unit_name(true, "al"), "eco.service");
        assert_eq!(unit_name(false, "root"), "eco-root.service");
        assert_eq!(unit_name(false, "a b@c"), "eco-a_b_c.service");
    }
}
