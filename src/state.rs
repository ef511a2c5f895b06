//! The observed state: what is actually applied and running, as the planner
//! and the command line see it. Plain data, no I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::AppSpec;

/// What the planner needs to know about one app that exists now.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedApp {
    /// The spec its processes were started with.
    pub spec: AppSpec,
    /// How many instance slots exist (running, starting or backing off).
    pub instances: u32,
    /// Stopped by `eco stop`: stays stopped across reloads until `eco start`.
    pub user_stopped: bool,
}

/// Every app of one project that exists now, by name.
pub type Observed = BTreeMap<String, ObservedApp>;

/// The life-cycle status of one instance (CONTRACT section 3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Starting,
    Online,
    Backoff,
    Stopping,
    Stopped,
    Errored,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Starting => "starting",
            Status::Online => "online",
            Status::Backoff => "backoff",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::Errored => "errored",
        }
    }
}
