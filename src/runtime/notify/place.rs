//! Where the notify sockets live: `ECO_HOME/notify/<eco pid>.<n>`, in a
//! folder only eco's user (and root) can enter, as systemd keeps
//! `/run/systemd/notify`. The folder is the first wall: another user cannot
//! even reach a socket to send to it. Abstract sockets are never used (any
//! user can list them in /proc/net/unix and send to them).
//!
//! A home too long for a socket path (`sun_path` holds 108 bytes) gets a
//! private folder made with `mkdtemp` (mode 0700, a fresh name no one else
//! could have prepared) under `$XDG_RUNTIME_DIR` or `/tmp` instead.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::home::SOCKET_PATH_LIMIT;

/// The folder of this process's notify sockets, chosen once.
static FOLDER: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The longest socket name in the folder: `/`, a pid (10 digits), `.`, a
/// counter (20 digits).
const LONGEST_NAME: usize = 32;

/// Chooses the folder for `home` (the daemon calls this at start, which
/// also removes the sockets a dead eco left there). Later calls keep the
/// first choice.
pub fn init(home: &Path) {
    let _ = FOLDER.get_or_init(|| choose(home).map_err(|err| err.to_string()));
}

/// As [`init`], after `eco update`: this process's own sockets are the
/// running instances', handed over; only dead processes' are removed.
pub fn init_keeping_own(home: &Path) {
    KEEP_OWN.store(true, std::sync::atomic::Ordering::SeqCst);
    init(home);
}

/// Sockets of a dead daemon that the running apps still use (adopted after
/// a crash, or handed over by `eco update`): the sweep leaves them.
static SPARE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Names sockets the sweep must leave (call before [`init`]).
pub fn spare(paths: Vec<PathBuf>) {
    SPARE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .extend(paths);
}

/// Set after `eco update` (see [`init_keeping_own`]).
static KEEP_OWN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The folder, chosen on first use from `ECO_HOME` (`eco up -F`).
pub fn folder() -> io::Result<&'static Path> {
    FOLDER
        .get_or_init(|| choose(&crate::paths::Paths::from_env().home).map_err(|e| e.to_string()))
        .as_deref()
        .map_err(|err| io::Error::other(err.clone()))
}

/// `home/notify` when it is (or can be made) private and short enough,
/// else a fresh private folder elsewhere.
/// `<folder>/<eco pid>.<n>` for a new socket, with the value for the
/// app's environment; a file of that name left by an earlier process with
/// this pid is removed first.
pub fn socket_path(n: u64) -> io::Result<(PathBuf, String)> {
    let path = folder()?.join(format!("{}.{n}", std::process::id()));
    let env_value = path
        .to_str()
        .ok_or_else(|| io::Error::other("the notify folder's path is not UTF-8"))?
        .to_owned();
    match std::fs::remove_file(&path) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
        _ => Ok((path, env_value)),
    }
}

fn choose(home: &Path) -> io::Result<PathBuf> {
    let dir = crate::paths::Paths::new(home.to_path_buf()).notify();
    if fits(&dir) {
        match in_home(home, &dir) {
            Ok(()) => {
                sweep(&dir);
                return Ok(dir);
            }
            Err(err) => {
                tracing::warn!(%err, dir = %dir.display(), "cannot use the notify folder in ECO_HOME; using a private one elsewhere");
            }
        }
    }
    fallback()
}

/// Whether every socket name fits in `sun_path` under `dir`.
/// (and the path can be put in NOTIFY_SOCKET: UTF-8).
fn fits(dir: &Path) -> bool {
    dir.to_str().is_some() && dir.as_os_str().len() + LONGEST_NAME < SOCKET_PATH_LIMIT
}

/// Creates `home/notify` (0700, no link followed, ours) inside a trusted home.
fn in_home(home: &Path, dir: &Path) -> io::Result<()> {
    crate::home::prepare(home)?;
    crate::home::private_dir(dir)?;
    private(dir)
}

/// Refuses a folder others may enter: `private_dir` keeps the mode of a
/// folder that already existed.
fn private(dir: &Path) -> io::Result<()> {
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} has mode {:03o}: other users could reach the notify sockets (run `chmod 700 {}`)",
                dir.display(),
                meta.mode() & 0o777,
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// A fresh `eco-notify-XXXXXX` (mode 0700) under `$XDG_RUNTIME_DIR`, or
/// `/tmp` when that is unset or too long.
fn fallback() -> io::Result<PathBuf> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_absolute() && fits(&d.join("eco-notify-XXXXXX")));
    let base = runtime.unwrap_or_else(|| PathBuf::from("/tmp"));
    let dir = nix::unistd::mkdtemp(&base.join("eco-notify-XXXXXX")).map_err(io::Error::from)?;
    private(&dir)?;
    Ok(dir)
}

/// Removes the sockets of ecos that are gone (their pid, the part before
/// the dot, runs no more) and any that carry this process's own pid (left
/// by an earlier process that had it): their files only.
fn sweep(dir: &Path) {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner(&name.to_string_lossy()) else {
            continue;
        };
        let keep_own = KEEP_OWN.load(std::sync::atomic::Ordering::SeqCst);
        let spared = SPARE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&entry.path());
        if spared {
            continue;
        }
        if (pid == own && !keep_own) || !crate::procfs::alive(i32::try_from(pid).unwrap_or(0)) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The eco pid a socket name (`<pid>.<n>`) starts with.
fn owner(name: &str) -> Option<u32> {
    let (pid, n) = name.split_once('.')?;
    n.parse::<u64>().ok()?;
    pid.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn names_say_which_eco_made_them() {
        assert_eq!(owner("123.4"), Some(123));
        assert_eq!(owner("123"), None);
        assert_eq!(owner("x.4"), None);
        assert_eq!(owner("12.x"), None);
    }

    #[test]
    fn a_long_home_gets_a_private_folder_elsewhere() {
        let long = PathBuf::from(format!("/tmp/{}", "h".repeat(80)));
        let dir = choose(&long).expect("a folder");
        assert!(!dir.starts_with(&long), "{}", dir.display());
        assert!(fits(&dir));
        let meta = std::fs::symlink_metadata(&dir).expect("stat");
        assert!(meta.is_dir());
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let _ = std::fs::remove_dir(&dir);
    }

    #[test]
    fn the_home_folder_is_private_and_swept_of_dead_ecos_sockets() {
        let home = tempfile::tempdir().expect("tempdir");
        let dir = home.path().join("notify");
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        // pid_max is at most 2^22: this pid runs nowhere.
        let stale = dir.join("4294967.1");
        let live = dir.join("1.1");
        let other = dir.join("keep-me");
        for file in [&stale, &live, &other] {
            std::fs::write(file, "").expect("write");
        }
        assert_eq!(choose(home.path()).expect("folder"), dir);
        assert!(!stale.exists() && live.exists() && other.exists());
        // A folder others may enter is not used.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let elsewhere = choose(home.path()).expect("folder");
        assert_ne!(elsewhere, dir);
        let _ = std::fs::remove_dir(&elsewhere);
    }
}
