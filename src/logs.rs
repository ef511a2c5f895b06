//! Captured output on disk: `<app>.out.log` and `<app>.err.log` per app,
//! lines prefixed `app.N | ` when the app has several instances and with an
//! RFC 3339 time when `log_time` is set, rotated by size. One writer thread
//! does all file I/O, so a slow disk never blocks an app or the engine;
//! whole lines are written at once and rotation happens between writes, so
//! no line is torn or lost. New lines are also broadcast for `logs -f`.
//!
//! A log file deleted or moved away (by hand, or logrotate's
//! move-and-create) is reopened: at every start of its app, and within a
//! second while writing (the path's inode is compared with the open
//! file's). Output is bytes; it is decoded lossily wherever it becomes
//! text, so invalid UTF-8 never hides a line.
//!
//! An app can write its own log paths, so nothing at a log path can block
//! the writer (which writes every app's logs): a path is opened without
//! following a link and without blocking (`O_NOFOLLOW|O_NONBLOCK`), and
//! only a regular file is written. Under `ECO_HOME/logs`, where eco owns
//! the files, anything else found there (a FIFO, a device, a link) is
//! removed and a fresh file made; elsewhere (`out_file`) it is refused, and
//! the refusal is shown by `describe`. Each app's queue to the writer is
//! bounded ([`LOG_BUDGET`] per stream): an app that outpaces its file is
//! held back at its own pipe, never buffered without bound.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::broadcast;

use crate::paths::Paths;
use crate::runtime::output::Backlog;
use crate::runtime::pipe_head::Receipt;
use crate::runtime::{Event, InstanceId, Observer, Stream};
use crate::spec::ProjectSpec;

/// How an app's output is written.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSettings {
    pub out: PathBuf,
    pub err: PathBuf,
    pub prefix_instances: bool,
    pub time: bool,
    pub max_size: u64,
    pub keep: u32,
}

/// A line as broadcast to followers.
#[derive(Clone, Debug)]
pub struct LiveLine {
    pub project: String,
    pub app: String,
    pub stream: Stream,
    pub text: String,
}

/// The most output of one app's stream that waits for the writer: the
/// app is held back at its pipe beyond it. Four of the pump's largest
/// reads, so a writer that keeps up never holds an app back.
pub const LOG_BUDGET: usize = 1024 * 1024;

/// Where and how an app logs, with its two queues to the writer (kept
/// across reconfigurations, as the pumps of running instances hold them).
struct AppLog {
    settings: Arc<LogSettings>,
    out: Arc<Backlog>,
    err: Arc<Backlog>,
}

enum Job {
    Write {
        file: PathBuf,
        settings: Arc<LogSettings>,
        bytes: Vec<u8>,
        backlog: Arc<Backlog>,
        /// Dropped once the bytes are written: they leave the app's pipe.
        receipt: Receipt,
    },
    Flush(std::sync::mpsc::Sender<()>),
    /// `eco flush`: empty these files, remove their rotated copies.
    Truncate(Vec<PathBuf>),
}

/// How often an open file's path is checked while writing.
const RECHECK_EVERY: Duration = Duration::from_secs(1);

/// The daemon's observer: output to files, events to the daemon log.
pub struct LogFiles {
    paths: Paths,
    settings: Mutex<HashMap<(String, String), Arc<AppLog>>>,
    jobs: Mutex<Sender<Job>>,
    live: broadcast::Sender<Arc<LiveLine>>,
    /// The last write error per file (a full disk), shown by `describe`.
    errors: Arc<Mutex<HashMap<PathBuf, String>>>,
    /// Files of apps that started since the writer last looked: reopened
    /// before their next write if their paths name other files now. Left
    /// here rather than sent, so a start does not wake the writer.
    recheck: Arc<Mutex<HashSet<PathBuf>>>,
}

