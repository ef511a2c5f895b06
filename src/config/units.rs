//! Human durations (`250ms`, `10s`, `5m`, `1h`) and sizes (`512K`, `300M`,
//! `2G`, binary units as in PM2).

use std::time::Duration;

/// Parses a duration; a bare integer is milliseconds, as PM2's `restart_delay: 3000`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<u64>() {
        return Some(Duration::from_millis(ms));
    }
    humantime::parse_duration(text).ok()
}

/// Parses a size: `300M` is 300 MiB; a bare integer is bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches('B').trim_end_matches('I');
    let power = match unit {
        "" => 0,
        "K" => 1,
        "M" => 2,
        "G" => 3,
        "T" => 4,
        _ => return None,
    };
    let bytes = number * 1024f64.powi(power);
    (bytes.is_finite() && (0.0..1.8e19).contains(&bytes)).then(|| bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("3000"), Some(Duration::from_secs(3)));
        assert_eq!(parse_duration("ten seconds"), None);
        assert_eq!(parse_duration("-1s"), None);
    }

    #[test]
    fn sizes_are_binary() {
        assert_eq!(parse_size("512K"), Some(512 * 1024));
        assert_eq!(parse_size("300M"), Some(300 * 1024 * 1024));
        assert_eq!(parse_size("2G"), Some(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("1T"), Some(1 << 40));
        assert_eq!(parse_size("10MB"), Some(10 << 20));
        assert_eq!(parse_size("1.5K"), Some(1536));
        assert_eq!(parse_size("100"), Some(100));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size("M"), None);
    }
}
