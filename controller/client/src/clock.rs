//! Unix time: the controller's one pair of clock helpers.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch (negative before it).
pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Milliseconds since the Unix epoch (0 before it).
pub fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    unix_ms(SystemTime::now())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn seconds_and_milliseconds_either_side_of_the_epoch() {
        let later = UNIX_EPOCH + Duration::from_millis(5_250);
        assert_eq!(unix_secs(later), 5);
        assert_eq!(unix_ms(later), 5_250);
        let earlier = UNIX_EPOCH - Duration::from_secs(7);
        assert_eq!(unix_secs(earlier), -7);
        assert_eq!(unix_ms(earlier), 0);
    }
}
