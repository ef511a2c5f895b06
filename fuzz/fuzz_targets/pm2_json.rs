//! A PM2 file's exports as node prints them (JSON), as js.rs reads them:
//! the tree translated to eco's keys, validated, planned, and written out
//! as `eco import` does. Input that is not strict JSON goes through the
//! JSON5 reader a `.json` ecosystem file falls back to.
#![no_main]

use std::path::Path;

use eco::config::{emit, parse_json5, pm2, validate};
use libfuzzer_sys::fuzz_target;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let root = match serde_json::from_slice::<serde_json::Value>(data) {
        Ok(json) => pm2::from_json(&json),
        Err(_) => {
            let Ok(text) = std::str::from_utf8(data) else {
                return;
            };
            match parse_json5(Path::new("/p/ecosystem.json"), text) {
                Ok(root) => root,
                Err(_) => return,
            }
        }
    };
    let translated = pm2::translate(&root, &common::FakeMachine, Path::new("/p"));
    let _ = emit::yaml(&translated.root, &translated.notes, "fuzz");
    let fs = common::FakeFs;
    if let Ok((spec, _notes)) = validate::validate_tree(&common::input("", None, &fs), &root) {
        common::plan_both_ways(&spec);
    }
});