impl LogFiles {
    pub fn new(paths: Paths) -> Arc<LogFiles> {
        let (tx, rx) = channel();
        let errors = Arc::new(Mutex::new(HashMap::new()));
        let thread_errors = Arc::clone(&errors);
        let recheck = Arc::new(Mutex::new(HashSet::new()));
        let thread_recheck = Arc::clone(&recheck);
        let root = paths.logs();
        std::thread::Builder::new()
            .name("eco-logs".into())
            .spawn(move || writer(&rx, &thread_errors, &thread_recheck, &root))
            .ok();
        let (live, _) = broadcast::channel(4096);
        Arc::new(LogFiles {
            paths,
            settings: Mutex::new(HashMap::new()),
            jobs: Mutex::new(tx),
            live,
            errors,
            recheck,
        })
    }

    /// Records where and how each app of `spec` logs.
    pub fn configure(&self, spec: &ProjectSpec) {
        let mut map = self.settings.lock().unwrap_or_else(PoisonError::into_inner);
        let mut old: HashMap<(String, String), Arc<AppLog>> = HashMap::new();
        map.retain(|key, log| {
            if key.0 == spec.name {
                old.insert(key.clone(), Arc::clone(log));
                false
            } else {
                true
            }
        });
        for app in spec.apps.values() {
            let key = (spec.name.clone(), app.name.clone());
            let (out, err) = match old.get(&key) {
                Some(log) => (Arc::clone(&log.out), Arc::clone(&log.err)),
                None => (
                    Arc::new(Backlog::new(LOG_BUDGET)),
                    Arc::new(Backlog::new(LOG_BUDGET)),
                ),
            };
            let settings = Arc::new(self.settings_for(&spec.name, app));
            map.insert(key, Arc::new(AppLog { settings, out, err }));
        }
    }

    fn app_log(&self, id: &InstanceId) -> Option<Arc<AppLog>> {
        self.settings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(id.project.clone(), id.app.clone()))
            .cloned()
    }

    /// The log settings of one app.
    pub fn settings_for(&self, project: &str, app: &crate::spec::AppSpec) -> LogSettings {
        let s = &app.settings;
        LogSettings {
            out: s
                .out_file
                .clone()
                .unwrap_or_else(|| self.paths.app_log(project, &app.name, "out")),
            err: s
                .err_file
                .clone()
                .unwrap_or_else(|| self.paths.app_log(project, &app.name, "err")),
            prefix_instances: app.instances > 1,
            time: s.log_time,
            max_size: s.log_max_size,
            keep: s.log_keep,
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveLine>> {
        self.live.subscribe()
    }

    /// The last write error of a file, if the latest write failed.
    pub fn error_for(&self, file: &Path) -> Option<String> {
        self.errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(file)
            .cloned()
    }

    /// Empties these log files (and removes their rotated copies), between
    /// whole lines; returns once done.
    pub fn truncate(&self, files: Vec<PathBuf>) {
        self.send(Job::Truncate(files));
        self.flush();
    }

    fn send(&self, job: Job) {
        let _ = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(job);
    }

    /// Waits until everything queued so far is on disk.
    pub fn flush(&self) {
        let (tx, rx) = channel();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Job::Flush(tx));
        if sent.is_ok() {
            let _ = rx.recv();
        }
    }
}

