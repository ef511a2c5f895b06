//! File watching: every applied ecosystem file and env file, and apps'
//! sources (`watch` globs, relative to the app's cwd), for the reconciler
//! of the daemon and of `up -F` alike.
//!
//! Folders are watched one by one (non-recursively) rather than whole trees,
//! so ignored folders such as `node_modules` cost no inotify watch; a new
//! folder gets its watch when it appears. Saves by rename-over and by
//! delete-and-recreate are seen because the folder, not the file, is watched.
//!
//! Deploys replace folders, not files: the folder of an applied file is
//! deleted and recreated, or a release link is swapped (`ln -sfn releases/2
//! current.tmp && mv -T current.tmp current`). So every folder on the path
//! of an applied file is watched too, a change to any link of the path
//! counts as a change of the file, and a folder whose path now names
//! another folder is watched again (re-resolved) when the watches are set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::spec::{ProjectSpec, Watch};

/// Folders and files no app wants to be restarted for.
pub const DEFAULT_IGNORES: &[&str] = &[
    "**/.git/**",
    "**/.git",
    "**/node_modules/**",
    "**/node_modules",
    "**/target/**",
    "**/target",
    "**/__pycache__/**",
    "**/__pycache__",
    "**/.hg/**",
    "**/.svn/**",
    "**/*.swp",
    "**/*.swx",
    "**/*.swo",
    "**/*~",
    "**/.#*",
    "**/#*#",
    "**/4913",
    "**/*.tmp",
    "**/.DS_Store",
    "**/*.log",
];

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A project's ecosystem file or one of its env files.
    Config { project: String },
    /// A watched source of an app (the path relative to its cwd).
    Sources {
        project: String,
        app: String,
        path: String,
        /// The app's `watch_delay` (debounce).
        delay: std::time::Duration,
    },
    /// A new folder appeared under a watched tree: it needs a watch.
    NewFolder(PathBuf),
}

/// One app's source watch.
struct SourceWatch {
    project: String,
    app: String,
    delay: std::time::Duration,
    root: PathBuf,
    /// None: everything under root (`watch: true`).
    include: Option<GlobSet>,
    ignore: GlobSet,
}

#[derive(Default)]
struct Registry {
    /// Watched file → project.
    configs: BTreeMap<PathBuf, String>,
    /// Every folder on the path of a watched file → its projects.
    links: BTreeMap<PathBuf, BTreeSet<String>>,
    sources: Vec<SourceWatch>,
}

impl Registry {
    /// `replaced`: the path was created, removed or renamed (what a link of
    /// an applied file's path must undergo to count).
    fn route(&self, path: &Path, is_dir_create: bool, replaced: bool) -> Vec<Change> {
        let mut changes = Vec::new();
        if let Some(project) = self.configs.get(path) {
            changes.push(Change::Config {
                project: project.clone(),
            });
        }
        for project in self
            .links
            .get(path)
            .into_iter()
            .flatten()
            .filter(|_| replaced)
        {
            changes.push(Change::Config {
                project: project.clone(),
            });
        }
        for source in &self.sources {
            let Ok(relative) = path.strip_prefix(&source.root) else {
                continue;
            };
            if relative.as_os_str().is_empty() || source.ignore.is_match(relative) {
                continue;
            }
            if is_dir_create {
                changes.push(Change::NewFolder(path.to_path_buf()));
            }
            let wanted = source.include.as_ref().is_none_or(|g| g.is_match(relative));
            if wanted {
                changes.push(Change::Sources {
                    project: source.project.clone(),
                    app: source.app.clone(),
                    path: relative.display().to_string(),
                    delay: source.delay,
                });
            }
        }
        changes
    }
}

/// The daemon's watches.
pub struct Watches {
    watcher: Mutex<Option<RecommendedWatcher>>,
    registry: Arc<Mutex<Registry>>,
    /// Folders watched now, with the folder each path named then (device,
    /// inode), to watch again a path that names another folder now.
    folders: Mutex<BTreeMap<PathBuf, Option<(u64, u64)>>>,
    /// eco's own log folder, never watched (the daemon's; none in `up -F`).
    log_root: Option<PathBuf>,
}

