//! The one integration-test binary (see Cargo.toml: autotests = false).

mod balance;
mod cluster;
mod config;
mod containment;
mod daemon;
mod engine;
mod export;
mod faults;
mod honest;
mod hostile_files;
mod hostile_logs;
mod hostile_notify;
mod hygiene;
mod ids;
mod node_cluster;
mod notify;
mod observe;
mod pm2;
mod pm2_corpus;
mod pm2_hands;
mod production;
mod reconcile;
mod reload;
mod rollout;
mod security;
mod support;