impl Observer for LogFiles {
    fn output(&self, id: &InstanceId, stream: Stream, lines: &[u8], receipt: Receipt) {
        let Some(log) = self.app_log(id) else { return };
        let settings = &log.settings;
        let prefix = settings
            .prefix_instances
            .then(|| format!("{}.{} | ", id.app, id.index));
        let bytes = if prefix.is_none() && !settings.time {
            lines.to_vec()
        } else {
            let stamp = settings.time.then(|| {
                let mut t =
                    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
                t.push(' ');
                t
            });
            let mut out = Vec::with_capacity(lines.len() + 48);
            for line in lines.split_inclusive(|b| *b == b'\n') {
                if let Some(stamp) = &stamp {
                    out.extend_from_slice(stamp.as_bytes());
                }
                if let Some(prefix) = &prefix {
                    out.extend_from_slice(prefix.as_bytes());
                }
                out.extend_from_slice(line);
            }
            out
        };
        if self.live.receiver_count() > 0 {
            let text = String::from_utf8_lossy(&bytes);
            for line in text.lines() {
                let _ = self.live.send(Arc::new(LiveLine {
                    project: id.project.clone(),
                    app: id.app.clone(),
                    stream,
                    text: line.to_owned(),
                }));
            }
        }
        let (file, backlog) = match stream {
            Stream::Out => (settings.out.clone(), Arc::clone(&log.out)),
            Stream::Err => (settings.err.clone(), Arc::clone(&log.err)),
        };
        let len = bytes.len();
        backlog.queued(len);
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Job::Write {
                file,
                settings: Arc::clone(settings),
                bytes,
                backlog,
                receipt,
            });
        if let Err(std::sync::mpsc::SendError(Job::Write { backlog, .. })) = sent {
            // No writer (it could not start): never hold the app back.
            backlog.written(len);
        }
    }

    fn backlog(&self, id: &InstanceId, stream: Stream) -> Option<Arc<Backlog>> {
        let log = self.app_log(id)?;
        Some(match stream {
            Stream::Out => Arc::clone(&log.out),
            Stream::Err => Arc::clone(&log.err),
        })
    }

    /// Output to `/dev/null` is not read at all (nor shown by `logs -f`).
    fn captures(&self, settings: &crate::spec::Settings, stream: Stream) -> bool {
        let file = match stream {
            Stream::Out => &settings.out_file,
            Stream::Err => &settings.err_file,
        };
        file.as_deref() != Some(Path::new("/dev/null"))
    }

    /// `out_file` and `err_file` name one file: one pipe feeds it.
    fn merges(&self, settings: &crate::spec::Settings) -> bool {
        settings.out_file.is_some() && settings.out_file == settings.err_file
    }

    fn event(&self, id: &InstanceId, event: &Event) {
        let instance = format!("{}/{}.{}", id.project, id.app, id.index);
        if let Event::Started { .. } = event
            && let Some(log) = self.app_log(id)
        {
            let mut recheck = self.recheck.lock().unwrap_or_else(PoisonError::into_inner);
            recheck.insert(log.settings.out.clone());
            recheck.insert(log.settings.err.clone());
        }
        match event {
            Event::Started { pid } => tracing::info!(%instance, pid, "started"),
            Event::Ready => tracing::info!(%instance, "ready"),
            Event::NotReady { reason } => tracing::warn!(%instance, %reason, "not ready"),
            Event::Exited { exit } => tracing::info!(%instance, %exit, "exited"),
            Event::Restarting { delay } => {
                tracing::info!(%instance, delay_ms = delay.as_millis(), "restarting");
            }
            Event::Errored { exit } => tracing::warn!(%instance, %exit, "errored"),
            Event::Stopped { exit } => tracing::info!(%instance, %exit, "stopped"),
            Event::SpawnFailed { error } => tracing::warn!(%instance, %error, "spawn failed"),
            Event::WatchdogTimeout => {
                tracing::warn!(%instance, "no WATCHDOG=1 in time: SIGABRT, then a restart");
            }
            Event::Unhealthy { failures } => {
                tracing::warn!(%instance, failures, "health check failed");
            }
            Event::HandedOver { pid, guessed } => {
                tracing::info!(%instance, pid, guessed, "supervising the daemon the launcher left");
            }
            Event::Restarted { reason } => {
                tracing::info!(%instance, reason = reason.name(), "restarted");
            }
        }
    }
}

/// An open log file, its size, and when its path was last checked.
struct OpenLog {
    file: File,
    size: u64,
    checked: Instant,
}

impl OpenLog {
    /// True while `path` still names this open file.
    fn is_at(&self, path: &Path) -> bool {
        match (std::fs::symlink_metadata(path), self.file.metadata()) {
            (Ok(at_path), Ok(open)) => at_path.ino() == open.ino() && at_path.dev() == open.dev(),
            _ => false,
        }
    }
}

/// Where the writer's files may be: under `root` (ECO_HOME/logs) nothing
/// is followed or adopted; elsewhere (`out_file`) the user chose the path.
struct Files {
    open: HashMap<PathBuf, OpenLog>,
    root: PathBuf,
}

