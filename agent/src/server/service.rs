//! `impl Agent for AgentService`: each RPC maps its request in and delegates, to the
//! [`Intake`](crate::intake::Intake) for submissions and dispatches, to the executor, the
//! artifact store, the audit log or the flags for the rest.

use gantry_proto::v1::{self, agent_server::Agent};
use tonic::{Request, Response, Status, Streaming};

use super::{AgentService, EventStream, convert, flood, no_flags, peer_of, status};
use crate::admission::SignatureIn;
use crate::admission::dispatch::DispatchIn;
use crate::error::reason;
use crate::job::{AppName, Sha256Hex};

#[tonic::async_trait]
impl Agent for AgentService {
    type SubmitStream = EventStream<v1::JobEvent>;
    type WatchStream = EventStream<v1::JobEvent>;
    type AuditTailStream = EventStream<v1::AuditLine>;
    type DispatchStream = EventStream<v1::JobEvent>;

    async fn submit(
        &self,
        request: Request<v1::SignedJob>,
    ) -> Result<Response<Self::SubmitStream>, Status> {
        let peer = peer_of(&request);
        let signed = request.into_inner();
        self.audit.health().map_err(|e| status::audit(&e))?;
        let bytes = signed.job.len();
        let sigs = SignatureIn::all_of(&signed.signatures);
        // Fair share per client certificate: a flood from one (stolen) certificate waits for
        // its own few permits and cannot starve the other controllers' jobs.
        let slot = self.throttle.gate(&peer.fingerprint).admission().await;
        let submitted = self.intake.submit(&signed.job, &sigs, &peer, slot).await;
        self.answer(submitted, bytes, &peer, None).await
    }

    async fn watch(
        &self,
        request: Request<v1::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let job_id = request.into_inner().job_id;
        self.known_job(&job_id).await.map(Response::new)
    }

    async fn upload_artifact(
        &self,
        request: Request<Streaming<v1::ArtifactChunk>>,
    ) -> Result<Response<v1::ArtifactReceipt>, Status> {
        self.upload(request).await
    }

    async fn has_artifact(
        &self,
        request: Request<v1::ArtifactRef>,
    ) -> Result<Response<v1::ArtifactPresence>, Status> {
        let r = request.into_inner();
        let Ok(digest) = Sha256Hex::new(&r.sha256) else {
            return Ok(Response::new(v1::ArtifactPresence::default()));
        };
        let present = self.store.contains(&digest, r.size);
        // A partial longer than the size asked about cannot be that artifact's prefix.
        let held = match self.store.held(&digest) {
            held if present || held > r.size => 0,
            held => held,
        };
        Ok(Response::new(v1::ArtifactPresence { present, held }))
    }

    async fn status(
        &self,
        request: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        let app = request.into_inner().app;
        let only = if app.is_empty() {
            None
        } else {
            Some(AppName::new(&app).map_err(|e| Status::invalid_argument(e.to_string()))?)
        };
        let apps = self.executor.status(only.as_ref()).await;
        Ok(Response::new(v1::StatusResponse {
            agent_id: self.agent_id.clone(),
            apps: apps.iter().map(convert::app_status).collect(),
            recent_jobs: self
                .executor
                .recent_jobs()
                .iter()
                .map(convert::job_summary)
                .collect(),
            audit_error: self
                .audit
                .health()
                .err()
                .map(|e| reason(&e))
                .unwrap_or_default(),
        }))
    }

    async fn audit_tail(
        &self,
        request: Request<v1::AuditTailRequest>,
    ) -> Result<Response<Self::AuditTailStream>, Status> {
        self.tail(request.into_inner()).await.map(Response::new)
    }

    async fn info(
        &self,
        _request: Request<v1::InfoRequest>,
    ) -> Result<Response<v1::AgentInfo>, Status> {
        Ok(Response::new(v1::AgentInfo {
            agent_id: self.agent_id.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            public_key_pem: self.key.public_key().to_spki_pem(),
            key_id: self.key.key_id().to_string(),
            environment: self.placement.environment.clone().unwrap_or_default(),
            labels: self.placement.labels.clone().into_iter().collect(),
        }))
    }

