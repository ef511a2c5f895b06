//! Starting a process that is born inside its cgroup: `clone3` with
//! `CLONE_INTO_CGROUP` (Linux 5.7+). Moving a process into a cgroup by
//! writing `cgroup.procs` takes the kernel's cgroup write lock, and the
//! first such write after a quiet spell waits for an RCU grace period
//! (about 10 ms here), which every converge paid. A clone into the cgroup
//! takes only the read side.
//!
//! The child is a fork-like copy of eco (no shared memory) that runs only
//! async-signal-safe system calls on data prepared beforehand, then execs:
//! the same discipline as std's own spawn.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

/// `CLONE_INTO_CGROUP` (linux/sched.h); not in the libc crate.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (linux/sched.h), the version with `cgroup`.
#[repr(C, align(8))]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Where the child's stdout and stderr go.
pub enum Output {
    /// New pipes; eco gets the read ends.
    Piped,
    /// /dev/null.
    Null,
}

/// A started child.
pub struct Child {
    pub pid: i32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Everything the child needs, as C strings made before the clone.
struct Prepared {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: Option<CString>,
    dev_null: CString,
}

/// Starts `command` (program, args, env, cwd, `process_group(0)`) inside
/// the cgroup whose directory is open as `cgroup`. stdin is /dev/null.
#[allow(unsafe_code)]
pub fn spawn(command: &Command, cgroup: BorrowedFd<'_>, output: &Output) -> io::Result<Child> {
    let prepared = prepare(command)?;
    let argv: Vec<*const libc::c_char> = pointers(&prepared.argv);
    let envp: Vec<*const libc::c_char> = pointers(&prepared.envp);
    let (out_read, out_write, err_read, err_write) = match output {
        Output::Piped => {
            let (out_read, out_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            let (err_read, err_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            (
                Some(out_read),
                Some(out_write),
                Some(err_read),
                Some(err_write),
            )
        }
        Output::Null => (None, None, None, None),
    };
    // The child reports a failed exec here; a successful exec closes it.
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    let out_fd = out_write.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let err_fd = err_write.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let report_fd = report_write.as_raw_fd();
    let mut args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: u64::try_from(cgroup.as_raw_fd()).map_err(|_| io::Error::other("bad cgroup fd"))?,
        ..CloneArgs::default()
    };
    // SAFETY: clone3 with no CLONE_VM and no stack behaves as fork: the
    // child gets a copy of this address space and returns 0 here on a copy
    // of this stack. It then runs only `child`, which makes async-signal-
    // safe calls on memory prepared above and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw mut args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: see above; the pointers stay valid in the copy.
        unsafe { child(&prepared, &argv, &envp, [out_fd, err_fd], report_fd) }
    }
    if pid < 0 {
        let err = io::Error::last_os_error();
        // Kernels before 5.7 know no CLONE_INTO_CGROUP (or no clone3).
        if matches!(err.raw_os_error(), Some(libc::ENOSYS | libc::E2BIG)) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, err));
        }
        return Err(err);
    }
    let pid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    drop(report_write);
    drop(out_write);
    drop(err_write);
    let mut errno = [0u8; 4];
    let mut got = 0;
    while got < errno.len() {
        match nix::unistd::read(&report_read, &mut errno[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(nix::errno::Errno::EINTR) => {}
            Err(err) => return Err(err.into()),
        }
    }
    if got == errno.len() {
        // The child has exited with 127; the reaper collects it.
        return Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)));
    }
    Ok(Child {
        pid,
        stdout: out_read,
        stderr: err_read,
    })
}

