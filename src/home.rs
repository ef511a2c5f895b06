//! Whether an `ECO_HOME` can be trusted, and how files are made in it.
//!
//! An `ECO_HOME` holds the socket that runs commands as its owner and a
//! `state.json` with every app's env (secrets) and argv (code the daemon
//! runs). So, as ssh's StrictModes and tmux do, eco refuses a home that
//! another user owns, that others may write to, or that is a symbolic link
//! (checked with lstat); it never changes the mode of a folder it did not
//! create; and it creates everything under the home without following
//! symbolic links (`O_NOFOLLOW`, `O_EXCL` for temporary files, a type and
//! owner check after `mkdir`). No policy here beyond that, and no paths:
//! `paths` says where things are.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// `sun_path` holds 108 bytes, the terminating NUL included.
pub const SOCKET_PATH_LIMIT: usize = 108;

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error(
        "ECO_HOME {path} belongs to another user ({owner}); eco refuses a folder it does not own\n  help: set ECO_HOME to a folder of your own (the default is ~/.eco)"
    )]
    NotOwned { path: PathBuf, owner: String },
    #[error(
        "ECO_HOME {path} is a symbolic link (to {target}); eco refuses it, so no one can redirect it\n  help: set ECO_HOME to the real folder"
    )]
    Symlink { path: PathBuf, target: String },
    #[error("ECO_HOME {path} is not a folder\n  help: set ECO_HOME to a folder of your own")]
    NotFolder { path: PathBuf },
    #[error(
        "ECO_HOME {path} can be written by other users (mode {mode:03o}); eco refuses it\n  help: run `chmod go-w {path}`, or set ECO_HOME to a private folder"
    )]
    Writable { path: PathBuf, mode: u32 },
    #[error(
        "{path} belongs to another user ({owner}); eco refuses to use it\n  help: remove it, or set ECO_HOME to a folder of your own"
    )]
    ForeignFile { path: PathBuf, owner: String },
    #[error(
        "{path} is not what eco made there (a symbolic link or another kind of file); eco refuses to follow it\n  help: remove it"
    )]
    Unexpected { path: PathBuf },
    #[error(
        "the socket path {path} is {len} bytes; Unix socket paths must be shorter than {SOCKET_PATH_LIMIT} bytes\n  help: set ECO_HOME to a shorter folder (e.g. ~/.eco)"
    )]
    SocketTooLong { path: PathBuf, len: usize },
    #[error("cannot {doing} {path}: {source}")]
    Io {
        doing: &'static str,
        path: PathBuf,
        source: io::Error,
    },
}

impl From<HomeError> for io::Error {
    fn from(err: HomeError) -> io::Error {
        match err {
            HomeError::Io { source, .. } => source,
            other => io::Error::new(io::ErrorKind::PermissionDenied, other.to_string()),
        }
    }
}

fn io_err<'a>(doing: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> HomeError + 'a {
    move |source| HomeError::Io {
        doing,
        path: path.to_path_buf(),
        source,
    }
}

/// The user name of `uid`, or `uid N`.
pub fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{}, uid {uid}", user.name),
        _ => format!("uid {uid}"),
    }
}

fn own_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Checks an existing home: a real folder (not a link), the caller's own,
/// not writable by others. A missing home is fine (`Ok(false)`).
pub fn check(home: &Path) -> Result<bool, HomeError> {
    let meta = match std::fs::symlink_metadata(home) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(err) => return Err(io_err("inspect", home)(err)),
    };
    if meta.file_type().is_symlink() {
        let target =
            std::fs::read_link(home).map_or_else(|_| "?".into(), |t| t.display().to_string());
        return Err(HomeError::Symlink {
            path: home.to_path_buf(),
            target,
        });
    }
    if !meta.is_dir() {
        return Err(HomeError::NotFolder {
            path: home.to_path_buf(),
        });
    }
    if meta.uid() != own_uid() {
        return Err(HomeError::NotOwned {
            path: home.to_path_buf(),
            owner: user_name(meta.uid()),
        });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(HomeError::Writable {
            path: home.to_path_buf(),
            mode: meta.mode() & 0o7777,
        });
    }
    Ok(true)
}

/// Refuses a socket path the kernel cannot bind.
pub fn check_socket_path(socket: &Path) -> Result<(), HomeError> {
    let len = socket.as_os_str().len();
    if len >= SOCKET_PATH_LIMIT {
        return Err(HomeError::SocketTooLong {
            path: socket.to_path_buf(),
            len,
        });
    }
    Ok(())
}

