//! Draining a child's stdout/stderr: read big chunks, cut them into whole
//! lines (a line longer than 64 KiB is split, never dropped) and hand them
//! on. The pipe is always drained, so a slow consumer never stalls the app.

use std::sync::Arc;

use regex::Regex;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::oneshot;

use super::{InstanceId, Observer, Stream};

/// The longest line handed on in one piece.
pub const MAX_LINE: usize = 64 * 1024;

/// The first read's size; reads that fill it double it, up to [`MAX_LINE`].
const READ_MIN: usize = 4096;

/// Waits for the first output line matching a regex (`ready: {log: ...}`),
/// on stdout or stderr (a clone watches each): uvicorn, gunicorn and
/// Python's logging write to stderr.
#[derive(Clone)]
pub struct LineMatcher {
    pub regex: Regex,
    pub found: Arc<std::sync::Mutex<Option<oneshot::Sender<()>>>>,
}

/// Reads `pipe` until EOF, passing complete lines to `observer`.
pub async fn pump(
    mut pipe: pipe::Receiver,
    id: Arc<InstanceId>,
    stream: Stream,
    observer: Arc<dyn Observer>,
    mut matcher: Option<LineMatcher>,
) {
    // Reads straight into the line buffer (no zeroing, no copy); it starts
    // small, since most processes print little, and grows for chatty ones.
    let mut buf: Vec<u8> = Vec::new();
    let mut want = READ_MIN;
    loop {
        buf.reserve(want);
        match pipe.read_buf(&mut buf).await {
            Ok(0) => break,
            Ok(n) if n == want => want = (want * 2).min(MAX_LINE),
            Ok(_) => {}
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
        let used = split_lines(&buf, |lines| {
            deliver(lines, &id, stream, &*observer, &mut matcher);
        });
        buf.drain(..used);
    }
    if !buf.is_empty() {
        buf.push(b'\n');
        deliver(&buf, &id, stream, &*observer, &mut matcher);
    }
}

/// Hands `emit` runs of complete lines from `buf` (each ending in `\n`),
/// cutting any line longer than [`MAX_LINE`]. Returns the bytes consumed;
/// the rest is an unfinished line.
fn split_lines(buf: &[u8], mut emit: impl FnMut(&[u8])) -> usize {
    let (mut batch, mut at) = (0, 0);
    loop {
        let rest = &buf[at..];
        let window = &rest[..rest.len().min(MAX_LINE + 1)];
        match window.iter().position(|b| *b == b'\n') {
            Some(i) => at += i + 1,
            None if rest.len() >= MAX_LINE => {
                if at > batch {
                    emit(&buf[batch..at]);
                }
                let mut piece = rest[..MAX_LINE].to_vec();
                piece.push(b'\n');
                emit(&piece);
                at += MAX_LINE;
                batch = at;
            }
            None => break,
        }
    }
    if at > batch {
        emit(&buf[batch..at]);
    }
    at
}

fn deliver(
    lines: &[u8],
    id: &InstanceId,
    stream: Stream,
    observer: &dyn Observer,
    matcher: &mut Option<LineMatcher>,
) {
    if let Some(m) = matcher.as_ref() {
        let hit = lines
            .split(|b| *b == b'\n')
            .any(|line| m.regex.is_match(&String::from_utf8_lossy(line)));
        if hit && let Some(m) = matcher.take() {
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
    observer.output(id, stream, lines);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(buf: &[u8]) -> (Vec<Vec<u8>>, usize) {
        let mut out = Vec::new();
        let used = split_lines(buf, |lines| out.push(lines.to_vec()));
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

    #[test]
    fn a_line_of_exactly_64k_is_whole() {
        let mut buf = vec![b'x'; MAX_LINE];
        buf.push(b'\n');
        let (out, _) = split(&buf);
        assert_eq!(out.len(), 1);
    }
}
