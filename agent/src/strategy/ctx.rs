//! What a running job carries besides its app: the job, its event feed, the audit log, the
//! store, limits. [`JobCtx::step`] records a step before it is taken; [`JobCtx::note`] never
//! blocks a rollback on the log.

use std::sync::Arc;

use serde_json::json;

use super::StrategyError;
use crate::artifact::{ArtifactStore, UnpackLimits};
use crate::audit::{AuditLog, Entry, HeldAppend};
use crate::clock::Clock;
use crate::error::reason;
use crate::job::VerifiedJob;
use crate::progress::{EventKind, JobHandle};
use crate::supervisor::Backoff;

/// What a running job needs besides its app.
#[derive(Debug)]
pub struct JobCtx {
    /// The job.
    pub job: Arc<VerifiedJob>,
    /// Where its events go.
    pub handle: Arc<JobHandle>,
    /// The audit log.
    pub audit: AuditLog,
    /// The artifact store.
    pub store: Arc<ArtifactStore>,
    /// Limits for unpacking.
    pub unpack_limits: UnpackLimits,
    /// How many releases to keep on disk.
    pub releases_kept: usize,
    /// Instance restart policy.
    pub backoff: Backoff,
    /// The wall clock (standby deadlines).
    pub clock: Arc<dyn Clock>,
    /// For a job without a release of its own (restart, rollback, the convergence after an
    /// agent restart), the drain timeout of the release whose instances it drains; see
    /// [`drain_timeout`](super::shift::drain_timeout).
    pub drain_timeout: Option<std::time::Duration>,
    /// A canary deploy with `canary_flag`: the flag its steps split, checked before it starts.
    pub canary_flag: Option<crate::flags::split::CanaryFlag>,
}

impl JobCtx {
    /// The `job.step` audit entry of a step.
    fn entry(&self, step: &str, message: &str) -> Entry {
        let spec = &self.job.spec;
        Entry::new("job.step")
            .with("job_id", json!(spec.id))
            .with("app", json!(spec.app))
            .with("step", json!(step))
            .with("detail", json!(message))
    }

    /// Records a step durably, then publishes it. The step must not be taken if this fails.
    ///
    /// # Errors
    ///
    /// [`StrategyError::Audit`] when the audit log cannot record it.
    pub async fn step(&self, step: &str, message: impl Into<String>) -> Result<(), StrategyError> {
        self.step_of(step, message.into(), 0, 0).await
    }

    /// [`JobCtx::step`] with one more field in the audit entry (the verdicts of a passed
    /// analysis).
    ///
    /// # Errors
    ///
    /// [`StrategyError::Audit`] when the audit log cannot record it.
    pub async fn step_with(
        &self,
        step: &str,
        message: String,
        field: &str,
        value: serde_json::Value,
    ) -> Result<(), StrategyError> {
        let entry = self.entry(step, &message).with(field, value);
        self.audit.append(entry).await?;
        tracing::info!(step, "{message}");
        self.handle.publish(EventKind::Step {
            step: step.to_owned(),
            message,
            done: 0,
            total: 0,
        });
        Ok(())
    }

    /// [`JobCtx::step`] with progress units.
    ///
    /// # Errors
    ///
    /// [`StrategyError::Audit`] when the audit log cannot record it.
    pub async fn step_of(
        &self,
        step: &str,
        message: String,
        done: u32,
        total: u32,
    ) -> Result<(), StrategyError> {
        self.audit.append(self.entry(step, &message)).await?;
        tracing::info!(step, "{message}");
        self.handle.publish(EventKind::Step {
            step: step.to_owned(),
            message,
            done,
            total,
        });
        Ok(())
    }

    /// Records a step without ever blocking it (rollback: restoring service comes first).
    /// While the audit log cannot be written the entry is held in memory and written, in order,
    /// once it can ([`AuditLog::append_held`]), so the record of a rollback is not lost.
    pub async fn note(&self, step: &str, message: impl Into<String>) {
        self.note_entry(step, message.into(), None).await;
    }

    /// [`JobCtx::note`] with one more field in the audit entry (an analysis verdict's numbers).
    pub async fn note_with(
        &self,
        step: &str,
        message: impl Into<String>,
        field: &str,
        value: serde_json::Value,
    ) {
        self.note_entry(step, message.into(), Some((field, value)))
            .await;
    }

    /// Notes `why` as `step` with the `verdict` behind it, and returns it as the step's error.
    pub async fn breached(
        &self,
        step: &str,
        why: super::Unhealthy,
        verdict: serde_json::Value,
    ) -> super::StrategyError {
        self.note_with(step, why.to_string(), "verdict", verdict)
            .await;
        why.into()
    }

    async fn note_entry(
        &self,
        step: &str,
        message: String,
        extra: Option<(&str, serde_json::Value)>,
    ) {
        let mut entry = self.entry(step, &message);
        if let Some((field, value)) = extra {
            entry = entry.with(field, value);
        }
        // Held, not refused, when the disk is full: see AuditLog::append_held.
        match self.audit.append_held(entry).await {
            Ok(HeldAppend::Written(_)) => tracing::info!(step, "{message}"),
            Ok(HeldAppend::Held { queued, cause }) => tracing::warn!(
                step,
                "{message} (held for the audit log, {queued} waiting: {cause})"
            ),
            Err(e) => tracing::error!(step, "{message} (not in the audit log: {})", reason(&e)),
        }
        self.handle.publish(EventKind::Step {
            step: step.to_owned(),
            message,
            done: 0,
            total: 0,
        });
    }
}
