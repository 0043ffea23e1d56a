//! The gRPC service `gantry.v1.Agent` over mutual TLS: the transport of the agent's use
//! cases.
//!
//! A submitted job, or a fleet dispatch, goes to the [`Intake`] (admission → reservation →
//! `job.accepted` → executor); this module maps the request in (`SignatureIn`, the peer's certificate) and the
//! answer out ([`convert`], [`status`]), and records every rejection with the peer's
//! certificate fingerprint and the claimed key ids — one by one up to a rate, counted in a
//! `job.rejected.summary` (or, for flag sets, `flags.rejected.summary`) entry beyond it (see
//! [`flood`]) — charging it to the peer's
//! certificate ([`throttle`]). The connections come from the listener ([`tls::incoming`]) or,
//! in dial-out mode, from the one link the agent dials to the controller service
//! ([`dialout`]).

pub mod convert;
pub mod dialout;
pub mod flood;
pub mod handshake;
pub mod oversize;
pub mod revocation;
pub mod status;
pub mod throttle;
pub mod tls;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use gantry_proto::keys::SigningKey;
use gantry_proto::v1::{self, agent_server::Agent};
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::admission::Rejection;
use crate::admission::dispatch::DispatchIn;
use crate::artifact::ArtifactStore;
use crate::audit::{AuditLog, Entry};
use crate::clock::now_ms;
use crate::config::Placement;
use crate::error::reason;
use crate::executor::{EventKind, Executor, JobHandle};
use crate::intake::{Intake, IntakeError, Known, PeerIdentity, Submitted, received_entry};
use crate::job::{AppName, Sha256Hex};
use crate::progress::Ended;

/// A server-streaming answer.
pub type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// The agent's gRPC service.
#[derive(Debug, Clone)]
pub struct AgentService {
    agent_id: String,
    placement: Placement,
    key: Arc<SigningKey>,
    audit: AuditLog,
    audit_dir: PathBuf,
    intake: Intake,
    executor: Executor,
    store: Arc<ArtifactStore>,
    max_artifact_bytes: u64,
    rejections: Arc<flood::RejectionLimiter>,
    /// The same for refused flag sets (`flags.rejected.summary`).
    flag_rejections: Arc<flood::RejectionLimiter>,
    throttle: Arc<throttle::ClientThrottle>,
    flags: Option<crate::flags::Flags>,
    config: Option<Arc<crate::config::Config>>,
}

impl AgentService {
    /// Assembles the service from the agent's parts.
    #[allow(clippy::too_many_arguments)] // one call site, in the daemon's start-up
    pub fn new(
        agent_id: String,
        placement: Placement,
        key: Arc<SigningKey>,
        audit: AuditLog,
        audit_dir: PathBuf,
        intake: Intake,
        executor: Executor,
        store: Arc<ArtifactStore>,
        max_artifact_bytes: u64,
        throttle: Arc<throttle::ClientThrottle>,
    ) -> Self {
        Self {
            agent_id,
            placement,
            key,
            audit,
            audit_dir,
            intake,
            executor,
            store,
            max_artifact_bytes,
            throttle,
            rejections: Arc::new(flood::RejectionLimiter::new(
                flood::FULL_ENTRIES_PER_SECOND,
                "job.rejected.summary",
            )),
            flag_rejections: Arc::new(flood::RejectionLimiter::new(
                flood::FULL_ENTRIES_PER_SECOND,
                "flags.rejected.summary",
            )),
            flags: None,
            config: None,
        }
    }

    /// Serves `PushFlags` and `GetFlags` from `flags` (without it they are unimplemented).
    #[must_use]
    pub fn with_flags(mut self, flags: crate::flags::Flags) -> Self {
        self.flags = Some(flags);
        self
    }

    /// Answers `Policy` with this config's effective policy (what `gantry-agent policy --json`
    /// prints); without it, `Policy` is UNIMPLEMENTED.
    #[must_use]
    pub fn with_policy(mut self, config: Arc<crate::config::Config>) -> Self {
        self.config = Some(config);
        self
    }

    /// Writes the count of rejections that were over the full-recording rate, if any. The
    /// daemon calls this every second and once more at shutdown.
    ///
    /// # Errors
    ///
    /// The audit error when the summary cannot be written.
    pub async fn flush_rejection_summary(&self) -> Result<(), crate::audit::AuditError> {
        for limiter in [&self.rejections, &self.flag_rejections] {
            if let Some((generation, summary)) = limiter.take_summary() {
                self.audit.append(summary).await?;
                limiter.mark_flushed(generation);
            }
        }
        Ok(())
    }

