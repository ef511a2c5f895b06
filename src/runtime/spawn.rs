//! Starting one instance: its argv, env and cwd, in a new session (so it
//! leads its own process group), stdin from /dev/null, output through pipes.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::oneshot;

use super::cgroup::Cgroup;
use super::clone_into;
pub use super::clone_into::Output;
use super::listen::{Lease, Listeners, fd_name};
use super::reaper::{Reaper, pid_of};
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

/// Starts `spec` with `extra` env on top (NOTIFY_SOCKET, the spawn mark),
/// and with its cluster sockets when it has any (through `eco __listen`);
/// `output` says which streams eco reads.
pub fn spawn(
    reaper: &Reaper,
    spec: &InstanceSpec,
    extra: &[(&str, String)],
    sockets: Option<Sockets<'_>>,
    cgroup: Option<&Cgroup>,
    output: Output,
) -> io::Result<Spawned> {
    match sockets {
        Some(sockets) if !sockets.addrs.is_empty() || !sockets.stored.is_empty() => {
            let listened = sockets
                .listeners
                .with_inheritable(sockets.addrs, sockets.slot, |fds| {
                    let mut names: Vec<String> = sockets.addrs.iter().map(fd_name).collect();
                    names.extend(sockets.stored.iter().map(|(n, _)| n.replace(':', "_")));
                    let mut fds: Vec<String> = fds.iter().map(ToString::to_string).collect();
                    fds.extend(
                        sockets
                            .stored
                            .iter()
                            .map(|(_, fd)| fd.as_raw_fd().to_string()),
                    );
                    let _inheritable = Inheritable::new(sockets.stored.iter().map(|(_, fd)| fd));
                    let exe = std::env::current_exe()?;
                    let mut argv = vec![
                        exe.display().to_string(),
                        "__listen".to_owned(),
                        "--fds".to_owned(),
                        fds.join(","),
                        "--names".to_owned(),
                        names.join(":"),
                        "--".to_owned(),
                    ];
                    argv.extend(spec.argv.iter().cloned());
                    spawn_argv(reaper, &argv, spec, extra, cgroup, output)
                });
            listened.map(|(mut spawned, lease)| {
                spawned.lease = Some(lease);
                spawned
            })
        }
        _ => spawn_argv(reaper, &spec.argv, spec, extra, cgroup, output),
    }
}

fn spawn_argv(
    reaper: &Reaper,
    argv: &[String],
    spec: &InstanceSpec,
    extra: &[(&str, String)],
    cgroup: Option<&Cgroup>,
    output: Output,
) -> io::Result<Spawned> {
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]).current_dir(&spec.cwd);
    forget_supervisor(&mut command);
    command
        .envs(&spec.env)
        .envs(extra.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(if output.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if output.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    new_session(&mut command);
    let started = spawn_in(reaper, &mut command, cgroup, output)?;
    let pid = started.pid;
    let exit = started.exit;
    give_callers_nofile(pid);
    let (stdout, stderr) = (started.stdout, started.stderr);
    if (stdout.is_some(), stderr.is_some()) != (output.stdout, output.stderr) {
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
        pid,
        exit,
        stdout,
        stderr,
        lease: None,
    })
}

/// Runs a helper command (readiness `exec`) in its own session, output discarded.
pub fn spawn_quiet(
    reaper: &Reaper,
    shell_cmd: &str,
    spec: &InstanceSpec,
    cgroup: Option<&Cgroup>,
) -> io::Result<(i32, oneshot::Receiver<Exit>)> {
    let mut command = Command::new("/bin/sh");
    forget_supervisor(&mut command);
    command
        .arg("-c")
        .arg(shell_cmd)
        .current_dir(&spec.cwd)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    new_session(&mut command);
    let started = spawn_in(reaper, &mut command, cgroup, Output::NULL)?;
    Ok((started.pid, started.exit))
}

/// Stored fds made inheritable for one spawn, close-on-exec again after.
struct Inheritable<'a>(Vec<&'a OwnedFd>);

