//! Watching one file for saves (`eco up -F`). Watches the file's folder (not the
//! file), so saves by rename-over and delete-and-recreate are seen too.

use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Keeps the watch alive; drop it to stop watching.
pub struct FileWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Sends `()` on every change that touches `file`.
pub fn file_changes(file: &Path) -> notify::Result<(FileWatch, mpsc::UnboundedReceiver<()>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let target: PathBuf = file.to_path_buf();
    let name = file.file_name().map(std::ffi::OsStr::to_os_string);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event {
            let touches = event
                .paths
                .iter()
                .any(|p| p == &target || p.file_name().map(std::ffi::OsStr::to_os_string) == name);
            if touches && !event.kind.is_access() {
                let _ = tx.send(());
            }
        }
    })?;
    let folder = file.parent().unwrap_or_else(|| Path::new("/"));
    watcher.watch(folder, RecursiveMode::NonRecursive)?;
    Ok((FileWatch { _watcher: watcher }, rx))
}
