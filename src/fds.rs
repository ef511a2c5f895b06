//! Descriptor hygiene: what eco's engine process holds, and so what its
//! apps can inherit. A command started from a deploy script inherits that
//! script's descriptors (a `flock` on fd 9, a pipe to a CI runner); the
//! daemon outlives the script, so whatever it kept open stays open (the
//! lock stays held) for as long as the daemon runs, and leaks into every
//! app it starts. The engine (`eco daemon`, `eco up -F`) therefore closes
//! everything but stdin, stdout and stderr before it opens anything itself;
//! from then on every descriptor eco opens is close-on-exec, and an app
//! receives exactly 0, 1, 2 and its documented `LISTEN_FDS`.

use std::os::fd::RawFd;

/// `CLOSE_RANGE_CLOEXEC` (linux/close_range.h): mark instead of close.
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

/// `CLOSE_RANGE_UNSHARE` (linux/close_range.h): first take a table of
/// one's own (see `runtime::fd_slots`).
pub(crate) const CLOSE_RANGE_UNSHARE: libc::c_uint = 1 << 1;

/// Closes every descriptor above 2 this process inherited. Call it first
/// thing in the engine's process, before anything of its own is open.
pub fn close_inherited() {
    if close_range(3, libc::c_uint::MAX, 0).is_err() {
        // Kernels before 5.9: close what /proc lists.
        for fd in open_fds().into_iter().filter(|fd| *fd > 2) {
            close(fd);
        }
    }
}

/// Marks every descriptor from `first` up close-on-exec, except `keep`
/// (sorted ascending); for the step between eco and an app, so only the
/// descriptors meant for the app survive its `exec`.
pub fn cloexec_all_but(first: RawFd, keep: &[RawFd]) {
    cloexec_between(first, RawFd::MAX, keep);
}

/// As [`cloexec_all_but`], up to `last` only.
fn cloexec_between(first: RawFd, last: RawFd, keep: &[RawFd]) {
    let mut from = first;
    for &fd in keep {
        if fd < from || fd > last {
            continue;
        }
        if fd > from {
            mark_cloexec(from, fd - 1);
        }
        from = fd + 1;
    }
    if from <= last {
        mark_cloexec(from, last);
    }
}

fn mark_cloexec(first: RawFd, last: RawFd) {
    let (Ok(first), Ok(last)) = (libc::c_uint::try_from(first), libc::c_uint::try_from(last))
    else {
        return;
    };
    if close_range(first, last, CLOSE_RANGE_CLOEXEC).is_err() {
        // Kernels before 5.11: one fcntl per open descriptor.
        for fd in open_fds()
            .into_iter()
            .filter(|fd| (first..=last).contains(&libc::c_uint::try_from(*fd).unwrap_or(0)))
        {
            set_cloexec(fd);
        }
    }
}

/// Descriptor table entries the engine's process has from its start.
pub const PRESIZED_TABLE: RawFd = 4096;

/// Grows this process's descriptor table to [`PRESIZED_TABLE`] entries (or
/// the soft limit, if lower) now. Call it while the process has one thread:
/// Linux grows a table by doubling it, and in a process with several threads
/// each growth waits out an RCU grace period (8-24 ms here). Converging 10
/// apps crossed 64 descriptors and took 30 ms instead of 20; 1,000 crossed
/// six sizes. The table never shrinks, and 4,096 entries cost the kernel
/// 32 KiB, none of it in the process's RSS.
pub fn presize_table() {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(0, |(soft, _)| soft);
    let highest = RawFd::try_from(soft)
        .unwrap_or(RawFd::MAX)
        .min(PRESIZED_TABLE)
        - 1;
    let Ok(null) = std::fs::File::open("/dev/null") else {
        return;
    };
    // A descriptor at (or above) the highest number makes the table that
    // large; closing it keeps the size.
    if let Ok(high) = nix::fcntl::fcntl(&null, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(highest)) {
        close(high);
    }
}

/// close_range(2): one system call, async-signal-safe (a clone child
/// calls it); the errno is left for the caller on failure.
#[allow(unsafe_code)]
pub(crate) fn close_range(
    first: libc::c_uint,
    last: libc::c_uint,
    flags: libc::c_uint,
) -> Result<(), ()> {
    // SAFETY: close_range(2) only closes, flags or unshares descriptors of
    // this process; eco owns none it still uses in this range at these
    // call sites (see the callers).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first, last, flags) };
    if rc == 0 { Ok(()) } else { Err(()) }
}

#[allow(unsafe_code)]
fn close(fd: RawFd) {
    // SAFETY: a descriptor nothing in eco refers to: inherited, or the
    // one `presize_table` just made.
    unsafe { libc::close(fd) };
}

#[allow(unsafe_code)]
fn set_cloexec(fd: RawFd) {
    // SAFETY: F_SETFD only changes the descriptor's flag.
    unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
}

/// The descriptors this process has open, from /proc/self/fd (read whole
/// before any is closed, so the listing's own descriptor is not among the
/// results once the read is done).
pub fn open_fds() -> Vec<RawFd> {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let names: Vec<std::ffi::OsString> = entries.flatten().map(|e| e.file_name()).collect();
    names
        .iter()
        .filter_map(|n| n.to_str()?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;

    fn cloexec(fd: RawFd) -> bool {
        nix::fcntl::fcntl(unsafe_borrow(fd), nix::fcntl::FcntlArg::F_GETFD)
            .is_ok_and(|flags| flags & libc::FD_CLOEXEC != 0)
    }

    #[allow(unsafe_code)]
    fn unsafe_borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
        // SAFETY: the test keeps the descriptor open while it is borrowed.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
    }

    #[test]
    fn only_the_kept_descriptors_stay_inheritable() {
        let open = |_| {
            let file = std::fs::File::open("/dev/null").expect("open");
            let fd = file.into_raw_fd();
            nix::fcntl::fcntl(
                unsafe_borrow(fd),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
            )
            .expect("clear cloexec");
            fd
        };
        let fds: Vec<RawFd> = (0..4).map(open).collect();
        assert!(fds.iter().all(|fd| !cloexec(*fd)));
        let keep = [fds[1], fds[3]];
        // Bounded to the test's own descriptors: other tests run beside it.
        cloexec_between(fds[0], fds[3], &keep);
        assert!(cloexec(fds[0]));
        assert!(!cloexec(fds[1]));
        assert!(cloexec(fds[2]));
        assert!(!cloexec(fds[3]));
        for fd in fds {
            close(fd);
        }
    }

    #[test]
    fn the_presized_table_holds_the_presized_count_and_no_extra_descriptor() {
        let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .expect("getrlimit")
            .0;
        let want = u64::try_from(PRESIZED_TABLE).expect("positive").min(soft);
        presize_table();
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let size: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("FDSize:"))
            .expect("an FDSize line")
            .trim()
            .parse()
            .expect("a number");
        assert!(size >= want, "FDSize {size}, want at least {want}");
        let high = RawFd::try_from(want).expect("a descriptor number") - 1;
        assert!(
            !open_fds().contains(&high),
            "the descriptor that grew the table is closed"
        );
    }
}
