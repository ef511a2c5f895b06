//! eco: a declarative process supervisor.
//!
//! # Layout
//! - `config`: ecosystem.yaml → validated [`spec::ProjectSpec`] (pure but `load`).
//! - `spec`: the desired state. `state`: the observed state.
//! - `plan`: the pure planner, desired × observed → actions.
//! - `cli`: the commands, and all text formatting (`cli::render`).

pub mod cli;
pub mod config;
pub mod error;
pub mod plan;
pub mod spec;
pub mod state;
