//! Containment with cgroup v2, where the machine allows it: each instance
//! runs in its own cgroup under a subtree eco owns, so membership is exact
//! whatever a process does to its session, group, title or environment, and
//! a stop ends with `cgroup.kill`. Where cgroups cannot be written (a user
//! without delegation) the engine falls back to process groups and the
//! subreaper (`kill`), and `describe` says which is in use.
//!
//! A child is placed in its cgroup from birth: eco moves itself into the
//! instance's cgroup for the instant of the spawn (one thread, nothing else
//! runs meanwhile) and back, so not even a process forked by the child
//! before its first instruction escapes. Each move costs about 0.1 ms.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The cgroup v2 (unified) mount point, from /proc/self/mountinfo:
/// /sys/fs/cgroup on pure-v2 hosts, /sys/fs/cgroup/unified on hybrid ones.
pub fn unified_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    parse_mountinfo(&info)
}

fn parse_mountinfo(info: &str) -> Option<PathBuf> {
    info.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let fstype = right.split_whitespace().next()?;
        let mount = left.split_whitespace().nth(4)?;
        (fstype == "cgroup2").then(|| PathBuf::from(mount))
    })
}

/// This process's cgroup (v2 line `0::/path` of /proc/self/cgroup).
fn own_cgroup() -> Option<String> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// eco's subtree for one world (a daemon's ECO_HOME, or one `up -F`).
#[derive(Debug)]
pub struct Subtree {
    /// Where eco itself lives: it comes back here after each spawn.
    home: PathBuf,
    root: PathBuf,
}

impl Subtree {
    /// Creates (or adopts) `<eco's cgroup>/<name>`; None when cgroup v2 is
    /// absent or not writable here.
    pub fn create(name: &str) -> Option<Subtree> {
        let mount = unified_mount()?;
        let own = own_cgroup()?;
        let home = mount.join(own.trim_start_matches('/'));
        let root = home.join(name);
        match std::fs::create_dir(&root) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => {
                tracing::info!(path = %root.display(), %err, "no cgroup containment: using process groups");
                return None;
            }
        }
        // Moving ourselves must work too (it needs write access to our own
        // cgroup.procs): try it once, harmlessly, onto where we are.
        if let Err(err) = write_pid(&home, 0) {
            tracing::info!(path = %home.display(), %err, "no cgroup containment: cannot move processes");
            let _ = std::fs::remove_dir(&root);
            return None;
        }
        Some(Subtree { home, root })
    }

    /// `<eco's cgroup>/<name>` if it exists (what a dead eco left).
    pub fn existing(name: &str) -> Option<Subtree> {
        let mount = unified_mount()?;
        let own = own_cgroup()?;
        let home = mount.join(own.trim_start_matches('/'));
        let root = home.join(name);
        root.is_dir().then_some(Subtree { home, root })
    }

    /// An existing subtree, by path (for the guardian and for leftovers).
    pub fn at(root: PathBuf) -> Subtree {
        let home = root.parent().map(Path::to_path_buf).unwrap_or_default();
        Subtree { home, root }
    }

    /// The subtree's folder.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// A new cgroup for one instance (or probe), empty.
    pub fn child(&self, name: &str) -> io::Result<Cgroup> {
        let path = self.root.join(name);
        match std::fs::create_dir(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                // A leftover of the same name: empty it first.
                let old = Cgroup {
                    path: path.clone(),
                    home: self.home.clone(),
                    killed: Arc::default(),
                };
                old.kill();
                return Ok(old);
            }
            Err(err) => return Err(err),
        }
        Ok(Cgroup {
            path,
            home: self.home.clone(),
            killed: Arc::default(),
        })
    }

    /// SIGKILL to every process in the subtree at once (a second Ctrl-C).
    pub fn kill_all(&self) {
        for child in self.children() {
            child.kill();
        }
    }

    /// Kills everything left in the subtree (a dead eco's apps) and removes
    /// its cgroups; returns how many processes there were. Blocking, bounded.
    pub fn clear(&self) -> usize {
        let mut count = 0;
        for child in self.children() {
            count += child.procs().len();
            child.kill();
            child.wait_empty(Duration::from_secs(2));
            child.remove();
        }
        count
    }

    /// [`Subtree::clear`], except the cgroups holding one of `spare` (apps
    /// adopted after a crash).
    pub fn clear_except(&self, spare: &[i32]) -> usize {
        let mut count = 0;
        for child in self.children() {
            let procs = child.procs();
            if procs.iter().any(|p| spare.contains(p)) {
                continue;
            }
            count += procs.len();
            child.kill();
            child.wait_empty(Duration::from_secs(2));
            child.remove();
        }
        count
    }

    /// Clears the subtree and removes it (at the end of eco).
    pub fn remove(&self) {
        let _ = self.clear();
        let _ = std::fs::remove_dir(&self.root);
    }

    fn children(&self) -> Vec<Cgroup> {
        std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| Cgroup {
                path: e.path(),
                home: self.home.clone(),
                killed: Arc::default(),
            })
            .collect()
    }

    /// Other subtrees beside this one whose names start with `prefix`.
    pub fn siblings(&self, prefix: &str) -> Vec<Subtree> {
        let Some(parent) = self.root.parent() else {
            return Vec::new();
        };
        std::fs::read_dir(parent)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path() != self.root)
            .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
            .map(|e| Subtree {
                home: self.home.clone(),
                root: e.path(),
            })
            .collect()
    }
}

