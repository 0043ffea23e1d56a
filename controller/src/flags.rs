//! Stage two of argument parsing: raw flag strings become typed values, or an error that names
//! the flag (exit 2).

use std::time::{Duration, UNIX_EPOCH};

pub use gantry_client::clock::unix_secs;

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

/// A whole number, 0 allowed.
///
/// # Errors
///
/// [`FlagError`] naming `flag` when it is not a whole number.
pub fn count_u32(flag: &'static str, raw: &str) -> Result<u32, FlagError> {
    raw.trim().parse::<u32>().map_err(|_| {
        FlagError::new(
            flag,
            format!("expected a whole number (0 or more), got {raw:?}"),
        )
    })
}

/// A duration in whole milliseconds that fits the wire's `uint32`, zero allowed (`0s`, `0`).
///
/// # Errors
///
/// [`FlagError`] naming `flag`.
pub fn millis_u32_or_zero(flag: &'static str, raw: &str) -> Result<u32, FlagError> {
    if raw.trim() == "0" {
        return Ok(0);
    }
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        FlagError::new(
            flag,
            format!("expected a duration like 500ms, 30s or 10m, got {raw:?} ({e})"),
        )
    })?;
    u32::try_from(d.as_millis())
        .map_err(|_| FlagError::new(flag, format!("{raw} is out of range (0 to 49 days)")))
}

/// A percentage from `min` to 100, written `25` or `25%`.
///
/// # Errors
///
/// [`FlagError`] naming `flag`.
pub fn percent(flag: &'static str, raw: &str, min: u32) -> Result<u32, FlagError> {
    let t = raw.trim();
    let digits = t.strip_suffix('%').unwrap_or(t);
    match digits.parse::<u32>() {
        Ok(p) if (min..=100).contains(&p) => Ok(p),
        _ => Err(FlagError::new(
            flag,
            format!("expected a percentage from {min} to 100, got {raw:?}"),
        )),
    }
}

/// A rolling batch: a positive count (`2`) or a percentage of the instances from 1 to 100
/// (`25%`), normalised to the wire's spelling.
///
/// # Errors
///
/// [`FlagError`] naming `flag`.
pub fn batch(flag: &'static str, raw: &str) -> Result<String, FlagError> {
    let t = raw.trim();
    if let Some(p) = t.strip_suffix('%') {
        return match p.parse::<u32>() {
            Ok(n) if (1..=100).contains(&n) => Ok(format!("{n}%")),
            _ => Err(FlagError::new(
                flag,
                format!("expected a count like 2 or a percentage from 1% to 100%, got {raw:?}"),
            )),
        };
    }
    match t.parse::<u32>() {
        Ok(n) if n > 0 => Ok(n.to_string()),
        _ => Err(FlagError::new(
            flag,
            format!("expected a count like 2 or a percentage from 1% to 100%, got {raw:?}"),
        )),
    }
}

/// A positive percentage of one CPU core (above 100 for several cores), such as `80` or `150%`.
///
/// # Errors
///
/// [`FlagError`] naming `flag`.
pub fn cpu_percent(flag: &'static str, raw: &str) -> Result<f64, FlagError> {
    let t = raw.trim();
    let digits = t.strip_suffix('%').unwrap_or(t);
    match digits.parse::<f64>() {
        Ok(p) if p.is_finite() && p > 0.0 && p <= 100_000.0 => Ok(p),
        _ => Err(FlagError::new(
            flag,
            format!(
                "expected a positive percentage of one CPU core like 80 or 150% (above 100 for \
                 several cores), got {raw:?}"
            ),
        )),
    }
}

/// A positive size in bytes: a number with an optional unit, `B`, decimal `KB` `MB` `GB` `TB`
/// (powers of 1000) or binary `KiB` `MiB` `GiB` `TiB` (powers of 1024); `K` `M` `G` `T` alone
/// are decimal, `Ki` `Mi` `Gi` `Ti` binary. Units are case-insensitive.
///
/// # Errors
///
/// [`FlagError`] naming `flag`.
pub fn byte_size(flag: &'static str, raw: &str) -> Result<u64, FlagError> {
    let bad = |why: &str| {
        FlagError::new(
            flag,
            format!("{raw:?}: {why} (expected a size like 256MiB, 512MB or 1GiB)"),
        )
    };
    let t = raw.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad("no number"))?;
    let unit = unit.trim().to_ascii_lowercase();
    let mult: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "ki" | "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mi" | "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gi" | "gib" => 1 << 30,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "ti" | "tib" => 1 << 40,
        _ => return Err(bad("unknown unit")),
    };
    match n.checked_mul(mult) {
        Some(0) => Err(bad("must be more than 0")),
        Some(b) => Ok(b),
        None => Err(bad("too large")),
    }
}