    async fn dispatch(
        &self,
        request: Request<v1::DispatchRequest>,
    ) -> Result<Response<Self::DispatchStream>, Status> {
        let peer = peer_of(&request);
        let req = request.into_inner();
        self.audit.health().map_err(|e| status::audit(&e))?;
        let plan = req.plan.unwrap_or_default();
        let dispatch = req.dispatch.unwrap_or_default();
        let plan_sigs = SignatureIn::all_of(&plan.signatures);
        let dispatch_sigs = SignatureIn::all_of(&dispatch.signatures);
        let input = DispatchIn {
            plan: &plan.plan,
            plan_sigs: &plan_sigs,
            dispatch: &dispatch.dispatch,
            dispatch_sigs: &dispatch_sigs,
        };
        let slot = self.throttle.gate(&peer.fingerprint).admission().await;
        let (submitted, epoch) = match self.intake.dispatch(input, &peer, slot).await {
            Ok((submitted, facts)) => (Ok(submitted), Some(facts.epoch)),
            Err(e) => (Err(e), None),
        };
        self.answer(submitted, input.len(), &peer, epoch).await
    }

    async fn push_flags(
        &self,
        request: Request<v1::SignedFlags>,
    ) -> Result<Response<v1::FlagsReceipt>, Status> {
        let peer = peer_of(&request);
        let signed = request.into_inner();
        self.audit.health().map_err(|e| status::audit(&e))?;
        let flags = self.flags.as_ref().ok_or_else(no_flags)?;
        let sigs = SignatureIn::all_of(&signed.signatures);
        let _slot = self.throttle.gate(&peer.fingerprint).admission().await;
        let now = crate::clock::unix_now();
        match flags
            .push(&signed.flags, &sigs, now, &peer.fingerprint)
            .await
        {
            Ok(pushed) => {
                let r = &pushed.receipt;
                tracing::info!(app = %r.app, version = r.version, unchanged = r.unchanged, "flag set in force");
                Ok(Response::new(pushed.receipt))
            }
            Err(e) => {
                let code = status::flags_reason(&e);
                self.charge(&peer).await;
                if matches!(e, crate::flags::FlagsError::Audit(_)) {
                    tracing::info!(reason = code, "flag set rejected: {}", reason(&e));
                } else if let flood::Recording::Counted { generation } =
                    self.flag_rejections.record(code)
                {
                    // Over the rate: counted into the next summary, answered once it is durable.
                    tracing::debug!(reason = code, "flag set rejected: {}", reason(&e));
                    if !self.flag_rejections.wait_flushed(generation).await {
                        return Err(Status::unavailable(
                            "audit log unavailable: the rejection summary was not written",
                        ));
                    }
                } else {
                    tracing::info!(reason = code, "flag set rejected: {}", reason(&e));
                    let entry = crate::flags::rejected_entry(
                        code,
                        &e,
                        &signed.flags,
                        &sigs,
                        &peer.fingerprint,
                    );
                    self.audit
                        .append(entry)
                        .await
                        .map_err(|a| status::audit(&a))?;
                }
                Err(status::flags(&e))
            }
        }
    }

    async fn policy(
        &self,
        _request: Request<v1::PolicyRequest>,
    ) -> Result<Response<v1::PolicyDocument>, Status> {
        let config = self
            .config
            .as_ref()
            .ok_or_else(|| Status::unimplemented("this agent does not report its policy"))?;
        Ok(Response::new(v1::PolicyDocument {
            json: crate::config::render_policy(config, true),
            config_digest: config.digest.to_string(),
        }))
    }

    async fn get_flags(
        &self,
        request: Request<v1::FlagsRequest>,
    ) -> Result<Response<v1::FlagsInForce>, Status> {
        let flags = self.flags.as_ref().ok_or_else(no_flags)?;
        let name = request.into_inner().app;
        let app = AppName::new(&name).map_err(|e| Status::invalid_argument(reason(&e)))?;
        let (policy, in_force) = flags.in_force(&app).ok_or_else(|| {
            Status::not_found(format!(
                "app {name} serves no flags on this agent (no [apps.{name}.flags] in its config)"
            ))
        })?;
        let mut answer = v1::FlagsInForce {
            app: name,
            ofrep_url: format!("http://{}", policy.listen),
            remove_after_secs: policy.remove_after.as_secs(),
            ..Default::default()
        };
        answer.splits = flags
            .splits(&app)
            .into_iter()
            .map(|s| v1::FlagSplit {
                key: s.flag,
                percent: s.split.percent,
                job_id: s.split.job_id,
                release: s.split.release,
                kept: s.kept,
                served: s.served,
            })
            .collect();
        if let Some(f) = in_force {
            answer.version = f.version;
            answer.floor = f.floor();
            answer.signers = f.signers;
            answer.admitted_at = f.admitted_at;
            answer.ages = f
                .ages
                .into_iter()
                .map(|(key, a)| v1::FlagAge {
                    key,
                    created_at: a.created_at,
                    created_version: a.created_version,
                })
                .collect();
            answer.signed = Some(f.signed);
        }
        Ok(Response::new(answer))
    }
}
