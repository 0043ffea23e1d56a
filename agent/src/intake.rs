//! The submit use case, below the transport: admit a signed job, reserve its app, record its
//! acceptance durably, start it. And the look-up `watch` and a resubmission use: a job running
//! or ended, from the executor or the [`Ledger`].
//!
//! ```text
//! admit (pure checks; the ledger records the id) → reserve the app
//!   → job.received + job.accepted (durable, within ACCEPT_DEADLINE) → executor.spawn
//! ```
//!
//! Nothing runs before its acceptance is on disk. Everything after admission runs in a task
//! of its own: a client that cancels its call (or drops its connection) mid-way cannot leave
//! the app reserved with nothing running on it, and an acceptance the audit log does not take
//! within [`ACCEPT_DEADLINE`] releases the app too. A job refused after admission (its app
//! busy, its acceptance not recorded) is recorded refused in the ledger, so the next start
//! does not report it interrupted.
//!
//! Recording rejections (with the flood summary and the per-certificate throttle) is the
//! server's: it decides what a rejection costs the peer.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use crate::admission::dispatch::{AdmittedDispatch, DispatchIn, Dispatched};
use crate::admission::fleet::action_name;
use crate::admission::{Admission, AdmissionError, Admitted, Rejection, SignatureIn};
use crate::audit::{AuditError, AuditLog, Entry};
use crate::clock::Clock;
use crate::error::reason;
use crate::executor::{Executor, JobHandle, strategy_of};
use crate::job::{Action, ReleaseSpec, Sha256Hex, VerifiedJob};
use crate::ledger::{JobRecord, Ledger, Standing};
use crate::progress::Ended;
use crate::secrets::SecretsKey;

/// How long the acceptance of an admitted job may take to become durable before the job is
/// refused and its app released.
pub const ACCEPT_DEADLINE: Duration = Duration::from_secs(10);

/// How long a resubmission or watch waits for a job another connection just admitted.
pub const KNOWN_JOB_WAIT: Duration = Duration::from_secs(5);

/// Who sent a request at the TLS layer. Admission never sees it: authority comes only from
/// the signatures; the peer is recorded in the audit entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    /// Lowercase hex SHA-256 of the client's leaf certificate (DER).
    pub fingerprint: String,
}

/// A submission that was not refused.
#[derive(Debug)]
pub enum Submitted {
    /// A new job, accepted and started.
    Started(Arc<JobHandle>),
    /// The identical bytes of a job admitted before: nothing starts; follow that job.
    Duplicate(JobRecord),
}

/// Why a submitted job was not started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IntakeError {
    /// Admission refused it; nothing about it was recorded yet.
    #[error(transparent)]
    Rejected(Box<Rejection>),
    /// Admitted, then refused because another job holds its app; recorded refused in the
    /// ledger.
    #[error(transparent)]
    Busy(Box<Rejection>),
    /// Its acceptance could not be recorded in the audit log, so it did not run.
    #[error("cannot record the job's acceptance")]
    Audit(#[source] AuditError),
    /// The audit log did not take its acceptance within the deadline, so it did not run.
    #[error("the job's acceptance was not durable within {}", humantime::format_duration(*.0))]
    Deadline(Duration),
    /// The task accepting the job ended without an answer (a panic or the agent shutting
    /// down); the app was released.
    #[error("the job's acceptance was cut short: {0}")]
    Cut(String),
}

/// What is known about a job admitted earlier.
#[derive(Debug)]
pub enum Known {
    /// Running, or ended during this agent run: its events can be followed.
    Running(Arc<JobHandle>),
    /// It ended before (an earlier run, or it has left memory).
    Ended(Ended),
}

/// Why a job admitted earlier cannot be followed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KnownError {
    /// The agent never admitted it.
    #[error("no job {job_id:?} is known to this agent")]
    NotFound {
        /// The id asked for.
        job_id: String,
    },
    /// It was admitted, then refused before it started.
    #[error("job {job_id} ended rejected: {why}")]
    Refused {
        /// The job.
        job_id: String,
        /// Why it was refused.
        why: String,
    },
    /// It was admitted a moment ago and has neither started nor ended yet.
    #[error("job {job_id} was accepted but its outcome is not known yet")]
    Pending {
        /// The job.
        job_id: String,
    },
}

