//! Reading a child's stdout/stderr: read big chunks, cut them into whole
//! lines (a line longer than 64 KiB is split, never dropped) and hand them
//! on. Bytes leave the pipe only once their lines are written
//! ([`super::pipe_head`]), so a killed daemon loses none.
//!
//! A chatty app is read in batches. Once output flows, the pipe leaves epoll
//! and is read every [`BATCH_PAUSE`] until it is empty, then goes back to
//! epoll. While the pipe is out of epoll and not empty, the app's
//! `write(2)`s wake nobody (a pipe in epoll wakes its reader on every
//! write), so a writer of a million small lines pays for the copies only,
//! as it would writing to a file. The 1 MiB pipe (`spawn.rs`) holds several
//! pauses' worth; a read that fills the largest read skips the pause. Once
//! the process has exited (`hurry`), nothing pauses: its exit is reported
//! right after its last line.
//!
//! What is handed on but not yet written is bounded per app and stream
//! ([`Backlog`]): once its log file lags a budget behind, the pump stops
//! reading until the file has caught up, so the pipe fills and the app
//! blocks in `write(2)`, as it would writing to a slow file itself. Nothing
//! is dropped, and no other app and no daemon memory pays for it.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use regex::Regex;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use super::pipe_head::{Peek, PipeHead, Receipt};
use super::{InstanceId, Observer, Stream};

/// The longest line handed on in one piece.
pub const MAX_LINE: usize = 64 * 1024;

/// The first read's size; reads that fill it double it, up to [`READ_MAX`].
const READ_MIN: usize = 4096;

/// The largest read: a quarter of a full pipe, so a chatty app costs eco
/// a 256 KiB buffer, not 1 MiB; a read that fills it is followed by
/// another at once.
const READ_MAX: usize = 256 * 1024;

/// How long a flowing pipe fills before the next read.
const BATCH_PAUSE: Duration = Duration::from_millis(2);

/// Pipes smaller than this (the kernel refused the 1 MiB) fill within a
/// pause at full speed; they stay in epoll and are read at every write.
const BATCH_MIN_PIPE: usize = 512 * 1024;

/// How often a pipe is read when epoll refuses it (no watch slots left).
const UNWATCHED_POLL: Duration = Duration::from_millis(50);

/// Waits for the first output line matching a regex (`ready: {log: ...}`),
/// on stdout or stderr (a clone watches each): uvicorn, gunicorn and
/// Python's logging write to stderr.
#[derive(Clone)]
pub struct LineMatcher {
    pub regex: Regex,
    pub found: Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>,
}

/// Bytes of one app's stream handed on but not yet on disk, and the most
/// that may be: the observer counts them in (`queued`) and its writer out
/// (`written`); the pump reads no more while the budget is used up.
pub struct Backlog {
    queued: AtomicUsize,
    budget: usize,
    drained: Notify,
}

impl Backlog {
    pub fn new(budget: usize) -> Backlog {
        Backlog {
            queued: AtomicUsize::new(0),
            budget,
            drained: Notify::new(),
        }
    }

    /// `bytes` more are on their way to the file.
    pub fn queued(&self, bytes: usize) {
        self.queued.fetch_add(bytes, Ordering::AcqRel);
    }

    /// `bytes` are written (or given up on): a pump waiting for room is
    /// woken when this brings the backlog under budget.
    pub fn written(&self, bytes: usize) {
        let before = self.queued.fetch_sub(bytes, Ordering::AcqRel);
        if before >= self.budget && before - bytes < self.budget {
            self.drained.notify_waiters();
        }
    }

