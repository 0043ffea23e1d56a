//! Stage two of argument parsing: raw flag strings become typed values, or an error that names
//! the flag (exit 2).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A flag's value is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {flag}: {message}")]
pub struct FlagError {
    /// The flag, with dashes (`--instances`).
    pub flag: &'static str,
    /// What is wrong, with the value given.
    pub message: String,
}

impl FlagError {
    /// An error for `flag`.
    pub fn new(flag: &'static str, message: impl Into<String>) -> Self {
        Self {
            flag,
            message: message.into(),
        }
    }
}

/// A positive whole number (1 or more).
///
/// # Errors
///
/// [`FlagError`] naming `flag` when it is not a number or is 0.
pub fn positive_u32(flag: &'static str, raw: &str) -> Result<u32, FlagError> {
    match raw.trim().parse::<u32>() {
        Ok(0) => Err(FlagError::new(flag, "must be at least 1, got 0")),
        Ok(n) => Ok(n),
        Err(_) => Err(FlagError::new(
            flag,
            format!("expected a positive whole number, got {raw:?}"),
        )),
    }
}

/// A positive duration such as `500ms`, `2s`, `10m`.
///
/// # Errors
///
/// [`FlagError`] naming `flag` when it does not parse or is zero.
pub fn duration(flag: &'static str, raw: &str) -> Result<Duration, FlagError> {
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        FlagError::new(
            flag,
            format!("expected a duration like 500ms, 30s or 10m, got {raw:?} ({e})"),
        )
    })?;
    if d.is_zero() {
        return Err(FlagError::new(flag, "must be longer than zero"));
    }
    Ok(d)
}

/// A positive duration in whole milliseconds that fits the wire's `uint32`.
///
/// # Errors
///
/// [`FlagError`] naming `flag`.
pub fn millis_u32(flag: &'static str, raw: &str) -> Result<u32, FlagError> {
    let d = duration(flag, raw)?;
    u32::try_from(d.as_millis())
        .ok()
        .filter(|ms| *ms > 0)
        .ok_or_else(|| FlagError::new(flag, format!("{raw} is out of range (1ms to 49 days)")))
}

/// A positive duration in whole seconds that fits the wire's `uint32`.
///
/// # Errors
///
/// [`FlagError`] naming `flag`.
pub fn secs_u32(flag: &'static str, raw: &str) -> Result<u32, FlagError> {
    let d = duration(flag, raw)?;
    u32::try_from(d.as_secs())
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| FlagError::new(flag, format!("{raw} is out of range (1s to 136 years)")))
}

/// A SemVer 2.0 version.
///
/// # Errors
///
/// [`FlagError`] naming `flag`.
pub fn semver(flag: &'static str, raw: &str) -> Result<semver::Version, FlagError> {
    semver::Version::parse(raw.trim()).map_err(|e| {
        FlagError::new(
            flag,
            format!("{raw:?} is not a SemVer 2.0 version like 1.2.3 ({e})"),
        )
    })
}

/// An RFC 3339 UTC time (`2026-01-02T03:04:05Z`) as Unix seconds.
///
/// # Errors
///
/// [`FlagError`] naming `flag`.
pub fn rfc3339(flag: &'static str, raw: &str) -> Result<i64, FlagError> {
    let t = humantime::parse_rfc3339_weak(raw.trim()).map_err(|e| {
        FlagError::new(
            flag,
            format!("expected an RFC 3339 UTC time like 2026-01-02T03:04:05Z, got {raw:?} ({e})"),
        )
    })?;
    Ok(unix_secs(t))
}

/// Seconds since the Unix epoch (negative before it).
pub fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Unix seconds as RFC 3339 UTC, or the number itself when out of range.
pub fn format_unix(secs: i64) -> String {
    let t = if secs >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(secs.unsigned_abs()))
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(secs.unsigned_abs()))
    };
    match t {
        Some(t) if secs >= 0 => humantime::format_rfc3339_seconds(t).to_string(),
        _ => format!("@{secs}"),
    }
}

/// "in 14m", "2h 3m ago", "now": a coarse relative time for people.
pub fn relative(secs: i64, now: i64) -> String {
    let delta = secs - now;
    let abs = delta.unsigned_abs();
    let rounded = if abs >= 60 { abs / 60 * 60 } else { abs };
    let text = humantime::format_duration(Duration::from_secs(rounded)).to_string();
    match delta {
        0 => "now".to_owned(),
        d if d > 0 => format!("in {text}"),
        _ => format!("{text} ago"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_flag() {
        assert_eq!(
            positive_u32("--instances", "0").unwrap_err().to_string(),
            "invalid --instances: must be at least 1, got 0"
        );
        assert!(
            positive_u32("--instances", "x")
                .unwrap_err()
                .to_string()
                .contains("--instances")
        );
        assert!(
            duration("--valid-for", "soon")
                .unwrap_err()
                .to_string()
                .starts_with("invalid --valid-for")
        );
        assert!(
            semver("--version", "1.0")
                .unwrap_err()
                .to_string()
                .starts_with("invalid --version")
        );
        assert!(
            rfc3339("--not-before", "yesterday")
                .unwrap_err()
                .to_string()
                .contains("--not-before")
        );
    }

    #[test]
    fn values_parse() {
        assert_eq!(millis_u32("--health-interval", "500ms"), Ok(500));
        assert_eq!(secs_u32("--progress-deadline", "10m"), Ok(600));
        assert_eq!(rfc3339("--not-before", "1970-01-01T00:01:00Z"), Ok(60));
        assert_eq!(format_unix(60), "1970-01-01T00:01:00Z");
        assert_eq!(relative(1000 + 14 * 60 + 5, 1000), "in 14m");
        assert_eq!(relative(1000 - 5, 1000), "5s ago");
    }
}
