//! The `Controller` gRPC service: operators start, watch and steer rollouts, read the
//! inventory, verify the fleet's audit logs, and tail the service's own log.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use gantry_client::clock::now_ms;
use gantry_proto::v1::controller_server::Controller;
use gantry_proto::v1::{
    AgentAuditVerdict, ArtifactChunk, ArtifactReceipt, AuditLine, AuditTailRequest,
    ControlRolloutRequest, FleetFlags, FleetFlagsRequest, FleetPolicyRequest, FleetPolicyResponse,
    GetRolloutRequest, ListAgentsRequest, ListAgentsResponse, ListRolloutsRequest,
    ListRolloutsResponse, RolloutControl, RolloutStatus, SignedFlags, StartRolloutRequest,
    VerifyFleetAuditRequest, VerifyFleetAuditResponse,
};
use tokio::sync::Notify;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::operator::Operators;
use super::status::{flag_set_status, fleet_agent, plan_status, rollout_status, store_status};
use crate::artifacts::ArtifactStore;
use crate::audit::AuditLog;
use crate::dial::Dialer;
use crate::flag_sets::Distributor;
use crate::plan::LoadedPlan;
use crate::promotion::{self, PromotionError, Rules};
use crate::store::{
    AgentRecord, CheckpointRecord, Control, ControlRequest, RolloutRecord, RolloutState, Store,
};

/// The service's handlers.
pub struct ControllerService<S> {
    pub(crate) store: Arc<S>,
    pub(crate) audit: Arc<AuditLog>,
    pub(crate) audit_dir: std::path::PathBuf,
    pub(crate) artifacts: ArtifactStore,
    pub(crate) dialer: Arc<Dialer>,
    pub(crate) operators: Operators,
    /// Wakes the scheduler when a rollout is started or steered.
    pub(crate) wake: Arc<Notify>,
    /// `[promotion]`: the environments a plan's artifact must have succeeded in first.
    pub(crate) promotion: Rules,
    /// The flag sets the service distributes.
    pub(crate) flags: Distributor<S, Dialer>,
}

fn audit_status(e: &crate::audit::AuditError) -> Status {
    Status::unavailable(format!("refused: the service cannot record it: {e}"))
}

impl<S: Store> ControllerService<S> {
    /// The inventory.
    async fn agents(&self) -> Result<Vec<AgentRecord>, Status> {
        self.store.agents().await.map_err(|e| store_status(&e))
    }

    /// The checkpoint last witnessed from an agent, if any.
    async fn witnessed(&self, agent_id: &str) -> Result<Option<CheckpointRecord>, Status> {
        self.store
            .checkpoint(agent_id)
            .await
            .map_err(|e| store_status(&e))
    }

    async fn status_of(&self, id: &str) -> Result<RolloutStatus, Status> {
        let r = self
            .store
            .rollout(id)
            .await
            .map_err(|e| store_status(&e))?
            .ok_or_else(|| Status::not_found(format!("no rollout {id}")))?;
        self.status_for(&r).await
    }

    async fn status_for(&self, r: &RolloutRecord) -> Result<RolloutStatus, Status> {
        let hosts = self
            .store
            .hosts(&r.id)
            .await
            .map_err(|e| store_status(&e))?;
        let lease = self
            .store
            .lease(&r.id)
            .await
            .map_err(|e| store_status(&e))?;
        let control = self
            .store
            .control(&r.id)
            .await
            .map_err(|e| store_status(&e))?;
        Ok(rollout_status(r, &hosts, lease.as_ref(), control.as_ref()))
    }
}