impl<'a> Inheritable<'a> {
    fn new(fds: impl Iterator<Item = &'a OwnedFd>) -> Inheritable<'a> {
        let fds: Vec<&OwnedFd> = fds.collect();
        for fd in &fds {
            let _ = nix::fcntl::fcntl(
                fd.as_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            );
        }
        Inheritable(fds)
    }
}

impl Drop for Inheritable<'_> {
    fn drop(&mut self) {
        for fd in &self.0 {
            let _ = nix::fcntl::fcntl(
                fd.as_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
        }
    }
}

/// What eco's own supervisor told eco (systemd's NOTIFY_SOCKET, watchdog,
/// socket activation) is eco's, not its apps': they get their own.
fn forget_supervisor(command: &mut Command) {
    for var in [
        "NOTIFY_SOCKET",
        "WATCHDOG_USEC",
        "WATCHDOG_PID",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        crate::paths::APP_NOFILE_ENV,
    ] {
        command.env_remove(var);
    }
}

/// The daemon raised its own descriptor limit; its apps get the soft limit
/// of the command that started it (programs that use select(2) break above
/// 1024). Set right after the spawn: a program reads its limit when it
/// needs it, long after its first instructions.
#[allow(unsafe_code)]
fn give_callers_nofile(pid: i32) {
    let Some(soft) = crate::daemon::startup::app_nofile() else {
        return;
    };
    let Ok((_, hard)) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
    else {
        return;
    };
    let limit = libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    };
    // SAFETY: prlimit(2) reads `limit`, a valid rlimit on our stack, and
    // writes nothing (old limit pointer is null); a wrong pid only fails.
    let rc = unsafe {
        libc::prlimit(
            pid,
            libc::RLIMIT_NOFILE,
            &raw const limit,
            std::ptr::null_mut(),
        )
    };
    if rc != 0 {
        tracing::debug!(pid, err = %std::io::Error::last_os_error(), "cannot set the app's descriptor limit");
    }
}

/// A child just started.
struct Started {
    pid: i32,
    exit: oneshot::Receiver<Exit>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
}

/// Kernels without `CLONE_INTO_CGROUP` (before 5.7) are found once.
static CLONE_INTO_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// Spawns `command`, born inside `cgroup` when there is one: cloned into
/// it, or on kernels before 5.7 with eco inside it for the instant of the
/// spawn (see `clone_into` for why the clone is preferred).
fn spawn_in(
    reaper: &Reaper,
    command: &mut Command,
    cgroup: Option<&Cgroup>,
    output: Output,
) -> io::Result<Started> {
    if let Some(cgroup) = cgroup
        && !cgroup.was_killed()
        && !CLONE_INTO_UNSUPPORTED.load(Ordering::Relaxed)
    {
        let dir = clone_into::open_dir(cgroup.path())?;
        let mut pipes = None;
        let cloned = reaper.spawn_with(|| {
            let child = clone_into::spawn(command, dir.as_fd(), output)?;
            pipes = Some((child.stdout, child.stderr));
            Ok(child.pid)
        });
        match cloned {
            Ok((pid, exit)) => {
                let (stdout, stderr) = pipes.unwrap_or_default();
                return Ok(Started {
                    pid,
                    exit,
                    stdout,
                    stderr,
                });
            }
            Err(err) if err.kind() == io::ErrorKind::Unsupported => {
                tracing::info!(%err, "no CLONE_INTO_CGROUP: eco enters each cgroup to spawn");
                CLONE_INTO_UNSUPPORTED.store(true, Ordering::Relaxed);
            }
            Err(err) => return Err(err),
        }
    }
    let _inside = cgroup.map(Cgroup::enter).transpose()?;
    let (mut child, exit) = reaper.spawn(command)?;
    Ok(Started {
        pid: pid_of(&child),
        exit,
        stdout: child.stdout.take().map(OwnedFd::from),
        stderr: child.stderr.take().map(OwnedFd::from),
    })
}

/// The child leads a new process group, so signals to the group reach
/// everything it starts, and a Ctrl-C in eco's terminal (which signals only
/// the terminal's foreground group) never reaches it directly. The daemon
/// runs in its own session without a terminal, so its apps have none either.
/// A group rather than `setsid` keeps std on its fast `posix_spawn` path.
fn new_session(command: &mut Command) {
    command.process_group(0);
}
