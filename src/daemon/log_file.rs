//! The daemon's own log. Started by an `eco` command, the daemon's stdout
//! and stderr are `ECO_HOME/daemon.log`; the daemon then writes that file
//! itself, rotated by size ([`MAX_SIZE`] × [`KEEP`] files, as app logs are)
//! with its stdout and stderr moved to each new file (a panic lands in the
//! current one). Started another way (`eco daemon` under systemd, or in a
//! terminal) it logs to stderr, which journald or the terminal owns.
//!
//! Either way, one place in the code cannot flood the log: past [`BURST`]
//! lines of one message template (a `tracing` callsite) within
//! [`INTERVAL`], its lines are counted instead of written, and one line per
//! interval says how many there were (a flood that stops is summed up at
//! the next line the daemon logs). So a flood of bad requests, rejected
//! datagrams, accept errors or crash-loop restarts costs a line every ten
//! seconds, and the files stay within their bound whatever happens.

use std::collections::HashMap;
use std::fs::File;
use std::hash::Hash;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use tracing::Metadata;
use tracing::callsite::Identifier;
use tracing_subscriber::fmt::MakeWriter;

/// daemon.log is rotated before it would grow past this.
pub const MAX_SIZE: u64 = 10 * 1024 * 1024;
/// Rotated copies kept: daemon.log.1 (newest) … daemon.log.3.
pub const KEEP: u32 = 3;
/// How often a repeated line is summed up.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Lines of one template written per interval before it counts as a flood
/// (an `up` of a few apps logs each start; a flood is summed up).
pub const BURST: u32 = 20;

/// The daemon's tracing writer: rate-limited lines, to a rotated file or
/// to stderr.
pub struct DaemonLog {
    inner: Mutex<Inner>,
}

struct Inner {
    sink: Sink,
    limiter: Limiter<Identifier>,
}

enum Sink {
    Stderr,
    File(RotatingFile),
}

/// daemon.log and its size. The daemon writes it through its stderr (fd
/// 2, moved with stdout onto each new file), holding no descriptor of its
/// own that a sweep of inherited descriptors could close; `file` is for
/// tests, which keep their stderr.
struct RotatingFile {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_size: u64,
    keep: u32,
}

impl DaemonLog {
    /// Into `daemon_log` when the daemon's stderr is that file (an `eco`
    /// command started it), else to stderr.
    pub fn for_daemon(daemon_log: &Path) -> DaemonLog {
        let sink = match stderr_size(daemon_log) {
            Some(size) => Sink::File(RotatingFile {
                path: daemon_log.to_path_buf(),
                file: None,
                size,
                max_size: MAX_SIZE,
                keep: KEEP,
            }),
            None => Sink::Stderr,
        };
        DaemonLog::new(sink)
    }

    fn new(sink: Sink) -> DaemonLog {
        DaemonLog {
            inner: Mutex::new(Inner {
                sink,
                limiter: Limiter::new(INTERVAL, BURST),
            }),
        }
    }

    /// Writes one formatted line (or counts it, in a flood).
    fn commit(&self, key: Option<&Identifier>, line: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let Inner { sink, limiter } = &mut *inner;
        let now = Instant::now();
        let mut out = limiter.due(now, SystemTime::now());
        match key {
            Some(key) => {
                if limiter.admit(key, line, now) {
                    out.push(line.to_vec());
                }
            }
            None => out.push(line.to_vec()),
        }
        for line in out {
            sink.write(&line);
        }
    }
}

impl Sink {
    fn write(&mut self, line: &[u8]) {
        match self {
            // Nothing to report a failed log write to.
            Sink::Stderr => {
                let _ = io::stderr().write_all(line);
            }
            Sink::File(file) => file.write(line),
        }
    }
}

impl RotatingFile {
    fn write(&mut self, line: &[u8]) {
        let len = line.len() as u64;
        if self.size > 0 && self.size + len > self.max_size {
            self.rotate();
        }
        let written = match &mut self.file {
            Some(file) => file.write_all(line),
            None => io::stderr().write_all(line),
        };
        if written.is_ok() {
            self.size += len;
        }
    }

    /// daemon.log → daemon.log.1 → … → daemon.log.KEEP; a fresh daemon.log,
    /// with stdout and stderr moved to it. On failure the current file is
    /// kept, and tried again after another `max_size`.
    fn rotate(&mut self) {
        self.size = 0;
        if crate::logs::rotate(&self.path, self.keep).is_err() {
            return;
        }
        let Ok(file) = crate::home::open(&self.path, crate::home::Open::Append) else {
            return;
        };
        self.size = file.metadata().map_or(0, |m| m.len());
        match &mut self.file {
            Some(old) => *old = file,
            None => {
                let _ = nix::unistd::dup2_stdout(file.as_fd());
                let _ = nix::unistd::dup2_stderr(file.as_fd());
            }
        }
    }
}

/// The size of the file at `path` when stderr is that regular file (not a
/// link): the daemon then writes and rotates it.
fn stderr_size(path: &Path) -> Option<u64> {
    let at_path = std::fs::symlink_metadata(path).ok()?;
    let open = nix::sys::stat::fstat(io::stderr().as_fd()).ok()?;
    let same = at_path.is_file() && open.st_dev == at_path.dev() && open.st_ino == at_path.ino();
    same.then_some(at_path.len())
}

