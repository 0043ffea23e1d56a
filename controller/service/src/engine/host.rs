//! One host's step: make sure it holds the artifact, dispatch, follow the job to its end, all
//! within the host's deadline. A host that does not answer in time fails its step with a
//! reason; it is never left `running`.

use std::time::{Duration, Instant};

use gantry_client::clock::{now_ms, unix_secs};
use gantry_proto::v1::{JobEvent, Ring, job_event};

use super::{Engine, Run, Stop};
use crate::agents::{Agents, RunObserver, RunOutcome};
use crate::dispatch::{self, DispatchFor, host_job_id};
use crate::store::{AgentRecord, CheckpointRecord, HostAction, HostRecord, HostStep, Store};

/// Added to the release's progress deadline when the ring names no host deadline.
const DEADLINE_SLACK: Duration = Duration::from_secs(60);
/// The release's progress deadline when it names none (the agent's default).
const DEFAULT_PROGRESS: Duration = Duration::from_secs(600);

/// How long one host's step may take.
pub(crate) fn host_deadline(ring: &Ring, progress_deadline_secs: u32) -> Duration {
    if ring.host_deadline_ms > 0 {
        return Duration::from_millis(ring.host_deadline_ms);
    }
    let progress = if progress_deadline_secs > 0 {
        Duration::from_secs(u64::from(progress_deadline_secs))
    } else {
        DEFAULT_PROGRESS
    };
    progress + DEADLINE_SLACK
}

/// Logs a dispatched job's events.
struct LogEvents {
    job_id: String,
}

impl RunObserver for LogEvents {
    fn event(&mut self, agent_id: &str, ev: &JobEvent) {
        let kind = match &ev.kind {
            Some(job_event::Kind::Accepted(_)) => "accepted".to_owned(),
            Some(job_event::Kind::Step(s)) => s.step.clone(),
            Some(job_event::Kind::Finished(f)) => format!("finished {}", f.outcome),
            None => "unknown".to_owned(),
        };
        tracing::info!(agent = agent_id, job = %self.job_id, seq = ev.seq, event = %kind, "job event");
    }
}

/// How a host's step ended.
pub(crate) enum HostEnd {
    Succeeded,
    Failed(String),
}

impl<S: Store, A: Agents> Engine<S, A> {
    /// Runs `action` of the plan on `agent` (a host of ring `ring`) to its end.
    pub(crate) async fn run_host(
        &self,
        run: &Run,
        agent: &AgentRecord,
        ring: u32,
        action: HostAction,
    ) -> Result<HostEnd, Stop> {
        let epoch = run.held.epoch();
        let store = &self.inner.store;
        let ring_def = run.plan.ring(ring).cloned().unwrap_or_default();
        let release = run.plan.plan.release.clone().unwrap_or_default();
        let deadline = host_deadline(&ring_def, release.progress_deadline_secs);
        let job_id = host_job_id(&run.plan, &agent.id, action);
        let mut rec = HostRecord {
            rollout_id: run.r.id.clone(),
            agent_id: agent.id.clone(),
            ring,
            action,
            step: HostStep::Running,
            job_id: job_id.clone(),
            reason: format!("dispatched under epoch {epoch}"),
            updated_ms: now_ms(),
        };
        run.held.check()?;
        store.put_host(rec.clone(), epoch).await?;
        self.audit(
            "host.dispatched",
            &[
                ("rollout", run.r.id.clone().into()),
                ("agent_id", agent.id.clone().into()),
                ("ring", ring.into()),
                ("action", action_name(action).into()),
                ("job", job_id.clone().into()),
                ("epoch", epoch.into()),
            ],
        )?;
        let started = Instant::now();
        let end = self
            .attempt(
                run,
                agent,
                ring,
                action,
                &release,
                started + deadline,
                &job_id,
            )
            .await?;
        let (step, reason) = match &end {
            HostEnd::Succeeded => (HostStep::Succeeded, String::new()),
            HostEnd::Failed(reason) => (HostStep::Failed, reason.clone()),
        };
        rec.step = step;
        rec.reason = reason.clone();
        rec.updated_ms = now_ms();
        store.put_host(rec, epoch).await?;
        if let HostEnd::Failed(reason) = &end {
            self.audit(
                "host.failed",
                &[
                    ("rollout", run.r.id.clone().into()),
                    ("agent_id", agent.id.clone().into()),
                    ("ring", ring.into()),
                    ("action", action_name(action).into()),
                    ("job", job_id.into()),
                    ("reason", reason.clone().into()),
                ],
            )?;
        }
        Ok(end)
    }

