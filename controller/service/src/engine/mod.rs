//! The rollout engine: drives one rollout ring by ring while this replica holds its lease.
//!
//! Every transition is written to the store (fenced by the lease epoch) before the engine acts
//! on it, so a driver that dies at any point is replaced by one that reads where things stood
//! and goes on: a host step found `running` was cut off mid-job, is recorded `interrupted`,
//! and is dispatched again under the same derived job id, which the agent turns into an attach
//! (never a second deploy). Control actions and ring verdicts go to the service's audit log.
//!
//! * `host.rs`: one host's step (artifact, dispatch, follow, deadline).
//! * `ring.rs`: one ring: hosts `max_parallel` at a time, `min_healthy`, the bake and its gates.
//! * `rollback.rs`: what `on_failure` and abort roll back.
//! * `late.rs`: hosts that join a ring's selector after the rollout succeeded.

mod host;
mod late;
mod ring;
mod rollback;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use gantry_client::clock::now_ms;
use gantry_proto::keys::SigningKey;
use gantry_proto::v1::OnFailure;
use serde_json::Value;

use crate::agents::Agents;
use crate::audit::{AuditError, AuditLog};
use crate::lease::{HeldLease, LeaseLost, LeaseSettings};
use crate::plan::{LoadedPlan, PlanError, on_failure};
use crate::store::{Control, HostStep, RolloutRecord, RolloutState, Store, StoreError};

/// How the engine paces itself.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// This replica's name and its lease period.
    pub lease: LeaseSettings,
    /// How long a signed dispatch is valid.
    pub dispatch_validity: Duration,
    /// How often the bake's gates and operators' requests are checked.
    pub poll: Duration,
    /// How soon an unreachable host is tried again (until its deadline).
    pub retry: Duration,
}

/// Why the engine stopped driving a rollout other than by finishing it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log cannot be written: the engine stops rather than act unrecorded.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The stored plan does not decode (it did when it was handed in).
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// A host's task panicked or was cancelled.
    #[error("a host step's task ended abnormally: {0}")]
    Task(String),
}

/// Where driving a rollout ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Driven {
    /// Another replica holds its lease.
    NotLeader,
    /// It reached a final state.
    Finished(RolloutState),
    /// The lease was lost on the way; the new holder goes on.
    LeaseLost,
}

/// A ring's or a step's end short of passing.
#[derive(Debug)]
pub(crate) enum Stop {
    /// The lease is gone: stop at once, write nothing more.
    Lost,
    /// An operator's request is pending: go back to the top and apply it.
    Control,
    /// The ring failed: which host (empty when none in particular) and why.
    Failed { host: String, reason: String },
    /// The engine cannot go on.
    Error(EngineError),
}

impl From<LeaseLost> for Stop {
    fn from(_: LeaseLost) -> Self {
        Stop::Lost
    }
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fenced { .. } => Stop::Lost,
            other => Stop::Error(other.into()),
        }
    }
}

impl From<AuditError> for Stop {
    fn from(e: AuditError) -> Self {
        Stop::Error(e.into())
    }
}

pub(crate) struct Inner<S, A> {
    pub(crate) store: Arc<S>,
    pub(crate) agents: Arc<A>,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) key: SigningKey,
    pub(crate) settings: EngineSettings,
}

/// The engine. Cheap to clone.
pub struct Engine<S, A> {
    pub(crate) inner: Arc<Inner<S, A>>,
}

impl<S, A> Clone for Engine<S, A> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// One driver's view: the lease it holds, the plan, and the rollout as last written.
pub(crate) struct Run {
    pub(crate) held: Arc<HeldLease>,
    pub(crate) plan: Arc<LoadedPlan>,
    pub(crate) r: RolloutRecord,
}

