//! What to do when a process exits: restart after a backoff, or give up.
//! Pure: the caller passes the facts (exit, run time, crash count).

use std::time::Duration;

use crate::spec::{RestartPolicy, Settings};
use crate::state::Exit;

/// The decision after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterExit {
    /// Start again after `delay`; `crashes` is the new consecutive-crash count.
    Restart { delay: Duration, crashes: u32 },
    /// Too many consecutive crashes, or a failure that is not restarted.
    Errored,
    /// A clean exit that is not restarted.
    Stopped,
}

/// Decides what follows an exit. A run shorter than `min_uptime` is a crash;
/// the backoff doubles from `restart_delay` per consecutive crash, capped at
/// `max_restart_delay`, and resets after a run that lasted `min_uptime`.
pub fn after_exit(settings: &Settings, exit: Exit, ran_for: Duration, crashes: u32) -> AfterExit {
    let wanted = match settings.restart {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !exit.success(),
        RestartPolicy::Never => false,
    };
    if !wanted {
        return if exit.success() {
            AfterExit::Stopped
        } else {
            AfterExit::Errored
        };
    }
    let crashes = if ran_for >= settings.min_uptime {
        0
    } else {
        crashes.saturating_add(1)
    };
    if crashes > settings.max_restarts {
        return AfterExit::Errored;
    }
    AfterExit::Restart {
        delay: backoff(settings, crashes),
        crashes,
    }
}

/// Decides what follows a start that failed although the launcher exited
/// (a `pid_file` never written, or naming no process of the app): always a
/// failure and always a crash, whatever the exit code and however long the
/// wait for the file took, so backoff and `max_restarts` bound it.
pub fn after_failed_start(settings: &Settings, crashes: u32) -> AfterExit {
    if settings.restart == RestartPolicy::Never {
        return AfterExit::Errored;
    }
    let crashes = crashes.saturating_add(1);
    if crashes > settings.max_restarts {
        return AfterExit::Errored;
    }
    AfterExit::Restart {
        delay: backoff(settings, crashes),
        crashes,
    }
}

/// `restart_delay × 2^(crashes-1)`, capped at `max_restart_delay`.
pub fn backoff(settings: &Settings, crashes: u32) -> Duration {
    let doublings = crashes.saturating_sub(1).min(32);
    let delay = settings
        .restart_delay
        .checked_mul(1u32 << doublings.min(31))
        .unwrap_or(settings.max_restart_delay);
    delay.min(settings.max_restart_delay.max(settings.restart_delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            max_restarts: 3,
            restart_delay: Duration::from_millis(100),
            max_restart_delay: Duration::from_millis(500),
            ..Settings::default()
        }
    }

    const QUICK: Duration = Duration::from_millis(10);

    #[test]
    fn crash_loop_backs_off_then_errors() {
        let s = settings();
        let mut crashes = 0;
        let mut delays = Vec::new();
        loop {
            match after_exit(&s, Exit::Code(1), QUICK, crashes) {
                AfterExit::Restart { delay, crashes: c } => {
                    delays.push(delay.as_millis());
                    crashes = c;
                }
                AfterExit::Errored => break,
                AfterExit::Stopped => panic!("a crash is not a stop"),
            }
        }
        assert_eq!(delays, vec![100, 200, 400]);
    }

    #[test]
    fn backoff_is_capped() {
        let s = settings();
        assert_eq!(backoff(&s, 10), Duration::from_millis(500));
        assert_eq!(backoff(&s, u32::MAX), Duration::from_millis(500));
    }

    #[test]
    fn a_long_run_resets_the_count() {
        let s = settings();
        let long = Duration::from_secs(5);
        assert_eq!(
            after_exit(&s, Exit::Code(1), long, 3),
            AfterExit::Restart {
                delay: Duration::from_millis(100),
                crashes: 0
            }
        );
    }

    #[test]
    fn policies() {
        let mut s = settings();
        s.restart = RestartPolicy::OnFailure;
        assert_eq!(after_exit(&s, Exit::Code(0), QUICK, 0), AfterExit::Stopped);
        assert!(matches!(
            after_exit(&s, Exit::Signal(9), QUICK, 0),
            AfterExit::Restart { .. }
        ));
        s.restart = RestartPolicy::Never;
        assert_eq!(after_exit(&s, Exit::Code(2), QUICK, 0), AfterExit::Errored);
        assert_eq!(after_exit(&s, Exit::Code(0), QUICK, 0), AfterExit::Stopped);
    }

    #[test]
    fn a_failed_start_is_a_crash_whatever_the_policy() {
        let mut s = settings();
        for policy in [RestartPolicy::Always, RestartPolicy::OnFailure] {
            s.restart = policy;
            let mut crashes = 0;
            let mut starts = 1;
            while let AfterExit::Restart { crashes: c, .. } = after_failed_start(&s, crashes) {
                crashes = c;
                starts += 1;
            }
            assert_eq!(starts, s.max_restarts + 1, "{policy:?}");
        }
        s.restart = RestartPolicy::Never;
        assert_eq!(after_failed_start(&s, 0), AfterExit::Errored);
    }

    #[test]
    fn zero_delay_stays_zero() {
        let mut s = settings();
        s.restart_delay = Duration::ZERO;
        assert_eq!(backoff(&s, 5), Duration::ZERO);
    }
}
