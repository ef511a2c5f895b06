//! The daemon's first steps, before any app: take the home's lock (waiting
//! for a daemon that is finishing its stop, stepping aside for one that
//! serves), and raise the descriptor limit.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::home::{self, Open};
use crate::paths::Paths;

/// How long a new daemon waits for a stopping one to release the lock.
const LOCK_WAIT: Duration = Duration::from_secs(60);

/// Takes the daemon lock. `None`: another daemon serves this home (the
/// command that started us talks to it). A daemon that holds the lock but
/// no longer listens is stopping: wait for it to exit.
pub fn lock(paths: &Paths) -> anyhow::Result<Option<Flock<File>>> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        let file = home::open(&paths.lock(), Open::Keep)?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => return Ok(Some(lock)),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                if UnixStream::connect(paths.socket()).is_ok() {
                    tracing::info!(home = %paths.home.display(), "another daemon serves this home");
                    return Ok(None);
                }
                if Instant::now() > deadline {
                    anyhow::bail!(
                        "another eco daemon holds {} but does not answer; stop it (its pid is in {})",
                        paths.lock().display(),
                        paths.pid().display()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err((_, err)) => return Err(err).context("cannot lock the daemon lock file"),
        }
    }
}

/// The soft `RLIMIT_NOFILE` of the command that started the daemon: the
/// limit meant for its apps (the spawn sets it in the child). `None` when
/// the daemon was started by hand (`eco daemon`): apps keep its limit.
pub fn app_nofile() -> Option<u64> {
    static LIMIT: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var(crate::paths::APP_NOFILE_ENV)
            .ok()
            .and_then(|v| v.trim().parse().ok())
    })
}

/// Raises the daemon's `RLIMIT_NOFILE`: it holds two pipes per instance,
/// log files and sockets. The soft limit goes up to the hard one; as root
/// (CAP_SYS_RESOURCE) the hard limit goes up to `fs.nr_open` too, and the
/// soft limit follows it only when the instances need it (see
/// `reconcile`'s descriptor check); apps get [`app_nofile`] back where it is
/// known. Returns the soft limit now set.
pub fn raise_nofile() -> Option<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let ceiling = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(hard)
        .min(MAX_NOFILE);
    let hard_now = if ceiling > hard && setrlimit(Resource::RLIMIT_NOFILE, hard, ceiling).is_ok() {
        ceiling
    } else {
        hard
    };
    if soft < hard
        && let Err(err) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard_now)
    {
        tracing::warn!(%err, soft, hard, "cannot raise the descriptor limit");
        return Some(soft);
    }
    Some(hard)
}

/// Enough for the per-app cap of instances in several projects; more only
/// makes every descriptor table larger.
const MAX_NOFILE: u64 = 1 << 20;

/// Most of an idle daemon's memory is code and read-only data, much of it
/// used only at start-up (argument parsing, home checks, restore; the
/// dynamic loader's relocation tables), and for each page a process
/// touches the kernel maps up to 16 neighbours that sit in the page cache
/// ("fault-around"). Once started, eco drops them (MADV_DONTNEED on the
/// read-only mappings, `r-xp` and `r--p`, of its executable and of the
/// libraries it loaded, when they hold no anonymous copy, so a page used
/// again is read back from the page cache): what it uses from then on
/// comes back, the rest stays out. A mapping with a relocated page (a
/// private copy, as RELRO's) is left alone.
#[allow(unsafe_code)]
pub fn map_only_used_code() {
    let mut dropped = 0usize;
    for (start, len) in clean_code_now() {
        // SAFETY: the range is a whole file-backed read-only mapping with no
        // anonymous (copied or written) page, so dropping its pages loses
        // nothing: they fault back in from the file. Nothing is unmapped.
        unsafe {
            let addr = start as *mut libc::c_void;
            if libc::madvise(addr, len, libc::MADV_DONTNEED) == 0 {
                dropped += len;
            }
        }
    }
    // The heap's free pages too: a burst of spawns (10,000 at once) leaves
    // tens of MB free inside the heap, which glibc keeps resident.
    let trimmed = trim_heap();
    tracing::debug!(dropped, trimmed, "code pages left to fault in on use");
}

/// Returns the heap's free memory to the system (glibc keeps it
/// otherwise); whether any was returned.
#[allow(unsafe_code)]
pub fn trim_heap() -> bool {
    // SAFETY: malloc_trim only returns free memory of the allocator's own
    // arenas; it touches no live allocation.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Runs [`map_only_used_code`], then `after`, each time `came` stops being
/// notified for the wait [`IdleDrop`](super::idle_drop::IdleDrop) gives
/// (`changed` says whether the work since the last look changed
/// something); returns when `stop` is cancelled. One wake-up per burst of
/// work; none while idle.
pub async fn drop_code_when_idle(
    came: &tokio::sync::Notify,
    changed: impl Fn() -> bool,
    stop: &tokio_util::sync::CancellationToken,
    after: impl Fn(),
) {
    let mut rule = super::idle_drop::IdleDrop::default();
    loop {
        tokio::select! {
            () = came.notified() => {}
            () = stop.cancelled() => return,
        }
        let mut last = Instant::now();
        rule.worked(last);
        loop {
            let until = tokio::time::Instant::from_std(last + rule.wait());
            tokio::select! {
                () = came.notified() => {
                    last = Instant::now();
                    rule.worked(last);
                    continue;
                }
                () = tokio::time::sleep_until(until) => {}
                () = stop.cancelled() => return,
            }
            if changed() {
                rule.changed();
            }
            if last.elapsed() >= rule.settle() {
                break;
            }
        }
        map_only_used_code();
        after();
        rule.dropped(Instant::now());
    }
}

/// The clean mappings the last smaps read found, with the read-only file
/// mappings (their `maps` lines) they were found among.
type CleanCache = Option<(Vec<String>, Vec<(usize, usize)>)>;
static CLEAN: std::sync::Mutex<CleanCache> = std::sync::Mutex::new(None);

/// [`clean_code_mappings`] of this process, read from smaps only when its
/// read-only file mappings changed since the last read: smaps walks every
/// page table (1-2 ms for the daemon), and a daemon asked something every
/// few seconds dropped its code after each command. Whether such a mapping
/// holds an anonymous copy does not change once the loader is done with
/// it (RELRO is relocated before `main`).
fn clean_code_now() -> Vec<(usize, usize)> {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return Vec::new();
    };
    let read_only = read_only_file_mappings(&maps);
    let mut cache = CLEAN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((lines, clean)) = cache.as_ref()
        && *lines == read_only
    {
        return clean.clone();
    }
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return Vec::new();
    };
    let clean = clean_code_mappings(&smaps);
    *cache = Some((read_only, clean.clone()));
    clean
}

