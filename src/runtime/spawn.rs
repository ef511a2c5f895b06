//! Starting one instance: its `SpawnRequest` (argv, env and cwd, its own
//! process group, stdin from /dev/null, output through pipes, its cluster
//! sockets and stored descriptors), handed to the engine's spawner.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use tokio::sync::{SemaphorePermit, oneshot};

use super::cgroup::Cgroup;
use super::listen::{Lease, Listeners, fd_name};
pub use super::spawner::Output;
use super::spawner::{SpawnRequest, Spawner};
use crate::spec::{InstanceSpec, ListenAddr};
use crate::state::Exit;

/// The environment variable that marks every process an instance starts,
/// so processes that escape its group (double-forked daemons) are found.
pub const SPAWN_MARK: &str = "ECO_SPAWN_ID";

/// Capacity asked for each output pipe (Linux caps it at
/// /proc/sys/fs/pipe-max-size, 1 MiB by default).
const PIPE_SIZE: i32 = 1024 * 1024;

/// A started instance.
pub struct Spawned {
    pub pid: i32,
    pub exit: oneshot::Receiver<Exit>,
    /// Non-blocking read ends, for `output::pump`; None for a stream that
    /// goes to /dev/null.
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
    /// The instance's own cluster sockets, held while its process runs.
    pub lease: Option<Lease>,
    /// See [`crate::runtime::spawner::Child::born`].
    pub born: Option<u64>,
}

/// Cluster sockets for one spawn, and the fds the instance stored
/// (`FDSTORE=1`), handed down after them.
pub struct Sockets<'a> {
    pub listeners: &'a Arc<Listeners>,
    pub addrs: &'a [ListenAddr],
    /// The instance's index: its slot among per-instance sockets.
    pub slot: u32,
    pub stored: &'a [(String, OwnedFd)],
}

/// How one instance is started: through which spawner, into which
/// cgroup, reading which streams, with which descriptor limit.
#[derive(Clone, Copy)]
pub struct How<'a> {
    pub spawner: &'a dyn Spawner,
    pub cgroup: Option<&'a Cgroup>,
    pub output: Output,
    /// The soft `RLIMIT_NOFILE` apps start with (see `Host::app_nofile`).
    pub nofile: Option<u64>,
}

/// Starts `spec` with `extra` env on top (NOTIFY_SOCKET, the spawn mark),
/// and with its cluster sockets when it has any (through `eco __listen`).
pub fn spawn(
    how: How<'_>,
    spec: &InstanceSpec,
    extra: &[(&str, String)],
    sockets: Option<Sockets<'_>>,
) -> io::Result<Spawned> {
    match sockets {
        Some(sockets) if !sockets.addrs.is_empty() || !sockets.stored.is_empty() => {
            let listened = sockets
                .listeners
                .with_inheritable(sockets.addrs, sockets.slot, |fds| {
                    let mut names: Vec<String> = sockets.addrs.iter().map(fd_name).collect();
                    names.extend(sockets.stored.iter().map(|(n, _)| n.replace(':', "_")));
                    let mut fds: Vec<RawFd> = fds.to_vec();
                    fds.extend(sockets.stored.iter().map(|(_, fd)| fd.as_raw_fd()));
                    let shown: Vec<String> = fds.iter().map(ToString::to_string).collect();
                    let exe = std::env::current_exe()?;
                    let mut argv = vec![
                        exe.display().to_string(),
                        "__listen".to_owned(),
                        "--fds".to_owned(),
                        shown.join(","),
                        "--names".to_owned(),
                        names.join(":"),
                        "--".to_owned(),
                    ];
                    argv.extend(spec.argv.iter().cloned());
                    // At their own numbers: `eco __listen` moves them to 3...
                    let handed = fds.iter().map(|fd| (*fd, *fd)).collect();
                    spawn_argv(how, argv, spec, extra, handed)
                });
            listened.map(|(mut spawned, lease)| {
                spawned.lease = Some(lease);
                spawned
            })
        }
        _ => spawn_argv(how, spec.argv.clone(), spec, extra, Vec::new()),
    }
}

fn spawn_argv(
    how: How<'_>,
    argv: Vec<String>,
    spec: &InstanceSpec,
    extra: &[(&str, String)],
    fds: Vec<(RawFd, RawFd)>,
) -> io::Result<Spawned> {
    let request = request(how, argv, spec, extra, fds);
    spawned(how.output, how.spawner.spawn(&request)?)
}

/// The request that starts `spec`, for [`spawn_off_thread`] (whether to go
/// off-thread at all is [`off_thread_turn`]'s call); None when it has
/// cluster sockets or stored fds to hand down, which spawn in place.
pub fn off_thread_request(
    how: How<'_>,
    spec: &InstanceSpec,
    extra: &[(&str, String)],
    sockets: &Sockets<'_>,
) -> Option<SpawnRequest> {
    let plain = sockets.addrs.is_empty() && sockets.stored.is_empty();
    plain.then(|| request(how, spec.argv.clone(), spec, extra, Vec::new()))
}

