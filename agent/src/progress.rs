//! Job progress: how a job ended ([`Outcome`], [`Ended`]), its events ([`JobEvent`]) and the
//! handle that keeps their history and feeds live watchers ([`JobHandle`]).
//!
//! The executor publishes, strategies publish steps through their `JobCtx`, the server
//! streams them. Nothing here does I/O.

use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::audit::CheckpointLine;
use crate::error::lock;
use crate::job::{JobId, VerifiedJob};

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked was done and is healthy.
    Succeeded,
    /// It failed and could not be rolled back (or there was nothing to roll back to).
    Failed,
    /// It failed and the previous release is serving again.
    RolledBack,
    /// The agent stopped or crashed while it ran.
    Interrupted,
}

impl Outcome {
    /// The name used in the audit log, the replay store and `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// Parses [`Outcome::as_str`].
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::RolledBack,
            Outcome::Interrupted,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// How a job (or a strategy run) ended, with a readable reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// How.
    pub outcome: Outcome,
    /// Why, readable; the job's final reason.
    pub reason: String,
}

impl Ended {
    /// Done and healthy.
    pub fn succeeded(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Succeeded, reason)
    }

    /// Failed; nothing to return to, or the return failed too.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Failed, reason)
    }

    /// Failed; the previous release serves again.
    pub fn rolled_back(reason: impl Into<String>) -> Self {
        Self::new(Outcome::RolledBack, reason)
    }

    /// The agent stopped during the run.
    pub fn interrupted(reason: impl Into<String>) -> Self {
        Self::new(Outcome::Interrupted, reason)
    }

    fn new(outcome: Outcome, reason: impl Into<String>) -> Self {
        Self {
            outcome,
            reason: reason.into(),
        }
    }
}

/// What happened in a job, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// Admission passed; the job will run.
    Accepted {
        /// The job it is.
        job: Arc<VerifiedJob>,
    },
    /// Progress.
    Step {
        /// Machine-readable step name (`instance.started`, `health.passed`, ...).
        step: String,
        /// Readable detail.
        message: String,
        /// Units done.
        done: u32,
        /// Units in all (0 when unknown).
        total: u32,
    },
    /// The job ended.
    Finished {
        /// How.
        outcome: Outcome,
        /// Why, readable.
        reason: String,
        /// The checkpoint written after the job's final entry.
        checkpoint: Option<CheckpointLine>,
    },
}

/// One event of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// The job.
    pub job_id: JobId,
    /// 1, 2, 3 ... within the job.
    pub seq: u64,
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// What happened.
    pub kind: EventKind,
}

/// A job's event history and live feed.
#[derive(Debug)]
pub struct JobHandle {
    id: JobId,
    history: Mutex<Vec<JobEvent>>,
    feed: broadcast::Sender<JobEvent>,
}

impl JobHandle {
    /// A job with no events yet.
    pub fn new(id: JobId) -> Self {
        // Watchers that fall further behind re-read the history (see server::follow_job).
        let (feed, _) = broadcast::channel(32);
        Self {
            id,
            history: Mutex::new(Vec::new()),
            feed,
        }
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Publishes an event to the history and to live watchers.
    pub fn publish(&self, kind: EventKind) {
        let mut history = lock(&self.history);
        let event = JobEvent {
            job_id: self.id.clone(),
            seq: history.len() as u64 + 1,
            ts_ms: crate::clock::now_ms(),
            kind,
        };
        history.push(event.clone());
        // No receivers is fine: nobody is watching right now.
        let _ = self.feed.send(event);
    }

    /// Everything so far plus a receiver for what follows, with nothing lost in between.
    pub fn subscribe(&self) -> (Vec<JobEvent>, broadcast::Receiver<JobEvent>) {
        let history = lock(&self.history);
        (history.clone(), self.feed.subscribe())
    }

    /// Whether the job has finished.
    pub fn is_finished(&self) -> bool {
        lock(&self.history)
            .last()
            .is_some_and(|e| matches!(e.kind, EventKind::Finished { .. }))
    }
}
