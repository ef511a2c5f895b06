//! What the daemon remembers across its own death: every applied project
//! (its resolved spec) and the apps the user stopped. Written atomically.

use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::spec::ProjectSpec;

const STATE_VERSION: u32 = 1;

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    pub projects: Vec<SavedProject>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedProject {
    pub spec: ProjectSpec,
    #[serde(default)]
    pub user_stopped: Vec<String>,
}

/// Reads the state; a missing file is an empty state, a damaged one is
/// reported (and set aside) rather than guessed at.
pub fn load(path: &Path) -> Result<SavedState, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<SavedState>(&bytes).map_err(|err| {
            let aside = path.with_extension("json.damaged");
            let _ = std::fs::rename(path, &aside);
            format!(
                "{} is damaged ({err}); moved it to {} and started empty",
                path.display(),
                aside.display()
            )
        }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(SavedState::default()),
        Err(err) => Err(format!("cannot read {}: {err}", path.display())),
    }
}

/// Writes `state.json.tmp`, syncs it, and renames it over `state.json`.
pub fn save(path: &Path, projects: Vec<(ProjectSpec, Vec<String>)>) -> std::io::Result<()> {
    let state = SavedState {
        version: STATE_VERSION,
        projects: projects
            .into_iter()
            .map(|(spec, user_stopped)| SavedProject { spec, user_stopped })
            .collect(),
    };
    let bytes = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
