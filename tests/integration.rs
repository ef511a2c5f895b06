//! The one integration-test binary (see Cargo.toml: autotests = false).

mod config;
mod engine;
mod support;
