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
        self.sample_at(leaders, Instant::now())
    }

    /// [`Sampler::sample`] as of `now` (tests choose the clock).
    fn sample_at(&mut self, leaders: &[(i32, Duration)], now: Instant) -> HashMap<i32, Metrics> {
        let fresh = self
            .taken
            .is_some_and(|t| now.duration_since(t) < MIN_INTERVAL);
        if !fresh {
            // A full sample: every leader is read again.
            self.cache.clear();
            self.taken = Some(now);
        }
        // Within the interval only the leaders not seen yet are read: an
        // `ls` every few ms while thousands of instances start reads each
        // new process once, not every process every time.
        let unseen: Vec<(i32, Duration)> = leaders
            .iter()
            .filter(|(pid, _)| !self.cache.contains_key(pid))
            .copied()
            .collect();
        let read = self.read(&unseen, now);
        if !fresh {
            // Leaders that are gone leave the CPU deltas' memory.
            self.previous.clear();
        }
        for (pid, metrics, sample) in read {
            self.cache.insert(pid, metrics);
            self.previous.insert(pid, sample);
        }
        leaders
            .iter()
            .filter_map(|(pid, _)| self.cache.get(pid).map(|m| (*pid, *m)))
            .collect()
    }

    /// Reads each leader's tree; CPU is the delta since its previous
    /// sample, or its life's average for the first one (as `ps` does).
    fn read(
        &self,
        leaders: &[(i32, Duration)],
        now: Instant,
    ) -> Vec<(i32, Metrics, (Instant, u64))> {
        leaders
            .iter()
            .filter_map(|(pid, age)| {
                let (rss, ticks) = tree_usage(*pid)?;
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
                let metrics = Metrics {
                    cpu_percent: (cpu_percent * 10.0).round() / 10.0,
                    memory_bytes: rss,
                };
                Some((*pid, metrics, (now, ticks)))
            })
            .collect()
    }
}

/// (RSS bytes, CPU ticks) summed over `pid` and all its descendants. Reads
/// two small files per single-threaded process (`stat`, `children`): a
/// listing of thousands of instances is mostly these reads.
pub fn tree_usage(pid: i32) -> Option<(u64, u64)> {
    let mut total = (0, 0);
    let mut stack = vec![pid];
    let mut seen = Vec::new();
    while let Some(next) = stack.pop() {
        if seen.contains(&next) {
            continue;
        }
        seen.push(next);
        let Some(usage) = stat_usage(next) else {
            if next == pid {
                return None;
            }
            continue;
        };
        total.0 += usage.rss_bytes;
        total.1 += usage.ticks;
        if usage.threads > 1 {
            stack.extend(crate::procfs::children(next));
        } else if let Ok(list) =
            std::fs::read_to_string(format!("/proc/{next}/task/{next}/children"))
        {
            stack.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    Some(total)
}

/// One process's figures from its `stat`.
struct StatUsage {
    rss_bytes: u64,
    ticks: u64,
    threads: u64,
}

fn stat_usage(pid: i32) -> Option<StatUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // After the command, 0-based: utime 11, stime 12, num_threads 17, rss 21.
    let num = |k: usize| fields.get(k).and_then(|v| v.parse::<u64>().ok());
    Some(StatUsage {
        rss_bytes: num(21)? * page_size(),
        ticks: num(11)? + num(12)?,
        threads: num(17).unwrap_or(1),
    })
}

/// The page size /proc/PID/stat counts RSS in.
pub fn page_size() -> u64 {
    static SIZE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SIZE.get_or_init(|| {
        nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|v| u64::try_from(v).ok())
            .unwrap_or(4096)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_memory_and_the_cache_holds_for_a_second() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let mut sampler = Sampler::default();
        let start = Instant::now();
        let first = sampler.sample_at(&[(me, Duration::from_secs(1))], start);
        assert!(first[&me].memory_bytes > 1024 * 1024);
        let second = sampler.sample_at(&[(me, Duration::from_secs(1))], start + MIN_INTERVAL / 2);
        assert_eq!(
            first, second,
            "a second sample right after is the cached one"
        );
        assert!(tree_usage(-5).is_none());
    }

    #[test]
    fn a_new_leader_is_read_within_the_interval_and_a_gone_one_dropped() {
        let me = i32::try_from(std::process::id()).expect("pid");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let other = i32::try_from(child.id()).expect("pid");
        let mut sampler = Sampler::default();
        let start = Instant::now();
        let first = sampler.sample_at(&[(me, Duration::from_secs(1))], start);
        // Within the interval: the known leader's sample is kept (this
        // test's own memory grows meanwhile), the new one is read.
        let soon = start + MIN_INTERVAL / 2;
        let both = sampler.sample_at(
            &[(me, Duration::from_secs(1)), (other, Duration::ZERO)],
            soon,
        );
        assert_eq!(both[&me], first[&me], "the known leader is not read again");
        assert!(both.contains_key(&other), "the new one is read: {both:?}");
        let only_other = sampler.sample_at(&[(other, Duration::ZERO)], soon);
        assert_eq!(only_other.len(), 1, "{only_other:?}");
        // After the interval, everything is read again.
        let later = sampler.sample_at(&[(other, Duration::ZERO)], start + MIN_INTERVAL * 2);
        assert!(later.contains_key(&other), "{later:?}");
        child.kill().expect("kill");
        child.wait().expect("wait");
    }
}
