//! `cron_restart` schedules: standard 5-field expressions (an optional
//! leading seconds field, and `@hourly`-style shortcuts) in local time.
//! Pure: the clock is an argument.

use chrono::{DateTime, TimeZone};

/// The first run strictly after `after`, or None for an expression that
/// never fires (or does not parse; validation rejects those).
pub fn next_run<Tz: TimeZone>(expr: &str, after: &DateTime<Tz>) -> Option<DateTime<Tz>>
where
    Tz::Offset: Copy,
{
    if has_an_empty_field(expr) {
        return None;
    }
    let cron: croner::Cron = expr.parse().ok()?;
    cron.find_next_occurrence(after, false).ok()
}

/// A field made of commas alone (`0 , * * *`) selects nothing: croner
/// accepts it, then walks to its last year looking for a match (seconds of
/// CPU, found by fuzzing), so it is answered here, before any walk.
fn has_an_empty_field(expr: &str) -> bool {
    expr.split_whitespace()
        .any(|field| field.split(',').all(str::is_empty))
}

/// Whether `expr` matches any date at all. The Gregorian calendar repeats
/// every 400 years, so a schedule that fires fires within 400 years of any
/// start; a fixed start keeps the answer independent of the clock.
pub fn can_ever_fire(expr: &str) -> bool {
    if has_an_empty_field(expr) {
        return false;
    }
    let Ok(cron) = expr.parse::<croner::Cron>() else {
        return false;
    };
    let start = chrono::DateTime::UNIX_EPOCH;
    cron.find_next_occurrence(&start, false)
        .is_ok_and(|next| next.signed_duration_since(start).num_days() <= 400 * 366)
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone, Timelike, Utc};

    use super::*;

    /// Found by `cargo fuzz run pm2_json`: a comma for a field took seconds.
    #[test]
    fn a_field_of_commas_alone_never_fires_and_is_answered_at_once() {
        let start = std::time::Instant::now();
        for never in ["0 , * * *", ", * * * *", "0 0 ,, * *"] {
            assert!(!can_ever_fire(never), "{never}");
            assert_eq!(next_run(never, &chrono::Utc::now()), None, "{never}");
        }
        assert!(can_ever_fire("0 1,,2 * * *"));
        // The walk it replaces took 3.6 s; a bound far above the check's
        // microseconds and far below that.
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn schedules_that_match_no_date_never_fire() {
        for never in ["0 0 30 2 *", "0 0 31 4 *", "0 0 31 6,9,11 *"] {
            assert!(!can_ever_fire(never), "{never}");
        }
        for fires in ["0 3 * * *", "0 0 29 2 *", "@hourly", "0 0 31 * *"] {
            assert!(can_ever_fire(fires), "{fires}");
        }
    }

    #[test]
    fn every_minute_fires_exactly_once_per_minute() {
        let start = Utc
            .with_ymd_and_hms(2026, 11, 29, 10, 0, 30)
            .single()
            .expect("time");
        let mut runs = Vec::new();
        let mut at = start;
        while let Some(next) = next_run("* * * * *", &at) {
            if next > start + Duration::hours(1) {
                break;
            }
            runs.push(next);
            at = next;
        }
        assert_eq!(runs.len(), 60);
        assert!(runs.iter().all(|r| r.second() == 0));
        assert!(runs.windows(2).all(|w| w[1] - w[0] == Duration::minutes(1)));
        assert_eq!(
            runs[0],
            Utc.with_ymd_and_hms(2026, 11, 29, 10, 1, 0)
                .single()
                .expect("time")
        );
    }

    #[test]
    fn daily_at_three_and_shortcuts() {
        let now = Utc
            .with_ymd_and_hms(2026, 11, 29, 3, 0, 0)
            .single()
            .expect("time");
        let next = next_run("0 3 * * *", &now).expect("next");
        assert_eq!(
            next,
            Utc.with_ymd_and_hms(2026, 11, 30, 3, 0, 0)
                .single()
                .expect("time")
        );
        let hourly = next_run("@hourly", &now).expect("next");
        assert_eq!(hourly.hour(), 4);
        let secs = next_run("*/2 * * * * *", &now).expect("next");
        assert_eq!(secs - now, Duration::seconds(2));
        assert!(next_run("not cron", &now).is_none());
    }
}