impl<S: Store> ControllerService<S> {
    /// Holds `plan` to `[promotion]`: the evidence that let it through, as the
    /// `promoted_from` of its `rollout.started` entry (`null` when its environment waits for
    /// none); a plan held back is recorded as `rollout.refused` and answered
    /// `FAILED_PRECONDITION`.
    async fn check_promotion(
        &self,
        plan: &LoadedPlan,
        by: &str,
    ) -> Result<serde_json::Value, Status> {
        if self.promotion.before(&plan.plan.environment).is_empty() {
            return Ok(serde_json::Value::Null);
        }
        match promotion::check(&self.promotion, &*self.store, &*self.dialer, plan).await {
            Ok(evidence) => Ok(evidence
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "environment": e.environment,
                        "rollout": e.rollout_id,
                        "hosts": e.hosts.iter().map(|h| serde_json::json!({
                            "agent_id": h.agent_id,
                            "job_id": h.job_id,
                            "succeeded_seq": h.succeeded_seq,
                            "checkpoint_seq": h.checkpoint_seq,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect()),
            Err(PromotionError::Store(e)) => Err(store_status(&e)),
            Err(e) => {
                self.audit
                    .append(
                        "rollout.refused",
                        &[
                            ("rollout", plan.plan.plan_id.clone().into()),
                            ("plan_sha256", plan.sha256.clone().into()),
                            ("environment", plan.plan.environment.clone().into()),
                            ("reason", e.to_string().into()),
                            ("by", by.into()),
                        ],
                    )
                    .map_err(|e| audit_status(&e))?;
                Err(Status::failed_precondition(e.to_string()))
            }
        }
    }
}

type Lines = Pin<Box<dyn Stream<Item = Result<AuditLine, Status>> + Send>>;

#[tonic::async_trait]
impl<S: Store> Controller for ControllerService<S> {
    async fn publish_flags(
        &self,
        req: Request<SignedFlags>,
    ) -> Result<Response<FleetFlags>, Status> {
        let by = self.operators.of(&req)?;
        self.flags
            .publish(req.into_inner(), &by, now_ms())
            .await
            .map(Response::new)
            .map_err(|e| flag_set_status(&e))
    }

    async fn get_fleet_flags(
        &self,
        req: Request<FleetFlagsRequest>,
    ) -> Result<Response<FleetFlags>, Status> {
        self.operators.of(&req)?;
        self.flags
            .status(&req.into_inner().app)
            .await
            .map(Response::new)
            .map_err(|e| flag_set_status(&e))
    }

    async fn start_rollout(
        &self,
        req: Request<StartRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        let by = self.operators.of(&req)?;
        let signed = req
            .into_inner()
            .plan
            .ok_or_else(|| Status::invalid_argument("no plan"))?;
        let plan = LoadedPlan::from_signed(signed).map_err(|e| plan_status(&e))?;
        let release = plan.plan.release.clone().unwrap_or_default();
        let promoted_from = self.check_promotion(&plan, &by).await?;
        let now = now_ms();
        let record = RolloutRecord {
            id: plan.plan.plan_id.clone(),
            signed_plan: prost::Message::encode_to_vec(&plan.signed),
            plan_sha256: plan.sha256.clone(),
            state: RolloutState::Pending,
            ring: 0,
            bake_until_ms: 0,
            rollback_to: 0,
            bake_counts: Default::default(),
            reason: format!("started by {by}"),
            started_by: by.clone(),
            created_ms: now,
            updated_ms: now,
        };
        // Recorded before it exists anywhere: a start the log cannot hold is refused.
        self.audit
            .append(
                "rollout.started",
                &[
                    ("rollout", record.id.clone().into()),
                    ("plan_sha256", plan.sha256.clone().into()),
                    ("app", plan.plan.app.clone().into()),
                    ("version", release.version.clone().into()),
                    ("rings", plan.ring_count().into()),
                    ("by", by.into()),
                    ("promoted_from", promoted_from),
                ],
            )
            .map_err(|e| audit_status(&e))?;
        self.store
            .create_rollout(record.clone())
            .await
            .map_err(|e| store_status(&e))?;
        self.wake.notify_one();
        Ok(Response::new(self.status_for(&record).await?))
    }

    async fn upload_artifact(
        &self,
        req: Request<Streaming<ArtifactChunk>>,
    ) -> Result<Response<ArtifactReceipt>, Status> {
        self.operators.of(&req)?;
        let mut stream = req.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload"))?;
        let meta = first.meta.ok_or_else(|| {
            Status::invalid_argument("the first chunk carries no digest and size")
        })?;
        if self.artifacts.path_of(&meta.sha256).is_none() {
            return Err(Status::invalid_argument(format!(
                "{:?} is not a SHA-256 (64 lowercase hex digits)",
                meta.sha256
            )));
        }
        if self.artifacts.has(&meta.sha256) {
            return Ok(Response::new(ArtifactReceipt {
                sha256: meta.sha256,
                size: meta.size,
                already_present: true,
            }));
        }
        let mut incoming = self
            .artifacts
            .incoming()
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut write = |data: &[u8]| -> Result<(), Status> {
            incoming
                .write(data)
                .map_err(|e| Status::unavailable(e.to_string()))
        };
        write(&first.data)?;
        while let Some(chunk) = stream.message().await? {
            write(&chunk.data)?;
        }
        incoming
            .finish(&meta.sha256, meta.size)
            .map_err(|e| match e {
                crate::artifacts::ArtifactError::Mismatch { .. }
                | crate::artifacts::ArtifactError::BadDigest(_) => {
                    Status::invalid_argument(e.to_string())
                }
                crate::artifacts::ArtifactError::Io { .. } => Status::unavailable(e.to_string()),
            })?;
        Ok(Response::new(ArtifactReceipt {
            sha256: meta.sha256,
            size: meta.size,
            already_present: false,
        }))
    }

    async fn get_rollout(
        &self,
        req: Request<GetRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        self.operators.of(&req)?;
        let mut status = self.status_of(&req.into_inner().rollout_id).await?;
        let agents = self.store.agents().await.map_err(|e| store_status(&e))?;
        super::live_signals::fill(&self.dialer, agents, &mut status).await;
        Ok(Response::new(status))
    }

    async fn list_rollouts(
        &self,
        req: Request<ListRolloutsRequest>,
    ) -> Result<Response<ListRolloutsResponse>, Status> {
        self.operators.of(&req)?;
        let mut rollouts = Vec::new();
        for r in self.store.rollouts().await.map_err(|e| store_status(&e))? {
            rollouts.push(self.status_for(&r).await?);
        }
        Ok(Response::new(ListRolloutsResponse { rollouts }))
    }

    async fn control_rollout(
        &self,
        req: Request<ControlRolloutRequest>,
    ) -> Result<Response<RolloutStatus>, Status> {
        let by = self.operators.of(&req)?;
        let req = req.into_inner();
        let control = match RolloutControl::try_from(req.control) {
            Ok(RolloutControl::Pause) => Control::Pause,
            Ok(RolloutControl::Resume) => Control::Resume,
            Ok(RolloutControl::Abort) => Control::Abort,
            Ok(RolloutControl::Unspecified) | Err(_) => {
                return Err(Status::invalid_argument(
                    "control must be pause, resume or abort",
                ));
            }
        };
        let r = self
            .store
            .rollout(&req.rollout_id)
            .await
            .map_err(|e| store_status(&e))?
            .ok_or_else(|| Status::not_found(format!("no rollout {}", req.rollout_id)))?;
        if r.state.is_final() {
            return Err(Status::failed_precondition(format!(
                "rollout {} has ended ({})",
                r.id,
                r.state.as_str()
            )));
        }
        self.audit
            .append(
                &format!("rollout.{}_requested", control.as_str()),
                &[("rollout", r.id.clone().into()), ("by", by.clone().into())],
            )
            .map_err(|e| audit_status(&e))?;
        self.store
            .set_control(ControlRequest {
                rollout_id: r.id.clone(),
                control,
                by,
                at_ms: now_ms(),
            })
            .await
            .map_err(|e| store_status(&e))?;
        self.wake.notify_one();
        Ok(Response::new(self.status_for(&r).await?))
    }

    async fn list_agents(
        &self,
        req: Request<ListAgentsRequest>,
    ) -> Result<Response<ListAgentsResponse>, Status> {
        self.operators.of(&req)?;
        let mut agents = Vec::new();
        for a in self.agents().await? {
            let cp = self.witnessed(&a.id).await?;
            let sessions = self.dialer.sessions();
            let link = sessions.expects(&a.id).then(|| sessions.link(&a.id));
            agents.push(fleet_agent(&a, cp.as_ref(), link.as_ref()));
        }
        Ok(Response::new(ListAgentsResponse { agents }))
    }

    async fn verify_fleet_audit(
        &self,
        req: Request<VerifyFleetAuditRequest>,
    ) -> Result<Response<VerifyFleetAuditResponse>, Status> {
        self.operators.of(&req)?;
        let mut agents = Vec::new();
        for a in self.agents().await? {
            let cp = self.witnessed(&a.id).await?;
            let verdict = self.dialer.verify_audit(&a, cp.as_ref()).await;
            agents.push(AgentAuditVerdict {
                agent_id: a.id.clone(),
                ok: verdict.is_ok(),
                entries: verdict.as_ref().map_or(0, |n| *n),
                witnessed_seq: cp.map_or(0, |c| c.seq),
                error: verdict.err().unwrap_or_default(),
            });
        }
        Ok(Response::new(VerifyFleetAuditResponse { agents }))
    }

    async fn fleet_policy(
        &self,
        req: Request<FleetPolicyRequest>,
    ) -> Result<Response<FleetPolicyResponse>, Status> {
        self.operators.of(&req)?;
        let wanted = req.into_inner().agent_ids;
        let known = self.agents().await?;
        if let Some(unknown) = wanted.iter().find(|id| !known.iter().any(|a| &a.id == *id)) {
            return Err(Status::not_found(format!(
                "no agent {unknown} in the service's inventory"
            )));
        }
        let mut agents = Vec::new();
        for a in known
            .iter()
            .filter(|a| wanted.is_empty() || wanted.contains(&a.id))
        {
            let cp = self.witnessed(&a.id).await?;
            let doc = self.dialer.policy(a).await;
            let audit = self.dialer.verified_audit(a, cp.as_ref()).await;
            agents.push(crate::policy::review(&a.id, doc, audit));
        }
        Ok(Response::new(FleetPolicyResponse { agents }))
    }

    type FleetAuditTailStream =
        Pin<Box<dyn Stream<Item = Result<gantry_proto::v1::FleetAuditLine, Status>> + Send>>;

    async fn release_deployments(
        &self,
        req: Request<gantry_proto::v1::ReleaseDeploymentsRequest>,
    ) -> Result<Response<gantry_proto::v1::ReleaseDeploymentsResponse>, Status> {
        self.operators.of(&req)?;
        let digest = req.into_inner().artifact_sha256;
        if self.artifacts.path_of(&digest).is_none() {
            return Err(Status::invalid_argument(format!(
                "{digest:?} is not a SHA-256 (64 lowercase hex digits)"
            )));
        }
        crate::deployments::collect(&*self.store, &*self.dialer, &digest)
            .await
            .map(Response::new)
            .map_err(|e| store_status(&e))
    }

    async fn fleet_audit_tail(
        &self,
        req: Request<gantry_proto::v1::FleetAuditTailRequest>,
    ) -> Result<Response<Self::FleetAuditTailStream>, Status> {
        self.operators.of(&req)?;
        let req = req.into_inner();
        let agents = self.agents().await?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let last = if req.last == 0 { 20 } else { req.last };
        tokio::spawn(super::fleet_tail::run(
            self.dialer.clone(),
            agents,
            last,
            req.follow,
            tx,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    type ServiceAuditTailStream = Lines;

    async fn service_audit_tail(
        &self,
        req: Request<AuditTailRequest>,
    ) -> Result<Response<Self::ServiceAuditTailStream>, Status> {
        self.operators.of(&req)?;
        let req = req.into_inner();
        let dir = self.audit_dir.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut next = req.from_seq;
            loop {
                let lines = match crate::audit::read_lines(&dir) {
                    Ok(l) => l,
                    Err(e) => {
                        let _ = tx.send(Err(Status::unavailable(e.to_string()))).await;
                        return;
                    }
                };
                if next == 0 {
                    let last =
                        usize::try_from(if req.last == 0 { 20 } else { req.last }).unwrap_or(20);
                    next = u64::try_from(lines.len().saturating_sub(last)).unwrap_or(0) + 1;
                }
                let from = usize::try_from(next.saturating_sub(1)).unwrap_or(usize::MAX);
                for (i, line) in lines.iter().enumerate().skip(from) {
                    let seq = u64::try_from(i).unwrap_or(0) + 1;
                    if tx
                        .send(Ok(AuditLine {
                            seq,
                            line: line.clone(),
                        }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    next = seq + 1;
                }
                if !req.follow {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
