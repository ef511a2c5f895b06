//! Starting a process that is born inside its cgroup: `clone3` with
//! `CLONE_INTO_CGROUP` (Linux 5.7+). Moving a process into a cgroup by
//! writing `cgroup.procs` takes the kernel's cgroup write lock, and the
//! first such write after a quiet spell waits for an RCU grace period
//! (about 10 ms here), which every converge paid. A clone into the cgroup
//! takes only the read side.
//!
//! The clone is a vfork, as glibc's posix_spawn does it (which std uses):
//! the child borrows eco's memory on a stack of its own, eco's thread waits
//! until it has exec'd, and nothing is copied. A fork-like copy cost about
//! as much again as the cgroup write it replaced. The child runs only
//! async-signal-safe system calls on data prepared beforehand. The stack
//! switch needs a few lines of assembly (x86_64); elsewhere eco keeps
//! entering the cgroup around a spawn. It honours every field of a
//! `SpawnRequest` (see `spawner` for why not glibc's
//! `posix_spawnattr_setcgroup_np`).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use super::fd_slots;
use super::spawner::SpawnRequest;

/// `CLONE_INTO_CGROUP` (linux/sched.h); not in the libc crate.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `CLONE_CLEAR_SIGHAND` (linux/sched.h, 5.5+): the child starts with every
/// signal eco handles back at its default (one flag instead of a
/// `sigaction` call per signal in the child, 64 system calls per spawn).
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// Kernels without `CLOSE_RANGE_UNSHARE` (before 5.9) are found once;
/// from then on each child copies eco's table.
static UNSHARE_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

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

/// A started child, before the reaper knows it.
pub struct Cloned {
    pub pid: i32,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// Everything the child needs, as C strings made before the clone.
struct Prepared {
    candidates: Vec<CString>,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
    dev_null: CString,
    new_group: bool,
    /// The descriptor limit to set, made before the clone.
    nofile: Option<libc::rlimit>,
    /// Above every wanted number: where the sources are parked first, so
    /// no move overwrites a source still to be moved.
    park_at: RawFd,
}

/// What the child reads, and where it reports a failed start.
#[repr(C)]
struct Shared<'a> {
    prepared: &'a Prepared,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    outputs: [RawFd; 2],
    /// Descriptors handed down, as (number in the child's table before the
    /// moves, the child's number): eco's own, or the slots'.
    fds: &'a [(RawFd, RawFd)],
    /// Non-zero: the child shares eco's table (`CLONE_FILES`) and first
    /// takes a copy of the descriptors below this (see `fd_slots`).
    unshare_below: libc::c_uint,
    /// Set by the child when the kernel refused that (before Linux 5.9).
    unshare_errno: i32,
    /// Set by the child when it cannot exec (eco reads it once the child
    /// has exited: the vfork makes eco wait until then).
    errno: i32,
}

/// The child's own stack: its system calls and execve need little.
const CHILD_STACK: usize = 128 * 1024;