/// The writer thread: appends, rotates, reopens, empties, records errors.
fn writer(
    jobs: &Receiver<Job>,
    errors: &Mutex<HashMap<PathBuf, String>>,
    recheck: &Mutex<HashSet<PathBuf>>,
    root: &Path,
) {
    let mut files = Files {
        open: HashMap::new(),
        root: root.to_path_buf(),
    };
    while let Ok(job) = jobs.recv() {
        let due = std::mem::take(&mut *recheck.lock().unwrap_or_else(PoisonError::into_inner));
        for path in due {
            if files.open.get(&path).is_some_and(|log| !log.is_at(&path)) {
                files.open.remove(&path);
            }
        }
        match job {
            Job::Flush(done) => {
                let _ = done.send(());
            }
            Job::Truncate(paths) => {
                for path in paths {
                    if let Err(err) = empty(&mut files, &path) {
                        tracing::warn!(file = %path.display(), %err, "cannot empty the log");
                    }
                }
            }
            Job::Write {
                file,
                settings,
                bytes,
                backlog,
                receipt,
            } => {
                let result = append(&mut files, &file, &settings, &bytes);
                // Written or given up on (a full disk): out of the pipe.
                drop(receipt);
                backlog.written(bytes.len());
                let mut errors = errors.lock().unwrap_or_else(PoisonError::into_inner);
                match result {
                    Ok(()) => {
                        errors.remove(&file);
                    }
                    Err(err) => {
                        files.open.remove(&file);
                        let message = err.to_string();
                        if errors.get(&file) != Some(&message) {
                            tracing::warn!(file = %file.display(), error = %message, "cannot write the log");
                        }
                        errors.insert(file, message);
                    }
                }
            }
        }
    }
}

/// Appends whole lines, rotating first whenever the next lines would take
/// the file over `max_size` (a single longer line gets a file of its own).
fn append(
    files: &mut Files,
    path: &Path,
    settings: &LogSettings,
    mut bytes: &[u8],
) -> Result<(), LogError> {
    if path == Path::new("/dev/null") {
        // Read only for `ready: log`; thrown away as asked.
        return Ok(());
    }
    while !bytes.is_empty() {
        let log = open_log(files, path)?;
        let room = if settings.max_size == 0 {
            usize::MAX
        } else {
            usize::try_from(settings.max_size.saturating_sub(log.size)).unwrap_or(usize::MAX)
        };
        let take = if bytes.len() <= room {
            bytes.len()
        } else {
            match bytes[..room].iter().rposition(|b| *b == b'\n') {
                Some(end) => end + 1,
                None if log.size > 0 => 0,
                // A line longer than the limit, into an empty file.
                None => bytes
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(bytes.len(), |e| e + 1),
            }
        };
        if take > 0 {
            log.file.write_all(&bytes[..take])?;
            log.size += take as u64;
            bytes = &bytes[take..];
        }
        if !bytes.is_empty() {
            files.open.remove(path);
            rotate(path, settings.keep)?;
        }
    }
    Ok(())
}

/// The open file for `path`: opened when missing, and reopened when the
/// path names another file (or none) now, checked at most every second.
fn open_log<'a>(files: &'a mut Files, path: &Path) -> Result<&'a mut OpenLog, LogError> {
    if let Some(log) = files.open.get_mut(path)
        && log.checked.elapsed() >= RECHECK_EVERY
    {
        if log.is_at(path) {
            log.checked = Instant::now();
        } else {
            files.open.remove(path);
        }
    }
    if !files.open.contains_key(path) {
        let file = if path.starts_with(&files.root) {
            // Inside ECO_HOME: private folders, no link followed.
            let mut dir = files.root.clone();
            crate::home::private_dir(&dir).map_err(io::Error::from)?;
            if let Some(parent) = path.parent()
                && let Ok(rest) = parent.strip_prefix(&files.root)
            {
                for part in rest.components() {
                    dir.push(part);
                    crate::home::private_dir(&dir).map_err(io::Error::from)?;
                }
            }
            open_own(path)?
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            open_regular(path, 0o666)?
        };
        let size = file.metadata()?.len();
        files.open.insert(
            path.to_path_buf(),
            OpenLog {
                file,
                size,
                checked: Instant::now(),
            },
        );
    }
    files
        .open
        .get_mut(path)
        .ok_or_else(|| io::Error::other("this is a bug in eco: the log file vanished").into())
}

