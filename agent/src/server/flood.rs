//! Bounded recording of rejected jobs and flag sets. Every rejection is accounted for in the
//! audit log, but a flood cannot fill the disk: beyond [`FULL_ENTRIES_PER_SECOND`] rejections
//! in a second, each is counted by reason and the counts are written as one summary entry per
//! second (`job.rejected.summary`, `flags.rejected.summary`: one limiter each). Nothing is
//! hidden and nothing grows without bound.
//!
//! A counted rejection is answered only once the summary that counts it is durable, so an
//! acknowledged rejection is never lost to a crash — and a flood is slowed to the summary rate.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use tokio::sync::watch;

use crate::audit::Entry;

/// Rejections per second recorded in full (`job.received` + `job.rejected`).
pub const FULL_ENTRIES_PER_SECOND: u32 = 50;

/// How long a counted rejection waits for its summary to be durable before it is answered
/// with "audit log unavailable" instead.
pub const SUMMARY_WAIT: Duration = Duration::from_secs(5);

const WINDOW: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Window {
    started: Instant,
    recorded: u32,
    suppressed: BTreeMap<&'static str, u64>,
    since: Option<SystemTime>,
    /// The summary the next counted rejection goes into.
    generation: u64,
}

/// How one rejection is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recording {
    /// With its own `job.received` and `job.rejected` entries.
    Full,
    /// Counted in the summary of this generation; answer it once that summary is durable.
    Counted {
        /// The summary's generation.
        generation: u64,
    },
}

/// Decides which rejections are recorded in full and which are only counted.
#[derive(Debug)]
pub struct RejectionLimiter {
    per_second: u32,
    /// The summary entry's event, e.g. `job.rejected.summary`.
    event: &'static str,
    window: Mutex<Window>,
    flushed: watch::Sender<u64>,
}

impl RejectionLimiter {
    /// A limiter recording at most `per_second` rejections in full each second; its summaries
    /// are `event` entries.
    pub fn new(per_second: u32, event: &'static str) -> Self {
        Self {
            per_second,
            event,
            window: Mutex::new(Window {
                started: Instant::now(),
                recorded: 0,
                suppressed: BTreeMap::new(),
                since: None,
                generation: 1,
            }),
            flushed: watch::Sender::new(0),
        }
    }

    /// How this rejection is recorded. A counted one is added to the pending summary.
    pub fn record(&self, reason: &'static str) -> Recording {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.started.elapsed() >= WINDOW {
            w.started = Instant::now();
            w.recorded = 0;
        }
        if w.recorded < self.per_second {
            w.recorded += 1;
            Recording::Full
        } else {
            *w.suppressed.entry(reason).or_insert(0) += 1;
            w.since.get_or_insert_with(SystemTime::now);
            Recording::Counted {
                generation: w.generation,
            }
        }
    }

    /// The pending summary entry and its generation, if any rejection was counted. Call
    /// [`RejectionLimiter::mark_flushed`] once it is durable.
    pub fn take_summary(&self) -> Option<(u64, Entry)> {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.suppressed.is_empty() {
            return None;
        }
        let counts = std::mem::take(&mut w.suppressed);
        let since = w.since.take().unwrap_or_else(SystemTime::now);
        let generation = w.generation;
        w.generation += 1;
        let total: u64 = counts.values().sum();
        let entry = Entry::new(self.event)
            .with("count", json!(total))
            .with("reasons", json!(counts))
            .with(
                "since",
                json!(humantime::format_rfc3339_millis(since).to_string()),
            )
            .with(
                "note",
                json!(format!(
                    "over {} rejections a second: these were counted, not recorded one by one",
                    self.per_second
                )),
            );
        Some((generation, entry))
    }

    /// Records that the summary of `generation` (and every earlier one) is durable.
    pub fn mark_flushed(&self, generation: u64) {
        self.flushed.send_if_modified(|done| {
            let newer = generation > *done;
            if newer {
                *done = generation;
            }
            newer
        });
    }

    /// Waits until the summary of `generation` is durable; false after [`SUMMARY_WAIT`].
    pub async fn wait_flushed(&self, generation: u64) -> bool {
        let mut rx = self.flushed.subscribe();
        tokio::time::timeout(SUMMARY_WAIT, rx.wait_for(|done| *done >= generation))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejections_over_the_rate_are_counted_by_reason() {
        let limiter = RejectionLimiter::new(3, "job.rejected.summary");
        let full = (0..10)
            .filter(|_| limiter.record("bad_signature") == Recording::Full)
            .count();
        assert_eq!(full, 3);
        assert_eq!(
            limiter.record("unknown_key"),
            Recording::Counted { generation: 1 }
        );
        let (generation, summary) = limiter.take_summary().expect("a summary");
        assert_eq!(generation, 1);
        assert_eq!(summary.event(), "job.rejected.summary");
        let fields: BTreeMap<_, _> = summary.fields().iter().cloned().collect();
        assert_eq!(fields["count"], json!(8));
        assert_eq!(
            fields["reasons"],
            json!({"bad_signature": 7, "unknown_key": 1})
        );
        assert!(limiter.take_summary().is_none(), "counts are taken once");
        assert_eq!(
            limiter.record("expired"),
            Recording::Counted { generation: 2 }
        );
    }

    #[test]
    fn no_summary_without_counted_rejections() {
        let limiter = RejectionLimiter::new(3, "flags.rejected.summary");
        assert_eq!(limiter.record("expired"), Recording::Full);
        assert!(limiter.take_summary().is_none());
    }

    #[tokio::test]
    async fn a_counted_rejection_waits_for_its_summary() {
        let limiter = std::sync::Arc::new(RejectionLimiter::new(0, "flags.rejected.summary"));
        let Recording::Counted { generation } = limiter.record("expired") else {
            panic!("a zero rate counts everything");
        };
        let waiter = {
            let limiter = std::sync::Arc::clone(&limiter);
            tokio::spawn(async move { limiter.wait_flushed(generation).await })
        };
        let (flushed, summary) = limiter.take_summary().expect("a summary");
        assert_eq!(summary.event(), "flags.rejected.summary");
        limiter.mark_flushed(flushed);
        assert!(waiter.await.expect("the waiter"));
    }
}