/// Starts `request` (every field), inside its cgroup when it has one.
/// The caller registers the pid with the reaper (see `Reaper::spawn_with`).
#[allow(unsafe_code)]
pub fn spawn(request: &SpawnRequest) -> io::Result<Cloned> {
    if !cfg!(target_arch = "x86_64") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "cloning into a cgroup is built for x86_64 only",
        ));
    }
    request.check()?;
    let cgroup = request
        .cgroup
        .as_ref()
        .map(|c| open_dir(c.path()))
        .transpose()?;
    let output = request.output;
    let prepared = prepare(request)?;
    let argv: Vec<*const libc::c_char> = pointers(&prepared.argv);
    let envp: Vec<*const libc::c_char> = pointers(&prepared.envp);
    let pipe = |wanted: bool| -> io::Result<(Option<OwnedFd>, Option<OwnedFd>)> {
        if !wanted {
            return Ok((None, None));
        }
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        Ok((Some(read), Some(write)))
    };
    let (out_read, out_write) = pipe(output.stdout)?;
    let (err_read, err_write) = pipe(output.read_ends().1)?;
    let out_fd = out_write.as_ref().map_or(-1, AsRawFd::as_raw_fd);
    let err_fd = if output.one_pipe() {
        out_fd
    } else {
        err_write.as_ref().map_or(-1, AsRawFd::as_raw_fd)
    };
    // The child's descriptors go on the slots when they fit: it then shares
    // eco's table instead of copying it (see `fd_slots`).
    let mut lease = if UNSHARE_UNSUPPORTED.load(Ordering::Relaxed) {
        None
    } else {
        fd_slots::Lease::take()
    };
    let mut outputs = [out_fd, err_fd];
    let mut fds = request.fds.clone();
    let unshare_below = match lease.as_mut() {
        Some(lease) => on_slots(lease, &mut outputs, &mut fds)?,
        None => 0,
    };
    let mut shared = Shared {
        prepared: &prepared,
        argv: &argv,
        envp: &envp,
        outputs,
        fds: &fds,
        unshare_below,
        unshare_errno: 0,
        errno: 0,
    };
    let pid = clone_child(&mut shared, cgroup.as_ref())?;
    // The child has exec'd or exited: the slots go back to /dev/null.
    drop(lease);
    if pid < 0 {
        let err = io::Error::from_raw_os_error(i32::try_from(-pid).unwrap_or(libc::EINVAL));
        // Kernels before 5.7 know no CLONE_INTO_CGROUP (or no clone3, or
        // no CLONE_CLEAR_SIGHAND: EINVAL, the flags being otherwise fixed).
        if matches!(
            err.raw_os_error(),
            Some(libc::ENOSYS | libc::E2BIG | libc::EINVAL)
        ) {
            return Err(io::Error::new(io::ErrorKind::Unsupported, err));
        }
        return Err(err);
    }
    let pid = i32::try_from(pid).map_err(|_| io::Error::other("pid out of range"))?;
    drop(out_write);
    drop(err_write);
    // SAFETY: the child has exited; nothing else writes it.
    let unshare_errno = unsafe { std::ptr::read_volatile(&raw const shared.unshare_errno) };
    if unshare_errno != 0 {
        // The child exited 127 before touching anything; the reaper
        // collects it. This kernel cannot: copy the table from now on.
        tracing::info!(
            err = %io::Error::from_raw_os_error(unshare_errno),
            "no CLOSE_RANGE_UNSHARE: each spawn copies eco's descriptor table"
        );
        UNSHARE_UNSUPPORTED.store(true, Ordering::Relaxed);
        return spawn(request);
    }
    // SAFETY: the child has exec'd or exited; nothing else writes it.
    let errno = unsafe { std::ptr::read_volatile(&raw const shared.errno) };
    if errno != 0 {
        // The child has exited with 127; the reaper collects it.
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(Cloned {
        pid,
        stdout: out_read,
        stderr: err_read,
    })
}

/// The vfork-style clone of `shared`'s child, with every signal blocked
/// across it: the child's pid (or `-errno`) once it has exec'd or exited.
#[allow(unsafe_code)]
fn clone_child(shared: &mut Shared<'_>, cgroup: Option<&OwnedFd>) -> io::Result<i64> {
    CHILD_STACKS.with_borrow_mut(|stack| clone_on(stack, shared, cgroup))
}

thread_local! {
    /// Each spawning thread's child stack, kept: a fresh 128 KiB per spawn
    /// was an mmap, its page faults and a munmap each time. One child at a
    /// time uses it (the thread waits until the child has exec'd).
    /// u128: a 16-byte aligned stack, as the ABI wants at a call.
    static CHILD_STACKS: std::cell::RefCell<Vec<u128>> =
        std::cell::RefCell::new(Vec::with_capacity(CHILD_STACK / 16));
}

#[allow(unsafe_code)]
fn clone_on(
    stack: &mut Vec<u128>,
    shared: &mut Shared<'_>,
    cgroup: Option<&OwnedFd>,
) -> io::Result<i64> {
    let top = stack.as_mut_ptr().wrapping_add(stack.capacity());
    let into_cgroup = match cgroup {
        Some(dir) => {
            u64::try_from(dir.as_raw_fd()).map_err(|_| io::Error::other("bad cgroup fd"))?
        }
        None => 0,
    };
    let mut args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64
            | CLONE_CLEAR_SIGHAND
            | if shared.unshare_below > 0 {
                libc::CLONE_FILES as u64
            } else {
                0
            }
            | if cgroup.is_some() {
                CLONE_INTO_CGROUP
            } else {
                0
            },
        exit_signal: libc::SIGCHLD as u64,
        stack: stack.as_mut_ptr() as u64,
        stack_size: (top as usize - stack.as_mut_ptr() as usize) as u64,
        cgroup: into_cgroup,
        ..CloneArgs::default()
    };
    // No signal handler of eco may run in the child (it would run on
    // eco's memory): all are blocked across the clone, as glibc does.
    let mut old = nix::sys::signal::SigSet::empty();
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::all()),
        Some(&mut old),
    )?;
    // SAFETY: a vfork-style clone: the child runs `child_main` on its own
    // stack with `shared`, which outlives it (this thread is suspended
    // until the child has exec'd or exited), and never returns.
    let pid = unsafe { clone3_vfork(&raw mut args, shared) };
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&old),
        None,
    );
    Ok(pid)
}