/// Why a log line was not written, as `describe` shows it after the path.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error(
        "is {0}, not a regular file; eco writes logs only to regular files (remove it, or set out_file/err_file to a file)"
    )]
    NotRegular(&'static str),
    #[error("cannot write: {0}")]
    Io(#[from] io::Error),
}

/// Opens a log file for appending, never blocking and never following a
/// link: whatever is at `path` is looked at first (a device is never
/// opened), then opened `O_NONBLOCK|O_NOFOLLOW` and checked again on the
/// open descriptor (the path may have changed in between). Created with
/// `mode` when missing.
fn open_regular(path: &Path, mode: u32) -> Result<File, LogError> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.is_file() => {
            return Err(LogError::NotRegular(crate::untrusted::kind_of(
                meta.file_type(),
            )));
        }
        Ok(_) => {}
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(err.into()),
    }
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|err| match err.raw_os_error() {
            Some(libc::ELOOP) => LogError::NotRegular("a symbolic link"),
            // O_NONBLOCK: a FIFO without a reader.
            Some(libc::ENXIO) => LogError::NotRegular("a named pipe"),
            _ => LogError::Io(err),
        })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(LogError::NotRegular(crate::untrusted::kind_of(
            meta.file_type(),
        )));
    }
    Ok(file)
}

/// Opens a log file under `ECO_HOME/logs`, where eco owns the files: what
/// is not a regular file of eco's user there (an app put a FIFO, a device
/// or a link in its place) is removed, and a fresh file made.
fn open_own(path: &Path) -> Result<File, LogError> {
    let own = |file: &File| {
        file.metadata()
            .is_ok_and(|m| m.uid() == nix::unistd::geteuid().as_raw())
    };
    match open_regular(path, 0o600) {
        Ok(file) if own(&file) => return Ok(file),
        Ok(_) => {
            tracing::warn!(file = %path.display(), "another user's file in the logs folder: replaced")
        }
        Err(LogError::NotRegular(kind)) => {
            tracing::warn!(file = %path.display(), kind, "not a regular file in the logs folder: replaced by a fresh log file");
        }
        Err(err) => return Err(err),
    }
    std::fs::remove_file(path).or_else(ignore_missing)?;
    let file = open_regular(path, 0o600)?;
    if own(&file) {
        Ok(file)
    } else {
        Err(LogError::NotRegular("another user's file"))
    }
}

/// Empties a log file in place (the app keeps its open pipe; eco appends,
/// so the next line lands at the start) and removes its rotated copies.
fn empty(files: &mut Files, path: &Path) -> Result<(), LogError> {
    let log = open_log(files, path)?;
    log.file.set_len(0)?;
    log.size = 0;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    if let (Some(dir), Some(name)) = (path.parent(), name)
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        for entry in entries.flatten() {
            let file = entry.file_name().to_string_lossy().into_owned();
            let rotated = file
                .strip_prefix(&name)
                .and_then(|rest| rest.strip_prefix('.'))
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if rotated {
                std::fs::remove_file(entry.path()).or_else(ignore_missing)?;
            }
        }
    }
    Ok(())
}

/// `app.out.log` → `app.out.log.1` → … → `app.out.log.KEEP`; the oldest goes.
pub(crate) fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    let numbered = |n: u32| {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    };
    if keep == 0 {
        return std::fs::remove_file(path).or_else(ignore_missing);
    }
    std::fs::remove_file(numbered(keep)).or_else(ignore_missing)?;
    for n in (1..keep).rev() {
        std::fs::rename(numbered(n), numbered(n + 1)).or_else(ignore_missing)?;
    }
    std::fs::rename(path, numbered(1)).or_else(ignore_missing)
}