    /// Bytes handed on and not yet written.
    pub fn len(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn full(&self) -> bool {
        self.len() >= self.budget
    }

    /// Returns once the backlog is under budget.
    async fn room(&self) {
        while self.full() {
            let drained = self.drained.notified();
            tokio::pin!(drained);
            // Registered before the check, so a `written` in between wakes it.
            drained.as_mut().enable();
            if !self.full() {
                return;
            }
            drained.await;
        }
    }
}

/// Where a pipe's lines go.
pub struct Sink {
    pub id: Arc<InstanceId>,
    pub stream: Stream,
    pub observer: Arc<dyn Observer>,
    pub matcher: Option<LineMatcher>,
}

/// Reads `pipe` (non-blocking) until EOF, passing complete lines to `sink`.
/// `hurry` is cancelled once the process has exited.
pub async fn pump(pipe: OwnedFd, sink: Sink, hurry: CancellationToken) {
    pump_from(pipe, sink, hurry, Vec::new()).await;
}

/// [`pump`], starting with `leftover`: an unfinished line a previous
/// daemon had taken out of this pipe (`eco update` from a build that read
/// with `read(2)`). Once a handover begins ([`super::adopt::quiesce`]) it
/// stops reading at a line boundary and parks the pipe, in which what it
/// read of an unfinished line still is.
pub async fn pump_from(pipe: OwnedFd, sink: Sink, hurry: CancellationToken, leftover: Vec<u8>) {
    let _running = super::adopt::PumpRunning::new();
    let quiesce = super::adopt::quiesce_token();
    let capacity = pipe_capacity(&pipe);
    let batching = capacity >= BATCH_MIN_PIPE;
    let backlog = sink.observer.backlog(&sink.id, sink.stream);
    let mut lines = Lines::new(
        sink,
        PipeHead::new(pipe),
        capacity.clamp(MAX_LINE, READ_MAX),
    );
    lines.outside = leftover.len();
    lines.filled = leftover.len();
    lines.buf = leftover;
    loop {
        // Quiet: in epoll until output (or EOF) comes.
        let watched = match watch(Arc::clone(&lines.head)) {
            Ok(watched) => {
                let read = tokio::select! {
                    read = lines.wait_and_read(&watched, batching, backlog.as_deref()) => read,
                    () = quiesce.cancelled() => return lines.park(),
                };
                if !read {
                    return lines.finish();
                }
                true
            }
            Err(_refused) => {
                tokio::select! {
                    () = tokio::time::sleep(UNWATCHED_POLL) => {}
                    () = quiesce.cancelled() => return lines.park(),
                }
                false
            }
        };
        // Flowing: out of epoll, read after each pause until empty.
        let mut filled = false;
        loop {
            if !filled && !hurry.is_cancelled() {
                tokio::select! {
                    () = tokio::time::sleep(BATCH_PAUSE) => {}
                    () = hurry.cancelled() => {}
                    () = quiesce.cancelled() => {}
                }
            }
            if quiesce.is_cancelled() {
                return lines.park();
            }
            if let Some(backlog) = &backlog {
                tokio::select! {
                    () = backlog.room() => {}
                    () = quiesce.cancelled() => return lines.park(),
                }
            }
            match lines.read() {
                Ok(Got::Eof) => return lines.finish(),
                Ok(Got::Bytes { filled: full }) => filled = full,
                Ok(Got::Full) => {
                    tokio::select! {
                        () = lines.head.removed() => {}
                        () = quiesce.cancelled() => return lines.park(),
                    }
                    filled = true;
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => filled = true,
                // Out of epoll nothing says the writers are gone: ask.
                Err(err) if err.kind() == io::ErrorKind::WouldBlock && !watched => {
                    if hung_up(&lines.head) {
                        return lines.finish_after_last_read();
                    }
                    break;
                }
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return lines.finish(),
            }
        }
        lines.shrink();
    }
}

/// What one read brought.
enum Got {
    Eof,
    /// Some bytes; `filled` when they filled the largest read (the pipe
    /// may hold more, so the next read comes without a pause).
    Bytes {
        filled: bool,
    },
    /// Nothing new fits beside what is still on its way to disk.
    Full,
}

/// Bytes read but not yet handed on: at most one unfinished line between
/// reads. The storage is initialised once and reused, so a read neither
/// zeroes nor copies.
struct Lines {
    sink: Sink,
    head: Arc<PipeHead>,
    buf: Vec<u8>,
    filled: usize,
    /// The first `outside` bytes of `buf` are not in the pipe (a leftover
    /// handed over); the rest of `buf` still is.
    outside: usize,
    /// Bytes of the pipe handed on since this reader began.
    handed: u64,
    want: usize,
    largest: usize,
}

impl Lines {
    fn new(sink: Sink, head: Arc<PipeHead>, largest: usize) -> Lines {
        Lines {
            sink,
            head,
            buf: Vec::new(),
            filled: 0,
            outside: 0,
            handed: 0,
            want: READ_MIN,
            largest,
        }
    }

    /// Waits in epoll for output; reads it. False at EOF (or a broken
    /// pipe). Returns after the first bytes when `batching`, else never
    /// before EOF.
    async fn wait_and_read(
        &mut self,
        watched: &AsyncFd<Arc<PipeHead>>,
        batching: bool,
        backlog: Option<&Backlog>,
    ) -> bool {
        loop {
            let Ok(mut ready) = watched.readable().await else {
                return false;
            };
            // Checked after the wait, right before the read: pumps of
            // several instances that share a backlog wait here together.
            if let Some(backlog) = backlog.filter(|b| b.full()) {
                drop(ready);
                backlog.room().await;
                continue;
            }
            // Seen before the read: if no writer was left then, what the
            // read finds is all there will be.
            let hung_up = ready.ready().is_read_closed();
            match ready.try_io(|_| self.read()) {
                Ok(Ok(Got::Eof)) => return false,
                Ok(Ok(Got::Bytes { .. })) if batching => return true,
                Ok(Ok(Got::Bytes { .. })) => {}
                Ok(Ok(Got::Full)) => self.head.removed().await,
                Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                Ok(Err(_)) => return false,
                Err(_would_block) if hung_up => return false,
                Err(_would_block) => {}
            }
        }
    }

    /// One copy of what is new in the pipe; complete lines go on at once.
    /// `WouldBlock` when nothing is new.
    fn read(&mut self) -> io::Result<Got> {
        let end = self.filled + self.want;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        let unfinished = (self.filled - self.outside) as u64;
        let handed = self.handed;
        let seen = |consumed: u64| {
            usize::try_from(handed.saturating_sub(consumed) + unfinished).unwrap_or(usize::MAX)
        };
        let n = match self.head.peek(seen, &mut self.buf[self.filled..end])? {
            Peek::Eof => return Ok(Got::Eof),
            Peek::Nothing => return Err(io::ErrorKind::WouldBlock.into()),
            Peek::Full => return Ok(Got::Full),
            Peek::Bytes(n) => n,
        };
        let full = n == self.want;
        if full {
            self.want = (self.want * 2).min(self.largest);
        }
        self.filled += n;
        let mut handing = HandOn {
            sink: &mut self.sink,
            head: &self.head,
            outside: &mut self.outside,
            handed: &mut self.handed,
        };
        let used = split_lines(&self.buf[..self.filled], |lines, raw| {
            handing.deliver(lines, raw);
        });
        self.buf.copy_within(used..self.filled, 0);
        self.filled -= used;
        Ok(Got::Bytes {
            filled: full && self.want == self.largest,
        })
    }

    /// Gives back a chatty burst's buffer once the pipe is quiet.
    fn shrink(&mut self) {
        self.want = READ_MIN;
        let keep = self.filled.max(READ_MIN);
        if self.buf.len() > 4 * keep {
            self.buf.truncate(keep);
            self.buf.shrink_to_fit();
        }
    }

    /// A handover: the pipe, with the unfinished line still in it, goes to
    /// the next daemon (with any part of the line that is not).
    fn park(mut self) {
        self.buf.truncate(self.outside);
        super::adopt::park(super::adopt::ParkedPipe {
            id: (*self.sink.id).clone(),
            stream: self.sink.stream,
            head: self.head,
            leftover: self.buf,
        });
    }

    /// No writer is left (found outside epoll): reads what the pipe still
    /// holds, then ends.
    fn finish_after_last_read(mut self) {
        while let Ok(Got::Bytes { .. }) = self.read() {}
        self.finish();
    }

    /// EOF: an unfinished last line goes on with a newline.
    fn finish(mut self) {
        if self.filled > 0 {
            let raw = self.filled;
            self.buf.truncate(raw);
            self.buf.push(b'\n');
            HandOn {
                sink: &mut self.sink,
                head: &self.head,
                outside: &mut self.outside,
                handed: &mut self.handed,
            }
            .deliver(&self.buf, raw);
        }
    }
}

/// Hands lines on with a receipt for the bytes of them still in the pipe.
struct HandOn<'a> {
    sink: &'a mut Sink,
    head: &'a Arc<PipeHead>,
    outside: &'a mut usize,
    handed: &'a mut u64,
}

impl HandOn<'_> {
    /// `lines` came from `raw` bytes read (a cut line gains a `\n`).
    fn deliver(&mut self, lines: &[u8], raw: usize) {
        let from_outside = raw.min(*self.outside);
        *self.outside -= from_outside;
        let in_pipe = raw - from_outside;
        *self.handed += in_pipe as u64;
        self.sink.deliver(lines, Receipt::new(self.head, in_pipe));
    }
}