/// One formatted line on its way: written (or counted) when dropped, so
/// the limiter sees whole lines.
pub struct Line<'a> {
    log: &'a DaemonLog,
    key: Option<Identifier>,
    buf: Vec<u8>,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.log.commit(self.key.as_ref(), &self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for DaemonLog {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            log: self,
            key: None,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line<'a> {
        Line {
            log: self,
            key: Some(meta.callsite()),
            buf: Vec::new(),
        }
    }
}

/// Per message template: lines written and counted in the current window.
struct Window {
    start: Instant,
    since: SystemTime,
    written: u32,
    suppressed: u64,
    /// The previous window ended with lines counted: nothing more is
    /// written until a window passes with none.
    flooding: bool,
    /// The latest line counted, for the summary.
    last: Vec<u8>,
}

/// Decides which lines are written: pure (the clock is passed in).
struct Limiter<K> {
    windows: HashMap<K, Window>,
    interval: Duration,
    burst: u32,
}

impl<K: Hash + Eq + Clone> Limiter<K> {
    fn new(interval: Duration, burst: u32) -> Limiter<K> {
        Limiter {
            windows: HashMap::new(),
            interval,
            burst,
        }
    }

    /// True when `line` of `key` is to be written; else it is counted.
    fn admit(&mut self, key: &K, line: &[u8], now: Instant) -> bool {
        let window = self.windows.entry(key.clone()).or_insert_with(|| Window {
            start: now,
            since: SystemTime::now(),
            written: 0,
            suppressed: 0,
            flooding: false,
            last: Vec::new(),
        });
        let allowed = if window.flooding { 0 } else { self.burst };
        if window.written < allowed {
            window.written += 1;
            true
        } else {
            window.suppressed += 1;
            window.last.clear();
            window.last.extend_from_slice(line);
            false
        }
    }

    /// Summaries of the windows that are over and counted lines; windows
    /// over and quiet are forgotten.
    fn due(&mut self, now: Instant, wall: SystemTime) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let interval = self.interval;
        self.windows.retain(|_, window| {
            if now.duration_since(window.start) < interval {
                return true;
            }
            if window.suppressed == 0 {
                return false;
            }
            out.push(summary(window));
            *window = Window {
                start: now,
                since: wall,
                written: 0,
                suppressed: 0,
                flooding: true,
                last: Vec::new(),
            };
            true
        });
        out
    }
}

/// The latest counted line, with how many like it were not written.
fn summary(window: &Window) -> Vec<u8> {
    let mut line = window.last.clone();
    while line.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
        line.pop();
    }
    let since = humantime::format_rfc3339_seconds(window.since);
    line.extend_from_slice(
        format!(
            " … repeated {} times since {since}, not written (a line repeated over {BURST} times in {} s is summed up)\n",
            window.suppressed,
            INTERVAL.as_secs()
        )
        .as_bytes(),
    );
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_written_up_to_the_burst_then_summed_up_once_per_interval() {
        let mut limiter = Limiter::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let wall = SystemTime::now();
        let written = (0..1000)
            .filter(|i| limiter.admit(&"accept", format!("failed {i}\n").as_bytes(), t0))
            .count();
        assert_eq!(written, 3);
        // Another template is not held back by this one.
        assert!(limiter.admit(&"started", b"started\n", t0));
        assert!(limiter.due(t0 + Duration::from_secs(5), wall).is_empty());
        let summaries = limiter.due(t0 + Duration::from_secs(10), wall);
        assert_eq!(summaries.len(), 1);
        let text = String::from_utf8_lossy(&summaries[0]).into_owned();
        assert!(
            text.starts_with("failed 999 … repeated 997 times since"),
            "{text}"
        );
        assert!(text.ends_with('\n') && text.matches('\n').count() == 1);
        // Still flooding: nothing more is written, one summary per interval.
        let t1 = t0 + Duration::from_secs(10);
        assert!(!limiter.admit(&"accept", b"failed again\n", t1));
        assert_eq!(limiter.due(t1 + Duration::from_secs(10), wall).len(), 1);
        // A quiet interval ends the flood: lines are written again.
        let t2 = t1 + Duration::from_secs(20);
        assert!(limiter.due(t2, wall).is_empty());
        assert!(limiter.admit(&"accept", b"failed once\n", t2));
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_its_count() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("daemon.log");
        let file = crate::home::open(&path, crate::home::Open::Append).expect("open");
        let log = DaemonLog::new(Sink::File(RotatingFile {
            path: path.clone(),
            file: Some(file),
            size: 0,
            max_size: 100,
            keep: 2,
        }));
        for i in 0..100 {
            // No callsite: never held back, so every line is written.
            log.commit(None, format!("line {i:04} of the daemon log\n").as_bytes());
        }
        let size = |name: &str| std::fs::metadata(dir.path().join(name)).map(|m| m.len());
        assert!(size("daemon.log").expect("current") <= 100);
        assert!(size("daemon.log.1").expect("1") <= 100);
        assert!(size("daemon.log.2").expect("2") <= 100);
        assert!(size("daemon.log.3").is_err(), "only 2 kept");
        let current = std::fs::read_to_string(&path).expect("read");
        assert!(
            current.ends_with("line 0099 of the daemon log\n"),
            "{current}"
        );
    }
}
