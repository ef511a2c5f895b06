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
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
    /// The folders above an applied file's folder (see [`Links`]).
    links: Mutex<Links>,
    /// Where the links' reader sends what it sees.
    changes: mpsc::UnboundedSender<Change>,
    registry: Arc<Mutex<Registry>>,
    /// Folders watched now, with the folder each path named then (device,
    /// inode), to watch again a path that names another folder now.
    folders: Mutex<BTreeMap<PathBuf, Option<(u64, u64)>>>,
    /// eco's own log folder, never watched (the daemon's; none in `up -F`).
    log_root: Option<PathBuf>,
}

/// Folders above an applied file's own folder matter only when an entry in
/// them is created, removed or renamed (a swapped release link, a folder
/// recreated), so they get an inotify of their own with that narrow mask.
/// Through the notify crate, which asks for every event, a busy folder on
/// the path such as /tmp woke eco at every file written in it.
struct Links {
    /// None where inotify is unavailable: the notify watcher takes them.
    inotify: Option<Arc<Inotify>>,
    /// Watched folder → its watch and the folder it named then.
    by_path: BTreeMap<PathBuf, (WatchDescriptor, Option<(u64, u64)>)>,
}

/// What a link folder is watched for.
const LINK_EVENTS: AddWatchFlags = AddWatchFlags::IN_CREATE
    .union(AddWatchFlags::IN_DELETE)
    .union(AddWatchFlags::IN_MOVED_FROM)
    .union(AddWatchFlags::IN_MOVED_TO)
    .union(AddWatchFlags::IN_DELETE_SELF)
    .union(AddWatchFlags::IN_MOVE_SELF)
    .union(AddWatchFlags::IN_ONLYDIR);

/// The links' inotify, for tokio's AsyncFd.
struct LinkFd(Arc<Inotify>);

impl std::os::fd::AsRawFd for LinkFd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsFd::as_fd(&*self.0).as_raw_fd()
    }
}

impl Links {
    fn new() -> Links {
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(|err| tracing::warn!(%err, "no inotify for the folders above applied files"))
            .ok()
            .map(Arc::new);
        Links {
            inotify,
            by_path: BTreeMap::new(),
        }
    }