/// True when no process holds the pipe's write end any more.
fn hung_up(head: &PipeHead) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(head.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP))
}

/// Puts the pipe into epoll, or hands it back if epoll refuses.
#[allow(unsafe_code)]
fn watch(
    pipe: Arc<PipeHead>,
) -> Result<AsyncFd<Arc<PipeHead>>, tokio::io::unix::AsyncFdRegisterError<Arc<PipeHead>>> {
    // SAFETY: the `PipeHead` owns its fd, which stays open and the same
    // while the AsyncFd holds it (the head lives until its last Arc goes).
    unsafe { AsyncFd::register_with_interest(pipe, Interest::READABLE) }
}

/// The pipe's size (`F_GETPIPE_SZ`); 64 KiB, Linux's default, if unknown.
fn pipe_capacity(pipe: &OwnedFd) -> usize {
    nix::fcntl::fcntl(pipe.as_fd(), nix::fcntl::FcntlArg::F_GETPIPE_SZ)
        .ok()
        .and_then(|size| usize::try_from(size).ok())
        .unwrap_or(64 * 1024)
}

/// Hands `emit` runs of complete lines from `buf` (each ending in `\n`),
/// with how many bytes of `buf` each run is, cutting any line longer than
/// [`MAX_LINE`] (a cut piece gains a `\n`). Returns the bytes consumed;
/// the rest is an unfinished line.
fn split_lines(buf: &[u8], mut emit: impl FnMut(&[u8], usize)) -> usize {
    let (mut batch, mut at) = (0, 0);
    loop {
        let rest = &buf[at..];
        let window = &rest[..rest.len().min(MAX_LINE + 1)];
        match window.iter().position(|b| *b == b'\n') {
            Some(i) => at += i + 1,
            None if rest.len() >= MAX_LINE => {
                if at > batch {
                    emit(&buf[batch..at], at - batch);
                }
                let mut piece = rest[..MAX_LINE].to_vec();
                piece.push(b'\n');
                emit(&piece, MAX_LINE);
                at += MAX_LINE;
                batch = at;
            }
            None => break,
        }
    }
    if at > batch {
        emit(&buf[batch..at], at - batch);
    }
    at
}

