//! What the daemon remembers across its own death: every applied project
//! (its resolved spec), what the user stopped (whole apps as `app`,
//! single instances as `app:N`) and every instance's numeric id (`ids`,
//! so `eco stop 3` names the same instance under the next daemon). Written atomically through a fresh
//! `state.json.tmp` (`O_EXCL`, no link followed); a file another user owns
//! is refused, a damaged one set aside and reported. A save that fails (a
//! full disk) is retried every second until one succeeds ([`Saver`]).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::home::{self, HomeError, Open};
use crate::runtime::ids::SavedId;
use crate::spec::ProjectSpec;

pub(crate) const STATE_VERSION: u32 = 1;

/// How often a failed save is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SavedState {
    pub version: u32,
    pub projects: Vec<SavedProject>,
    /// The instances' numeric ids (absent in a state saved before ids).
    #[serde(default)]
    pub ids: Vec<SavedId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SavedProject {
    pub spec: ProjectSpec,
    /// Apps (`app`) and instances (`app:N`) the user stopped.
    #[serde(default)]
    pub user_stopped: Vec<String>,
}

/// Why the saved state was not restored.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    #[error(
        "the saved state {path} was damaged ({error}); no app was restored. The damaged copy is {aside}"
    )]
    Damaged {
        path: PathBuf,
        aside: PathBuf,
        error: String,
    },
    #[error("the saved state was refused, no app was restored: {0}")]
    Refused(String),
}

/// Reads the state; a missing file is an empty state. A damaged one is
/// moved aside (`state.json.damaged`) and reported, never guessed at; one
/// another user owns (or a link) is refused.
pub fn load(path: &Path) -> Result<SavedState, LoadError> {
    let mut file = match home::open(path, Open::Read) {
        Ok(file) => file,
        Err(HomeError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            return Ok(SavedState::default());
        }
        Err(err) => return Err(LoadError::Refused(err.to_string())),
    };
    let mut bytes = Vec::new();
    if let Err(err) = file.read_to_end(&mut bytes) {
        return Err(LoadError::Refused(format!(
            "cannot read {}: {err}",
            path.display()
        )));
    }
    parse(&bytes).map_err(|err| {
        let aside = path.with_extension("json.damaged");
        let error = if bytes.is_empty() {
            "the file is empty".to_owned()
        } else {
            err.to_string()
        };
        if let Err(err) = std::fs::rename(path, &aside) {
            tracing::error!(%err, "cannot move the damaged state aside");
        }
        LoadError::Damaged {
            path: path.to_path_buf(),
            aside,
            error,
        }
    })
}

/// The state as saved, from the file's bytes (pure: [`load`] reads the
/// file, the fuzz target feeds bytes straight in).
pub fn parse(bytes: &[u8]) -> Result<SavedState, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// What one save writes: the projects with their user stops, and the ids.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub projects: Vec<(ProjectSpec, Vec<String>)>,
    pub ids: Vec<SavedId>,
}

/// Writes a fresh `state.json.tmp`, syncs it, and renames it over `state.json`.
pub fn save(path: &Path, snapshot: &Snapshot) -> std::io::Result<()> {
    let Snapshot { projects, ids } = snapshot;
    let state = SavedState {
        version: STATE_VERSION,
        projects: projects
            .iter()
            .map(|(spec, user_stopped)| SavedProject {
                spec: spec.clone(),
                user_stopped: user_stopped.clone(),
            })
            .collect(),
        ids: ids.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&state).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    let result = home::create_temp(&tmp)
        .map_err(std::io::Error::from)
        .and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        // Leave no half-written temp file taking space on a full disk.
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What is still to be saved after a failed save.
#[derive(Default)]
struct Pending {
    snapshot: Option<Snapshot>,
    error: Option<String>,
    /// Bumped by every save, so a retry never clears a newer failure.
    generation: u64,
}

/// Saves the state, and keeps trying a failed save until it succeeds.
pub struct Saver {
    path: PathBuf,
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Saver {
    pub fn new(path: PathBuf) -> Arc<Saver> {
        Arc::new(Saver {
            path,
            pending: Mutex::default(),
            wake: Notify::new(),
        })
    }

    /// Saves now; on failure keeps the state for [`Saver::retry`].
    pub fn save(&self, snapshot: Snapshot) {
        let result = save(&self.path, &snapshot);
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        pending.generation += 1;
        match result {
            Ok(()) => {
                pending.snapshot = None;
                pending.error = None;
            }
            Err(err) => {
                tracing::error!(%err, "cannot save the state; retrying every second");
                pending.snapshot = Some(snapshot);
                pending.error = Some(err.to_string());
                self.wake.notify_one();
            }
        }
    }

    /// Why the last save failed, while it is still not saved.
    pub fn error(&self) -> Option<String> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .error
            .clone()
    }

    /// Retries failed saves every second until `stop`.
    pub async fn retry(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.wake.notified() => {}
            }
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(RETRY_EVERY) => {}
                }
                let (snapshot, generation) = {
                    let pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                    match &pending.snapshot {
                        Some(snapshot) => (snapshot.clone(), pending.generation),
                        None => break,
                    }
                };
                let result = save(&self.path, &snapshot);
                let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
                match result {
                    Ok(()) if pending.generation == generation => {
                        tracing::info!("the state is saved again");
                        pending.snapshot = None;
                        pending.error = None;
                        break;
                    }
                    Ok(()) => {}
                    Err(err) => pending.error = Some(err.to_string()),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_state_is_set_aside_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{\"version\": 1, \"proj").expect("write");
        let err = load(&path).expect_err("damaged");
        let text = err.to_string();
        assert!(text.contains("damaged"), "{text}");
        assert!(text.contains("state.json.damaged"), "{text}");
        assert!(dir.path().join("state.json.damaged").exists());
        assert!(load(&path).expect("now missing").projects.is_empty());
    }

    #[test]
    fn a_planted_temp_link_is_replaced_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").expect("write");
        std::os::unix::fs::symlink(&victim, dir.path().join("state.json.tmp")).expect("link");
        save(&dir.path().join("state.json"), &Snapshot::default()).expect("saved");
        assert_eq!(std::fs::read_to_string(&victim).expect("read"), "keep");
        assert!(load(&dir.path().join("state.json")).is_ok());
    }

    #[test]
    fn ids_are_saved_and_a_state_from_before_ids_still_loads() {
        use crate::runtime::ids::Slot;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        std::fs::write(&path, r#"{"version": 1, "projects": []}"#).expect("write");
        assert!(load(&path).expect("old state").ids.is_empty());
        let ids = vec![SavedId {
            id: 3,
            slot: Slot::new("shop", "web", 1),
        }];
        save(
            &path,
            &Snapshot {
                projects: Vec::new(),
                ids: ids.clone(),
            },
        )
        .expect("saved");
        assert_eq!(load(&path).expect("loads").ids, ids);
    }
}
