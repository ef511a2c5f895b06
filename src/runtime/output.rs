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

/// Waits for the first output line matching a regex (`ready: {log: ...}`).
pub struct LineMatcher {
    pub regex: Regex,
    pub found: oneshot::Sender<()>,
}

/// Reads `pipe` until EOF, passing complete lines to `observer`.
pub async fn pump(
    mut pipe: pipe::Receiver,
    id: Arc<InstanceId>,
    stream: Stream,
    observer: Arc<dyn Observer>,
    mut matcher: Option<LineMatcher>,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(MAX_LINE);
    let mut chunk = vec![0u8; MAX_LINE];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        let complete = buf.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        if complete > 0 {
            deliver(&buf[..complete], &id, stream, &*observer, &mut matcher);
            buf.drain(..complete);
        }
        while buf.len() >= MAX_LINE {
            let mut piece: Vec<u8> = buf.drain(..MAX_LINE).collect();
            piece.push(b'\n');
            deliver(&piece, &id, stream, &*observer, &mut matcher);
        }
    }
    if !buf.is_empty() {
        buf.push(b'\n');
        deliver(&buf, &id, stream, &*observer, &mut matcher);
    }
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
            let _ = m.found.send(());
        }
    }
    observer.output(id, stream, lines);
}