impl Sink {
    fn deliver(&mut self, lines: &[u8], receipt: Receipt) {
        if let Some(m) = self.matcher.as_ref() {
            let hit = lines
                .split(|b| *b == b'\n')
                .any(|line| m.regex.is_match(&String::from_utf8_lossy(line)));
            if hit && let Some(m) = self.matcher.take() {
                let sender = m
                    .found
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .take();
                if let Some(found) = sender {
                    let _ = found.send(());
                }
            }
        }
        self.observer.output(&self.id, self.stream, lines, receipt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(buf: &[u8]) -> (Vec<Vec<u8>>, usize) {
        let mut out = Vec::new();
        let used = split_lines(buf, |lines, _| out.push(lines.to_vec()));
        (out, used)
    }

    #[test]
    fn complete_lines_go_out_together_and_the_rest_waits() {
        let (out, used) = split(b"a\nbb\ncc");
        assert_eq!(out, vec![b"a\nbb\n".to_vec()]);
        assert_eq!(used, 5);
    }

    #[test]
    fn long_lines_are_cut_at_64k() {
        let mut buf = vec![b'x'; MAX_LINE * 2 + 10];
        buf.push(b'\n');
        let (out, used) = split(&buf);
        assert_eq!(used, buf.len());
        let sizes: Vec<usize> = out.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![MAX_LINE + 1, MAX_LINE + 1, 11]);
    }

    #[tokio::test]
    async fn a_full_backlog_waits_until_the_writer_catches_up() {
        let backlog = Arc::new(Backlog::new(100));
        backlog.room().await;
        backlog.queued(150);
        assert!(backlog.full());
        let writer = Arc::clone(&backlog);
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            writer.written(100);
        });
        tokio::time::timeout(Duration::from_secs(10), backlog.room())
            .await
            .expect("woken once under budget");
        assert_eq!(backlog.len(), 50);
        thread.join().expect("writer");
    }

    #[test]
    fn a_line_of_exactly_64k_is_whole() {
        let mut buf = vec![b'x'; MAX_LINE];
        buf.push(b'\n');
        let (out, _) = split(&buf);
        assert_eq!(out.len(), 1);
    }
}
