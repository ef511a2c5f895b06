//! Reading files that an app or a user controls: a `pid_file`, an
//! `env_file`, an ecosystem file. Whoever controls the path can put a FIFO
//! there (an open that waits for a writer for ever), `/dev/zero` (a read
//! that never ends), a symbolic link, or a file of gigabytes. Every such
//! read in eco goes through this module, which:
//!
//! - opens with `O_NONBLOCK|O_CLOEXEC`, and `O_NOFOLLOW` where the file's
//!   contract allows it ([`Rules::PID_FILE`]: a daemon writes a plain file);
//! - checks the *opened* file with `fstat` (no swap between a check and the
//!   open) and refuses anything but a regular file;
//! - reads at most `limit + 1` bytes, so a file that grew after the check is
//!   refused without being read whole;
//! - in the daemon, runs off its one thread ([`read_off_loop`], [`off_loop`])
//!   with a timeout: a regular file on a hung network mount still blocks.
//!
//! The messages say what is wrong with the file; callers put the file's role
//! and path in front and a fix behind (`cannot read env file X: …`).

use std::fs::{File, FileType};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How one kind of file may be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// The most bytes read; a larger file is refused.
    pub limit: u64,
    /// Whether a symbolic link as the last component is followed. Users
    /// link env and ecosystem files; nothing links a pid file for a reason.
    pub follow_links: bool,
}

impl Rules {
    /// A pid file: a number and a newline. Never followed through a link,
    /// which would let the app point eco at any file on the host.
    pub const PID_FILE: Rules = Rules {
        limit: 4096,
        follow_links: false,
    };

    /// An ecosystem or env file: a few KB, often linked from elsewhere.
    pub const fn config(limit: u64) -> Rules {
        Rules {
            limit,
            follow_links: true,
        }
    }
}

/// Why a file was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A FIFO, device, folder or socket: reading it could block or never end.
    #[error("not a regular file (it is {kind})")]
    NotRegular { kind: &'static str },
    /// A symbolic link where [`Rules::follow_links`] is off.
    #[error("it is a symbolic link, which eco does not follow here")]
    Symlink,
    #[error("file too large ({size} bytes; the limit is {})", limit_text(*.limit))]
    TooLarge { size: u64, limit: u64 },
    #[error("the file is not UTF-8 text")]
    NotUtf8,
    /// The read did not return in time (a hung network mount).
    #[error("no answer from the file system within {} (a hung network mount?)", humantime::format_duration(*.after))]
    TimedOut { after: Duration },
    #[error("{0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    /// True when nothing is at the path (yet).
    pub fn is_missing(&self) -> bool {
        matches!(self, ReadError::Io(err) if err.kind() == io::ErrorKind::NotFound)
    }
}

/// `1048576` → "1 MiB", for messages.
fn limit_text(limit: u64) -> String {
    if limit >= 1024 * 1024 && limit.is_multiple_of(1024 * 1024) {
        format!("{} MiB", limit / (1024 * 1024))
    } else {
        format!("{limit} bytes")
    }
}

/// Opens `path` for reading by `rules` and checks that it is a regular file
/// of at most `rules.limit` bytes. Never blocks on a FIFO.
pub fn open(path: &Path, rules: Rules) -> Result<File, ReadError> {
    // O_NONBLOCK: opening a FIFO for reading waits for a writer otherwise.
    // std adds O_CLOEXEC.
    let mut flags = libc::O_NONBLOCK;
    if !rules.follow_links {
        flags |= libc::O_NOFOLLOW;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|err| {
            if !rules.follow_links && err.raw_os_error() == Some(libc::ELOOP) {
                ReadError::Symlink
            } else {
                ReadError::Io(err)
            }
        })?;
    // Checked on the open file, so a swap after a path check cannot sneak
    // a FIFO or device in.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular {
            kind: kind_of(meta.file_type()),
        });
    }
    if meta.len() > rules.limit {
        return Err(ReadError::TooLarge {
            size: meta.len(),
            limit: rules.limit,
        });
    }
    Ok(file)
}

/// Reads `path` as text by `rules`. Blocks on a hung mount: in the daemon,
/// use [`read_off_loop`].
pub fn read_text(path: &Path, rules: Rules) -> Result<String, ReadError> {
    let file = open(path, rules)?;
    read_at_most(file, rules.limit)
}

/// [`read_text`] on a blocking thread, given up after `limit`: the caller's
/// loop never waits on a file system.
pub async fn read_off_loop(
    path: PathBuf,
    rules: Rules,
    limit: Duration,
) -> Result<String, ReadError> {
    off_loop(limit, move || read_text(&path, rules))
        .await
        .unwrap_or(Err(ReadError::TimedOut { after: limit }))
}