/// The child's side: never returns.
///
/// # Safety
/// Only in the child of a fork-like clone; `argv` and `envp` point into
/// `prepared` and end with a null pointer.
#[allow(unsafe_code)]
unsafe fn child(
    prepared: &Prepared,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    outputs: [RawFd; 2],
    report: RawFd,
) -> ! {
    // SAFETY (whole block): plain system calls on valid descriptors and
    // NUL-terminated strings prepared by the parent; no allocation, no
    // locks. Every failure is reported through `report`.
    unsafe {
        let fail = |errno: i32| -> ! {
            let bytes = errno.to_ne_bytes();
            libc::write(report, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(127)
        };
        if libc::setpgid(0, 0) != 0 {
            fail(*libc::__errno_location());
        }
        let null_in = libc::open(prepared.dev_null.as_ptr(), libc::O_RDONLY);
        if null_in < 0 || libc::dup2(null_in, 0) < 0 {
            fail(*libc::__errno_location());
        }
        for (target, fd) in [(1, outputs[0]), (2, outputs[1])] {
            let fd = if fd >= 0 {
                fd
            } else {
                libc::open(prepared.dev_null.as_ptr(), libc::O_WRONLY)
            };
            if fd < 0 || libc::dup2(fd, target) < 0 {
                fail(*libc::__errno_location());
            }
        }
        if let Some(cwd) = &prepared.cwd
            && libc::chdir(cwd.as_ptr()) != 0
        {
            fail(*libc::__errno_location());
        }
        // Rust ignores SIGPIPE; the app gets the default, and no signal
        // blocked (as std does).
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const none, std::ptr::null_mut());
        // As execvp: the first candidate that is not missing decides.
        let mut errno = libc::ENOENT;
        for path in &prepared.candidates {
            libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
            errno = *libc::__errno_location();
            if errno != libc::ENOENT && errno != libc::ENOTDIR && errno != libc::EACCES {
                break;
            }
        }
        fail(errno)
    }
}

fn pointers(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::other("an argument or variable contains a NUL byte"))
}

/// The command's program candidates, argv, full environment and cwd.
fn prepare(command: &Command) -> io::Result<Prepared> {
    let mut env: std::collections::BTreeMap<OsString, OsString> = std::env::vars_os().collect();
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => env.insert(key.to_owned(), value.to_owned()),
            None => env.remove(key),
        };
    }
    let program = command.get_program();
    let candidates = candidates(
        program,
        env.get(OsStr::new("PATH")).map(OsString::as_os_str),
    )
    .iter()
    .map(|p| c_string(p.as_os_str().as_bytes()))
    .collect::<io::Result<Vec<_>>>()?;
    let argv = std::iter::once(program)
        .chain(command.get_args())
        .map(|a| c_string(a.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| {
            let mut pair = k.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(v.as_bytes());
            c_string(&pair)
        })
        .collect::<io::Result<Vec<_>>>()?;
    let cwd = command
        .get_current_dir()
        .map(|d| c_string(d.as_os_str().as_bytes()))
        .transpose()?;
    Ok(Prepared {
        candidates,
        argv,
        envp,
        cwd,
        dev_null: c_string(b"/dev/null")?,
    })
}

/// Where `program` is looked for: itself when it names a path, else each
/// folder of the child's PATH (execvp's default when there is none).
fn candidates(program: &OsStr, path: Option<&OsStr>) -> Vec<std::path::PathBuf> {
    if program.as_bytes().contains(&b'/') {
        return vec![Path::new(program).to_path_buf()];
    }
    let path = path.unwrap_or(OsStr::new("/bin:/usr/bin"));
    std::env::split_paths(path)
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                Path::new(".").join(program)
            } else {
                dir.join(program)
            }
        })
        .collect()
}

/// Opens a cgroup's directory for `CLONE_INTO_CGROUP`.
pub fn open_dir(path: &Path) -> io::Result<OwnedFd> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_looked_up_in_the_childs_path() {
        assert_eq!(
            candidates(OsStr::new("./run.sh"), Some(OsStr::new("/x"))),
            [Path::new("./run.sh")]
        );
        assert_eq!(
            candidates(OsStr::new("node"), Some(OsStr::new("/a:/b/c"))),
            [Path::new("/a/node"), Path::new("/b/c/node")]
        );
        assert_eq!(
            candidates(OsStr::new("sh"), None),
            [Path::new("/bin/sh"), Path::new("/usr/bin/sh")]
        );
    }
}
