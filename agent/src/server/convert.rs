//! Domain ⇄ proto conversions for answers. Proto types go no further into the agent than this
//! module (requests are decoded by admission, which must see the raw job bytes).

use gantry_proto::v1;

use crate::audit::CheckpointLine;
use crate::executor::{AppStatus, EventKind, JobEvent, JobSummary, Outcome};
use crate::job::{Action, StrategyKind};

/// The proto enum of an action.
pub fn action(a: Action) -> v1::Action {
    a.to_wire()
}

/// The proto enum of a strategy.
pub fn strategy(s: Option<StrategyKind>) -> v1::Strategy {
    s.map_or(v1::Strategy::Unspecified, StrategyKind::to_wire)
}

/// The proto enum of an outcome.
pub fn outcome(o: Outcome) -> v1::Outcome {
    match o {
        Outcome::Succeeded => v1::Outcome::Succeeded,
        Outcome::Failed => v1::Outcome::Failed,
        Outcome::RolledBack => v1::Outcome::RolledBack,
        Outcome::Interrupted => v1::Outcome::Interrupted,
    }
}

/// A checkpoint for the wire.
pub fn checkpoint(c: &CheckpointLine) -> v1::Checkpoint {
    v1::Checkpoint {
        seq: c.seq,
        line: c.line.clone(),
    }
}

/// A job event for the wire.
pub fn event(e: &JobEvent) -> v1::JobEvent {
    let kind = match &e.kind {
        EventKind::Accepted { job } => {
            let spec = &job.spec;
            let version = spec
                .release
                .as_ref()
                .map(|r| r.version.to_string())
                .or_else(|| spec.target_version.as_ref().map(ToString::to_string))
                .unwrap_or_default();
            v1::job_event::Kind::Accepted(v1::JobAccepted {
                app: spec.app.to_string(),
                action: action(spec.action).into(),
                version,
                strategy: strategy(spec.release.as_ref().map(|r| r.strategy)).into(),
                job_digest: job.digest.to_string(),
                signer_key_ids: job.signers.iter().map(ToString::to_string).collect(),
            })
        }
        EventKind::Step {
            step,
            message,
            done,
            total,
        } => v1::job_event::Kind::Step(v1::JobStep {
            step: step.clone(),
            message: message.clone(),
            done: *done,
            total: *total,
        }),
        EventKind::Finished {
            outcome: o,
            reason,
            checkpoint: c,
        } => v1::job_event::Kind::Finished(v1::JobFinished {
            outcome: outcome(*o).into(),
            reason: reason.clone(),
            checkpoint: c.as_ref().map(checkpoint),
        }),
    };
    v1::JobEvent {
        job_id: e.job_id.to_string(),
        seq: e.seq,
        ts_ms: e.ts_ms,
        kind: Some(kind),
    }
}

/// One cohort's signals for the wire.
fn cohort_signals(c: &crate::executor::signals::CohortSignals) -> v1::CohortSignals {
    let p95 = c.http.latency.quantile_bound_ms(0.95);
    v1::CohortSignals {
        cohort: c.cohort.clone(),
        window_ms: u64::try_from(c.window.as_millis()).unwrap_or(u64::MAX),
        requests: c.http.requests,
        responses: c.http.responses.finals(),
        errors: c.http.responses.server_error,
        error_rate: c.error_rate().unwrap_or(0.0),
        p95_latency_ms: p95.unwrap_or(0),
        p95_above_last_edge: p95.is_none() && c.http.latency.count > 0,
        instances: c.instances,
        cpu_percent: c.cpu_percent,
        memory_bytes: c.memory_bytes,
    }
}

/// An app's status for the wire.
pub fn app_status(a: &AppStatus) -> v1::AppStatus {
    v1::AppStatus {
        name: a.name.to_string(),
        version: a
            .current
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        previous_version: a
            .previous
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        strategy: strategy(a.strategy).into(),
        active_job_id: a
            .active_job
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        instances: a
            .instances
            .iter()
            .map(|i| v1::InstanceStatus {
                index: i.index,
                pid: i.pid,
                port: u32::from(i.port),
                version: i.version.to_string(),
                state: i.state.clone(),
                restarts: i.restarts,
                slot: i.slot.map(|s| s.as_str().to_owned()).unwrap_or_default(),
            })
            .collect(),
        releases_on_disk: a.releases_on_disk.iter().map(ToString::to_string).collect(),
        active_slot: a
            .active_slot
            .map(|s| s.as_str().to_owned())
            .unwrap_or_default(),
        rollout: a.rollout.clone(),
        notes: a.notes.clone(),
        signals: a.signals.iter().map(cohort_signals).collect(),
        listen: a.listen.map(|l| l.to_string()).unwrap_or_default(),
        backends: a
            .backends
            .iter()
            .map(|b| v1::Backend {
                id: b.id.clone(),
                addr: b.addr.clone(),
                weight: b.weight,
                draining: b.draining,
                active_connections: b.active,
                total_connections: b.total,
                connect_errors: b.connect_errors,
                bytes_in: b.bytes_in,
                bytes_out: b.bytes_out,
            })
            .collect(),
    }
}

/// A finished job for the wire.
pub fn job_summary(j: &JobSummary) -> v1::JobSummary {
    v1::JobSummary {
        job_id: j.job_id.to_string(),
        app: j.app.to_string(),
        action: action(j.action).into(),
        version: j
            .version
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        outcome: outcome(j.outcome).into(),
        reason: j.reason.clone(),
        finished_ms: j.finished_ms,
    }
}
