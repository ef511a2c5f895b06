//! Reading an app's pipe without taking lines out of it before they are on
//! disk, so a daemon killed at any moment loses none: the next daemon (with
//! the pipe kept by the descriptor holder) reads them again.
//!
//! The reader copies the pipe's content with `tee(2)` into a scratch pipe
//! of its thread, skips what it has seen, and reads the rest. The lines it
//! hands on carry a [`Receipt`]; when the receipt drops (the log writer
//! wrote the lines, or nothing was going to), their bytes are removed from
//! the front of the pipe with `splice(2)` to `/dev/null`. Neither call
//! copies data: tee links the pipe's pages, splice to `/dev/null` frees
//! them. What a killed daemon had written but not yet removed is read
//! again: at most a few lines appear twice in the log, none is missing.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SpliceFFlags, fcntl, splice, tee};
use tokio::sync::Notify;

/// The front of an app's pipe: bytes read but not yet removed stay there
/// until their receipts drop.
pub struct PipeHead {
    fd: OwnedFd,
    /// Bytes removed from the pipe since this reader began. Locked around
    /// each removal and each copy, so a copy knows where the pipe starts.
    consumed: Mutex<u64>,
    /// Woken when bytes are removed: a reader whose scratch pipe held only
    /// what it had seen waits for room.
    removed: Notify,
}

/// What a copy of the pipe found beyond what the reader had seen.
#[derive(Debug, PartialEq, Eq)]
pub enum Peek {
    /// This many new bytes, now at the start of the caller's buffer.
    Bytes(usize),
    /// Nothing new yet.
    Nothing,
    /// Nothing new fits: the pipe holds more than the scratch pipe, and the
    /// front is still on its way to disk. Wait for [`PipeHead::removed`].
    Full,
    /// The pipe is empty and no process holds its write end.
    Eof,
}

impl PipeHead {
    pub fn new(fd: OwnedFd) -> Arc<PipeHead> {
        Arc::new(PipeHead {
            fd,
            consumed: Mutex::new(0),
            removed: Notify::new(),
        })
    }

    /// Copies the pipe's bytes after the first `seen(consumed)` into `buf`
    /// (`seen` is told how many bytes have been removed so far). Never
    /// blocks.
    pub fn peek(&self, seen: impl FnOnce(u64) -> usize, buf: &mut [u8]) -> io::Result<Peek> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let scratch = match scratch.as_mut() {
                Some(scratch) => scratch,
                None => scratch.insert(Scratch::new()?),
            };
            let (copied, skip) = {
                let consumed = self.consumed.lock().unwrap_or_else(PoisonError::into_inner);
                let skip = seen(*consumed);
                let len = skip.saturating_add(buf.len()).min(scratch.capacity);
                match tee(
                    &self.fd,
                    &scratch.write,
                    len,
                    SpliceFFlags::SPLICE_F_NONBLOCK,
                ) {
                    Ok(0) => return Ok(Peek::Eof),
                    Ok(copied) => (copied, skip),
                    Err(Errno::EAGAIN) => return Ok(Peek::Nothing),
                    Err(err) => return Err(err.into()),
                }
            };
            if copied <= skip {
                scratch.discard(copied)?;
                return Ok(if copied >= scratch.capacity {
                    Peek::Full
                } else {
                    Peek::Nothing
                });
            }
            scratch.discard(skip)?;
            let fresh = copied - skip;
            scratch.read_exact(&mut buf[..fresh])?;
            Ok(Peek::Bytes(fresh))
        })
    }

    /// Removes `bytes` from the front of the pipe (their lines are on disk).
    fn consume(&self, bytes: usize) {
        let mut consumed = self.consumed.lock().unwrap_or_else(PoisonError::into_inner);
        let removed = match discard(self.fd.as_fd(), bytes) {
            Ok(removed) => removed,
            Err((removed, err)) => {
                tracing::warn!(%err, "cannot remove written lines from an app's pipe");
                removed
            }
        };
        *consumed += removed as u64;
        drop(consumed);
        self.removed.notify_one();
    }

    /// Waits until bytes are removed from the pipe (after [`Peek::Full`]).
    pub async fn removed(&self) {
        self.removed.notified().await;
    }

    /// The pipe itself, to hand to the next daemon: call once no receipt
    /// is left (the log writer flushed); a copy of the descriptor if one is.
    pub fn into_fd(self: Arc<Self>) -> io::Result<OwnedFd> {
        match Arc::try_unwrap(self) {
            Ok(head) => Ok(head.fd),
            Err(shared) => shared.fd.try_clone(),
        }
    }
}

impl AsRawFd for PipeHead {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl AsFd for PipeHead {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Lines handed on whose bytes are still in the pipe: dropping it removes
/// them, so drop it once the lines are written (or will never be).
pub struct Receipt {
    head: Option<Arc<PipeHead>>,
    bytes: usize,
}

impl Receipt {
    pub fn new(head: &Arc<PipeHead>, bytes: usize) -> Receipt {
        Receipt {
            head: (bytes > 0).then(|| Arc::clone(head)),
            bytes,
        }
    }