/// Puts the child's outputs and handed-down descriptors on the slots and
/// renumbers them to the slots' numbers; returns the number the child
/// keeps its table below, or 0 when they do not fit (it copies eco's).
fn on_slots(
    lease: &mut fd_slots::Lease,
    outputs: &mut [RawFd; 2],
    fds: &mut [(RawFd, RawFd)],
) -> io::Result<libc::c_uint> {
    let wanted: Vec<RawFd> = outputs
        .iter()
        .copied()
        .filter(|fd| *fd >= 0)
        .chain(fds.iter().map(|(from, _)| *from))
        .collect();
    let Some(numbers) = lease.place(&wanted)? else {
        return Ok(0);
    };
    let mut numbers = numbers.into_iter();
    for output in outputs.iter_mut().filter(|fd| **fd >= 0) {
        *output = numbers.next().unwrap_or(-1);
    }
    for (from, _) in fds.iter_mut() {
        *from = numbers.next().unwrap_or(-1);
    }
    Ok(libc::c_uint::try_from(lease.below()).unwrap_or(0))
}

/// `clone3(args)` as a vfork: returns the child's pid (or `-errno`) in eco;
/// the child starts on the stack `args` gives it and runs `child_main`.
///
/// # Safety
/// `args` must ask for CLONE_VM | CLONE_VFORK with a 16-byte aligned stack
/// the child may use; `shared` must stay valid until the call returns.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
unsafe fn clone3_vfork(args: *mut CloneArgs, shared: *mut Shared<'_>) -> i64 {
    let ret: i64;
    // SAFETY: the syscall returns twice. In eco it returns the pid with
    // every register but rax, rcx and r11 kept. In the child, rsp is the
    // top of its own stack and the child only calls `child_main`, which
    // never returns; eco's stack is never touched.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "xor ebp, ebp",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") shared,
            in("r13") child_main as extern "C" fn(*mut Shared<'_>) -> !,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(unsafe_code)]
unsafe fn clone3_vfork(_: *mut CloneArgs, _: *mut Shared<'_>) -> i64 {
    -i64::from(libc::ENOSYS)
}

/// The child's side: sets up its descriptors, folder, group and signals,
/// and execs; on failure leaves the errno in `shared` and exits 127.
#[allow(unsafe_code)]
extern "C" fn child_main(shared: *mut Shared<'_>) -> ! {
    // SAFETY (whole function): `shared` is valid (eco waits for this child
    // to exec or exit). Only plain system calls on descriptors and
    // NUL-terminated strings prepared by eco: no allocation, no lock, no
    // unwinding. The signal table is the child's own copy (no CLONE_SIGHAND).
    unsafe {
        let shared = &mut *shared;
        let prepared = shared.prepared;
        let fail = |shared: &mut Shared<'_>| -> ! {
            std::ptr::write_volatile(&raw mut shared.errno, *libc::__errno_location());
            libc::_exit(127)
        };
        // First, while the table is still eco's: a table of its own, with
        // only the descriptors below the slots' end (the slots included).
        if shared.unshare_below > 0
            && crate::fds::close_range(
                shared.unshare_below,
                libc::c_uint::MAX,
                crate::fds::CLOSE_RANGE_UNSHARE,
            )
            .is_err()
        {
            let errno = *libc::__errno_location();
            std::ptr::write_volatile(&raw mut shared.unshare_errno, errno);
            libc::_exit(127)
        }
        // eco's handlers were reset by the clone (CLONE_CLEAR_SIGHAND);
        // SIGPIPE, which Rust ignores, goes back to the default too, then
        // nothing blocked, as std does.
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&raw mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &raw const none, std::ptr::null_mut());
        if prepared.new_group && libc::setpgid(0, 0) != 0 {
            fail(shared);
        }

        // Opened close-on-exec: the app gets the copies on 0, 1 and 2 only.
        let null_in = libc::open(prepared.dev_null.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
        if null_in < 0 || !move_to(null_in, 0) {
            fail(shared);
        }
        for (target, fd) in [(1, shared.outputs[0]), (2, shared.outputs[1])] {
            let fd = if fd >= 0 {
                fd
            } else {
                libc::open(prepared.dev_null.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC)
            };
            if fd < 0 || !move_to(fd, target) {
                fail(shared);
            }
        }
        if !hand_down(shared.fds, prepared.park_at) {
            fail(shared);
        }
        if libc::chdir(prepared.cwd.as_ptr()) != 0 {
            fail(shared);
        }
        // Last: eco's own table may be full past the app's limit, and a
        // lower limit would make the opens and dups above fail (EMFILE).
        if let Some(limit) = &prepared.nofile
            && libc::setrlimit(libc::RLIMIT_NOFILE, limit) != 0
        {
            fail(shared);
        }
        // As execvp: the first candidate that is not missing decides.
        for path in &prepared.candidates {
            libc::execve(path.as_ptr(), shared.argv.as_ptr(), shared.envp.as_ptr());
            let errno = *libc::__errno_location();
            if errno != libc::ENOENT && errno != libc::ENOTDIR && errno != libc::EACCES {
                break;
            }
        }
        fail(shared)
    }
}

/// `dup2(fd, target)`, leaving `target` inheritable: when `fd` already is
/// `target` (eco was started with a closed stdio slot), dup2 does nothing
/// and would leave its close-on-exec flag set, so the flag is cleared.
#[allow(unsafe_code)]
fn move_to(fd: RawFd, target: RawFd) -> bool {
    // SAFETY: plain descriptor calls on numbers the child owns; async-signal-safe.
    unsafe {
        if fd == target {
            return libc::fcntl(fd, libc::F_SETFD, 0) == 0;
        }
        libc::dup2(fd, target) == target
    }
}

/// Puts each `(from, to)` descriptor at `to`, inheritable: first every
/// source is parked above all targets (close-on-exec copies, gone at exec),
/// then moved, so a target that is another's source is never overwritten
/// before it was moved. Only async-signal-safe calls (run in the child).
#[allow(unsafe_code)]
pub(crate) fn hand_down(fds: &[(RawFd, RawFd)], park_at: RawFd) -> bool {
    const MAX_FDS: usize = 256;
    if fds.len() > MAX_FDS {
        return false;
    }
    let mut parked = [-1; MAX_FDS];
    for (slot, (from, to)) in parked.iter_mut().zip(fds) {
        *slot = if from == to {
            *from
        } else {
            // SAFETY: duplicates a descriptor; async-signal-safe.
            unsafe { libc::fcntl(*from, libc::F_DUPFD_CLOEXEC, park_at) }
        };
        if *slot < 0 {
            return false;
        }
    }
    fds.iter()
        .zip(parked)
        .all(|((_, to), from)| move_to(from, *to))
}

/// The lowest number above every descriptor of `fds`.
pub(crate) fn park_at(fds: &[(RawFd, RawFd)]) -> RawFd {
    fds.iter().map(|(_, to)| *to + 1).max().unwrap_or(3).max(3)
}

/// The rlimit that gives a child `soft` descriptors, below eco's hard limit.
pub(crate) fn nofile_limit(soft: u64) -> io::Result<libc::rlimit> {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?;
    Ok(libc::rlimit {
        rlim_cur: soft.min(hard),
        rlim_max: hard,
    })
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

/// The request's program candidates, argv, environment and cwd, as C strings.
fn prepare(request: &SpawnRequest) -> io::Result<Prepared> {
    let program = OsStr::new(&request.argv[0]);
    let path = request.env_var("PATH").map(OsString::as_os_str);
    let candidates = candidates(program, path)
        .iter()
        .map(|p| c_string(p.as_os_str().as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let argv = request
        .argv
        .iter()
        .map(|a| c_string(a.as_bytes()))
        .collect::<io::Result<Vec<_>>>()?;
    let envp = request
        .env
        .iter()
        .map(|(k, v)| {
            let mut pair = k.as_bytes().to_vec();
            pair.push(b'=');
            pair.extend_from_slice(v.as_bytes());
            c_string(&pair)
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Prepared {
        candidates,
        argv,
        envp,
        cwd: c_string(request.cwd.as_os_str().as_bytes())?,
        dev_null: c_string(b"/dev/null")?,
        new_group: request.new_group,
        nofile: request.nofile.map(nofile_limit).transpose()?,
        park_at: park_at(&request.fds),
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