fn ignore_missing(err: io::Error) -> io::Result<()> {
    if err.kind() == io::ErrorKind::NotFound {
        Ok(())
    } else {
        Err(err)
    }
}

/// The last `n` lines of a file (reading backwards from the end).
/// Only a regular file is read (a FIFO or a device at a log path would
/// block or never end), opened without blocking or following a link.
pub fn tail(path: &Path, n: usize) -> Vec<String> {
    let opened = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let Ok(mut file) = opened else {
        return Vec::new();
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return Vec::new();
    }
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return Vec::new();
    };
    let mut start = len;
    let mut chunk = 64 * 1024u64;
    loop {
        start = start.saturating_sub(chunk);
        if file.seek(SeekFrom::Start(start)).is_err() {
            return Vec::new();
        }
        let mut buf = Vec::new();
        if Read::by_ref(&mut file)
            .take(len - start)
            .read_to_end(&mut buf)
            .is_err()
        {
            return Vec::new();
        }
        // Lossy: a line with invalid UTF-8 is shown (with U+FFFD), and
        // never hides the lines after it.
        let lines: Vec<String> = buf
            .split(|b| *b == b'\n')
            .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
            .collect();
        let lines = match lines.split_last() {
            // The text after the last newline (empty when the file ends
            // with one).
            Some((last, rest)) if last.is_empty() => rest.to_vec(),
            _ => lines,
        };
        if lines.len() > n || start == 0 {
            let skip = lines.len().saturating_sub(n);
            return lines.into_iter().skip(skip).collect();
        }
        chunk *= 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_the_newest_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.out.log");
        let settings = LogSettings {
            out: path.clone(),
            err: path.clone(),
            prefix_instances: false,
            time: false,
            max_size: 10,
            keep: 2,
        };
        let mut open = Files {
            open: HashMap::new(),
            root: PathBuf::from("/nonexistent"),
        };
        for i in 0..5 {
            append(
                &mut open,
                &path,
                &settings,
                format!("line {i}\n").as_bytes(),
            )
            .expect("append");
        }
        assert_eq!(std::fs::read_to_string(&path).expect("current"), "line 4\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.out.log.1")).expect("1"),
            "line 3\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.out.log.2")).expect("2"),
            "line 2\n"
        );
        assert!(!dir.path().join("a.out.log.3").exists());
    }

    #[test]
    fn tail_reads_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.log");
        let text: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).expect("write");
        assert_eq!(tail(&path, 2), vec!["line 998", "line 999"]);
        assert_eq!(tail(&path, 5000).len(), 1000);
        assert!(tail(&dir.path().join("missing"), 3).is_empty());
    }

    #[test]
    fn invalid_utf8_hides_no_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.log");
        std::fs::write(&path, b"one\nbad\xffline\nthree\n").expect("write");
        assert_eq!(tail(&path, 3), vec!["one", "bad\u{fffd}line", "three"]);
    }

    #[test]
    fn a_deleted_file_is_reopened_and_flush_empties() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.out.log");
        let settings = LogSettings {
            out: path.clone(),
            err: path.clone(),
            prefix_instances: false,
            time: false,
            max_size: 0,
            keep: 2,
        };
        let mut files = Files {
            open: HashMap::new(),
            root: dir.path().join("logs"),
        };
        append(&mut files, &path, &settings, b"first\n").expect("append");
        std::fs::remove_file(&path).expect("rm");
        // Within a second: the check is due once RECHECK_EVERY has passed.
        for log in files.open.values_mut() {
            log.checked -= RECHECK_EVERY;
        }
        append(&mut files, &path, &settings, b"second\n").expect("append");
        assert_eq!(std::fs::read_to_string(&path).expect("back"), "second\n");
        std::fs::write(dir.path().join("a.out.log.1"), "old\n").expect("rotated");
        empty(&mut files, &path).expect("empty");
        append(&mut files, &path, &settings, b"third\n").expect("append");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "third\n");
        assert!(!dir.path().join("a.out.log.1").exists());
    }
}