/// How many spawns wait for their children's exec at once: one per set
/// of descriptor slots.
static OFF_THREAD: tokio::sync::Semaphore =
    tokio::sync::Semaphore::const_new(super::fd_slots::SETS);

/// The spawns of the current burst: when the last began, and how many.
static BURST: std::sync::Mutex<Option<(std::time::Instant, usize)>> = std::sync::Mutex::new(None);

/// Spawns less than this apart make one burst (a start of 10,000 pauses
/// for tens of milliseconds to serve requests and feed the holder).
const BURST_GAP: std::time::Duration = std::time::Duration::from_secs(1);

/// Only a burst of more spawns than this goes off the engine's thread: in a
/// small one, the threads started cost more than the waits they save (10
/// apps converged in 41 ms off-thread against 31 in place, measured before
/// `fds::presize_table`, when about half of those 31 ms was the table's
/// growth).
const OFF_THREAD_BURST: usize = 100;

/// Counts this spawn into its burst; true once the burst is large.
fn in_large_burst() -> bool {
    let now = std::time::Instant::now();
    let mut burst = BURST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let count = match *burst {
        Some((last, count)) if now.duration_since(last) < BURST_GAP => count + 1,
        _ => 1,
    };
    *burst = Some((now, count));
    count > OFF_THREAD_BURST
}

/// A place among the spawns run off the engine's thread, in a burst of
/// more than [`OFF_THREAD_BURST`], taken before the request is made (so
/// that no more requests wait, each with its whole environment, than can
/// run: 10,000 waiting ones left 40 MB of heap behind); None when the
/// spawn runs in place.
pub async fn off_thread_turn(spawner: &dyn Spawner) -> Option<SemaphorePermit<'static>> {
    if spawner.waits_for_exec() && in_large_burst() {
        OFF_THREAD.acquire().await.ok()
    } else {
        None
    }
}

/// Runs `request` on a blocking thread, up to [`OFF_THREAD`] at once (the
/// caller holds one of them): a spawn waits about half a millisecond for
/// its child to be scheduled and exec, which the engine's thread spends on
/// the next instances instead (10,000 instances: 4.9 s of waiting taken
/// off that thread).
pub async fn spawn_off_thread(
    spawner: Arc<dyn Spawner>,
    request: SpawnRequest,
    _turn: SemaphorePermit<'static>,
) -> io::Result<Spawned> {
    let output = request.output;
    let started = tokio::task::spawn_blocking(move || spawner.spawn(&request))
        .await
        .map_err(io::Error::other)??;
    spawned(output, started)
}

fn request(
    how: How<'_>,
    argv: Vec<String>,
    spec: &InstanceSpec,
    extra: &[(&str, String)],
    fds: Vec<(RawFd, RawFd)>,
) -> SpawnRequest {
    let mut request = SpawnRequest::new(argv, spec.cwd.clone());
    request.set_env(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    request.set_env(extra.iter().map(|(k, v)| (*k, v.as_str())));
    request.output = how.output;
    request.cgroup = how.cgroup.cloned();
    request.nofile = how.nofile;
    request.fds = fds;
    request
}

/// A started child as a [`Spawned`]: its pipes made roomy and non-blocking.
fn spawned(output: Output, started: super::spawner::Child) -> io::Result<Spawned> {
    let (stdout, stderr) = (started.stdout, started.stderr);
    if (stdout.is_some(), stderr.is_some()) != output.read_ends() {
        return Err(io::Error::other("the child's output pipes are missing"));
    }
    for fd in stdout.iter().chain(&stderr) {
        // A roomier pipe: a chatty app keeps writing while eco is briefly
        // busy elsewhere (2 cores are shared by the app, eco and the disk).
        let _ = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
        nix::fcntl::fcntl(
            fd.as_fd(),
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )?;
    }
    Ok(Spawned {
        pid: started.pid,
        exit: started.exit,
        stdout,
        stderr,
        lease: None,
        born: started.born,
    })
}

/// Runs a helper command (readiness `exec`) in its own group, output discarded.
pub fn spawn_quiet(
    spawner: &dyn Spawner,
    shell_cmd: &str,
    spec: &InstanceSpec,
    cgroup: Option<&Cgroup>,
) -> io::Result<(i32, oneshot::Receiver<Exit>)> {
    let argv = vec!["/bin/sh".to_owned(), "-c".to_owned(), shell_cmd.to_owned()];
    let mut request = SpawnRequest::new(argv, spec.cwd.clone());
    request.set_env(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    request.cgroup = cgroup.cloned();
    let started = spawner.spawn(&request)?;
    Ok((started.pid, started.exit))
}