    /// Artifact, dispatch and follow, retried while the agent cannot be reached, until
    /// `deadline`.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        run: &Run,
        agent: &AgentRecord,
        ring: u32,
        action: HostAction,
        release: &gantry_proto::v1::Release,
        deadline: Instant,
        job_id: &str,
    ) -> Result<HostEnd, Stop> {
        let settings = &self.inner.settings;
        let limit = deadline.saturating_duration_since(Instant::now());
        let mut last = String::from("no answer");
        let mut artifact_ok = action == HostAction::Rollback || release.artifact_sha256.is_empty();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(HostEnd::Failed(format!(
                    "did not finish within its deadline of {}s (last: {last})",
                    limit.as_secs()
                )));
            }
            run.held.check()?;
            if !artifact_ok {
                match tokio::time::timeout(
                    left,
                    self.inner.agents.ensure_artifact(
                        agent,
                        &release.artifact_sha256,
                        release.artifact_size,
                    ),
                )
                .await
                {
                    Ok(Ok(())) => artifact_ok = true,
                    Ok(Err(e)) => {
                        last = format!("artifact upload: {e}");
                        tokio::time::sleep(settings.retry.min(left)).await;
                        continue;
                    }
                    Err(_) => continue,
                }
            }
            let request = dispatch::request(
                &self.inner.key,
                &run.plan,
                DispatchFor {
                    agent_id: &agent.id,
                    ring,
                    epoch: run.held.epoch(),
                    action,
                    now_secs: unix_secs(std::time::SystemTime::now()),
                    validity_secs: i64::try_from(settings.dispatch_validity.as_secs())
                        .unwrap_or(60),
                },
            );
            let mut observer = LogEvents {
                job_id: job_id.to_owned(),
            };
            let left = deadline.saturating_duration_since(Instant::now());
            let result = match tokio::time::timeout(
                left,
                self.inner.agents.run(agent, request, &mut observer),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => continue,
            };
            if let Some(cp) = &result.checkpoint {
                self.witness(agent, cp).await;
            }
            match result.outcome {
                RunOutcome::Succeeded => return Ok(HostEnd::Succeeded),
                RunOutcome::Failed(reason) => return Ok(HostEnd::Failed(reason)),
                RunOutcome::Refused(reason) => {
                    return Ok(HostEnd::Failed(format!("refused: {reason}")));
                }
                RunOutcome::Unreachable(reason) => {
                    last = reason;
                    let left = deadline.saturating_duration_since(Instant::now());
                    tokio::time::sleep(settings.retry.min(left)).await;
                }
            }
        }
    }

    /// Keeps the checkpoint a job's result carried as the agent's newest witnessed one.
    async fn witness(&self, agent: &AgentRecord, cp: &gantry_proto::v1::Checkpoint) {
        let key_id = serde_json::from_str::<serde_json::Value>(&cp.line)
            .ok()
            .and_then(|v| v.get("key_id").and_then(|k| k.as_str().map(str::to_owned)))
            .unwrap_or_default();
        let record = CheckpointRecord {
            agent_id: agent.id.clone(),
            key_id,
            seq: cp.seq,
            line: cp.line.clone(),
        };
        // The witness is a later check's input; a failure to keep it does not change the
        // job's result, so it is logged, not propagated.
        if let Err(e) = self.inner.store.witness_checkpoint(record).await {
            tracing::warn!(agent = %agent.id, error = %e, "cannot keep witnessed checkpoint");
        }
    }
}

/// The name of a host action in the audit log.
pub(crate) fn action_name(a: HostAction) -> &'static str {
    match a {
        HostAction::Deploy => "deploy",
        HostAction::Rollback => "rollback",
    }
}
