//! `eco update`: the daemon replaces itself with the eco binary now on
//! disk, in place (an exec: the same pid, so the apps stay its children
//! and it stays their subreaper), without stopping any app.
//!
//! 1. Operations in progress finish first (every app's lock is taken).
//! 2. The new binary is asked whether it can take the state
//!    (`eco __check-state`); if not, it is refused and nothing changed.
//! 3. The output readers stop at a line boundary (what they have not read
//!    stays in the pipes), the log files are flushed.
//! 4. The state (projects, ids, every running instance with its pid and
//!    output pipes, every cluster socket, the lock and the socket eco
//!    serves on) goes into a memfd; exactly the descriptors it names lose
//!    close-on-exec; the binary is exec'd with `__handover FD`.
//! 5. The new daemon ([`resume`]) takes the lock and the socket back and
//!    restores the projects: each running instance is adopted, not spawned.
//!
//! Clients that connect meanwhile wait in the socket's backlog.

use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::requests::Daemon;
use super::state::{SavedProject, SavedState};
use crate::ipc::proto::{ErrorReply, Response};
use crate::ipc::server::Reply;
use crate::runtime::Engine;
use crate::runtime::adopt::{self, RuntimeHandover};

/// The hidden command that checks a handover (`eco __check-state PATH`).
pub const CHECK_COMMAND: &str = "__check-state";

/// The hidden command a daemon execs into (`eco __handover FD`).
pub const HANDOVER_COMMAND: &str = "__handover";

/// Format of [`Handover`]; a daemon refuses (at the check) another.
pub const FORMAT: u32 = 1;

/// How long the new binary gets to check the state.
const CHECK_LIMIT: Duration = Duration::from_secs(20);

/// How long starts and stops in progress get to finish before a handover.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// Everything the next daemon needs.
#[derive(Debug, Serialize, Deserialize)]
pub struct Handover {
    pub format: u32,
    /// The version of the daemon that handed over.
    pub version: String,
    /// How many handovers this daemon's pid has been through.
    pub generation: u64,
    /// The binary to exec (recorded at the first start: /proc/self/exe
    /// reads "(deleted)" once the file was replaced).
    pub exe: PathBuf,
    pub lock_fd: RawFd,
    pub socket_fd: RawFd,
    pub state: SavedState,
    pub runtime: RuntimeHandover,
    pub runtime_format: u32,
}

/// This daemon's generation (0 at a fresh start, +1 per handover).
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The binary this daemon was started from.
static EXE: OnceLock<PathBuf> = OnceLock::new();

/// The lock and socket descriptors, for the handover.
static HELD: OnceLock<(RawFd, RawFd)> = OnceLock::new();

/// Records where this daemon came from, at its start: a handover's values,
/// else the running binary.
pub fn record_start(handover: Option<&Handover>) {
    match handover {
        Some(h) => {
            GENERATION.store(h.generation + 1, Ordering::SeqCst);
            let _ = EXE.set(h.exe.clone());
        }
        None => {
            if let Ok(exe) = std::env::current_exe() {
                let _ = EXE.set(exe);
            }
        }
    }
}

/// The binary this daemon was started from (a replaced file still runs:
/// see `EXE`).
pub fn exe() -> Option<PathBuf> {
    EXE.get().cloned()
}

/// Records the lock and the serving socket, carried over at a handover.
pub fn record_held(lock_fd: RawFd, socket_fd: RawFd) {
    let _ = HELD.set((lock_fd, socket_fd));
}

/// `eco version`'s answer.
pub fn version() -> Response {
    Response::Version {
        version: crate::version::current().to_owned(),
        pid: std::process::id(),
        generation: GENERATION.load(Ordering::SeqCst),
        exe: EXE.get().cloned(),
    }
}

/// Carries out `eco update`: answers `Updating` and execs, or answers
/// why not (the old daemon then runs on, unchanged).
pub async fn update(daemon: &Daemon, mut reply: Reply) {
    let engine = Arc::clone(daemon.reconciler.engine());
    // Operations in progress (rollouts, restarts) finish first; none
    // starts from here to the exec: the apps' guards are held throughout
    // (released if the update is refused).
    let mut guards = Vec::new();
    let prepared = super::requests::busy(&mut reply, async {
        let locked = tokio::time::timeout(SETTLE_LIMIT, async {
            for spec in engine.projects().await {
                for app in spec.apps.keys() {
                    guards.push(engine.lock_app(&spec.name, app, false).await);
                }
            }
        })
        .await;
        if locked.is_err() {
            return Err(ErrorReply::failed(
                format!(
                    "operations in progress (a rollout, a restart) did not finish within {}s",
                    SETTLE_LIMIT.as_secs()
                ),
                Some(
                    "nothing changed; run `eco update` again once they are done (`eco ls`)".into(),
                ),
            ));
        }
        prepare(&engine, daemon).await
    })
    .await;
    let exe = match prepared {
        Ok(exe) => exe,
        Err(err) => {
            reply.send(&Response::Error(err)).await;
            return;
        }
    };
    reply
        .send(&Response::Updating {
            from: crate::version::current().to_owned(),
        })
        .await;
    drop(reply);
    let handover = build(&engine, daemon, &exe).await;
    let err = exec(&exe, &handover);
    // Quiesced and unable to exec: the running binary takes over (it can
    // read its own state).
    tracing::error!(%err, exe = %exe.display(), "cannot exec the new binary; re-executing the running one");
    let err = exec(Path::new("/proc/self/exe"), &handover);
    tracing::error!(%err, "cannot re-execute eco; exiting (the apps run on; the next eco command cleans them up)");
    std::process::exit(70);
}