    /// Records a rejection (in full, or only counted when over the rate) and builds its answer.
    async fn reject(&self, bytes: usize, rejection: &Rejection, peer: &PeerIdentity) -> Status {
        let code = status::reason_code(&rejection.error);
        crate::metrics::global().job_rejected(code);
        let paused = self.charge(peer).await;
        let answer = |status: Status| match paused {
            Some(pause) => Status::new(
                status.code(),
                format!(
                    "{}; this client certificate is over its rejection budget ({} at once, {} a second): the agent does not read its requests for the next {:.1} s",
                    status.message(),
                    self.throttle.budget().burst,
                    self.throttle.budget().per_second,
                    pause.as_secs_f64()
                ),
            ),
            None => status,
        };
        if let flood::Recording::Counted { generation } = self.rejections.record(code) {
            // Counted, not logged one by one either: a flood must not fill the log's disk.
            tracing::debug!(reason = code, "job rejected: {}", reason(&rejection.error));
            // Answer only once the summary counting it is on disk.
            return if self.rejections.wait_flushed(generation).await {
                answer(status::rejection(&rejection.error))
            } else {
                Status::unavailable("audit log unavailable: the rejection summary was not written")
            };
        }
        tracing::info!(reason = code, "job rejected: {}", reason(&rejection.error));
        let entry = Entry::new("job.rejected")
            .with("reason", json!(code))
            .with("detail", json!(reason(&rejection.error)))
            .with("job_id", json!(rejection.job_id))
            .with("app", json!(rejection.app))
            .with("job_digest", json!(rejection.job_digest))
            .with("peer_fingerprint", json!(peer.fingerprint))
            .with("claimed_key_ids", json!(rejection.claimed_key_ids));
        let received = received_entry(
            &rejection.job_digest,
            bytes,
            peer,
            &rejection.claimed_key_ids,
        );
        let recorded = match self.audit.append(received).await {
            Ok(_) => self.audit.append(entry).await,
            Err(e) => Err(e),
        };
        match recorded {
            Ok(_) => answer(status::rejection(&rejection.error)),
            Err(e) => status::audit(&e),
        }
    }

    /// Records a `Submit` or `Dispatch` the transport refused before any handler ran because
    /// it was larger than the decode limit ([`oversize`]): a `job.rejected` entry with reason
    /// `too_large`, charged to the certificate like any rejection. Nothing of the request was
    /// read, so there is no digest, job id or claimed key.
    pub async fn record_oversized(&self, rpc: &str, decode_limit: usize, fingerprint: String) {
        let peer = PeerIdentity { fingerprint };
        let _paused = self.charge(&peer).await;
        let detail = format!(
            "the {} request is larger than the agent's decode limit of {decode_limit} bytes; it was not read",
            rpc.rsplit('/').next().unwrap_or(rpc)
        );
        match self.rejections.record("too_large") {
            flood::Recording::Counted { .. } => {
                tracing::debug!(reason = "too_large", "job rejected: {detail}");
            }
            flood::Recording::Full => {
                tracing::info!(reason = "too_large", "job rejected: {detail}");
                let entry = Entry::new("job.rejected")
                    .with("reason", json!("too_large"))
                    .with("detail", json!(detail))
                    .with("peer_fingerprint", json!(peer.fingerprint));
                if let Err(e) = self.audit.append(entry).await {
                    tracing::error!("cannot record an oversized request: {}", reason(&e));
                }
            }
        }
    }

    /// Takes a rejection from the peer certificate's budget: how long its reads are paused, if
    /// they are. The first pause of an episode is recorded as `client.throttled`.
    async fn charge(&self, peer: &PeerIdentity) -> Option<std::time::Duration> {
        let (pause, first) = match self.throttle.gate(&peer.fingerprint).debit() {
            throttle::Debit::Within => return None,
            throttle::Debit::Paused { pause, first } => (pause, first),
        };
        if !first {
            return Some(pause);
        }
        let budget = self.throttle.budget();
        tracing::warn!(
            fingerprint = %peer.fingerprint,
            "client certificate over its rejection budget ({} at once, {}/s): its connections are not read for now",
            budget.burst,
            budget.per_second
        );
        let entry = Entry::new("client.throttled")
            .with("peer_fingerprint", json!(peer.fingerprint))
            .with("burst", json!(budget.burst))
            .with("per_second", json!(budget.per_second))
            .with(
                "pause_ms",
                json!(u64::try_from(pause.as_millis()).unwrap_or(u64::MAX)),
            );
        if let Err(e) = self.audit.append(entry).await {
            tracing::error!("cannot record the throttling: {}", reason(&e));
        }
        Some(pause)
    }