/// Bytes for people: `256 MiB`, `1.5 GiB`, `512 B` (the largest binary unit the value reaches;
/// one decimal unless whole).
pub fn format_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut unit = 0;
    while unit < UNITS.len() - 1 && b >> (10 * (unit + 1)) > 0 {
        unit += 1;
    }
    let scale = 1u64 << (10 * unit);
    if b.is_multiple_of(scale) {
        format!("{} {}", b / scale, UNITS[unit])
    } else {
        #[allow(clippy::cast_precision_loss)] // for display only
        let v = b as f64 / scale as f64;
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Milliseconds for people: `500ms`, `30s`, `10m`, `1h 30m`.
pub fn format_ms(ms: u32) -> String {
    humantime::format_duration(Duration::from_millis(u64::from(ms))).to_string()
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

/// A lowercase hex SHA-256 digest (64 characters).
///
/// # Errors
///
/// [`FlagError`] naming `flag`.
pub fn sha256(flag: &'static str, raw: &str) -> Result<String, FlagError> {
    gantry_policy::job::Sha256Hex::new(raw.trim())
        .map(|d| d.to_string())
        .map_err(|e| FlagError::new(flag, format!("{raw:?}: {e}")))
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
    #[test]
    fn rollout_values_parse_and_name_the_flag() {
        assert_eq!(batch("--batch", "3"), Ok("3".to_owned()));
        assert_eq!(batch("--batch", "100%"), Ok("100%".to_owned()));
        for bad in ["0", "0%", "101%", "-1", "1.5", "%", ""] {
            let e = batch("--batch", bad).unwrap_err();
            assert_eq!(e.flag, "--batch", "{bad}");
            assert!(e.message.contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(percent("--preview-weight", "0", 0), Ok(0));
        assert_eq!(percent("--preview-weight", "100%", 0), Ok(100));
        assert!(percent("--preview-weight", "101", 0).is_err());
        assert_eq!(count_u32("--max-restarts", "0"), Ok(0));
        assert!(count_u32("--max-restarts", "x").is_err());
        assert_eq!(cpu_percent("--max-cpu", "150%"), Ok(150.0));
        assert_eq!(cpu_percent("--max-cpu", "12.5"), Ok(12.5));
        for bad in ["0", "-3", "inf", "NaN", "lots"] {
            assert_eq!(cpu_percent("--max-cpu", bad).unwrap_err().flag, "--max-cpu");
        }
        assert_eq!(millis_u32_or_zero("--min-healthy-time", "0"), Ok(0));
        assert_eq!(millis_u32_or_zero("--min-healthy-time", "0s"), Ok(0));
        assert_eq!(millis_u32_or_zero("--min-healthy-time", "1.5s"), Ok(1500));
        assert!(millis_u32_or_zero("--min-healthy-time", "100d").is_err());
    }

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!(byte_size("--max-memory", "256MiB"), Ok(256 << 20));
        assert_eq!(byte_size("--max-memory", "256mi"), Ok(256 << 20));
        assert_eq!(byte_size("--max-memory", "512MB"), Ok(512_000_000));
        assert_eq!(byte_size("--max-memory", "1 GiB"), Ok(1 << 30));
        assert_eq!(byte_size("--max-memory", "4096"), Ok(4096));
        assert_eq!(byte_size("--max-memory", "2k"), Ok(2000));
        for bad in [
            "",
            "MiB",
            "0",
            "0MiB",
            "1.5GiB",
            "12 parsecs",
            "99999999999TiB",
        ] {
            let e = byte_size("--max-memory", bad).unwrap_err();
            assert!(
                e.to_string().starts_with("invalid --max-memory: "),
                "{bad}: {e}"
            );
        }
        assert_eq!(format_bytes(256 << 20), "256 MiB");
        assert_eq!(format_bytes(512), "512 B");
        assert_eq!(format_bytes(1 << 30), "1 GiB");
        assert_eq!(format_bytes(512_000_000), "488.3 MiB");
        assert_eq!(format_bytes(1536 << 20), "1.5 GiB");
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_ms(90_000), "1m 30s");
    }
}