    /// For lines that were never in a pipe.
    pub fn none() -> Receipt {
        Receipt {
            head: None,
            bytes: 0,
        }
    }
}

impl Drop for Receipt {
    fn drop(&mut self) {
        if let Some(head) = self.head.take() {
            head.consume(self.bytes);
        }
    }
}

/// Where removed bytes go (`splice` needs a file to move them to).
static DEV_NULL: LazyLock<Option<File>> = LazyLock::new(|| {
    std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .ok()
});

/// Removes up to `bytes` from the front of a pipe without blocking;
/// returns how many went (stopping early when the pipe is empty), or the
/// error with how many went before it.
fn discard(pipe: BorrowedFd<'_>, bytes: usize) -> Result<usize, (usize, io::Error)> {
    let mut done = 0;
    while done < bytes {
        let moved = match DEV_NULL.as_ref() {
            Some(null) => splice(
                pipe,
                None,
                null,
                None,
                bytes - done,
                SpliceFFlags::SPLICE_F_NONBLOCK,
            )
            .map_err(io::Error::from),
            None => {
                // No /dev/null: read the bytes out instead.
                let mut sink = [0u8; 4096];
                let want = (bytes - done).min(sink.len());
                nix::unistd::read(pipe, &mut sink[..want]).map_err(io::Error::from)
            }
        };
        match moved {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => break,
            Err(err) => return Err((done, err)),
        }
    }
    Ok(done)
}

thread_local! {
    /// The scratch pipe of this thread: empty between peeks.
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

/// The largest scratch pipe: as large as an app's pipe (`spawn.rs`), so one
/// copy can hold all an app's pipe holds.
const SCRATCH_SIZE: i32 = 1024 * 1024;

struct Scratch {
    read: File,
    write: OwnedFd,
    capacity: usize,
}

impl Scratch {
    fn new() -> io::Result<Scratch> {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
        let _ = fcntl(&write, FcntlArg::F_SETPIPE_SZ(SCRATCH_SIZE));
        let capacity = fcntl(&write, FcntlArg::F_GETPIPE_SZ)
            .ok()
            .and_then(|size| usize::try_from(size).ok())
            .unwrap_or(64 * 1024);
        Ok(Scratch {
            read: File::from(read),
            write,
            capacity,
        })
    }

    /// Throws away the first `bytes` of the scratch pipe.
    fn discard(&mut self, bytes: usize) -> io::Result<()> {
        match discard(self.read.as_fd(), bytes) {
            Ok(done) if done == bytes => Ok(()),
            Ok(_) => Err(self.emptied(io::Error::other("the scratch pipe held less than copied"))),
            Err((_, err)) => Err(self.emptied(err)),
        }
    }

    /// Reads exactly `buf.len()` bytes (all are in the scratch pipe).
    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        use std::io::Read as _;
        match (&self.read).read_exact(buf) {
            Ok(()) => Ok(()),
            Err(err) => Err(self.emptied(err)),
        }
    }

    /// After a failure, leaves the scratch pipe empty for the next peek.
    fn emptied(&mut self, err: io::Error) -> io::Error {
        match Scratch::new() {
            Ok(fresh) => *self = fresh,
            Err(_) => {
                use std::io::Read as _;
                let mut sink = [0u8; 4096];
                while matches!((&self.read).read(&mut sink), Ok(n) if n > 0) {}
            }
        }
        err
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use super::*;

    fn pipe() -> (Arc<PipeHead>, File) {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).expect("pipe");
        (PipeHead::new(read), File::from(write))
    }

    fn peek(head: &PipeHead, seen: usize) -> (Peek, Vec<u8>) {
        let mut buf = vec![0u8; 64];
        let peek = head.peek(|_| seen, &mut buf).expect("peek");
        if let Peek::Bytes(n) = peek {
            buf.truncate(n);
        } else {
            buf.clear();
        }
        (peek, buf)
    }

    fn in_pipe(head: &PipeHead) -> Vec<u8> {
        let fd = head.fd.try_clone().expect("dup");
        let mut all = Vec::new();
        let _ = File::from(fd).read_to_end(&mut all);
        all
    }

    #[test]
    fn lines_stay_in_the_pipe_until_their_receipt_drops() {
        let (head, mut app) = pipe();
        app.write_all(b"one\ntw").expect("write");
        assert_eq!(peek(&head, 0), (Peek::Bytes(6), b"one\ntw".to_vec()));
        // Seen already: nothing new, and still all in the pipe.
        assert_eq!(peek(&head, 6).0, Peek::Nothing);
        let receipt = Receipt::new(&head, 4);
        app.write_all(b"o\n").expect("write");
        assert_eq!(peek(&head, 6), (Peek::Bytes(2), b"o\n".to_vec()));
        drop(receipt);
        assert_eq!(*head.consumed.lock().expect("lock"), 4);
        assert_eq!(in_pipe(&head), b"two\n");
    }

    #[test]
    fn the_end_comes_once_the_pipe_is_empty_and_writerless() {
        let (head, mut app) = pipe();
        app.write_all(b"last").expect("write");
        drop(app);
        // Its bytes are still in the pipe: not the end yet.
        assert_eq!(peek(&head, 4).0, Peek::Nothing);
        drop(Receipt::new(&head, 4));
        assert_eq!(peek(&head, 0).0, Peek::Eof);
    }

    #[test]
    fn an_empty_pipe_with_a_writer_has_nothing() {
        let (head, _app) = pipe();
        assert_eq!(peek(&head, 0).0, Peek::Nothing);
        assert_eq!(Receipt::none().bytes, 0);
    }

    #[test]
    fn the_pipe_is_handed_over_as_itself_once_no_receipt_is_left() {
        let (head, _app) = pipe();
        let number = head.as_raw_fd();
        let receipt = Receipt::new(&head, 1);
        let held = Arc::clone(&head);
        let copy = held.into_fd().expect("a copy while a receipt holds it");
        assert_ne!(copy.as_raw_fd(), number);
        drop(receipt);
        assert_eq!(head.into_fd().expect("itself").as_raw_fd(), number);
    }
}