/// Waits for starts and stops in progress, then checks the binary on
/// disk against this daemon's state. Returns the binary.
async fn prepare(engine: &Arc<Engine>, daemon: &Daemon) -> Result<PathBuf, ErrorReply> {
    let exe = EXE.get().cloned().ok_or_else(|| {
        ErrorReply::failed(
            "this daemon does not know which binary it was started from",
            Some("run `eco kill`, then any eco command starts the new daemon".into()),
        )
    })?;
    settle(engine).await;
    let preview = handover_of(daemon, &exe, engine.hand_over().await).await;
    check(engine, &exe, &preview).await?;
    Ok(exe)
}

/// Waits (bounded) until no instance is starting or stopping.
async fn settle(engine: &Engine) {
    use crate::state::Status;
    let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
    while tokio::time::Instant::now() < deadline {
        let busy = engine
            .rows()
            .await
            .iter()
            .any(|r| matches!(r.state.status, Status::Starting | Status::Stopping));
        if !busy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tracing::warn!("instances still starting or stopping; handing over anyway");
}

/// The final state: the output readers park first, the logs are flushed.
async fn build(engine: &Engine, daemon: &Daemon, exe: &Path) -> Handover {
    adopt::quiesce();
    if !adopt::parked(Duration::from_secs(2)).await {
        tracing::warn!("some output readers did not stop in time");
    }
    daemon.logs.flush();
    let runtime = engine.hand_over().await;
    handover_of(daemon, exe, runtime).await
}

async fn handover_of(daemon: &Daemon, exe: &Path, runtime: RuntimeHandover) -> Handover {
    let engine = daemon.reconciler.engine();
    let projects = engine
        .snapshot_for_state()
        .await
        .into_iter()
        .map(|(spec, user_stopped)| SavedProject { spec, user_stopped })
        .collect();
    let (lock_fd, socket_fd) = HELD.get().copied().unwrap_or((-1, -1));
    Handover {
        format: FORMAT,
        version: crate::version::current().to_owned(),
        generation: GENERATION.load(Ordering::SeqCst),
        exe: exe.to_path_buf(),
        lock_fd,
        socket_fd,
        state: SavedState {
            version: super::state::STATE_VERSION,
            projects,
            ids: engine.saved_ids(),
        },
        runtime,
        runtime_format: adopt::FORMAT,
    }
}

/// Runs `exe __check-state` on the state; an error names what it said.
async fn check(engine: &Engine, exe: &Path, handover: &Handover) -> Result<(), ErrorReply> {
    let refused = |what: String| {
        ErrorReply::failed(
            format!("the eco binary at {} cannot take over: {what}", exe.display()),
            Some(
                "the running daemon and every app are unchanged; install a build that can read this state (or `eco kill` and start afresh)".into(),
            ),
        )
    };
    let memfd =
        write_memfd(handover).map_err(|e| refused(format!("cannot write the state: {e}")))?;
    let path = format!("/proc/{}/fd/{}", std::process::id(), memfd.as_raw_fd());
    let mut command = std::process::Command::new(exe);
    command
        .arg(CHECK_COMMAND)
        .arg(&path)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let reaper = engine
        .reaper()
        .ok_or_else(|| refused("this daemon has no reaper to run it with".into()))?;
    let (mut child, exit) = reaper
        .spawn(&mut command)
        .map_err(|e| refused(format!("cannot run it: {e}")))?;
    let stderr = child.stderr.take();
    let said = tokio::task::spawn_blocking(move || {
        let mut text = String::new();
        if let Some(mut pipe) = stderr {
            let _ = pipe.by_ref().take(4096).read_to_string(&mut text);
        }
        text
    });
    let exit = match tokio::time::timeout(CHECK_LIMIT, exit).await {
        Ok(Ok(exit)) => exit,
        _ => {
            let _ = child.kill();
            return Err(refused(format!(
                "`{CHECK_COMMAND}` did not answer within {}s",
                CHECK_LIMIT.as_secs()
            )));
        }
    };
    let said = said.await.unwrap_or_default();
    drop(memfd);
    if exit.success() {
        return Ok(());
    }
    let said = said.trim().trim_start_matches("error: ");
    Err(refused(if said.is_empty() {
        format!("`{CHECK_COMMAND}` failed ({exit:?})")
    } else {
        said.to_owned()
    }))
}

/// The handover as JSON in a memfd (close-on-exec, offset 0).
fn write_memfd(handover: &Handover) -> std::io::Result<OwnedFd> {
    let fd =
        nix::sys::memfd::memfd_create(c"eco-handover", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&serde_json::to_vec(handover).map_err(std::io::Error::other)?)?;
    file.rewind()?;
    Ok(OwnedFd::from(file))
}

/// Execs `exe __handover FD` with exactly the handover's descriptors
/// inheritable; returns only on failure.
fn exec(exe: &Path, handover: &Handover) -> std::io::Error {
    let memfd = match write_memfd(handover) {
        Ok(fd) => fd,
        Err(err) => return err,
    };
    let mut keep = handover.runtime.fds();
    keep.extend([handover.lock_fd, handover.socket_fd, memfd.as_raw_fd()]);
    for fd in keep.into_iter().filter(|fd| *fd > 2) {
        inheritable(fd);
    }
    let memfd = memfd.into_raw_fd();
    let args = [
        cstring(exe.as_os_str().as_encoded_bytes()),
        cstring(HANDOVER_COMMAND.as_bytes()),
        cstring(memfd.to_string().as_bytes()),
    ];
    let Ok(path) = std::ffi::CString::new(exe.as_os_str().as_encoded_bytes()) else {
        return std::io::Error::other("the binary's path holds a NUL byte");
    };
    match nix::unistd::execv(&path, &args) {
        Err(err) => {
            // Not exec'd: the memfd is ours again (and must not leak into
            // the apps this daemon would start).
            drop(adopt::owned(memfd));
            std::io::Error::from(err)
        }
        Ok(never) => match never {},
    }
}

fn cstring(bytes: &[u8]) -> std::ffi::CString {
    std::ffi::CString::new(bytes).unwrap_or_default()
}

/// Clears close-on-exec on one descriptor named by the handover.
fn inheritable(fd: RawFd) {
    let fd = adopt::owned(fd);
    let _ = nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
    );
    let _ = fd.into_raw_fd();
}

