//! The desired state: what the ecosystem file asks for, validated and
//! resolved (absolute paths, parsed durations and signals, merged env).
//! Nothing here does I/O. Two specs that compare equal ask for the same thing.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One applied ecosystem file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProjectSpec {
    pub name: String,
    /// The file it came from (absolute).
    pub file: PathBuf,
    /// The `--env` profile it was resolved with.
    pub profile: Option<String>,
    /// The env files it read (absolute): a change to one reloads the project.
    #[serde(default)]
    pub env_files: Vec<PathBuf>,
    /// Ordered by name, so every walk over it is deterministic.
    pub apps: BTreeMap<String, AppSpec>,
}

/// One app entry, resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: String,
    /// Everything whose change requires restarting the process.
    pub process: ProcessSpec,
    pub instances: u32,
    /// Everything that can change while the process keeps running.
    pub settings: Settings,
}

/// What a process is started with. Any change here means a restart.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    /// The merged env from the file (not the ECO_* variables, which depend on
    /// the instance and are added by [`AppSpec::instance`]).
    pub env: BTreeMap<String, String>,
    pub mode: Mode,
    pub increment_var: Option<String>,
    pub listen: Vec<ListenAddr>,
    /// A server that daemonizes itself writes its pid here (systemd's
    /// `Type=forking` + `PIDFile=`): eco supervises that pid once the
    /// launcher has exited 0. Absolute (resolved against `cwd`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<PathBuf>,
    /// `watchdog`: WATCHDOG_USEC given to the app, which must send
    /// WATCHDOG=1 this often (in the env, so a change restarts).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "millis_opt")]
    pub watchdog: Option<Duration>,
}

/// Fields applied in place: changing them never restarts a process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub restart: RestartPolicy,
    pub max_restarts: u32,
    #[serde(with = "millis")]
    pub min_uptime: Duration,
    #[serde(with = "millis")]
    pub restart_delay: Duration,
    #[serde(with = "millis")]
    pub max_restart_delay: Duration,
    pub stop_signal: Signal,
    #[serde(with = "millis")]
    pub stop_timeout: Duration,
    pub ready: Option<Ready>,
    #[serde(with = "millis")]
    pub ready_timeout: Duration,
    pub depends_on: Vec<String>,
    pub watch: Watch,
    pub watch_ignore: Vec<String>,
    #[serde(with = "millis")]
    pub watch_delay: Duration,
    pub max_memory: Option<u64>,
    pub cron_restart: Option<String>,
    pub out_file: Option<PathBuf>,
    pub err_file: Option<PathBuf>,
    pub log_time: bool,
    pub log_max_size: u64,
    pub log_keep: u32,
    /// `write_pid_file`: eco writes each instance's pid here (PM2's
    /// `pid_file`; absolute, named per instance as PM2 names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_pid_file: Option<PathBuf>,
    /// Liveness probes: restart after `failures` consecutive failures.
    #[serde(default)]
    pub health: Option<Health>,
    /// `eco reload` sends this to every instance instead of replacing it.
    #[serde(default)]
    pub reload_signal: Option<Signal>,
    /// How many fds an instance may keep in eco with FDSTORE=1.
    #[serde(default)]
    pub fd_store: u32,
    /// How many instances a rolling replacement adds or stops at once.
    #[serde(default)]
    pub rollout: Rollout,
}

/// The limits of a rolling replacement (`rollout:`), as Kubernetes'
/// `maxSurge` and `maxUnavailable`; never both 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// New instances starting beside their old ones at once.
    pub max_surge: u32,
    /// Old instances stopped before their new one starts, at once.
    pub max_unavailable: u32,
}

impl Default for Rollout {
    /// One new instance at a time, every old one serving until its new one
    /// is ready.
    fn default() -> Self {
        Rollout {
            max_surge: 1,
            max_unavailable: 0,
        }
    }
}

/// A liveness probe (`health:`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub probe: Probe,
    #[serde(with = "millis")]
    pub interval: Duration,
    #[serde(with = "millis")]
    pub timeout: Duration,
    pub failures: u32,
}

/// What a liveness probe does.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Probe {
    Tcp(String),
    Http(String),
    Exec(String),
}