    /// Makes the link watches match `wanted`; a path that names another
    /// folder now is watched again.
    fn set(&mut self, wanted: &BTreeSet<PathBuf>) {
        let Some(inotify) = self.inotify.clone() else {
            return;
        };
        self.by_path.retain(|folder, (watch, then)| {
            let keep = wanted.contains(folder) && *then == identity(folder);
            if !keep {
                let _ = inotify.rm_watch(*watch);
            }
            keep
        });
        for folder in wanted {
            if self.by_path.contains_key(folder) {
                continue;
            }
            let now = identity(folder);
            match inotify.add_watch(folder.as_path(), LINK_EVENTS) {
                Ok(watch) => {
                    self.by_path.insert(folder.clone(), (watch, now));
                }
                // A folder being replaced: its parent's watch sees it come back.
                Err(_) if now.is_none() => {}
                Err(err) => {
                    tracing::warn!(folder = %folder.display(), %err, "cannot watch (see fs.inotify.max_user_watches)");
                }
            }
        }
    }
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

/// Watches a project's file and env files: their folders, and each link
/// of their paths (seen from the folder holding it).
fn config_watches(
    registry: &mut Registry,
    spec: &ProjectSpec,
    wanted: &mut BTreeSet<PathBuf>,
    above: &mut BTreeSet<PathBuf>,
) {
    let mut files = vec![spec.file.clone()];
    files.extend(spec.env_files.iter().cloned());
    for file in files.into_iter().filter(|f| !f.as_os_str().is_empty()) {
        if let Some(folder) = file.parent() {
            wanted.insert(folder.to_path_buf());
            let mut link = folder;
            while let Some(parent) = link.parent() {
                above.insert(parent.to_path_buf());
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
}

impl Watches {
    /// Starts the watcher; changes arrive on the returned channel.
    pub fn new(log_root: Option<PathBuf>) -> (Arc<Watches>, mpsc::UnboundedReceiver<Change>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let links_tx = tx.clone();
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
                links: Mutex::new(Links::new()),
                changes: links_tx,
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
        let mut above: BTreeSet<PathBuf> = BTreeSet::new();
        for spec in projects {
            config_watches(&mut registry, spec, &mut wanted, &mut above);
            for app in spec.apps.values() {
                if let Some(source) = self.source_watch(&spec.name, app, &mut wanted) {
                    registry.sources.push(source);
                }
            }
        }
        *self.registry.lock().unwrap_or_else(PoisonError::into_inner) = registry;
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        if links.inotify.is_some() {
            above.retain(|folder| !wanted.contains(folder));
            links.set(&above);
        } else {
            wanted.append(&mut above);
        }
        drop(links);
        self.watch_folders(wanted);
    }

    /// An app's source watch (`None`: it watches nothing, or its globs are
    /// bad); the folders under its cwd join `wanted`.
    fn source_watch(
        &self,
        project: &str,
        app: &crate::spec::AppSpec,
        wanted: &mut BTreeSet<PathBuf>,
    ) -> Option<SourceWatch> {
        let include = match &app.settings.watch {
            Watch::Off => return None,
            Watch::All => None,
            Watch::Globs(globs) => match globset(globs) {
                Ok(set) => Some(set),
                Err(err) => {
                    tracing::warn!(app = %app.name, %err, "bad watch glob");
                    return None;
                }
            },
        };
        let mut ignores: Vec<String> = DEFAULT_IGNORES.iter().map(|s| (*s).to_owned()).collect();
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
                return None;
            }
        };
        let root = app.process.cwd.clone();
        for folder in folders_under(&root, &ignore, self.log_root.as_deref()) {
            wanted.insert(folder);
        }
        Some(SourceWatch {
            project: project.to_owned(),
            app: app.name.clone(),
            delay: app.settings.watch_delay,
            root,
            include,
            ignore,
        })
    }

    /// Watches exactly the `wanted` folders: unwatches the rest, and
    /// watches again a path that names another folder now.
    fn watch_folders(&self, wanted: BTreeSet<PathBuf>) {
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

    /// Reads the link folders' events until `stop`: an entry created,
    /// removed or renamed in one of them (or the folder itself going)
    /// counts as a change of the applied files below it.
    #[allow(unsafe_code)]
    pub async fn read_links(self: Arc<Watches>, stop: CancellationToken) {
        let inotify = self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .inotify
            .clone();
        let Some(inotify) = inotify else { return };
        // SAFETY: `LinkFd` holds the inotify (and so its fd) open and the
        // same until the AsyncFd, its only owner here, drops it.
        let registered = unsafe { tokio::io::unix::AsyncFd::register(LinkFd(inotify)) };
        let Ok(watched) = registered else {
            tracing::warn!("cannot read the link folders' inotify");
            return;
        };
        loop {
            let mut ready = tokio::select! {
                () = stop.cancelled() => return,
                ready = watched.readable() => match ready {
                    Ok(ready) => ready,
                    Err(_) => return,
                },
            };
            let events = match ready
                .try_io(|fd| fd.get_ref().0.read_events().map_err(std::io::Error::from))
            {
                Ok(Ok(events)) => events,
                Ok(Err(err)) => {
                    tracing::warn!(%err, "reading the link folders' inotify");
                    return;
                }
                Err(_would_block) => continue,
            };
            // A few folders per applied file: a scan finds an event's folder.
            let links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
            let registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            for event in events {
                let Some(folder) = links
                    .by_path
                    .iter()
                    .find_map(|(folder, (watch, _))| (*watch == event.wd).then_some(folder))
                else {
                    continue;
                };
                let gone = AddWatchFlags::IN_DELETE_SELF | AddWatchFlags::IN_MOVE_SELF;
                let path = match &event.name {
                    Some(name) if !event.mask.intersects(gone) => folder.join(name),
                    _ => folder.clone(),
                };
                let is_dir_create = event.mask.contains(AddWatchFlags::IN_CREATE)
                    && event.mask.contains(AddWatchFlags::IN_ISDIR);
                for change in registry.route(&path, is_dir_create, true) {
                    let _ = self.changes.send(change);
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