fn globset(patterns: &[String]) -> Result<GlobSet, globset::Error> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        builder.add(GlobBuilder::new(pattern).literal_separator(true).build()?);
        // `dir/**` also means the folder itself.
        if let Some(folder) = pattern.strip_suffix("/**") {
            builder.add(GlobBuilder::new(folder).literal_separator(true).build()?);
        }
    }
    builder.build()
}

impl Watches {
    /// Starts the watcher; changes arrive on the returned channel.
    pub fn new(log_root: Option<PathBuf>) -> (Arc<Watches>, mpsc::UnboundedReceiver<Change>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let registry: Arc<Mutex<Registry>> = Arc::default();
        let routing = Arc::clone(&registry);
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            if event.kind.is_access() {
                return;
            }
            let registry = routing.lock().unwrap_or_else(PoisonError::into_inner);
            let replaced = event.kind.is_create()
                || event.kind.is_remove()
                || matches!(
                    event.kind,
                    notify::EventKind::Modify(notify::event::ModifyKind::Name(_))
                );
            for path in &event.paths {
                let is_dir_create = event.kind.is_create() && path.is_dir();
                for change in registry.route(path, is_dir_create, replaced) {
                    let _ = tx.send(change);
                }
            }
        });
        let watcher = match watcher {
            Ok(w) => Some(w),
            Err(err) => {
                tracing::error!(%err, "file watching is unavailable");
                None
            }
        };
        (
            Arc::new(Watches {
                watcher: Mutex::new(watcher),
                registry,
                folders: Mutex::new(BTreeMap::new()),
                log_root,
            }),
            rx,
        )
    }

    /// Makes the watches match the applied projects.
    pub fn set(&self, projects: &[ProjectSpec]) {
        let mut registry = Registry::default();
        let mut wanted: BTreeSet<PathBuf> = BTreeSet::new();
        for spec in projects {
            let mut files = vec![spec.file.clone()];
            files.extend(spec.env_files.iter().cloned());
            for file in files.into_iter().filter(|f| !f.as_os_str().is_empty()) {
                if let Some(folder) = file.parent() {
                    wanted.insert(folder.to_path_buf());
                    // Each link of the path, seen from the folder holding it.
                    let mut link = folder;
                    while let Some(parent) = link.parent() {
                        wanted.insert(parent.to_path_buf());
                        registry
                            .links
                            .entry(link.to_path_buf())
                            .or_default()
                            .insert(spec.name.clone());
                        link = parent;
                    }
                }
                registry.configs.insert(file, spec.name.clone());
            }
            for app in spec.apps.values() {
                let include = match &app.settings.watch {
                    Watch::Off => continue,
                    Watch::All => None,
                    Watch::Globs(globs) => match globset(globs) {
                        Ok(set) => Some(set),
                        Err(err) => {
                            tracing::warn!(app = %app.name, %err, "bad watch glob");
                            continue;
                        }
                    },
                };
                let mut ignores: Vec<String> =
                    DEFAULT_IGNORES.iter().map(|s| (*s).to_owned()).collect();
                ignores.extend(app.settings.watch_ignore.iter().cloned());
                for file in [&app.settings.out_file, &app.settings.err_file]
                    .into_iter()
                    .flatten()
                {
                    if let Ok(rel) = file.strip_prefix(&app.process.cwd) {
                        ignores.push(rel.display().to_string());
                    }
                }
                let ignore = match globset(&ignores) {
                    Ok(set) => set,
                    Err(err) => {
                        tracing::warn!(app = %app.name, %err, "bad watch_ignore glob");
                        continue;
                    }
                };
                let root = app.process.cwd.clone();
                for folder in folders_under(&root, &ignore, self.log_root.as_deref()) {
                    wanted.insert(folder);
                }
                registry.sources.push(SourceWatch {
                    project: spec.name.clone(),
                    app: app.name.clone(),
                    delay: app.settings.watch_delay,
                    root,
                    include,
                    ignore,
                });
            }
        }
        *self.registry.lock().unwrap_or_else(PoisonError::into_inner) = registry;
        let mut folders = self.folders.lock().unwrap_or_else(PoisonError::into_inner);
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(watcher) = watcher.as_mut() else {
            return;
        };
        folders.retain(|folder, _| {
            let keep = wanted.contains(folder);
            if !keep {
                let _ = watcher.unwatch(folder);
            }
            keep
        });
        for folder in wanted {
            let now = identity(&folder);
            match folders.get(&folder) {
                Some(then) if *then == now => continue,
                // The path names another folder now (a swapped link, a
                // recreated folder): the old watch follows the old one.
                Some(_) => {
                    let _ = watcher.unwatch(&folder);
                }
                None => {}
            }
            match watcher.watch(&folder, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    folders.insert(folder, now);
                }
                // A folder being replaced: its parent's watch sees it come back.
                Err(_) if now.is_none() => {
                    folders.remove(&folder);
                }
                Err(err) => {
                    folders.remove(&folder);
                    tracing::warn!(folder = %folder.display(), %err, "cannot watch (see fs.inotify.max_user_watches)");
                }
            }
        }
    }

    /// Adds watches for a folder that appeared under a watched tree.
    pub fn add_folder(&self, folder: &Path) {
        let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let mut add = Vec::new();
        for source in &registry.sources {
            if folder.starts_with(&source.root) {
                add.extend(
                    folders_under(folder, &source.ignore, self.log_root.as_deref())
                        .into_iter()
                        .map(|f| (f, source.root.clone())),
                );
            }
        }
        drop(registry);
        let mut folders = self.folders.lock().unwrap_or_else(PoisonError::into_inner);
        let mut watcher = self.watcher.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(watcher) = watcher.as_mut() else {
            return;
        };
        for (folder, _) in add {
            if !folders.contains_key(&folder) {
                let id = identity(&folder);
                folders.insert(folder.clone(), id);
                let _ = watcher.watch(&folder, RecursiveMode::NonRecursive);
            }
        }
    }
}

