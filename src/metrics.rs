//! CPU and memory of an instance's whole process tree, read from /proc.
//! Sampled on demand (an `ls`, `describe` or `monit` refresh, or the memory
//! limit check), at most once a second: nobody looking costs nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// What `ls` shows for one instance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Metrics {
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

/// Samples younger than this are reused.
const MIN_INTERVAL: Duration = Duration::from_millis(900);

/// Clock ticks per second in /proc/PID/stat (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// Remembers the previous sample of each tree, for CPU deltas.
#[derive(Default)]
pub struct Sampler {
    previous: HashMap<i32, (Instant, u64)>,
    cache: HashMap<i32, Metrics>,
    taken: Option<Instant>,
}

impl Sampler {
    /// Metrics of each leader's tree. `age` gives how long a leader has run,
    /// for the first sample's CPU (averaged over its life, as `ps` does).
    pub fn sample(&mut self, leaders: &[(i32, Duration)]) -> HashMap<i32, Metrics> {
        let now = Instant::now();
        let fresh = self
            .taken
            .is_some_and(|t| now.duration_since(t) < MIN_INTERVAL)
            && leaders.iter().all(|(pid, _)| self.cache.contains_key(pid));
        if fresh {
            return self.cache.clone();
        }
        let mut cache = HashMap::new();
        let mut previous = HashMap::new();
        for (pid, age) in leaders {
            let Some((rss, ticks)) = tree_usage(*pid) else {
                continue;
            };
            let cpu_percent = match self.previous.get(pid) {
                Some((at, old)) if now > *at => {
                    let seconds = now.duration_since(*at).as_secs_f64();
                    ticks.saturating_sub(*old) as f64 / TICKS_PER_SECOND / seconds * 100.0
                }
                _ if age.as_secs_f64() > 0.0 => {
                    ticks as f64 / TICKS_PER_SECOND / age.as_secs_f64() * 100.0
                }
                _ => 0.0,
            };
            previous.insert(*pid, (now, ticks));
            cache.insert(
                *pid,
                Metrics {
                    cpu_percent: (cpu_percent * 10.0).round() / 10.0,
                    memory_bytes: rss,
                },
            );
        }
        self.previous = previous;
        self.cache = cache.clone();
        self.taken = Some(now);
        cache
    }
}

/// (RSS bytes, CPU ticks) summed over `pid` and all its descendants.
pub fn tree_usage(pid: i32) -> Option<(u64, u64)> {
    let (mut rss, mut ticks) = process_usage(pid)?;
    let mut stack = crate::procfs::children(pid);
    let mut seen = vec![pid];
    while let Some(child) = stack.pop() {
        if seen.contains(&child) {
            continue;
        }
        seen.push(child);
        if let Some((r, t)) = process_usage(child) {
            rss += r;
            ticks += t;
        }
        stack.extend(crate::procfs::children(child));
    }
    Some((rss, ticks))
}

/// One process: VmRSS from status, utime + stime from stat.
fn process_usage(pid: i32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Some((rss_kb * 1024, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_memory_and_the_cache_holds_for_a_second() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let mut sampler = Sampler::default();
        let first = sampler.sample(&[(me, Duration::from_secs(1))]);
        assert!(first[&me].memory_bytes > 1024 * 1024);
        let second = sampler.sample(&[(me, Duration::from_secs(1))]);
        assert_eq!(
            first, second,
            "a second sample right after is the cached one"
        );
        assert!(tree_usage(-5).is_none());
    }
}
