//! The validity window: a job is admitted only between `not_before` (less the allowed clock
//! skew) and `expires_at`, and its window may not be longer than the policy allows, so a
//! signed job cannot be held back and used much later.

use super::AdmissionError;
use crate::config::Limits;
use crate::job::JobSpec;

/// Checks `spec`'s window against `now` (Unix seconds).
///
/// # Errors
///
/// [`AdmissionError::NotYetValid`] when `not_before > now + clock_skew`,
/// [`AdmissionError::Expired`] when `expires_at <= now`, [`AdmissionError::WindowTooLong`]
/// when `expires_at - not_before > max_validity`. Arithmetic cannot overflow on hostile values.
pub fn check_window(spec: &JobSpec, now: i64, limits: &Limits) -> Result<(), AdmissionError> {
    let skew = i128::from(limits.clock_skew.as_secs());
    if i128::from(spec.not_before) > i128::from(now) + skew {
        return Err(AdmissionError::NotYetValid {
            not_before: spec.not_before,
            now,
        });
    }
    if spec.expires_at <= now {
        return Err(AdmissionError::Expired {
            expires_at: spec.expires_at,
            now,
        });
    }
    let window = i128::from(spec.expires_at) - i128::from(spec.not_before);
    let max = limits.max_validity.as_secs();
    if window > i128::from(max) {
        return Err(AdmissionError::WindowTooLong {
            window_secs: i64::try_from(window).unwrap_or(i64::MAX),
            max_secs: max,
        });
    }
    Ok(())
}
