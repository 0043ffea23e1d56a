//! Bounded recording of rejected jobs. Every rejection is accounted for in the audit log, but a
//! flood cannot fill the disk: beyond [`FULL_ENTRIES_PER_SECOND`] rejections in a second, each
//! is counted by reason and the counts are written as one `job.rejected.summary` entry per
//! second. Nothing is hidden and nothing grows without bound.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::audit::Entry;

/// Rejections per second recorded in full (`job.received` + `job.rejected`).
pub const FULL_ENTRIES_PER_SECOND: u32 = 50;

const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Window {
    started: Instant,
    recorded: u32,
    suppressed: BTreeMap<&'static str, u64>,
    since: Option<SystemTime>,
}

/// Decides which rejections are recorded in full and which are only counted.
#[derive(Debug)]
pub struct RejectionLimiter {
    per_second: u32,
    window: Mutex<Window>,
}

impl RejectionLimiter {
    /// A limiter recording at most `per_second` rejections in full each second.
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            window: Mutex::new(Window {
                started: Instant::now(),
                recorded: 0,
                suppressed: BTreeMap::new(),
                since: None,
            }),
        }
    }

    /// Whether this rejection gets its own entries. If not, it is counted under `reason`.
    pub fn record_in_full(&self, reason: &'static str) -> bool {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.started.elapsed() >= WINDOW {
            w.started = Instant::now();
            w.recorded = 0;
        }
        if w.recorded < self.per_second {
            w.recorded += 1;
            true
        } else {
            *w.suppressed.entry(reason).or_insert(0) += 1;
            w.since.get_or_insert_with(SystemTime::now);
            false
        }
    }

    /// The summary entry of the rejections counted since the last call, if any.
    pub fn take_summary(&self) -> Option<Entry> {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.suppressed.is_empty() {
            return None;
        }
        let counts = std::mem::take(&mut w.suppressed);
        let since = w.since.take().unwrap_or_else(SystemTime::now);
        let total: u64 = counts.values().sum();
        Some(
            Entry::new("job.rejected.summary")
                .with("count", json!(total))
                .with("reasons", json!(counts))
                .with("since", json!(humantime::format_rfc3339_millis(since).to_string()))
                .with(
                    "note",
                    json!(format!(
                        "more than {} rejections per second; these were counted, not recorded one by one",
                        self.per_second
                    )),
                ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_over_the_rate_are_counted_by_reason() {
        let limiter = RejectionLimiter::new(3);
        let full = (0..10)
            .filter(|_| limiter.record_in_full("bad_signature"))
            .count();
        assert_eq!(full, 3);
        assert!(!limiter.record_in_full("unknown_key"));
        let summary = limiter.take_summary().expect("a summary");
        assert_eq!(summary.event(), "job.rejected.summary");
        let fields: BTreeMap<_, _> = summary.fields().iter().cloned().collect();
        assert_eq!(fields["count"], json!(8));
        assert_eq!(
            fields["reasons"],
            json!({"bad_signature": 7, "unknown_key": 1})
        );
        assert!(limiter.take_summary().is_none(), "counts are taken once");
    }

    #[test]
    fn no_summary_without_suppressed_rejections() {
        let limiter = RejectionLimiter::new(3);
        assert!(limiter.record_in_full("expired"));
        assert!(limiter.take_summary().is_none());
    }
}
