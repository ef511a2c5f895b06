//! The few /proc reads eco needs: a process's children and descendants,
//! whether it still runs, and whether its environment carries a variable.

/// Every process but this one.
pub fn other_pids() -> impl Iterator<Item = i32> {
    let own = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
        .filter(move |pid| u32::try_from(*pid).is_ok_and(|p| p != own))
}

/// Direct children of `pid` (all its threads' children).
pub fn children(pid: i32) -> Vec<i32> {
    children_in(&format!("/proc/{pid}/task"))
}

/// Direct children of this process (including orphans it adopted as subreaper).
pub fn own_children() -> Vec<i32> {
    children_in("/proc/self/task")
}

/// Every process below `pid` (children, their children, ...).
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for child in children(parent) {
            if !found.contains(&child) && child != pid {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// A process counts as gone once reaped, or as a zombie awaiting its reaper.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// True when `pid`'s environment has a variable for which `matches` holds
/// (on the `KEY=VALUE` bytes).
pub fn env_has(pid: i32, matches: impl Fn(&[u8]) -> bool) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|b| *b == 0).any(matches))
}

/// True when `pid` runs with an empty environment: between the new image
/// of an exec and its stack set-up, the kernel shows none.
pub fn environ_empty(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.is_empty())
}

/// The value of one variable in `pid`'s environment.
pub fn env_value(pid: i32, key: &str) -> Option<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let prefix = format!("{key}=");
    env.split(|b| *b == 0)
        .find_map(|var| var.strip_prefix(prefix.as_bytes()))
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// The parent of `pid` (field 4 of its stat).
pub fn parent(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// When `pid` started, in clock ticks since boot (field 22 of its stat):
/// orders processes oldest first.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    // After the command: state is field 3, start time field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Now, in the clock of [`start_time`] (clock ticks since boot, rounded
/// down): a process started after this call has a start time at least
/// this.
pub fn ticks_now() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u64::try_from(t).ok())?;
    let seconds = u64::try_from(now.tv_sec()).ok()?;
    let nanos = u64::try_from(now.tv_nsec()).ok()?;
    Some(seconds * per_second + nanos * per_second / 1_000_000_000)
}

fn children_in(task_dir: &str) -> Vec<i32> {
    let Ok(tasks) = std::fs::read_dir(task_dir) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|task| std::fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The one-letter state of a process (`R`, `S`, `T`, `Z`, ...), if it exists.
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// A process state letter in words, as `ps` documents them.
pub fn state_name(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "waiting for the disk",
        'T' => "stopped",
        't' => "stopped by a debugger",
        'Z' => "zombie",
        'X' => "dead",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_a_child_and_its_end() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .env("PROCFS_TEST", "yes")
            .spawn()
            .expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        assert!(alive(pid));
        assert!(own_children().contains(&pid));
        // The environment is readable once the child has exec'd.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while !env_has(pid, |v| v == b"PROCFS_TEST=yes") {
            assert!(
                std::time::Instant::now() < deadline,
                "environment never seen"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.kill().expect("kill");
        child.wait().expect("wait");
        assert!(!alive(pid));
    }
}