/// The submit use case over admission, the audit log, the ledger and the executor.
#[derive(Debug, Clone)]
pub struct Intake {
    admission: Arc<Admission>,
    audit: AuditLog,
    executor: Executor,
    secrets: Arc<SecretsKey>,
    /// Bumped whenever an admitted job starts or ends before starting, for the watchers of a
    /// job admitted a moment ago.
    settled: Arc<watch::Sender<u64>>,
    deadline: Duration,
    /// The time validity windows are checked against.
    clock: Arc<dyn Clock>,
    /// Tests only: the acceptance waits here before it records anything, so a test decides
    /// when it goes on (a cancelled call, a missed deadline) instead of racing the disk.
    #[cfg(test)]
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

impl Intake {
    /// The use case over the agent's parts.
    pub fn new(
        admission: Arc<Admission>,
        audit: AuditLog,
        executor: Executor,
        secrets: Arc<SecretsKey>,
    ) -> Self {
        Self {
            admission,
            audit,
            executor,
            secrets,
            settled: Arc::new(watch::Sender::new(0)),
            deadline: ACCEPT_DEADLINE,
            clock: crate::clock::system(),
            #[cfg(test)]
            gate: None,
        }
    }

    /// The same, with every acceptance waiting for a permit of `gate` before it records
    /// anything (tests).
    #[cfg(test)]
    #[must_use]
    pub(crate) fn with_gate(mut self, gate: Arc<tokio::sync::Semaphore>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// The same, checking validity windows against `clock` (tests).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The same, with another acceptance deadline (tests).
    #[must_use]
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    fn ledger(&self) -> &Arc<Ledger> {
        self.admission.ledger()
    }

    /// Admits `job` (the raw signed bytes) under `sigs`, reserves its app, records
    /// `job.received` and `job.accepted`, and starts it. `slot` is held for the admission only
    /// (the server's per-certificate admission slot).
    ///
    /// # Errors
    ///
    /// [`IntakeError`]: refused by admission, its app busy, or its acceptance not recorded.
    pub async fn submit<S>(
        &self,
        job: &[u8],
        sigs: &[SignatureIn],
        peer: &PeerIdentity,
        slot: S,
    ) -> Result<Submitted, IntakeError> {
        let admitted = self
            .admission
            .admit(job, sigs, self.clock.now_unix(), &self.executor);
        drop(slot);
        let verified = match admitted {
            Err(rejection) => return Err(IntakeError::Rejected(Box::new(rejection))),
            Ok(Admitted::Duplicate(record)) => return Ok(Submitted::Duplicate(record)),
            Ok(Admitted::New(verified)) => verified,
        };
        let accept = Acceptance {
            bytes: job.len(),
            claimed: claimed(sigs),
            peer: peer.clone(),
            fleet: None,
        };
        self.start(verified, accept).await
    }

    /// Admits a fleet dispatch (the signed plan and the signed dispatch), then goes on as
    /// [`Intake::submit`] with the job the plan describes for this agent: the same
    /// reservation, acceptance entries (with the plan's facts in `job.accepted`) and executor.
    /// A dispatch of a job admitted before is a [`Submitted::Duplicate`], returned with the
    /// plan's facts.
    ///
    /// # Errors
    ///
    /// As [`Intake::submit`].
    pub async fn dispatch<S>(
        &self,
        input: DispatchIn<'_>,
        peer: &PeerIdentity,
        slot: S,
    ) -> Result<(Submitted, Dispatched), IntakeError> {
        let admitted = self
            .admission
            .admit_dispatch(input, self.clock.now_unix(), &self.executor);
        drop(slot);
        let (verified, facts) = match admitted {
            Err(rejection) => return Err(IntakeError::Rejected(Box::new(rejection))),
            Ok(AdmittedDispatch::Duplicate(record, facts)) => {
                return Ok((Submitted::Duplicate(record), facts));
            }
            Ok(AdmittedDispatch::New(verified, facts)) => (verified, facts),
        };
        let accept = Acceptance {
            bytes: input.len(),
            claimed: input.claimed(),
            peer: peer.clone(),
            fleet: Some(facts.clone()),
        };
        self.start(verified, accept)
            .await
            .map(|started| (started, facts))
    }

    /// The rest of a submission, from admission to start, in a task of its own.
    async fn start(
        &self,
        verified: VerifiedJob,
        accept: Acceptance,
    ) -> Result<Submitted, IntakeError> {
        let job_id = verified.spec.id.clone();
        let this = self.clone();
        // From here the job is in the ledger: the rest runs to its end even when the caller
        // goes away, so the app is never left reserved for nothing.
        let task = tokio::spawn(async move { this.accept(verified, accept).await });
        task.await.unwrap_or_else(|e| {
            // Its reservation was released as the task unwound.
            tracing::error!(%job_id, "the acceptance task failed: {e}");
            Err(IntakeError::Cut(e.to_string()))
        })
    }

    async fn accept(&self, job: VerifiedJob, accept: Acceptance) -> Result<Submitted, IntakeError> {
        let spec = &job.spec;
        // Promote and abort act on the rollout that holds the app; they never reserve it.
        let control = matches!(spec.action, Action::Promote | Action::Abort);
        let mut reservation = None;
        if !control {
            match self.executor.reserve(&spec.app, &spec.id) {
                Ok(()) => {
                    reservation = Some(Reservation {
                        executor: self.executor.clone(),
                        app: Some(spec.app.clone()),
                    });
                }
                Err(busy) => {
                    self.refused(&job, &reason(&busy));
                    return Err(IntakeError::Busy(Box::new(Rejection {
                        error: AdmissionError::AppBusy {
                            app: spec.app.to_string(),
                            job_id: match &busy {
                                crate::executor::ExecutorError::Busy { job, .. } => job.to_string(),
                                // reserve() fails only when the app is held; name the error
                                // otherwise.
                                crate::executor::ExecutorError::Prepare { .. } => reason(&busy),
                            },
                        },
                        job_id: Some(spec.id.to_string()),
                        app: Some(spec.app.to_string()),
                        claimed_key_ids: accept.claimed,
                        job_digest: job.digest.to_string(),
                    })));
                }
            }
        }
        let received = received_entry(
            job.digest.as_str(),
            accept.bytes,
            &accept.peer,
            &accept.claimed,
        );
        let mut accepted = self.accepted_entry(&job, &accept.peer);
        if let Some(fleet) = &accept.fleet {
            accepted = with_plan(accepted, fleet);
        }
        let recorded = tokio::time::timeout(self.deadline, async {
            #[cfg(test)]
            if let Some(gate) = &self.gate {
                // A closed gate is the end of the test: nothing is recorded then.
                let _permit = gate.acquire().await;
            }
            self.audit.append(received).await?;
            self.audit.append(accepted).await
        })
        .await;
        let failure = match recorded {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(IntakeError::Audit(e)),
            Err(_) => Some(IntakeError::Deadline(self.deadline)),
        };
        if let Some(failure) = failure {
            drop(reservation);
            self.refused(&job, &reason(&failure));
            return Err(failure);
        }
        tracing::info!(job_id = %spec.id, app = %spec.app, action = %spec.action, "job accepted");
        // The executor holds the app from here until the job ends.
        if let Some(r) = reservation {
            r.keep();
        }
        let handle = self.executor.spawn(job);
        self.settled.send_modify(|n| *n += 1);
        Ok(Submitted::Started(handle))
    }

    /// Records an admitted job refused before it started; without that the next start would
    /// report it interrupted.
    fn refused(&self, job: &VerifiedJob, why: &str) {
        if let Err(e) = self.ledger().refuse(&job.spec.id, why) {
            tracing::error!(job_id = %job.spec.id, "cannot record the refusal: {}", reason(&e));
        }
        self.settled.send_modify(|n| *n += 1);
    }

    fn accepted_entry(&self, job: &VerifiedJob, peer: &PeerIdentity) -> Entry {
        let spec = &job.spec;
        let version = spec
            .release
            .as_ref()
            .map(|r| r.version.to_string())
            .or_else(|| spec.target_version.as_ref().map(ToString::to_string));
        let signers: Vec<String> = job.signers.iter().map(ToString::to_string).collect();
        let entry = Entry::new("job.accepted")
            .with("job_id", json!(spec.id))
            .with("job_digest", json!(job.digest))
            .with("signer_key_ids", json!(signers))
            .with("app", json!(spec.app))
            .with("action", json!(spec.action.as_str()))
            .with("version", json!(version))
            .with("strategy", json!(strategy_of(job).map(|s| s.as_str())))
            .with(
                "env",
                json!(
                    spec.release
                        .as_ref()
                        .map(|r| crate::secrets::audit_env(r, self.secrets.as_bytes()))
                ),
            )
            .with("peer_fingerprint", json!(peer.fingerprint));
        release_evidence(entry, spec.release.as_ref())
    }

    /// A job admitted earlier: its handle while this run knows it, else how it ended. A job
    /// admitted a moment ago by another connection may not be running yet (its submitter is
    /// between admission and start): this waits up to [`KNOWN_JOB_WAIT`] for it.
    ///
    /// # Errors
    ///
    /// [`KnownError`]: never admitted, refused after admission, or still pending.
    pub async fn known(&self, job_id: &str) -> Result<Known, KnownError> {
        let deadline = tokio::time::Instant::now() + KNOWN_JOB_WAIT;
        // Subscribed before looking, so a start between the look and the wait is not missed.
        let mut settled = self.settled.subscribe();
        loop {
            if let Some(handle) = self.executor.job(job_id) {
                return Ok(Known::Running(handle));
            }
            let record = self
                .ledger()
                .get(job_id)
                .ok_or_else(|| KnownError::NotFound {
                    job_id: job_id.to_owned(),
                })?;
            match record.standing {
                Standing::Finished(ended) => return Ok(Known::Ended(ended)),
                Standing::Refused { why } => {
                    return Err(KnownError::Refused {
                        job_id: job_id.to_owned(),
                        why,
                    });
                }
                Standing::Admitted => {
                    if !matches!(
                        tokio::time::timeout_at(deadline, settled.changed()).await,
                        Ok(Ok(()))
                    ) {
                        return Err(KnownError::Pending {
                            job_id: job_id.to_owned(),
                        });
                    }
                }
            }
        }
    }
}

/// What the acceptance entries say about the request.
struct Acceptance {
    bytes: usize,
    claimed: Vec<String>,
    peer: PeerIdentity,
    /// For a dispatched job: the plan's facts.
    fleet: Option<Dispatched>,
}

/// `job.accepted` of a dispatched job: the plan's id, digest, ring, epoch, dispatch action,
/// the plan's and the dispatch's signers, and for a deploy the version it replaces
/// (docs/audit-log.md; the plan records are rebuilt from these).
fn with_plan(entry: Entry, fleet: &Dispatched) -> Entry {
    entry
        .with("plan_id", json!(fleet.plan_id))
        .with("plan_digest", json!(fleet.plan_digest))
        .with("ring", json!(fleet.ring))
        .with("ring_name", json!(fleet.ring_name))
        .with("epoch", json!(fleet.epoch))
        .with("dispatch_action", json!(action_name(fleet.action)))
        .with("plan_signer_key_ids", json!(fleet.plan_signers))
        .with("dispatch_signer_key_ids", json!(fleet.dispatch_signers))
        .with("replaced_version", json!(fleet.replaced))
}

/// An app reserved for a job that has not started: released when dropped, unless kept.
struct Reservation {
    executor: Executor,
    app: Option<crate::job::AppName>,
}

impl Reservation {
    /// The job starts: the executor releases the app when it ends.
    fn keep(mut self) {
        self.app = None;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(app) = self.app.take() {
            self.executor.release(&app);
        }
    }
}

/// The `job.received` entry of a job of `bytes` bytes, written with its verdict (admission
/// runs first, so a flood of forged jobs can be counted instead).
pub fn received_entry(
    digest: &str,
    bytes: usize,
    peer: &PeerIdentity,
    claimed: &[String],
) -> Entry {
    Entry::new("job.received")
        .with("job_digest", json!(digest))
        .with("bytes", json!(bytes))
        .with("peer_fingerprint", json!(peer.fingerprint))
        .with("claimed_key_ids", json!(claimed))
}

/// The key ids the signatures claim.
pub fn claimed(sigs: &[SignatureIn]) -> Vec<String> {
    sigs.iter().map(|s| s.key_id_hint.clone()).collect()
}

/// Adds what a release carries besides its artifact to its `job.accepted` entry: the SHA-256
/// of its notes and of each evidence envelope, so the log names exactly what was approved.
fn release_evidence(entry: Entry, release: Option<&ReleaseSpec>) -> Entry {
    let Some(r) = release else { return entry };
    let mut entry = entry;
    if !r.notes.is_empty() {
        entry = entry.with("notes_sha256", json!(Sha256Hex::of(r.notes.as_bytes())));
    }
    if !r.evidence.is_empty() {
        let digests: Vec<Sha256Hex> = r.evidence.iter().map(|e| Sha256Hex::of(e)).collect();
        entry = entry.with("evidence_sha256", json!(digests));
    }
    entry
}

#[cfg(test)]
mod tests;
