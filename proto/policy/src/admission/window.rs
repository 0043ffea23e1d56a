//! The validity window: a job is admitted only between `not_before` (less the allowed clock
//! skew) and `expires_at`, and its window may not be longer than the policy allows, so a
//! signed job cannot be held back and used much later.

use std::time::Duration;

use super::AdmissionError;
use crate::config::Limits;
use crate::job::JobSpec;

/// Why a signed document is outside its validity window. The same rule for jobs, plans and
/// dispatches, each with its own maximum.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    /// `not_before` is in the future (beyond the allowed clock skew).
    #[error("is not valid before {not_before} (now {now})")]
    NotYetValid {
        /// The document's `not_before`.
        not_before: i64,
        /// The agent's time.
        now: i64,
    },
    /// `expires_at` has passed.
    #[error("expired at {expires_at} (now {now})")]
    Expired {
        /// The document's `expires_at`.
        expires_at: i64,
        /// The agent's time.
        now: i64,
    },
    /// The window is longer than its maximum.
    #[error("is valid for {window_secs}s, more than the maximum of {max_secs}s")]
    TooLong {
        /// `expires_at - not_before`.
        window_secs: i64,
        /// The limit.
        max_secs: u64,
    },
}

impl From<WindowError> for AdmissionError {
    fn from(e: WindowError) -> Self {
        match e {
            WindowError::NotYetValid { not_before, now } => {
                AdmissionError::NotYetValid { not_before, now }
            }
            WindowError::Expired { expires_at, now } => AdmissionError::Expired { expires_at, now },
            WindowError::TooLong {
                window_secs,
                max_secs,
            } => AdmissionError::WindowTooLong {
                window_secs,
                max_secs,
            },
        }
    }
}

/// Checks `spec`'s window against `now` (Unix seconds).
///
/// # Errors
///
/// [`AdmissionError::NotYetValid`] when `not_before > now + clock_skew`,
/// [`AdmissionError::Expired`] when `expires_at <= now`, [`AdmissionError::WindowTooLong`]
/// when `expires_at - not_before > max_validity`. Arithmetic cannot overflow on hostile values.
pub fn check_window(spec: &JobSpec, now: i64, limits: &Limits) -> Result<(), AdmissionError> {
    check_times(
        spec.not_before,
        spec.expires_at,
        now,
        limits.clock_skew,
        limits.max_validity,
    )
    .map_err(AdmissionError::from)
}

/// Checks a window `not_before..expires_at` against `now` (Unix seconds), allowing `skew` for
/// `not_before` and at most `max` between the two.
///
/// # Errors
///
/// The [`WindowError`] of the first rule broken, in the order of [`check_window`].
pub fn check_times(
    not_before: i64,
    expires_at: i64,
    now: i64,
    skew: Duration,
    max: Duration,
) -> Result<(), WindowError> {
    let skew = i128::from(skew.as_secs());
    if i128::from(not_before) > i128::from(now) + skew {
        return Err(WindowError::NotYetValid { not_before, now });
    }
    if expires_at <= now {
        return Err(WindowError::Expired { expires_at, now });
    }
    let window = i128::from(expires_at) - i128::from(not_before);
    let max = max.as_secs();
    if window > i128::from(max) {
        return Err(WindowError::TooLong {
            window_secs: i64::try_from(window).unwrap_or(i64::MAX),
            max_secs: max,
        });
    }
    Ok(())
}
