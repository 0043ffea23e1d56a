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
//!
//! The service itself is in files of one concern: `service` (the `Agent` trait, each RPC
//! mapping its request in and delegating), `answer` (a job's event stream), `rejections`
//! (recording and charging refusals), `upload` (`UploadArtifact`) and `audit_tail`.

mod answer;
mod audit_tail;
pub mod convert;
pub mod dialout;
pub mod flood;
pub mod handshake;
pub mod oversize;
mod rejections;
pub mod revocation;
mod service;
pub mod status;
pub mod throttle;
pub mod tls;
mod upload;

use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use gantry_proto::keys::SigningKey;
use tokio_stream::Stream;
use tonic::{Request, Status};

use crate::artifact::ArtifactStore;
use crate::audit::AuditLog;
use crate::config::Placement;
use crate::executor::Executor;
use crate::intake::{Intake, PeerIdentity};

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
}

fn peer_of<T>(request: &Request<T>) -> PeerIdentity {
    let fingerprint = request
        .extensions()
        .get::<throttle::ClientCertificate>()
        .map(|c| c.fingerprint.to_string())
        .unwrap_or_default();
    PeerIdentity { fingerprint }
}

fn no_flags() -> Status {
    Status::unimplemented("this agent serves no feature flags")
}
