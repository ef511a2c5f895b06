//! CLI ↔ daemon over a Unix socket in ECO_HOME: `proto` is the contract,
//! `codec` the framing, `client` and `server` the two ends.

pub mod client;
pub mod codec;
pub mod proto;
pub mod server;
