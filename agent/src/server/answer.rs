//! The answer to a submission, a dispatch or a watch: the job's events as a stream, followed
//! live or replayed from a finished job's outcome.

use std::sync::Arc;

use gantry_proto::v1;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Response, Status};

use super::{AgentService, EventStream, convert, flood, status};
use crate::audit::Entry;
use crate::clock::now_ms;
use crate::executor::{EventKind, JobHandle};
use crate::intake::{IntakeError, Known, PeerIdentity, Submitted};
use crate::progress::Ended;

impl AgentService {
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
    pub(super) async fn answer(
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
    pub(super) async fn known_job(
        &self,
        job_id: &str,
    ) -> Result<EventStream<v1::JobEvent>, Status> {
        match self.intake.known(job_id).await {
            Ok(Known::Running(handle)) => Ok(follow_job(handle)),
            Ok(Known::Ended(ended)) => Ok(self.finished_stream(job_id, ended)),
            Err(e) => Err(status::known(&e)),
        }
    }
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