/// The `maps` lines of file-backed read-only mappings (`r-xp`, `r--p`).
fn read_only_file_mappings(maps: &str) -> Vec<String> {
    maps.lines()
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            matches!(fields.as_slice(), [_, perms, _, _, _, path, ..]
                if matches!(*perms, "r-xp" | "r--p") && path.starts_with('/'))
        })
        .map(str::to_owned)
        .collect()
}

/// (start, length) of each file-backed read-only mapping (`r-xp` or
/// `r--p`) in `smaps` whose
/// pages are all the file's own (no anonymous copy: a relocated or
/// written page). A page-cache page not yet written back (a binary just
/// built or installed) counts as dirty in smaps, yet is the file's: it
/// stays droppable.
fn clean_code_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    let mut clean = false;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            // A mapping's header: range perms offset dev inode [path].
            [range, perms, _, _, _, rest @ ..] if range.contains('-') && perms.len() == 4 => {
                if let (Some(mapping), true) = (current.take(), clean) {
                    found.push(mapping);
                }
                let file_backed = rest.first().is_some_and(|path| path.starts_with('/'));
                current = (matches!(*perms, "r-xp" | "r--p") && file_backed)
                    .then(|| code_range(range))
                    .flatten();
                clean = true;
            }
            [key, kb, ..] if current.is_some() && key.starts_with("Anonymous") => {
                clean &= *kb == "0";
            }
            _ => {}
        }
    }
    if let (Some(mapping), true) = (current, clean) {
        found.push(mapping);
    }
    found
}

/// "start-end" in hex, as (start, length).
fn code_range(range: &str) -> Option<(usize, usize)> {
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    Some((start, end.checked_sub(start)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_smaps_cache_is_keyed_by_the_read_only_file_mappings_only() {
        let maps = "\
00400000-00500000 r-xp 00001000 fd:01 42 /usr/bin/eco
00a00000-00b00000 rw-p 00301000 fd:01 42 /usr/bin/eco
01000000-02000000 rw-p 00000000 00:00 0 [heap]
7f0000002000-7f0000004000 r--p 00000000 fd:01 44 /usr/lib/libm.so.6
7f0000005000-7f0000006000 r-xp 00000000 00:00 0
7fff00000000-7fff00001000 r-xp 00000000 00:00 0 [vdso]
";
        assert_eq!(
            read_only_file_mappings(maps),
            vec![
                "00400000-00500000 r-xp 00001000 fd:01 42 /usr/bin/eco",
                "7f0000002000-7f0000004000 r--p 00000000 fd:01 44 /usr/lib/libm.so.6",
            ]
        );
    }

    #[test]
    fn only_clean_file_backed_read_only_mappings_are_dropped() {
        let smaps = "\
00400000-00500000 r-xp 00001000 fd:01 42 /usr/bin/eco
Rss:                 400 kB
Private_Dirty:         0 kB
Anonymous:             0 kB
00600000-00700000 r--p 00101000 fd:01 42 /usr/bin/eco
Private_Dirty:        12 kB
Anonymous:            12 kB
00800000-00900000 r--p 00201000 fd:01 42 /usr/bin/eco
Private_Dirty:         0 kB
Anonymous:             0 kB
00a00000-00b00000 rw-p 00301000 fd:01 42 /usr/bin/eco
Anonymous:             0 kB
7f0000000000-7f0000001000 r-xp 00000000 fd:01 43 /usr/lib/libtextrel.so
Private_Dirty:         4 kB
Anonymous:             4 kB
7f0000002000-7f0000004000 r-xp 00000000 fd:01 44 /usr/lib/libm.so.6
Private_Dirty:         8 kB
Anonymous:             0 kB
7f0000005000-7f0000006000 r-xp 00000000 00:00 0
Private_Dirty:         0 kB
7fff00000000-7fff00001000 r-xp 00000000 00:00 0 [vdso]
Private_Dirty:         0 kB
";
        assert_eq!(
            clean_code_mappings(smaps),
            vec![
                (0x40_0000, 0x10_0000),
                (0x80_0000, 0x10_0000),
                (0x7f00_0000_2000, 0x2000)
            ]
        );
    }

    #[test]
    fn the_running_process_has_clean_code_to_drop() {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        assert!(!clean_code_mappings(&smaps).is_empty());
    }
}
