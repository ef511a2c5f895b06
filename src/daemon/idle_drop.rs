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
/// minor faults after a reload: 1-2 ms of the daemon's CPU, a third of
/// the reload's). A drop that work came back to sooner than the wait
/// before it, when that work changed something (a reload, an `up`: the
/// spawn path, not a listing's few pages), came too early: the wait
/// doubles, up to [`LONGEST`]. Work that comes later halves it, down to
/// [`SHORTEST`]. A drop is judged once, when the burst after it ends.
#[derive(Debug)]
pub struct IdleDrop {
    wait: Duration,
    /// When the last drop was, until it is judged.
    dropped_at: Option<Instant>,
    /// When work first came after that drop.
    came_back: Option<Instant>,
    /// Whether work since that drop changed something.
    changed: bool,
}

impl Default for IdleDrop {
    fn default() -> Self {
        Self {
            wait: SHORTEST,
            dropped_at: None,
            came_back: None,
            changed: false,
        }
    }
}

impl IdleDrop {
    /// Work came at `now`.
    pub fn worked(&mut self, now: Instant) {
        if self.dropped_at.is_some() && self.came_back.is_none() {
            self.came_back = Some(now);
        }
    }

    /// The work since the last drop changed something (what it ran is
    /// costly to fault back in).
    pub fn changed(&mut self) {
        self.changed = true;
    }

    /// No work came for [`IdleDrop::wait`]: judges the last drop (once)
    /// and gives the wait that now applies, which may be longer.
    pub fn settle(&mut self) -> Duration {
        if let (Some(at), Some(back)) = (self.dropped_at, self.came_back) {
            let idle = back.saturating_duration_since(at);
            if idle >= self.wait {
                self.wait = (self.wait / 2).max(SHORTEST);
            } else if self.changed {
                self.wait = (self.wait * 2).min(LONGEST);
            }
            self.dropped_at = None;
            self.came_back = None;
        }
        self.wait
    }

    /// How long to stay idle after work before dropping.
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The pages were dropped at `now`. (Not called for the drop at
    /// start-up: the first command follows it at once by design.)
    pub fn dropped(&mut self, now: Instant) {
        self.dropped_at = Some(now);
        self.came_back = None;
        self.changed = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// Bursts of work at the given instants (seconds; true: it changed
    /// something), each a moment long; a drop follows each burst once no
    /// work came for the wait. The waits settled after each burst.
    fn waits(bursts: &[(f64, bool)]) -> Vec<Duration> {
        let t0 = Instant::now();
        let mut rule = IdleDrop::default();
        let mut seen = Vec::new();
        for (i, (at, changed)) in bursts.iter().enumerate() {
            rule.worked(t0 + secs(*at));
            if *changed {
                rule.changed();
            }
            let wait = rule.settle();
            seen.push(wait);
            let drop_at = at + wait.as_secs_f64();
            if bursts.get(i + 1).is_none_or(|(next, _)| *next > drop_at) {
                rule.dropped(t0 + secs(drop_at));
            }
        }
        seen
    }

    #[test]
    fn a_command_now_and_then_keeps_the_shortest_wait() {
        let bursts = [(0.0, true), (5.0, true), (60.0, true), (600.0, false)];
        assert_eq!(waits(&bursts), vec![SHORTEST; 4]);
    }

    #[test]
    fn changes_back_soon_after_a_drop_double_the_wait_until_it_stops_dropping() {
        // A reload every 3 s: the first drop, at 2 s, comes 1 s before
        // the next; the wait doubles to 4 s and no drop comes again.
        let every_3s = waits(&[(0.0, true), (3.0, true), (6.0, true), (9.0, true)]);
        assert_eq!(every_3s, vec![secs(2.0), secs(4.0), secs(4.0), secs(4.0)]);
    }

    #[test]
    fn listings_back_soon_after_a_drop_leave_the_wait_alone() {
        // `eco ls` every 3 s faults back a few pages: not worth keeping
        // the daemon's code for.
        let every_3s = waits(&[(0.0, true), (3.0, false), (6.0, false), (9.0, false)]);
        assert_eq!(every_3s, vec![SHORTEST; 4]);
    }

    /// A drop at `at`, then a change `after` seconds later, judged.
    fn change_after_drop(rule: &mut IdleDrop, at: Instant, after: f64) {
        rule.dropped(at);
        rule.worked(at + secs(after));
        rule.changed();
        rule.settle();
    }

    #[test]
    fn the_wait_stops_at_the_longest() {
        let t0 = Instant::now();
        let mut rule = IdleDrop::default();
        for i in 0..20 {
            change_after_drop(&mut rule, t0 + secs(f64::from(i)), 0.5);
        }
        assert_eq!(rule.wait(), LONGEST);
    }

    #[test]
    fn a_rest_after_busy_work_brings_the_wait_back_down() {
        let t0 = Instant::now();
        let mut rule = IdleDrop::default();
        for i in 0..5 {
            change_after_drop(&mut rule, t0 + secs(f64::from(i)), 0.1);
        }
        assert_eq!(rule.wait(), LONGEST);
        let mut at = 100.0;
        while rule.wait() > SHORTEST {
            change_after_drop(&mut rule, t0 + secs(at), 3600.0);
            at += 3600.0;
        }
        assert_eq!(rule.wait(), SHORTEST);
    }

    #[test]
    fn a_drop_is_judged_once_by_the_first_work_after_it() {
        let t0 = Instant::now();
        let mut rule = IdleDrop::default();
        rule.dropped(t0);
        rule.worked(t0 + secs(0.5));
        rule.worked(t0 + secs(3.0));
        rule.changed();
        assert_eq!(rule.settle(), secs(4.0));
        assert_eq!(rule.settle(), secs(4.0), "judged again");
    }
}