/// One instance's cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    path: PathBuf,
    home: PathBuf,
    /// Set once `cgroup.kill` was written. Linux (6.18 here) then kills
    /// every process cloned into it with CLONE_INTO_CGROUP at birth (the
    /// clone compares the parent cgroup's kill count with this one's), so
    /// such a cgroup is replaced, or entered instead.
    killed: Arc<AtomicBool>,
}

impl Cgroup {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Moves this process into the cgroup until the guard drops (the spawn
    /// in between is born inside).
    pub fn enter(&self) -> io::Result<Entered<'_>> {
        write_pid(&self.path, 0)?;
        Ok(Entered { home: &self.home })
    }

    /// The pids in the cgroup, oldest first (by start time).
    pub fn procs(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = std::fs::read_to_string(self.path.join("cgroup.procs"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        pids.sort_by_key(|p| crate::procfs::start_time(*p).unwrap_or(u64::MAX));
        pids
    }

    /// True when no process is left (`populated 0` in cgroup.events).
    pub fn is_empty(&self) -> bool {
        std::fs::read_to_string(self.path.join("cgroup.events")).map_or(true, |events| {
            events.lines().any(|l| l.trim() == "populated 0")
        })
    }

    /// SIGKILL to every process in the cgroup at once (`cgroup.kill`, or
    /// one by one on kernels before 5.14).
    pub fn kill(&self) {
        self.killed.store(true, Ordering::Relaxed);
        if std::fs::write(self.path.join("cgroup.kill"), "1").is_err() {
            for pid in self.procs() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }

    /// Waits (bounded, blocking) until the cgroup is empty.
    pub fn wait_empty(&self, limit: Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while !self.is_empty() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        true
    }

    /// True once `kill` was used on it (see `killed`).
    pub fn was_killed(&self) -> bool {
        self.killed.load(Ordering::Relaxed)
    }

    /// Removes the (empty) cgroup.
    pub fn remove(&self) {
        let _ = self.try_remove();
    }

    /// Removes the cgroup; false when it is not empty (or not removable).
    pub fn try_remove(&self) -> bool {
        std::fs::remove_dir(&self.path).is_ok()
    }
}

/// eco inside an instance's cgroup; back home on drop.
pub struct Entered<'a> {
    home: &'a Path,
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        if let Err(err) = write_pid(self.home, 0) {
            tracing::error!(%err, "cannot move eco back to its own cgroup");
        }
    }
}

/// Writes `pid` (0: this process) to a cgroup's cgroup.procs.
fn write_pid(cgroup: &Path, pid: i32) -> io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(cgroup.join("cgroup.procs"))?;
    file.write_all(pid.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_unified_mount_on_hybrid_and_pure_hosts() {
        let hybrid = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
                      35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
                      41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            parse_mountinfo(hybrid),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let pure = "29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(parse_mountinfo(pure), Some(PathBuf::from("/sys/fs/cgroup")));
        assert_eq!(parse_mountinfo("1 0 0:1 / / rw - ext4 /dev/vda rw\n"), None);
    }
}