impl<S: Store, A: Agents> Engine<S, A> {
    /// An engine over a store, the agents, the service's audit log and its orchestrator key.
    pub fn new(
        store: Arc<S>,
        agents: Arc<A>,
        audit: Arc<AuditLog>,
        key: SigningKey,
        settings: EngineSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                agents,
                audit,
                key,
                settings,
            }),
        }
    }

    /// Appends to the service's audit log.
    pub(crate) fn audit(&self, event: &str, fields: &[(&str, Value)]) -> Result<u64, AuditError> {
        self.inner.audit.append(event, fields)
    }

    /// Writes the rollout as it stands now (fenced).
    pub(crate) async fn save(&self, run: &mut Run) -> Result<(), Stop> {
        run.held.check()?;
        run.r.updated_ms = now_ms();
        self.inner
            .store
            .update_rollout(run.r.clone(), run.held.epoch())
            .await?;
        Ok(())
    }

    /// True when an operator's request waits.
    pub(crate) async fn control_pending(&self, id: &str) -> Result<bool, Stop> {
        Ok(self.inner.store.control(id).await?.is_some())
    }

    /// Drives a rollout until it ends, the lease is lost, or another replica holds it.
    ///
    /// # Errors
    /// [`EngineError`]: the store or the audit log failed, or the stored plan is unreadable.
    pub async fn drive(&self, rollout_id: &str) -> Result<Driven, EngineError> {
        let store = &self.inner.store;
        let Some(r) = store.rollout(rollout_id).await? else {
            return Err(StoreError::NotFound(rollout_id.to_owned()).into());
        };
        if r.state.is_final() {
            return Ok(Driven::Finished(r.state));
        }
        let Some(held) =
            HeldLease::acquire(store.clone(), rollout_id, &self.inner.settings.lease).await?
        else {
            return Ok(Driven::NotLeader);
        };
        // Read again under the lease: the previous holder may have moved it on meanwhile.
        let Some(r) = store.rollout(rollout_id).await? else {
            return Err(StoreError::NotFound(rollout_id.to_owned()).into());
        };
        if r.state.is_final() {
            return Ok(Driven::Finished(r.state));
        }
        let plan = Arc::new(LoadedPlan::decode(&r.signed_plan)?);
        let mut run = Run {
            held: Arc::new(held),
            plan,
            r,
        };
        match self.run(&mut run).await {
            Ok(state) => Ok(Driven::Finished(state)),
            Err(Stop::Lost) => Ok(Driven::LeaseLost),
            Err(Stop::Error(e)) => Err(e),
            // Both are handled inside `run`; reaching here would be a bug, so keep driving
            // another time rather than mis-report.
            Err(Stop::Control | Stop::Failed { .. }) => Ok(Driven::LeaseLost),
        }
    }

    async fn run(&self, run: &mut Run) -> Result<RolloutState, Stop> {
        let epoch = run.held.epoch();
        let id = run.r.id.clone();
        if let Some(previous) = run.held.previous_holder() {
            self.audit(
                "rollout.takeover",
                &[
                    ("rollout", id.clone().into()),
                    ("epoch", epoch.into()),
                    ("from", previous.into()),
                    ("by", self.inner.settings.lease.holder.clone().into()),
                ],
            )?;
        }
        self.mark_interrupted(run).await?;
        loop {
            run.held.check()?;
            self.apply_control(run).await?;
            match run.r.state {
                RolloutState::Succeeded
                | RolloutState::Halted
                | RolloutState::RolledBack
                | RolloutState::Aborted => {
                    self.inner.audit.checkpoint()?;
                    return Ok(run.r.state);
                }
                RolloutState::Paused => {
                    tokio::time::sleep(self.inner.settings.poll).await;
                }
                RolloutState::Pending => {
                    run.r.state = RolloutState::Running;
                    self.save(run).await?;
                }
                RolloutState::Running => match self.run_ring(run).await {
                    Ok(()) => self.ring_passed(run).await?,
                    Err(Stop::Failed { host, reason }) => {
                        self.ring_failed(run, &host, &reason).await?;
                    }
                    Err(Stop::Control) => {}
                    Err(e @ (Stop::Lost | Stop::Error(_))) => return Err(e),
                },
                RolloutState::RollingBack => self.roll_back(run).await?,
            }
        }
    }

    /// Host steps left `running` by an earlier driver were cut off: record that, then they are
    /// dispatched again (an attach on the agent).
    async fn mark_interrupted(&self, run: &mut Run) -> Result<(), Stop> {
        let epoch = run.held.epoch();
        for mut h in self.inner.store.hosts(&run.r.id).await? {
            if h.step != HostStep::Running {
                continue;
            }
            h.step = HostStep::Interrupted;
            h.reason = format!(
                "the service stopped while this step ran; resumed under epoch {epoch} (the agent's job is attached to, not run again)"
            );
            h.updated_ms = now_ms();
            self.audit(
                "host.interrupted",
                &[
                    ("rollout", run.r.id.clone().into()),
                    ("agent_id", h.agent_id.clone().into()),
                    ("ring", h.ring.into()),
                    ("job", h.job_id.clone().into()),
                    ("epoch", epoch.into()),
                ],
            )?;
            self.inner.store.put_host(h, epoch).await?;
        }
        Ok(())
    }

    /// Applies and clears a pending pause, resume or abort.
    async fn apply_control(&self, run: &mut Run) -> Result<(), Stop> {
        let Some(req) = self.inner.store.control(&run.r.id).await? else {
            return Ok(());
        };
        let fields = |extra: &[(&'static str, Value)]| -> Vec<(&'static str, Value)> {
            let mut f: Vec<(&'static str, Value)> = vec![
                ("rollout", run.r.id.clone().into()),
                ("by", req.by.clone().into()),
            ];
            f.extend(extra.iter().cloned());
            f
        };
        let state = run.r.state;
        match (req.control, state) {
            (_, s) if s.is_final() => {}
            (Control::Pause, RolloutState::Pending | RolloutState::Running) => {
                self.audit("rollout.paused", &fields(&[("ring", run.r.ring.into())]))?;
                run.r.state = RolloutState::Paused;
                run.r.reason = format!("paused by {}", req.by);
                self.save(run).await?;
            }
            (Control::Resume, RolloutState::Paused) => {
                self.audit("rollout.resumed", &fields(&[("ring", run.r.ring.into())]))?;
                run.r.state = RolloutState::Running;
                run.r.reason = format!("resumed by {}", req.by);
                self.save(run).await?;
            }
            (Control::Abort, RolloutState::RollingBack) => {}
            (Control::Abort, _) => {
                let ring = run.plan.ring(run.r.ring).cloned().unwrap_or_default();
                let policy = on_failure(&ring);
                self.audit(
                    "rollout.aborted",
                    &fields(&[
                        ("ring", run.r.ring.into()),
                        ("on_failure", on_failure_name(policy).into()),
                    ]),
                )?;
                run.r.reason = format!("aborted by {}", req.by);
                self.begin_failure(run, policy).await?;
            }
            (Control::Pause | Control::Resume, _) => {}
        }
        self.inner.store.clear_control(&req).await?;
        Ok(())
    }

    async fn ring_passed(&self, run: &mut Run) -> Result<(), Stop> {
        let i = run.r.ring;
        let name = run.plan.ring(i).map(|r| r.name.clone()).unwrap_or_default();
        self.audit(
            "ring.passed",
            &[
                ("rollout", run.r.id.clone().into()),
                ("ring", i.into()),
                ("name", name.into()),
            ],
        )?;
        run.r.bake_until_ms = 0;
        run.r.bake_counts.clear();
        if i + 1 >= run.plan.ring_count() {
            run.r.state = RolloutState::Succeeded;
            run.r.reason = format!("all {} rings passed", run.plan.ring_count());
            self.audit("rollout.succeeded", &[("rollout", run.r.id.clone().into())])?;
        } else {
            run.r.ring = i + 1;
        }
        self.save(run).await
    }

    async fn ring_failed(&self, run: &mut Run, host: &str, reason: &str) -> Result<(), Stop> {
        let i = run.r.ring;
        let ring = run.plan.ring(i).cloned().unwrap_or_default();
        let policy = on_failure(&ring);
        self.audit(
            "ring.failed",
            &[
                ("rollout", run.r.id.clone().into()),
                ("ring", i.into()),
                ("name", ring.name.clone().into()),
                ("agent_id", host.into()),
                ("reason", reason.into()),
                ("on_failure", on_failure_name(policy).into()),
            ],
        )?;
        run.r.reason = if host.is_empty() {
            format!("ring {i} ({}) failed: {reason}", ring.name)
        } else {
            format!("ring {i} ({}) failed: host {host}: {reason}", ring.name)
        };
        self.begin_failure(run, policy).await
    }

    /// Halts, or starts rolling back, per `policy`.
    async fn begin_failure(&self, run: &mut Run, policy: OnFailure) -> Result<(), Stop> {
        run.r.bake_until_ms = 0;
        run.r.bake_counts.clear();
        match policy {
            OnFailure::RollbackRing => {
                run.r.state = RolloutState::RollingBack;
                run.r.rollback_to = run.r.ring;
            }
            OnFailure::RollbackAll => {
                run.r.state = RolloutState::RollingBack;
                run.r.rollback_to = 0;
            }
            OnFailure::Halt | OnFailure::Unspecified => {
                run.r.state = if run.r.reason.starts_with("aborted") {
                    RolloutState::Aborted
                } else {
                    RolloutState::Halted
                };
                self.audit(
                    &format!("rollout.{}", run.r.state.as_str()),
                    &[
                        ("rollout", run.r.id.clone().into()),
                        ("reason", run.r.reason.clone().into()),
                    ],
                )?;
            }
        }
        self.save(run).await
    }
}

/// The name of an `on_failure` policy, as plans and the audit log spell it.
pub fn on_failure_name(p: OnFailure) -> &'static str {
    match p {
        OnFailure::Halt | OnFailure::Unspecified => "halt",
        OnFailure::RollbackRing => "rollback_ring",
        OnFailure::RollbackAll => "rollback_all",
    }
}
