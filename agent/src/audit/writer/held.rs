//! Held entries: what waits in memory while the log cannot be written, and the
//! `audit.resumed` batch that writes it once the disk is back.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use tokio::sync::oneshot;

use super::{Chain, Writer};
use crate::audit::{AuditError, Entry, HeldAppend, MAX_HELD};

/// Entries waiting for the log to be writable again.
#[derive(Default)]
pub(super) struct Held {
    /// Each entry with the time it was handed in, in order.
    pub(super) queue: VecDeque<(Entry, SystemTime)>,
    /// Entries refused because the queue was full, since the last `audit.resumed`.
    pub(super) dropped: u64,
    /// When the current failure began (for `audit.resumed`).
    pub(super) failed_since: Option<SystemTime>,
}

impl Writer {
    /// Queues `entry` until the log is writable, or refuses it when the queue is full.
    pub(super) fn hold(
        &mut self,
        entry: Entry,
        at: SystemTime,
        tx: oneshot::Sender<Result<HeldAppend, AuditError>>,
        cause: &str,
    ) {
        let held = self.held.queue.len();
        if held >= MAX_HELD {
            self.held.dropped += 1;
            tracing::error!(
                event = entry.event(),
                held,
                "audit entry dropped: too many held"
            );
            let _ = tx.send(Err(AuditError::HeldFull {
                cause: cause.to_owned(),
                held,
            }));
            return;
        }
        self.held.queue.push_back((entry, at));
        let queued = held + 1;
        self.shared.held.store(queued, Ordering::Relaxed);
        let _ = tx.send(Ok(HeldAppend::Held {
            queued,
            cause: cause.to_owned(),
        }));
    }

    /// Starts a retry batch: `audit.resumed`, then every held entry (with `held_at`) in order.
    pub(super) fn push_resumed(&mut self, work: &mut Chain) {
        let cause = self
            .failed
            .as_ref()
            .map_or_else(String::new, |f| f.cause.clone());
        let since = self.held.failed_since.unwrap_or_else(SystemTime::now);
        let resumed = Entry::new("audit.resumed")
            .with("cause", cause)
            .with(
                "failed_since",
                humantime::format_rfc3339_millis(since).to_string(),
            )
            .with("held", self.held.queue.len())
            .with("dropped", self.held.dropped);
        self.push_line(work, &resumed);
        let held: Vec<Entry> = self
            .held
            .queue
            .iter()
            .map(|(e, at)| {
                e.clone()
                    .with("held_at", humantime::format_rfc3339_millis(*at).to_string())
            })
            .collect();
        let every = self.opts.checkpoint_every;
        for entry in &held {
            self.push_line(work, entry);
            if every > 0 && work.since_checkpoint >= every {
                self.push_checkpoint(work);
            }
        }
    }
}