/// Reads and checks a handover: `eco __check-state PATH` (0: this binary
/// can take it over).
pub fn check_state(path: &Path) -> anyhow::Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let handover = parse(&bytes)?;
    Ok(format!(
        "{}: handover from eco {} (format {}): {} projects, {} running instances, {} sockets",
        path.display(),
        handover.version,
        handover.format,
        handover.state.projects.len(),
        handover.runtime.instances.len(),
        handover.runtime.sockets.len()
    ))
}

/// A handover this build can take, or why not.
fn parse(bytes: &[u8]) -> anyhow::Result<Handover> {
    let handover: Handover = serde_json::from_slice(bytes)
        .context("the state handed over is not one this build reads")?;
    if handover.format != FORMAT || handover.runtime_format != adopt::FORMAT {
        anyhow::bail!(
            "the state handed over is format {}/{}; this build reads {FORMAT}/{}",
            handover.format,
            handover.runtime_format,
            adopt::FORMAT
        );
    }
    Ok(handover)
}

/// `eco __handover FD`: the daemon after its exec. Takes the lock and
/// socket back, then runs as a daemon that adopts the running instances.
pub fn resume(paths: crate::paths::Paths, fd: RawFd) -> anyhow::Result<()> {
    let mut file = std::fs::File::from(adopt::owned(fd));
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .context("cannot read the state handed over")?;
    drop(file);
    let handover = parse(&bytes)?;
    record_start(Some(&handover));
    // The lock is held by this very descriptor (inherited across the
    // exec): locking it again through it succeeds at once.
    let lock = std::fs::File::from(adopt::owned(handover.lock_fd));
    let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map_err(|(_, err)| err)
        .context("cannot take the daemon lock back after the update")?;
    nix::fcntl::fcntl(
        &*lock,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    let lock_inode = std::os::unix::fs::MetadataExt::ino(&lock.metadata()?);
    tracing::info!(
        from = %handover.version,
        to = crate::version::current(),
        instances = handover.runtime.instances.len(),
        "daemon updated in place"
    );
    super::serve(paths, lock, lock_inode, Some(handover))
}

/// The serving socket handed over, as a listener for this runtime.
pub fn listener_of(fd: RawFd) -> std::io::Result<tokio::net::UnixListener> {
    let std_listener = std::os::unix::net::UnixListener::from(adopt::owned(fd));
    nix::fcntl::fcntl(
        &std_listener,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )?;
    std_listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(std_listener)
}
