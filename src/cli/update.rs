//! `eco version` and `eco update`: which eco the CLI and the daemon are,
//! and replacing the daemon with the binary on disk while every app runs on.

use std::time::{Duration, Instant};

use anyhow::Result;

use crate::error::DaemonError;
use crate::ipc::client::{Client, ClientError};
use crate::ipc::proto::{Request, Response};
use crate::paths::Paths;

/// How long `eco update` waits for the new daemon to answer.
const UPDATE_LIMIT: Duration = Duration::from_secs(60);

/// The daemon's answer to `version`.
struct DaemonVersion {
    version: String,
    pid: u32,
    generation: u64,
    exe: Option<std::path::PathBuf>,
}

/// The running daemon's version; None when no daemon runs.
fn daemon_version(paths: &Paths) -> Result<Option<DaemonVersion>> {
    let mut client = match Client::connect(paths, false) {
        Ok(client) => client,
        Err(ClientError::NotRunning { .. }) => return Ok(None),
        Err(err) => return Err(err.into()),
    };
    match client.call(Request::Version)? {
        Response::Version {
            version,
            pid,
            generation,
            exe,
        } => Ok(Some(DaemonVersion {
            version,
            pid,
            generation,
            exe,
        })),
        Response::Error(reply) => Err(DaemonError(reply).into()),
        other => Err(anyhow::anyhow!(
            "unexpected answer from the daemon: {other:?}"
        )),
    }
}

/// `eco version`.
pub fn version() -> Result<i32> {
    let cli = crate::version::current();
    println!("eco {cli}");
    match daemon_version(&Paths::from_env())? {
        None => println!("daemon: not running"),
        Some(daemon) => {
            println!(
                "daemon: eco {} (pid {}, updated in place {} times{})",
                daemon.version,
                daemon.pid,
                daemon.generation,
                daemon
                    .exe
                    .map(|e| format!(", binary {}", e.display()))
                    .unwrap_or_default()
            );
            if daemon.version != cli {
                eprintln!(
                    "eco: the daemon runs another version; run `eco update` to replace it (apps keep running)"
                );
            }
        }
    }
    Ok(0)
}

/// `eco update`: asks the daemon to exec the binary on disk, then waits
/// for the new daemon (the same pid, one generation on) to answer.
pub fn update() -> Result<i32> {
    let paths = Paths::from_env();
    let Some(before) = daemon_version(&paths)? else {
        println!("no eco daemon runs: the next eco command starts this one");
        return Ok(0);
    };
    let mut client = Client::connect(&paths, false)?;
    let from = match client.call(Request::Update)? {
        Response::Updating { from } => from,
        Response::Error(reply) => return Err(DaemonError(reply).into()),
        other => {
            return Err(anyhow::anyhow!(
                "unexpected answer from the daemon: {other:?}"
            ));
        }
    };
    drop(client);
    let deadline = Instant::now() + UPDATE_LIMIT;
    loop {
        // The old daemon closes the socket's connections at its exec; the
        // new one serves the same socket once it has adopted every app.
        match daemon_version(&paths) {
            Ok(Some(after)) if after.generation > before.generation => {
                println!(
                    "eco daemon updated in place: {from} -> {} (pid {}{}); every app kept running",
                    after.version,
                    after.pid,
                    if after.pid == before.pid {
                        ", unchanged"
                    } else {
                        ", new"
                    }
                );
                return Ok(0);
            }
            Ok(None) => anyhow::bail!(
                "the daemon exited during the update; see {}",
                paths.daemon_log().display()
            ),
            _ => {}
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "the updated daemon did not answer within {}s; see {}",
                UPDATE_LIMIT.as_secs(),
                paths.daemon_log().display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `eco __check-state PATH`: exits 0 when this build can take the state
/// a daemon hands over.
pub fn check_state(path: &std::path::Path) -> Result<i32> {
    println!("{}", crate::daemon::update::check_state(path)?);
    Ok(0)
}