impl Default for Settings {
    /// The defaults of CONTRACT section 1.
    fn default() -> Self {
        Settings {
            restart: RestartPolicy::Always,
            max_restarts: 15,
            min_uptime: Duration::from_secs(1),
            restart_delay: Duration::from_millis(100),
            max_restart_delay: Duration::from_secs(30),
            stop_signal: Signal(libc::SIGTERM),
            stop_timeout: Duration::from_secs(10),
            ready: None,
            ready_timeout: Duration::from_secs(30),
            depends_on: Vec::new(),
            watch: Watch::Off,
            watch_ignore: Vec::new(),
            watch_delay: Duration::from_millis(200),
            max_memory: None,
            cron_restart: None,
            out_file: None,
            err_file: None,
            log_time: false,
            log_max_size: 10 * 1024 * 1024,
            log_keep: 5,
            write_pid_file: None,
            health: None,
            reload_signal: None,
            fd_store: 0,
            rollout: Rollout::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Fork,
    Cluster,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    /// As written in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }
}

/// A signal number, named as `SIGTERM` in files and output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signal(pub i32);

impl Signal {
    /// Parses `SIGTERM`, `TERM`, `sigterm` or a number such as `15`.
    pub fn parse(text: &str) -> Option<Signal> {
        let upper = text.trim().to_ascii_uppercase();
        if let Ok(n) = upper.parse::<i32>() {
            return nix::sys::signal::Signal::try_from(n)
                .ok()
                .map(|s| Signal(s as i32));
        }
        let name = if upper.starts_with("SIG") {
            upper
        } else {
            format!("SIG{upper}")
        };
        name.parse::<nix::sys::signal::Signal>()
            .ok()
            .map(|s| Signal(s as i32))
    }

    pub fn name(self) -> String {
        nix::sys::signal::Signal::try_from(self.0)
            .map_or_else(|_| format!("signal {}", self.0), |s| s.as_str().to_owned())
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// How eco learns that a started instance is ready to serve.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Ready {
    Notify,
    Tcp(String),
    Http(String),
    Exec(String),
    Log(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Watch {
    Off,
    /// The whole cwd.
    All,
    Globs(Vec<String>),
}

/// A listening socket eco binds for a cluster app.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ListenAddr {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl ListenAddr {
    /// A TCP address with a fixed port: the kind that can have one
    /// SO_REUSEPORT socket per instance (port 0 would give each its own port,
    /// and `unix:` paths have no such groups).
    pub fn can_split_per_instance(&self) -> bool {
        matches!(self, ListenAddr::Tcp(addr) if addr.port() != 0)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenAddr::Tcp(addr) => write!(f, "{addr}"),
            ListenAddr::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// Exactly what one instance is started with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSpec {
    pub argv: Vec<String>,
    pub cwd: PathBuf,
    pub env: BTreeMap<String, String>,
}

impl AppSpec {
    /// The argv, env and cwd of instance `index`: the app's env plus the
    /// ECO_* identity variables and `increment_var` applied.
    pub fn instance(&self, project: &str, index: u32) -> InstanceSpec {
        let mut env = self.process.env.clone();
        if let Some(var) = &self.process.increment_var {
            // Validation guarantees the base value is an integer.
            if let Some(base) = env.get(var).and_then(|v| v.trim().parse::<i64>().ok()) {
                env.insert(var.clone(), (base + i64::from(index)).to_string());
            }
        }
        env.insert("ECO_PROJECT".into(), project.to_owned());
        env.insert("ECO_APP".into(), self.name.clone());
        env.insert("ECO_INSTANCE".into(), index.to_string());
        env.insert("NODE_APP_INSTANCE".into(), index.to_string());
        InstanceSpec {
            argv: self.process.argv.clone(),
            cwd: self.process.cwd.clone(),
            env,
        }
    }
}

impl ProcessSpec {
    /// A fingerprint that is stable across runs and builds (FNV-1a over the
    /// canonical JSON), so it can be persisted and compared later.
    pub fn fingerprint(&self) -> u64 {
        let json = serde_json::to_vec(self).unwrap_or_default();
        json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
    }
}

/// Optional durations as integer milliseconds.
mod millis_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    #[allow(clippy::ref_option)]
    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// Durations as integer milliseconds in JSON (state files, `describe --json`).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_in_every_usual_spelling() {
        assert_eq!(Signal::parse("SIGTERM"), Some(Signal(libc::SIGTERM)));
        assert_eq!(Signal::parse("int"), Some(Signal(libc::SIGINT)));
        assert_eq!(Signal::parse("9"), Some(Signal(libc::SIGKILL)));
        assert_eq!(Signal::parse("SIGNOPE"), None);
        assert_eq!(Signal(libc::SIGHUP).to_string(), "SIGHUP");
    }
}
