//! eco: a declarative process supervisor.
//!
//! # Layout
//! - `config`: ecosystem.yaml → validated [`spec::ProjectSpec`] (pure but `load`).
//! - `spec`: the desired state. `state`: the observed state.
//! - `plan`: the pure planner, desired × observed → actions.
//! - `policy`: the pure restart decision (backoff, crash loops).
//! - `target`: what `app`, `project/app`, `app:N`, `all` name (pure).
//! - `view`: what `ls` and `describe` show (plain data).
//! - `runtime`: the engine; the only module that touches processes.
//! - `reconcile`: the one loop that drives the engine, for `up -F` and the
//!   daemon: file saves, watched sources, memory and cron, signals, shutdown.
//! - `watch`: file watching. `metrics`, `procfs`, `schedule`: what the
//!   monitor reads.
//! - `daemon`: the reconciler behind a socket, persisted state; `ipc`: the
//!   typed protocol and both ends of the socket; `holder`: the process that
//!   keeps the apps' pipes and sockets while no daemon runs, and its wire; `logs`: output files; `paths`;
//!   `home`: whether an ECO_HOME can be trusted, files made in it safely.
//! - `untrusted`: the one way to read a file an app or a user controls
//!   (pid files, env files, ecosystem files): no FIFO, device or endless
//!   file, off the loop with a timeout.
//! - `export`: the project as systemd units or Kubernetes manifests (pure).
//! - `serve`: `eco serve`, metrics and the HTTP API (a client of the daemon).
//! - `version`: eco's version as the CLI and the daemon report it.
//! - `cli`: the commands, and all user-facing text (`cli::render`,
//!   `cli::console`); `cli::foreground` is `eco up -F`.

pub mod cli;
pub mod config;
pub mod daemon;
pub mod error;
pub mod export;
pub mod fds;
pub mod holder;
pub mod home;
pub mod ipc;
pub mod logs;
pub mod metrics;
pub mod paths;
pub mod plan;
pub mod policy;
pub mod procfs;
pub mod reconcile;
pub mod runtime;
pub mod schedule;
pub mod serve;
pub mod spec;
pub mod state;
pub mod target;
pub mod untrusted;
pub mod version;
pub mod view;
pub mod watch;