    fn finished_stream(&self, job_id: &str, ended: Ended) -> EventStream<v1::JobEvent> {
        let event = v1::JobEvent {
            job_id: job_id.to_owned(),
            seq: 1,
            ts_ms: now_ms(),
            kind: Some(v1::job_event::Kind::Finished(v1::JobFinished {
                outcome: convert::outcome(ended.outcome).into(),
                reason: ended.reason,
                checkpoint: self
                    .audit
                    .latest_checkpoint()
                    .as_ref()
                    .map(convert::checkpoint),
            })),
        };
        Box::pin(tokio_stream::iter([Ok(event)]))
    }

    /// The answer to a submission or a dispatch: the started job's events; for a job admitted
    /// before, an attach to it (charged like a rejection, recorded as `job.resubmitted`, with
    /// the dispatch's epoch for a dispatch); a recorded rejection.
    async fn answer(
        &self,
        submitted: Result<Submitted, IntakeError>,
        bytes: usize,
        peer: &PeerIdentity,
        epoch: Option<u64>,
    ) -> Result<Response<EventStream<v1::JobEvent>>, Status> {
        match submitted {
            Ok(Submitted::Started(handle)) => Ok(Response::new(follow_job(handle))),
            Ok(Submitted::Duplicate(record)) => {
                tracing::info!(job_id = %record.job_id, "identical resubmission; attaching to the job");
                // It starts nothing but cost a full signature check: a replayed valid job is
                // charged like a rejection, or a captured job could be replayed at full speed.
                self.charge(peer).await;
                if self.rejections.record("resubmitted") == flood::Recording::Full {
                    let mut again = Entry::new("job.resubmitted")
                        .with("job_id", json!(record.job_id))
                        .with("job_digest", json!(record.digest))
                        .with("peer_fingerprint", json!(peer.fingerprint));
                    if let Some(epoch) = epoch {
                        again = again.with("epoch", json!(epoch));
                    }
                    self.audit
                        .append(again)
                        .await
                        .map_err(|e| status::audit(&e))?;
                }
                self.known_job(record.job_id.as_str())
                    .await
                    .map(Response::new)
            }
            Err(IntakeError::Rejected(rejection) | IntakeError::Busy(rejection)) => {
                Err(self.reject(bytes, &rejection, peer).await)
            }
            Err(e) => Err(status::intake(&e)),
        }
    }

    /// The stream for a job admitted earlier (idempotent resubmission, or watch).
    async fn known_job(&self, job_id: &str) -> Result<EventStream<v1::JobEvent>, Status> {
        match self.intake.known(job_id).await {
            Ok(Known::Running(handle)) => Ok(follow_job(handle)),
            Ok(Known::Ended(ended)) => Ok(self.finished_stream(job_id, ended)),
            Err(e) => Err(status::known(&e)),
        }
    }
}

/// Writes the first chunk's data and every further chunk into `upload`, until the stream ends.
async fn receive(
    upload: &mut crate::artifact::Upload,
    first: &[u8],
    chunks: &mut Streaming<v1::ArtifactChunk>,
) -> Result<(), Status> {
    let mut write = |data: &[u8]| {
        tokio::task::block_in_place(|| upload.write(data)).map_err(|e| status::artifact(&e))
    };
    write(first)?;
    while let Some(chunk) = chunks.message().await? {
        write(&chunk.data)?;
    }
    Ok(())
}

fn peer_of<T>(request: &Request<T>) -> PeerIdentity {
    let fingerprint = request
        .extensions()
        .get::<throttle::ClientCertificate>()
        .map(|c| c.fingerprint.to_string())
        .unwrap_or_default();
    PeerIdentity { fingerprint }
}