/// Runs `work` on tokio's blocking pool and waits at most `limit` for it;
/// `None` when it did not finish in time (it goes on, detached: a thread
/// stuck in the kernel cannot be cancelled) or panicked.
pub async fn off_loop<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce() -> T + Send + 'static,
) -> Option<T> {
    match tokio::time::timeout(limit, tokio::task::spawn_blocking(work)).await {
        Ok(Ok(value)) => Some(value),
        Ok(Err(_)) | Err(_) => None,
    }
}

/// Reads `file` whole, but never more than `limit + 1` bytes: a file that
/// grew after the size check is still refused without being read.
fn read_at_most(file: File, limit: u64) -> Result<String, ReadError> {
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1)).read_to_end(&mut bytes)?;
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > limit {
        return Err(ReadError::TooLarge { size, limit });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotUtf8)
}

/// How a non-regular file is named in messages.
pub fn kind_of(kind: FileType) -> &'static str {
    if kind.is_symlink() {
        "a symbolic link"
    } else if kind.is_dir() {
        "a folder"
    } else if kind.is_fifo() {
        "a named pipe"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "an unknown kind of file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: Rules = Rules::config(1024 * 1024);

    #[test]
    fn a_fifo_is_refused_without_blocking() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).expect("mkfifo");
        // No writer ever opens it: a blocking open would hang this test.
        for rules in [CONFIG, Rules::PID_FILE] {
            let err = read_text(&fifo, rules).expect_err("fifo");
            assert_eq!(err.to_string(), "not a regular file (it is a named pipe)");
        }
    }

    #[test]
    fn devices_and_folders_are_refused() {
        let err = read_text(Path::new("/dev/zero"), CONFIG).expect_err("device");
        assert_eq!(
            err.to_string(),
            "not a regular file (it is a character device)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let err = read_text(dir.path(), CONFIG).expect_err("folder");
        assert_eq!(err.to_string(), "not a regular file (it is a folder)");
    }

    #[test]
    fn a_link_is_followed_only_where_the_rules_say() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("real");
        std::fs::write(&target, "42\n").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        assert_eq!(read_text(&link, CONFIG).expect("followed"), "42\n");
        let err = read_text(&link, Rules::PID_FILE).expect_err("not followed");
        assert!(matches!(err, ReadError::Symlink), "{err:?}");
        // A link to /dev/zero is refused either way, without reading it.
        let zero = dir.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        assert!(matches!(
            read_text(&zero, Rules::PID_FILE),
            Err(ReadError::Symlink)
        ));
        assert!(matches!(
            read_text(&zero, CONFIG),
            Err(ReadError::NotRegular { .. })
        ));
    }

    #[test]
    fn the_limit_is_inclusive() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, "x".repeat(4096)).expect("write");
        assert_eq!(
            read_text(&file, Rules::PID_FILE)
                .expect("at the limit")
                .len(),
            4096
        );
        std::fs::write(&file, "x".repeat(4097)).expect("write");
        let err = read_text(&file, Rules::PID_FILE).expect_err("over");
        assert_eq!(
            err.to_string(),
            "file too large (4097 bytes; the limit is 4096 bytes)"
        );
    }

    /// A file that grows after the size check is still read only up to
    /// `limit + 1` bytes.
    #[test]
    fn reading_stops_one_byte_past_the_limit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, "x".repeat(10_000)).expect("write");
        let err = read_at_most(File::open(&file).expect("open"), 100).expect_err("over");
        assert!(
            matches!(
                err,
                ReadError::TooLarge {
                    size: 101,
                    limit: 100
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn missing_is_told_apart() {
        let err = read_text(Path::new("/nonexistent/eco.pid"), Rules::PID_FILE).expect_err("none");
        assert!(err.is_missing());
    }

    #[test]
    fn off_loop_gives_up_after_its_limit() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let started = std::time::Instant::now();
        let result = runtime.block_on(off_loop(Duration::from_millis(50), || {
            std::thread::sleep(Duration::from_secs(2));
        }));
        assert!(result.is_none());
        assert!(started.elapsed() < Duration::from_secs(1));
        let read = runtime.block_on(read_off_loop(
            PathBuf::from("/dev/zero"),
            Rules::PID_FILE,
            Duration::from_secs(5),
        ));
        assert!(matches!(read, Err(ReadError::NotRegular { .. })));
        // The runtime's drop waits for the sleeping thread; leak it instead.
        runtime.shutdown_background();
    }
}
