//! When an idle daemon, holder or `eco serve` drops its code pages again
//! (see [`super::startup::map_only_used_code`]): a pure rule, fed the
//! instants work came and pages were dropped, so it is tested without a
//! clock.

use std::time::{Duration, Instant};

/// The wait after work, at first and after a long rest: short, so a
/// daemon commanded once (an `up`) is back to its idle size within
/// seconds.
pub const SHORTEST: Duration = Duration::from_secs(2);

/// The longest wait: a process that works every few seconds (a reload
/// every 4 s, a script polling `eco ls`) keeps its code resident.
pub const LONGEST: Duration = Duration::from_secs(32);

/// Each drop costs a fault per page when work comes again (a few hundred
/// minor faults: 1-2 ms of the daemon's CPU, a third of a reload's). Work
/// that comes back sooner after a drop than the wait before it shows the
/// drop came too early: the wait doubles, up to [`LONGEST`]. Work that
/// comes later halves it, down to [`SHORTEST`].
#[derive(Debug)]
pub struct IdleDrop {
    wait: Duration,
    /// When the last drop was, until the first work after it.
    dropped_at: Option<Instant>,
}

impl Default for IdleDrop {
    fn default() -> Self {
        Self {
            wait: SHORTEST,
            dropped_at: None,
        }
    }
}

impl IdleDrop {
    /// Work came at `now`: the first work after a drop judges it.
    pub fn worked(&mut self, now: Instant) {
        if let Some(at) = self.dropped_at.take() {
            let idle = now.saturating_duration_since(at);
            self.wait = if idle < self.wait {
                (self.wait * 2).min(LONGEST)
            } else {
                (self.wait / 2).max(SHORTEST)
            };
        }
    }

    /// How long to stay idle after work before dropping.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The pages were dropped at `now`. (Not called for the drop at
    /// start-up: the first command follows it at once by design.)
    pub fn dropped(&mut self, now: Instant) {
        self.dropped_at = Some(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Drops after each burst of work at the given instants (seconds),
    /// each burst followed by the current wait if the next one is later.
    fn waits(bursts: &[f64]) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut rule = IdleDrop::default();
        let mut seen = Vec::new();
        for (i, at) in bursts.iter().enumerate() {
            rule.worked(t0 + secs(*at));
            seen.push(rule.wait());
            let drop_at = at + rule.wait().as_secs_f64();
            if bursts.get(i + 1).is_none_or(|next| *next > drop_at) {
                rule.dropped(t0 + secs(drop_at));
            }
        }
        seen
    }

    #[test]
    fn a_command_now_and_then_keeps_the_shortest_wait() {
        assert_eq!(waits(&[0.0, 5.0, 60.0, 600.0]), vec![SHORTEST; 4]);
    }

    #[test]
    fn work_back_soon_after_a_drop_doubles_the_wait_until_it_stops_dropping() {
        // Work every 3 s: the first drop, at 2 s, comes 1 s before more
        // work; the wait doubles to 4 s and no drop comes again.
        let every_3s = waits(&[0.0, 3.0, 6.0, 9.0, 12.0]);
        assert_eq!(
            every_3s,
            vec![secs(2.0), secs(4.0), secs(4.0), secs(4.0), secs(4.0)]
        );
    }

    #[test]
    fn the_wait_stops_at_the_longest() {
        let t0 = Instant::now();
        let mut rule = IdleDrop::default();
        for i in 0..20 {
            rule.dropped(t0 + secs(f64::from(i)));
            rule.worked(t0 + secs(f64::from(i) + 0.5));
        }
        assert_eq!(rule.wait(), LONGEST);
    }

    #[test]
    fn a_rest_after_busy_work_brings_the_wait_back_down() {
        let t0 = Instant::now();
        let mut rule = IdleDrop::default();
        for i in 0..5 {
            rule.dropped(t0 + secs(f64::from(i)));
            rule.worked(t0 + secs(f64::from(i) + 0.1));
        }
        assert_eq!(rule.wait(), LONGEST);
        let mut at = 100.0;
        while rule.wait() > SHORTEST {
            rule.dropped(t0 + secs(at));
            at += 3600.0;
            rule.worked(t0 + secs(at));
        }
        assert_eq!(rule.wait(), SHORTEST);
    }

    #[test]
    fn only_the_first_work_after_a_drop_counts() {
        let t0 = Instant::now();
        let mut rule = IdleDrop::default();
        rule.dropped(t0);
        rule.worked(t0 + secs(0.5));
        rule.worked(t0 + secs(0.6));
        rule.worked(t0 + secs(0.7));
        assert_eq!(rule.wait(), secs(4.0));
    }
}
