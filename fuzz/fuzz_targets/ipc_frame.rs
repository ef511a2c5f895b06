//! The IPC framing, both ends: the daemon decodes requests with the async
//! `codec::read` (polled here over the bytes, which never wait), the CLI
//! decodes responses with `codec::read_blocking`. Every frame in the input
//! is read until the end, or the first error.
#![no_main]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use eco::ipc::codec;
use eco::ipc::proto::{Envelope, Response};
use libfuzzer_sys::fuzz_target;

/// Reading from a byte slice never waits: one poll finishes the future.
fn once<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("a read from memory waited"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut daemon_end: &[u8] = data;
    while let Ok(Some(_)) = once(codec::read::<Envelope, _>(&mut daemon_end)) {}
    let mut cli_end = std::io::Cursor::new(data);
    while let Ok(Some(_)) = codec::read_blocking::<Response, _>(&mut cli_end) {}
});
