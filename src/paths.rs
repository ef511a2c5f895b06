//! Where eco keeps things: one place to change, one place to test.

use std::path::{Path, PathBuf};

/// Set by the CLI on the daemon it starts: the caller's soft
/// `RLIMIT_NOFILE`, which the apps get (the daemon raises its own to the
/// hard limit; see the README, "Descriptor limits").
pub const APP_NOFILE_ENV: &str = "ECO_APP_NOFILE";

/// `ECO_HOME`, or `~/.eco`.
pub fn home() -> PathBuf {
    if let Some(home) = std::env::var_os("ECO_HOME").filter(|h| !h.is_empty()) {
        let home = PathBuf::from(home);
        return if home.is_absolute() {
            home
        } else {
            std::env::current_dir().map_or(home.clone(), |cwd| cwd.join(home))
        };
    }
    let user_home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    user_home.join(".eco")
}

/// The layout under one ECO_HOME.
#[derive(Clone, Debug)]
pub struct Paths {
    pub home: PathBuf,
}

impl Paths {
    pub fn new(home: PathBuf) -> Paths {
        Paths { home }
    }

    pub fn from_env() -> Paths {
        Paths::new(home())
    }

    pub fn socket(&self) -> PathBuf {
        self.home.join("eco.sock")
    }

    /// Held (flock) by the running daemon for its whole life.
    pub fn lock(&self) -> PathBuf {
        self.home.join("daemon.lock")
    }

    /// The descriptor holder's socket (`holder`), mode 0600.
    pub fn holder(&self) -> PathBuf {
        self.home.join("holder.sock")
    }

    pub fn pid(&self) -> PathBuf {
        self.home.join("daemon.pid")
    }

    pub fn daemon_log(&self) -> PathBuf {
        self.home.join("daemon.log")
    }

    pub fn state(&self) -> PathBuf {
        self.home.join("state.json")
    }

    /// The instances' notify sockets (mode 0700: see `runtime::notify`).
    pub fn notify(&self) -> PathBuf {
        self.home.join("notify")
    }

    pub fn logs(&self) -> PathBuf {
        self.home.join("logs")
    }

    /// Default log file of an app: `logs/<project>/<app>.out.log` or `.err.log`.
    pub fn app_log(&self, project: &str, app: &str, stream: &str) -> PathBuf {
        self.logs()
            .join(project)
            .join(format!("{app}.{stream}.log"))
    }

    /// A short token naming this ECO_HOME, put in every instance's spawn
    /// mark so a new daemon finds (only) its predecessor's processes.
    pub fn token(&self) -> String {
        let bytes = self.home.as_os_str().as_encoded_bytes();
        let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{hash:016x}")
    }
}

/// Creates the home (mode 0700) if missing and checks that it can be
/// trusted (see `crate::home`); an existing folder keeps its mode.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    crate::home::prepare(dir).map_err(std::io::Error::from)
}
