//! `eco up -F`: the engine in this process, output on this terminal, the
//! file reloaded on save, everything stopped on Ctrl-C (a second one kills).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio::time::sleep;

use crate::cli::render;
use crate::config;
use crate::console::Console;
use crate::runtime::Engine;
use crate::runtime::reaper::Reaper;
use crate::spec::ProjectSpec;

/// Quiet time after the last file event before reloading (editors write in bursts).
const SAVE_SETTLE: Duration = Duration::from_millis(50);

/// Runs until Ctrl-C or SIGTERM; returns the exit code.
pub async fn run(file: PathBuf, profile: Option<String>, spec: ProjectSpec) -> anyhow::Result<i32> {
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let reaper = Reaper::start()?;
    let console = Arc::new(Console::new());
    let engine = Engine::new(reaper, console.clone(), "fg".into());
    // Memory limits and schedules act in the foreground too.
    let specs_changed = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(crate::daemon::monitor::run(
        Arc::clone(&engine),
        Arc::clone(&specs_changed),
    ));
    let actions = engine.apply(spec).await;
    specs_changed.notify_one();
    for line in render::plan_lines(&actions) {
        console.notice(&format!("eco: {line}"));
    }
    let (_watch, mut changes) = crate::watch::file_changes(&file)?;
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            Some(()) = changes.recv() => {
                loop {
                    tokio::select! {
                        () = sleep(SAVE_SETTLE) => break,
                        Some(()) = changes.recv() => {}
                    }
                }
                match config::load(&file, profile.as_deref()) {
                    Ok(spec) => {
                        let actions = engine.apply(spec).await;
                        specs_changed.notify_one();
                        if !crate::plan::is_empty(&actions) {
                            console.notice("eco: file changed, applying:");
                            for line in render::plan_lines(&actions) {
                                console.notice(&format!("eco: {line}"));
                            }
                        }
                    }
                    Err(errors) => {
                        console.notice(&format!("{errors}\neco: the edit was not applied; the apps keep running as they are"));
                    }
                }
            }
        }
    }
    console.notice("eco: stopping every app (Ctrl-C again to kill them at once)");
    let shutdown = engine.shutdown();
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {}
        _ = sigint.recv() => { engine.kill_all().await; shutdown.await; }
        _ = sigterm.recv() => { engine.kill_all().await; shutdown.await; }
    }
    console.notice("eco: all apps stopped");
    console.finish();
    Ok(0)
}
