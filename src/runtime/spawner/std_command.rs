//! The std fallback: a `SpawnRequest` through `std::process::Command`, for
//! processes without a cgroup, and for kernels or architectures where the
//! clone into a cgroup is not available (eco then enters the cgroup for the
//! instant of the spawn). Honours every field of the request: with neither
//! a descriptor limit nor descriptors to hand down, std takes its fast
//! `posix_spawn` path; otherwise a `pre_exec` sets them in the child.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use super::{Child, SpawnRequest};
use crate::runtime::clone_into::{hand_down, nofile_limit, park_at};
use crate::runtime::reaper::{Reaper, pid_of};

/// Starts `request` through std, registered with `reaper`.
pub fn spawn(reaper: &Reaper, request: &SpawnRequest) -> io::Result<Child> {
    request.check()?;
    let mut command = Command::new(&request.argv[0]);
    command
        .args(&request.argv[1..])
        .current_dir(&request.cwd)
        .env_clear()
        .envs(request.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(piped_or_null(request.output.stdout))
        .stderr(piped_or_null(request.output.stderr));
    // One pipe for both: eco keeps its read end, the child gets its write
    // end as fd 1 and 2 (the command's copies close when it drops).
    let one_pipe = match request.output.one_pipe() {
        true => {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            command.stdout(Stdio::from(write.try_clone()?));
            command.stderr(Stdio::from(write));
            Some(read)
        }
        false => None,
    };
    if request.new_group {
        command.process_group(0);
    }
    let nofile = request.nofile.map(nofile_limit).transpose()?;
    if nofile.is_some() || !request.fds.is_empty() {
        let fds = request.fds.clone();
        let park = park_at(&fds);
        set_in_child(&mut command, nofile, fds, park);
    }
    let _inside = request
        .cgroup
        .as_ref()
        .map(crate::runtime::cgroup::Cgroup::enter)
        .transpose()?;
    let (mut child, exit) = reaper.spawn(&mut command)?;
    drop(command);
    Ok(Child {
        pid: pid_of(&child),
        exit,
        stdout: one_pipe.or_else(|| child.stdout.take().map(OwnedFd::from)),
        stderr: child.stderr.take().map(OwnedFd::from),
        born: None,
    })
}

/// The descriptor limit and the handed-down descriptors, set in the child
/// between fork and exec.
#[allow(unsafe_code)]
fn set_in_child(
    command: &mut Command,
    nofile: Option<libc::rlimit>,
    fds: Vec<(i32, i32)>,
    park: i32,
) {
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe calls (setrlimit, fcntl, dup2) on data made before.
    unsafe {
        command.pre_exec(move || {
            if !hand_down(&fds, park) {
                return Err(io::Error::last_os_error());
            }
            // After the dups: eco's table may be full past the app's limit.
            if let Some(limit) = &nofile
                && libc::setrlimit(libc::RLIMIT_NOFILE, limit) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

fn piped_or_null(piped: bool) -> Stdio {
    if piped { Stdio::piped() } else { Stdio::null() }
}
