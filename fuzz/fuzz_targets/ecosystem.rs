//! The ecosystem file as eco reads it: YAML parsed, validated (a PM2 file
//! translated on the way), then planned. Any input must give a spec or
//! errors, never a panic or a hang.
#![no_main]

use eco::config::validate::validate_with_notes;
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    // eco refuses a file that is not UTF-8 before it parses it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fs = common::FakeFs;
    if let Ok((spec, _notes)) = validate_with_notes(&common::input(text, None, &fs)) {
        common::plan_both_ways(&spec);
    }
    // `--env production` takes another path through every `env_*` key.
    if text.contains("env_") {
        let input = common::input(text, Some("production"), &fs);
        if let Ok((spec, _notes)) = validate_with_notes(&input) {
            common::plan_both_ways(&spec);
        }
    }
});
