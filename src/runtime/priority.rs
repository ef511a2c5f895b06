//! The daemon runs above its apps, and its apps as they would without it.
//!
//! Apps busy starting (10,000 `sleep`s at once) or under load kept the
//! daemon waiting for a CPU after each spawn, behind an app mid-slice:
//! about a millisecond per spawn. A crashed app's restart and an `eco ls`
//! under load wait the same way. So the daemon asks for a short CPU slice
//! (EEVDF, Linux 6.12+: a woken task with a shorter slice preempts the
//! running one) and, where it may (root or CAP_SYS_NICE) and it runs at
//! nice 0, a few nice steps more.
//!
//! `SCHED_FLAG_RESET_ON_FORK` makes the kernel give every process and
//! thread started from the daemon nice 0 and the default slice again, by
//! whatever path (clone3, std, the holder, hooks): an app runs as it would
//! without eco. (Resetting in each child before its exec instead, so that
//! the clone child ran raised too, was slower: the daemon's helper threads
//! and holder competed with it.) An exec keeps both, so a daemon after
//! `eco update` stays raised and its children are still reset.

/// How much higher than its apps the daemon runs (nice steps).
pub const STEPS: i32 = 5;

/// The CPU slice the daemon asks for.
const SLICE_NS: u64 = 100_000;

/// `SCHED_FLAG_RESET_ON_FORK` (linux/sched.h).
const RESET_ON_FORK: u64 = 0x01;

/// `struct sched_attr` (linux/sched/types.h), version 1.
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
    util_min: u32,
    util_max: u32,
}

impl SchedAttr {
    /// SCHED_OTHER at `nice` with a slice of `runtime` ns, reset in children.
    fn raised(nice: i32) -> SchedAttr {
        SchedAttr {
            size: u32::try_from(std::mem::size_of::<SchedAttr>()).unwrap_or(56),
            policy: u32::try_from(libc::SCHED_OTHER).unwrap_or(0),
            flags: RESET_ON_FORK,
            nice,
            priority: 0,
            runtime: SLICE_NS,
            deadline: 0,
            period: 0,
            util_min: 0,
            util_max: 0,
        }
    }
}

/// Raises the calling thread (call it before the daemon starts threads),
/// only from nice 0: a daemon started niced stays as it was, and so do its
/// apps (the reset would take a negative nice from them). Returns the nice
/// now set; None when unchanged, or only the slice changed.
#[allow(unsafe_code)]
pub fn raise() -> Option<i32> {
    // SAFETY: getpriority only reads; errno is read right after it.
    let nice = unsafe {
        *libc::__errno_location() = 0;
        let nice = libc::getpriority(libc::PRIO_PROCESS, 0);
        if *libc::__errno_location() != 0 {
            return None;
        }
        nice
    };
    if nice != 0 {
        return None;
    }
    if set(&SchedAttr::raised(-STEPS)) {
        return Some(-STEPS);
    }
    // Not allowed below nice 0: the short slice alone.
    set(&SchedAttr::raised(0));
    None
}

#[allow(unsafe_code)]
fn set(attr: &SchedAttr) -> bool {
    // SAFETY: sched_setattr(2) reads `attr` (its size is inside) and
    // changes only the calling thread's scheduling.
    unsafe { libc::syscall(libc::SYS_sched_setattr, 0, std::ptr::from_ref(attr), 0) == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_attr_is_the_kernels_version_1() {
        // SCHED_ATTR_SIZE_VER1
        assert_eq!(std::mem::size_of::<SchedAttr>(), 56);
    }

    #[test]
    fn what_a_raised_thread_starts_runs_at_nice_0() {
        std::thread::spawn(|| {
            raise();
            std::thread::spawn(|| {
                // SAFETY: reads this thread's nice.
                #[allow(unsafe_code)]
                let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
                assert_eq!(nice, 0);
            })
            .join()
            .expect("inner thread");
        })
        .join()
        .expect("thread");
    }
}
