//! One sd_notify datagram as the instance's socket receives it: the text
//! parsed into messages, and the control buffer (SCM_CREDENTIALS,
//! SCM_RIGHTS) walked. The first two bytes (little-endian) say how many
//! of the rest are the control buffer; the remainder is the text.
#![no_main]

use eco::runtime::notify::{MAX_DATAGRAM, control_parts, parse};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [a, b, rest @ ..] = data else {
        return;
    };
    let split = usize::from(u16::from_le_bytes([*a, *b])).min(rest.len());
    let (space, text) = rest.split_at(split);
    // As `receive` does: at most MAX_DATAGRAM bytes, read lossily.
    let text = &text[..text.len().min(MAX_DATAGRAM)];
    let _ = parse(&String::from_utf8_lossy(text));
    let _ = control_parts(space);
});
