//! eco: a declarative process supervisor.
//!
//! # Layout
//! - `config`: ecosystem.yaml → validated [`spec::ProjectSpec`] (pure but `load`).
//! - `spec`: the desired state. `state`: the observed state.
//! - `plan`: the pure planner, desired × observed → actions.
//! - `policy`: the pure restart decision (backoff, crash loops).
//! - `runtime`: the engine; the only module that touches processes.
//! - `console`: output and events on the terminal (`up -F`).
//! - `watch`: file watching. `foreground`: `eco up -F`.
//! - `daemon`: the engine behind a socket, persisted state; `ipc`: the
//!   protocol and both ends of the socket; `logs`: output files; `paths`.
//! - `export`: the project as systemd units or Kubernetes manifests (pure).
//! - `cli`: the commands, and all text formatting (`cli::render`).

pub mod cli;
pub mod config;
pub mod console;
pub mod daemon;
pub mod error;
pub mod export;
pub mod foreground;
pub mod ipc;
pub mod logs;
pub mod metrics;
pub mod paths;
pub mod plan;
pub mod policy;
pub mod procfs;
pub mod runtime;
pub mod schedule;
pub mod spec;
pub mod state;
pub mod watch;
