//! Recording what the agent refused: each rejection in full up to a rate, counted in a summary
//! beyond it ([`flood`]), and charged to the peer certificate's budget ([`throttle`]), whose
//! first pause of an episode is a `client.throttled` entry.

use serde_json::json;
use tonic::Status;

use super::{AgentService, flood, status, throttle};
use crate::admission::Rejection;
use crate::artifact::ArtifactError;
use crate::audit::Entry;
use crate::error::reason;
use crate::intake::{PeerIdentity, received_entry};

impl AgentService {
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

    /// The answer to an upload refused before a byte was written. A refusal for room (the
    /// store's quota, the disk's floor, the certificate's budget) is charged to the certificate
    /// like a rejected submit and recorded as `artifact.refused` with its fingerprint, so a
    /// certificate filling the store is on record and cannot loop at full speed (case J9).
    pub(super) async fn refuse_upload(&self, e: &ArtifactError, peer: &PeerIdentity) -> Status {
        let (code, digest, size) = match e {
            ArtifactError::ClientBudget { digest, size, .. } => ("client_budget", digest, size),
            ArtifactError::StoreFull { digest, size, .. } => ("store_full", digest, size),
            ArtifactError::DiskLow { digest, size, .. } => ("disk_low", digest, size),
            _ => return status::artifact(e),
        };
        let paused = self.charge(peer).await;
        tracing::info!(reason = code, "upload refused: {}", reason(e));
        let entry = Entry::new("artifact.refused")
            .with("reason", json!(code))
            .with("detail", json!(reason(e)))
            .with("sha256", json!(digest))
            .with("size", json!(size))
            .with("peer_fingerprint", json!(peer.fingerprint));
        if let Err(e) = self.audit.append(entry).await {
            return status::audit(&e);
        }
        let refused = status::artifact(e);
        match paused {
            Some(pause) => Status::new(
                refused.code(),
                format!(
                    "{}; this client certificate is over its rejection budget: the agent does not read its requests for the next {:.1} s",
                    refused.message(),
                    pause.as_secs_f64()
                ),
            ),
            None => refused,
        }
    }

    /// Records a rejection (in full, or only counted when over the rate) and builds its answer.
    pub(super) async fn reject(
        &self,
        bytes: usize,
        rejection: &Rejection,
        peer: &PeerIdentity,
    ) -> Status {
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
    /// it was larger than the decode limit ([`super::oversize`]): a `job.rejected` entry with reason
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
    pub(super) async fn charge(&self, peer: &PeerIdentity) -> Option<std::time::Duration> {
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
}
