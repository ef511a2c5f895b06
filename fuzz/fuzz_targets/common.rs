//! What the ecosystem and PM2 targets share: a file system of fixed
//! answers (as validate.rs's tests use), so a run touches no disk and
//! every input is judged the same way every time.

use std::path::{Path, PathBuf};

use eco::config::validate::{FileSystem, Input, ReadError};
use eco::plan::plan;
use eco::spec::ProjectSpec;
use eco::state::{Observed, ObservedApp};

/// `/p` and `/p/dir` are folders, `/p/file` a file, every env file reads
/// `A=1`.
pub struct FakeFs;

impl FileSystem for FakeFs {
    fn is_dir(&self, path: &Path) -> bool {
        path == Path::new("/p") || path == Path::new("/p/dir")
    }
    fn exists(&self, path: &Path) -> bool {
        self.is_dir(path) || path == Path::new("/p/file")
    }
    fn read_limited(&self, _path: &Path, _limit: u64) -> Result<String, ReadError> {
        Ok("A=1\n".into())
    }
}

/// A machine of 2 CPUs where no script exists and no program is in PATH:
/// PM2's translation decides without the disk.
#[allow(dead_code)] // not every target translates PM2 trees
pub struct FakeMachine;

impl eco::config::pm2::Machine for FakeMachine {
    fn cpus(&self) -> u32 {
        2
    }
    fn script(&self, _path: &Path) -> eco::config::pm2::ScriptKind {
        eco::config::pm2::ScriptKind::Missing
    }
    fn has(&self, _program: &str) -> bool {
        false
    }
}

/// The validator's input for `text`, as if read from `/p/eco.yaml`.
pub fn input<'a>(text: &'a str, profile: Option<&'a str>, fs: &'a FakeFs) -> Input<'a> {
    Input {
        file: PathBuf::from("/p/eco.yaml"),
        text,
        profile,
        cpus: 2,
        fs,
    }
}

/// Plans a valid spec twice: from nothing (a first `eco up`), and over
/// itself running with one instance each (every app changed or kept).
pub fn plan_both_ways(spec: &ProjectSpec) {
    let _ = plan(spec, &Observed::new());
    let observed: Observed = spec
        .apps
        .iter()
        .map(|(name, app)| {
            let running = ObservedApp {
                spec: app.clone(),
                instances: 1,
                user_stopped: false,
            };
            (name.clone(), running)
        })
        .collect();
    let _ = plan(spec, &observed);
}
