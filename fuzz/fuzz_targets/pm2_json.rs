//! A PM2 file's exports as node prints them (JSON), as js.rs reads them:
//! the tree translated to eco's keys, validated, planned, and written out
//! as `eco import` does.
#![no_main]

use eco::config::{emit, pm2, validate};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let root = pm2::from_json(&json);
    let translated = pm2::translate(&root, 2);
    let _ = emit::yaml(&translated.root, &translated.notes, "fuzz");
    let fs = common::FakeFs;
    if let Ok((spec, _notes)) = validate::validate_tree(&common::input("", None, &fs), &root) {
        common::plan_both_ways(&spec);
    }
});