/// Streams a job's events from the first, then live, until it finishes; a watcher that falls
/// behind re-reads the history instead of missing events.
fn follow_job(handle: Arc<JobHandle>) -> EventStream<v1::JobEvent> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            let (history, mut live) = handle.subscribe();
            let from = last;
            for event in history.into_iter().filter(|e| e.seq > from) {
                last = event.seq;
                let done = matches!(event.kind, EventKind::Finished { .. });
                if tx.send(Ok(convert::event(&event))).await.is_err() || done {
                    return;
                }
            }
            loop {
                match live.recv().await {
                    Ok(event) if event.seq <= last => {}
                    Ok(event) => {
                        last = event.seq;
                        let done = matches!(event.kind, EventKind::Finished { .. });
                        if tx.send(Ok(convert::event(&event))).await.is_err() || done {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => break,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

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
        let sigs = convert::signatures(signed.signatures);
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
        let peer = peer_of(&request);
        let mut chunks = request.into_inner();
        let first = chunks
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty upload: no chunk was sent"))?;
        let meta = first.meta.ok_or_else(|| {
            Status::invalid_argument("the first chunk must carry the artifact's sha256 and size")
        })?;
        let digest = Sha256Hex::new(&meta.sha256)
            .map_err(|e| Status::invalid_argument(format!("artifact refused: {e}")))?;
        if meta.size > self.max_artifact_bytes {
            return Err(Status::resource_exhausted(format!(
                "artifact refused: {} bytes is over the limit of {} bytes",
                meta.size, self.max_artifact_bytes
            )));
        }
        if self.store.contains(&digest, meta.size) {
            return Ok(Response::new(v1::ArtifactReceipt {
                sha256: digest.to_string(),
                size: meta.size,
                already_present: true,
            }));
        }
        self.audit.health().map_err(|e| status::audit(&e))?;
        let store = Arc::clone(&self.store);
        let mut upload =
            tokio::task::block_in_place(|| store.begin_upload_at(&digest, meta.size, first.offset))
                .map_err(|e| status::artifact(&e))?;
        let received = receive(&mut upload, &first.data, &mut chunks).await;
        if let Err(status) = received {
            // Dropping an upload that broke off fsyncs its partial file: not on this thread.
            tokio::task::block_in_place(|| drop(upload));
            return Err(status);
        }
        let resumed_from = upload.resumed_from();
        tokio::task::block_in_place(|| upload.finish()).map_err(|e| status::artifact(&e))?;
        let entry = Entry::new("artifact.stored")
            .with("sha256", json!(digest))
            .with("size", json!(meta.size))
            .with("resumed_from", json!(resumed_from))
            .with("peer_fingerprint", json!(peer.fingerprint));
        self.audit
            .append(entry)
            .await
            .map_err(|e| status::audit(&e))?;
        Ok(Response::new(v1::ArtifactReceipt {
            sha256: digest.to_string(),
            size: meta.size,
            already_present: false,
        }))
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
        let req = request.into_inner();
        let mut live = req.follow.then(|| self.audit.subscribe());
        let dir = self.audit_dir.clone();
        let read = move |from: u64| {
            let dir = dir.clone();
            async move {
                tokio::task::spawn_blocking(move || crate::audit::read_lines(&dir, from))
                    .await
                    .map_err(|e| Status::internal(format!("audit reader failed: {e}")))?
                    .map_err(|e| {
                        Status::internal(format!("cannot read the audit log: {}", reason(&e)))
                    })
            }
        };
        let mut lines = read(req.from_seq.max(1)).await?;
        if req.from_seq == 0 && req.last > 0 {
            let keep = usize::try_from(req.last).unwrap_or(usize::MAX);
            let skip = lines.len().saturating_sub(keep);
            lines.drain(..skip);
        }
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut last = 0;
            for (seq, line) in lines {
                last = seq;
                if tx.send(Ok(v1::AuditLine { seq, line })).await.is_err() {
                    return;
                }
            }
            let Some(live) = live.as_mut() else { return };
            loop {
                match live.recv().await {
                    Ok(item) => {
                        let (seq, line) = &*item;
                        if *seq > last {
                            last = *seq;
                            let msg = v1::AuditLine {
                                seq: *seq,
                                line: line.clone(),
                            };
                            if tx.send(Ok(msg)).await.is_err() {
                                return;
                            }
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => match read(last + 1).await {
                        Ok(missed) => {
                            for (seq, line) in missed {
                                last = seq;
                                if tx.send(Ok(v1::AuditLine { seq, line })).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    },
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
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
        let plan_sigs = convert::signatures(plan.signatures);
        let dispatch_sigs = convert::signatures(dispatch.signatures);
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
        let sigs = convert::signatures(signed.signatures);
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
        if let Some(f) = in_force {
            answer.version = f.version;
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

fn no_flags() -> Status {
    Status::unimplemented("this agent serves no feature flags")
}