/// Makes sure the home exists and can be trusted: creates it (mode 0700)
/// when missing, and checks it either way. An existing folder keeps its
/// mode: eco changes no folder it did not create.
pub fn prepare(home: &Path) -> Result<(), HomeError> {
    if check(home)? {
        return Ok(());
    }
    if let Some(parent) = home.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("create", parent))?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(home) {
        Ok(()) => {
            // The umask may have taken bits away, never added any; set the
            // mode exactly on the folder just made (not following a link).
            let meta = std::fs::symlink_metadata(home).map_err(io_err("inspect", home))?;
            if meta.is_dir() && !meta.file_type().is_symlink() && meta.uid() == own_uid() {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(home, std::fs::Permissions::from_mode(0o700))
                    .map_err(io_err("set the mode of", home))?;
            }
        }
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(io_err("create", home)(err)),
    }
    check(home).map(|_| ())
}

/// Creates `dir` (mode 0700) if missing and checks that it is a real folder
/// of the caller's: for folders inside the home (`logs`, `logs/<project>`).
pub fn private_dir(dir: &Path) -> Result<(), HomeError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(io_err("create", dir)(err)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_err("inspect", dir))?;
    if !meta.is_dir() || meta.file_type().is_symlink() {
        return Err(HomeError::Unexpected {
            path: dir.to_path_buf(),
        });
    }
    if meta.uid() != own_uid() {
        return Err(HomeError::ForeignFile {
            path: dir.to_path_buf(),
            owner: user_name(meta.uid()),
        });
    }
    Ok(())
}

/// Refuses an open file another user owns or that is not a regular file.
pub fn check_file(file: &File, path: &Path) -> Result<(), HomeError> {
    let meta = file.metadata().map_err(io_err("inspect", path))?;
    if !meta.is_file() {
        return Err(HomeError::Unexpected {
            path: path.to_path_buf(),
        });
    }
    if meta.uid() != own_uid() {
        return Err(HomeError::ForeignFile {
            path: path.to_path_buf(),
            owner: user_name(meta.uid()),
        });
    }
    Ok(())
}

/// How a file in the home is opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Open {
    /// Create if missing, write at the end (logs).
    Append,
    /// Create if missing, keep the content (the lock).
    Keep,
    /// Create if missing, empty it (the pid file).
    Truncate,
    /// Read an existing file.
    Read,
}

/// Opens a file in the home without following a symbolic link, created
/// with mode 0600, and checked to be a regular file of the caller's.
pub fn open(path: &Path, how: Open) -> Result<File, HomeError> {
    let mut options = OpenOptions::new();
    options
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .mode(0o600);
    match how {
        Open::Append => options.create(true).append(true),
        Open::Keep => options.create(true).write(true).truncate(false),
        Open::Truncate => options.create(true).write(true).truncate(true),
        Open::Read => options.read(true),
    };
    let file = options.open(path).map_err(|err| {
        if err.raw_os_error() == Some(libc::ELOOP) {
            HomeError::Unexpected {
                path: path.to_path_buf(),
            }
        } else {
            io_err("open", path)(err)
        }
    })?;
    check_file(&file, path)?;
    Ok(file)
}

/// Creates a fresh temporary file (`O_EXCL`, no link followed, 0600): a
/// leftover from a crash is removed first, never written through.
pub fn create_temp(path: &Path) -> Result<File, HomeError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(io_err("remove", path)(err)),
    }
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io_err("create", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlinked_home_is_refused_and_its_target_keeps_its_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        assert!(matches!(prepare(&link), Err(HomeError::Symlink { .. })));
        let mode = std::fs::metadata(&real).expect("stat").mode() & 0o777;
        assert_eq!(mode, 0o755);
        // An existing folder of ours is used as it is.
        prepare(&real).expect("own folder");
        assert_eq!(
            std::fs::metadata(&real).expect("stat").mode() & 0o777,
            0o755
        );
    }

    #[test]
    fn a_new_home_is_private_and_files_in_it_follow_no_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("a/b/home");
        prepare(&home).expect("created");
        assert_eq!(
            std::fs::metadata(&home).expect("stat").mode() & 0o777,
            0o700
        );
        let elsewhere = dir.path().join("elsewhere");
        std::fs::write(&elsewhere, "keep").expect("write");
        let planted = home.join("state.json.tmp");
        std::os::unix::fs::symlink(&elsewhere, &planted).expect("symlink");
        assert!(open(&planted, Open::Append).is_err());
        let mut temp = create_temp(&planted).expect("fresh temp");
        std::io::Write::write_all(&mut temp, b"new").expect("write");
        assert_eq!(std::fs::read_to_string(&elsewhere).expect("read"), "keep");
        let logs = home.join("logs");
        std::os::unix::fs::symlink(dir.path(), &logs).expect("symlink");
        assert!(matches!(
            private_dir(&logs),
            Err(HomeError::Unexpected { .. })
        ));
    }

    #[test]
    fn a_socket_path_over_the_limit_is_refused() {
        let long = PathBuf::from(format!("/{}/eco.sock", "x".repeat(120)));
        let err = check_socket_path(&long).expect_err("too long");
        assert!(err.to_string().contains("shorter than 108 bytes"), "{err}");
        check_socket_path(Path::new("/tmp/eco.sock")).expect("short");
    }
}