/// The folder a path names now (links followed): device and inode.
fn identity(folder: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(folder).ok().map(|m| (m.dev(), m.ino()))
}

/// `root` and every folder below it that is not ignored (nor eco's logs).
fn folders_under(root: &Path, ignore: &GlobSet, log_root: Option<&Path>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let base = root.to_path_buf();
    let mut stack = vec![root.to_path_buf()];
    while let Some(folder) = stack.pop() {
        if log_root.is_some_and(|r| folder.starts_with(r)) {
            continue;
        }
        found.push(folder.clone());
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir {
                continue;
            }
            let relative = path.strip_prefix(&base).unwrap_or(&path);
            if !ignore.is_match(relative) {
                stack.push(path);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn routing_honours_globs_and_ignores() {
        let mut ignores = strings(DEFAULT_IGNORES);
        ignores.push("**/fixtures/**".into());
        let registry = Registry {
            configs: BTreeMap::from([(PathBuf::from("/p/ecosystem.yaml"), "p".to_owned())]),
            links: BTreeMap::from([(PathBuf::from("/p"), BTreeSet::from(["p".to_owned()]))]),
            sources: vec![SourceWatch {
                project: "p".into(),
                app: "web".into(),
                delay: std::time::Duration::from_millis(200),
                root: PathBuf::from("/p/web"),
                include: Some(globset(&strings(&["src/**/*.js", "*.json"])).expect("globs")),
                ignore: globset(&ignores).expect("ignores"),
            }],
        };
        let hit = |p: &str| !registry.route(Path::new(p), false, true).is_empty();
        assert!(hit("/p/ecosystem.yaml"));
        // The folder itself replaced (a swapped release link).
        assert!(hit("/p"));
        assert!(registry.route(Path::new("/p"), false, false).is_empty());
        assert!(hit("/p/web/src/a/b.js"));
        assert!(hit("/p/web/package.json"));
        assert!(!hit("/p/web/src/a/b.ts"));
        assert!(!hit("/p/web/node_modules/x/index.js"));
        assert!(!hit("/p/web/src/.main.js.swp"));
        assert!(!hit("/p/web/src/fixtures/x.js"));
        assert!(!hit("/p/web/src/main.js~"));
        assert!(!hit("/p/web/.git/index"));
        assert!(!hit("/elsewhere/a.js"));
    }
}
