//! Admission: the only way into the agent. Turns signed bytes into a [`VerifiedJob`] or a
//! [`Rejection`] that says exactly why.
//!
//! # Pipeline
//!
//! In this order, each step seeing only what the previous ones let through:
//!
//! 1. size (`limits.max_job_bytes`), then at least one signature;
//! 2. signatures over the **raw** bytes, before decoding ([`policy::verify_signers`]);
//! 3. protobuf decoding and field validation ([`decode`]);
//! 4. `agent_id`, then the validity window ([`window`]);
//! 5. the app is configured, the signers hold an allowed role, approvals reach the quorum;
//! 6. action checks: deploys never downgrade, rollback targets exist, instance counts fit;
//! 7. replay ([`replay`]): identical bytes of a known job are a duplicate, other bytes under a
//!    known id are refused; then the app must not be busy; then the job id is recorded durably.
//!
//! Step 7 runs under one lock, so two connections submitting the same job at once cannot both
//! be admitted.
//!
//! The TLS client's identity is checked by the server (CA chain and fingerprint pin) before a
//! job gets here; it grants nothing by itself and is only reported.

pub mod decode;
pub mod explain;
pub mod policy;
pub mod replay;
pub mod window;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Limits, Policy};
use crate::job::{Action, AppName, JobId, Sha256Hex, StrategyKind, VerifiedJob};

pub use replay::{ReplayError, ReplayRecord};

/// One signature as received: the claimed key id (a hint only) and the signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureIn {
    /// The `key_id` the sender claims; used to find the key fast, never trusted.
    pub key_id_hint: String,
    /// Ed25519 signature over `PAE(JOB_PAYLOAD_TYPE, job_bytes)`.
    pub sig: Vec<u8>,
}

/// What admission needs to know about the apps' current state.
pub trait AppView: Send + Sync {
    /// The release currently active, if any.
    fn current_version(&self, app: &AppName) -> Option<semver::Version>;
    /// Whether a release of this version is on disk (a rollback target).
    fn has_release(&self, app: &AppName, version: &semver::Version) -> bool;
    /// Whether a job is running on the app.
    fn is_busy(&self, app: &AppName) -> bool;
}

/// A job that passed admission.
// One value per submitted job: its size does not matter, and the variants are the interface.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// A new job, now recorded: run it.
    New(VerifiedJob),
    /// The identical bytes of a job admitted before: report or follow that job, run nothing.
    Duplicate(ReplayRecord),
}

/// A refused job, with whatever was known about it for the audit entry.
#[derive(Debug)]
pub struct Rejection {
    /// Why.
    pub error: AdmissionError,
    /// The job id, if the bytes decoded far enough (not validated).
    pub job_id: Option<String>,
    /// The app, if the bytes decoded far enough (not validated).
    pub app: Option<String>,
    /// The key ids the signatures claimed.
    pub claimed_key_ids: Vec<String>,
    /// Lowercase hex SHA-256 of the job bytes.
    pub job_digest: String,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "job rejected: {}", self.error)
    }
}

impl std::error::Error for Rejection {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Why a job was refused. Each variant is one rule of the trust model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdmissionError {
    /// The job bytes exceed `limits.max_job_bytes`.
    #[error("job is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// Size received.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The job carries no signature.
    #[error("job is not signed")]
    NoSignatures,
    /// More signatures than admission looks at.
    #[error("job carries {count} signatures, more than the {max} admission checks")]
    TooManySignatures {
        /// Signatures received.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// No signature is by a trusted key.
    #[error(
        "no signature is by a trusted key (claimed key ids: {})",
        list(key_ids)
    )]
    UnknownKey {
        /// The claimed key ids.
        key_ids: Vec<String>,
    },
    /// A signature claims a trusted key but does not verify, and none other does.
    #[error("signature claiming trusted key {key_id} does not verify")]
    BadSignature {
        /// The trusted key id claimed.
        key_id: String,
    },
    /// A signature verifies under a trusted key, but that key is revoked or outside its
    /// validity window at admission time, and without it the job has no valid signer or
    /// misses a role or approval.
    #[error("signature by key {name} ({key_id}) does not count: {why}")]
    KeyNotValid {
        /// The key's id.
        key_id: String,
        /// The key's name in the config.
        name: String,
        /// Why, e.g. `expired at 2026-01-02T03:04:05Z` or `revoked: laptop stolen`.
        why: String,
    },
    /// The signed bytes are not a protobuf `Job`.
    #[error("job is not a valid gantry.v1.Job: {detail}")]
    Malformed {
        /// prost's description.
        detail: String,
    },
    /// A field of the job is invalid.
    #[error("invalid job: {field} {problem}")]
    InvalidJob {
        /// The field, e.g. `release.instances`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The job is for another agent.
    #[error("job is for agent {found:?}, this is {expected:?}")]
    WrongAgent {
        /// This agent's id.
        expected: String,
        /// The job's agent id.
        found: String,
    },
    /// `not_before` is in the future (beyond the allowed clock skew).
    #[error("job is not valid before {not_before} (now {now})")]
    NotYetValid {
        /// The job's `not_before`.
        not_before: i64,
        /// The agent's time.
        now: i64,
    },
    /// `expires_at` has passed.
    #[error("job expired at {expires_at} (now {now})")]
    Expired {
        /// The job's `expires_at`.
        expires_at: i64,
        /// The agent's time.
        now: i64,
    },
    /// The validity window is longer than `limits.max_validity`.
    #[error("job is valid for {window_secs}s, more than the maximum of {max_secs}s")]
    WindowTooLong {
        /// `expires_at - not_before`.
        window_secs: i64,
        /// The limit.
        max_secs: u64,
    },
    /// The app is not in this agent's config.
    #[error("app {app:?} is not configured on this agent")]
    AppNotConfigured {
        /// The app named.
        app: String,
    },
    /// No signer holds a role allowed to do the action on the app.
    #[error(
        "{action} on app {app} needs a signature by a key with role {} (signers hold: {})",
        list_or(needed, "(no role: nobody may)"),
        list_or(signer_roles, "no roles")
    )]
    MissingRole {
        /// The action.
        action: Action,
        /// The app.
        app: String,
        /// Roles allowed to do it.
        needed: Vec<String>,
        /// Roles the valid signers hold.
        signer_roles: Vec<String>,
    },
    /// Too few approvals.
    #[error("job needs {needed} approval(s) by distinct approver keys, has {got}")]
    QuorumNotMet {
        /// Approvals required.
        needed: u32,
        /// Approvals present.
        got: u32,
    },
    /// The release version is not SemVer 2.0.
    #[error("version {version:?} is not SemVer: {detail}")]
    InvalidVersion {
        /// The version as given.
        version: String,
        /// The parser's description.
        detail: String,
    },
    /// A deploy would go to an older version.
    #[error("deploy of {requested} would downgrade from {current}; use a rollback")]
    Downgrade {
        /// The active version.
        current: semver::Version,
        /// The version in the job.
        requested: semver::Version,
    },
    /// A rollback names a release not on disk.
    #[error("rollback target {version} is not on disk")]
    RollbackTargetMissing {
        /// The version named.
        version: semver::Version,
    },
    /// The job id was admitted before with other bytes.
    #[error("job id {job_id} was already used for a different job")]
    Replayed {
        /// The job id.
        job_id: String,
    },
    /// Another job is running on the app.
    #[error("app {app} is busy with another job")]
    AppBusy {
        /// The app.
        app: String,
    },
    /// A rolling, blue-green or canary deploy to an app with no router: neither `listen`
    /// (the front door) nor `[apps.NAME.nginx]` is configured.
    #[error(
        "app {app} has no router (set listen or [apps.{app}.nginx] in the agent's config): a \
         {strategy} deploy needs one; use the hot strategy"
    )]
    StrategyNeedsRouter {
        /// The app.
        app: String,
        /// The strategy the job asked for.
        strategy: StrategyKind,
    },
    /// A promote or abort job, but no rollout is in progress on the app.
    #[error("{action} on app {app}: no rollout is in progress")]
    NoRolloutInProgress {
        /// The app.
        app: String,
        /// The action (promote or abort).
        action: Action,
    },
    /// The replay store could not record the job (the job is refused: fail closed).
    #[error("cannot record the job")]
    Store(#[source] ReplayError),
}

fn list(v: &[String]) -> String {
    list_or(v, "none")
}

fn list_or(v: &[String], empty: &str) -> String {
    if v.is_empty() {
        empty.to_owned()
    } else {
        v.join(", ")
    }
}

/// The admission pipeline over one policy and one replay store.
#[derive(Debug)]
pub struct Admission {
    policy: Arc<Policy>,
    limits: Limits,
    agent_id: String,
    store: Mutex<replay::ReplayStore>,
}

impl Admission {
    /// Opens the replay store in `jobs_dir` (creating it) and loads every record.
    ///
    /// # Errors
    ///
    /// [`ReplayError`] when the directory cannot be created or read, or a record is corrupt.
    pub fn new(
        policy: Arc<Policy>,
        limits: Limits,
        agent_id: String,
        jobs_dir: &Path,
    ) -> Result<Self, ReplayError> {
        let store = replay::ReplayStore::open(jobs_dir)?;
        Ok(Self {
            policy,
            limits,
            agent_id,
            store: Mutex::new(store),
        })
    }

    fn store(&self) -> MutexGuard<'_, replay::ReplayStore> {
        // The store's state is updated only after a successful write: a panic elsewhere while
        // holding the lock leaves it consistent.
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs the whole pipeline (see the module docs). `now_unix` is the agent's clock.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] carrying the [`AdmissionError`] and what was known of the job.
    // A rejection is made once per refused job and carries what its audit entry needs.
    #[allow(clippy::result_large_err)]
    pub fn admit(
        &self,
        job_bytes: &[u8],
        sigs: &[SignatureIn],
        now_unix: i64,
        apps: &dyn AppView,
    ) -> Result<Admitted, Rejection> {
        // Authority comes only from the signatures: the peer is the caller's to record.
        let digest = Sha256Hex::of(job_bytes);
        let mut rejection = Rejection {
            error: AdmissionError::NoSignatures,
            job_id: None,
            app: None,
            claimed_key_ids: sigs.iter().map(|s| s.key_id_hint.clone()).collect(),
            job_digest: digest.to_string(),
        };
        match self.run(job_bytes, &digest, sigs, now_unix, apps, &mut rejection) {
            Ok(admitted) => Ok(admitted),
            Err(error) => Err(Rejection { error, ..rejection }),
        }
    }

    fn run(
        &self,
        job_bytes: &[u8],
        digest: &Sha256Hex,
        sigs: &[SignatureIn],
        now: i64,
        apps: &dyn AppView,
        known: &mut Rejection,
    ) -> Result<Admitted, AdmissionError> {
        let max = self.limits.max_job_bytes;
        if job_bytes.len() > max {
            return Err(AdmissionError::TooLarge {
                size: job_bytes.len(),
                max,
            });
        }
        let verified = policy::verify_signers(&self.policy, job_bytes, sigs)?;
        // One time for every key-validity decision of this job.
        let (signers, not_valid) = policy::valid_at(&verified, now);
        if signers.is_empty() {
            return Err(policy::key_not_valid(&not_valid));
        }

        let wire = decode::decode_job(job_bytes)?;
        known.job_id = Some(wire.job_id.clone());
        known.app = Some(wire.app.clone());
        let spec = decode::job_spec(&wire)?;

        if spec.agent_id.is_empty() || spec.agent_id != self.agent_id {
            return Err(AdmissionError::WrongAgent {
                expected: self.agent_id.clone(),
                found: spec.agent_id.clone(),
            });
        }
        window::check_window(&spec, now, &self.limits)?;

        let app =
            self.policy
                .apps
                .get(&spec.app)
                .ok_or_else(|| AdmissionError::AppNotConfigured {
                    app: spec.app.to_string(),
                })?;
        policy::check_roles(app, spec.action, &signers).map_err(|e| {
            // A key that does not count is the better explanation of a missing role or approval.
            if not_valid.is_empty() {
                e
            } else {
                policy::key_not_valid(&not_valid)
            }
        })?;

        match spec.action {
            Action::Deploy => {
                if let (Some(current), Some(release)) =
                    (apps.current_version(&spec.app), &spec.release)
                    && release.version < current
                {
                    return Err(AdmissionError::Downgrade {
                        current,
                        requested: release.version.clone(),
                    });
                }
            }
            Action::Rollback => {
                if let Some(target) = &spec.target_version
                    && !apps.has_release(&spec.app, target)
                {
                    return Err(AdmissionError::RollbackTargetMissing {
                        version: target.clone(),
                    });
                }
            }
            Action::Restart | Action::Stop | Action::Promote | Action::Abort => {}
        }
        if let Some(release) = &spec.release
            && release.instances > app.max_instances
        {
            return Err(AdmissionError::InvalidJob {
                field: "release.instances".to_owned(),
                problem: format!(
                    "{} is more than app {}'s max_instances {}",
                    release.instances, app.name, app.max_instances
                ),
            });
        }
        if let Some(release) = &spec.release {
            check_strategy_fits(app, release)?;
        }

        let mut store = self.store();
        if let Some(record) = store.get(spec.id.as_str()) {
            return if record.digest == *digest {
                Ok(Admitted::Duplicate(record.clone()))
            } else {
                Err(AdmissionError::Replayed {
                    job_id: spec.id.to_string(),
                })
            };
        }
        let busy = apps.is_busy(&spec.app);
        match spec.action {
            // Promote and abort act on the rollout in progress: they need one.
            Action::Promote | Action::Abort if !busy => {
                return Err(AdmissionError::NoRolloutInProgress {
                    app: spec.app.to_string(),
                    action: spec.action,
                });
            }
            Action::Promote | Action::Abort => {}
            _ if busy => {
                return Err(AdmissionError::AppBusy {
                    app: spec.app.to_string(),
                });
            }
            _ => {}
        }
        store
            .insert(ReplayRecord {
                job_id: spec.id.clone(),
                digest: digest.clone(),
                app: spec.app.clone(),
                accepted_at_ms: now_ms(),
                outcome: None,
                reason: String::new(),
            })
            .map_err(AdmissionError::Store)?;
        drop(store);

        let mut signer_ids: Vec<_> = signers.iter().map(|k| k.key.key_id()).collect();
        signer_ids.sort();
        Ok(Admitted::New(VerifiedJob {
            spec,
            digest: digest.clone(),
            signers: signer_ids,
        }))
    }

    /// Records how an admitted job ended: `"succeeded"`, `"failed"`, `"rolled_back"` or
    /// `"interrupted"`.
    ///
    /// # Errors
    ///
    /// [`ReplayError::UnknownJob`], [`ReplayError::BadOutcome`] or a write failure.
    pub fn record_outcome(
        &self,
        job_id: &JobId,
        outcome: &str,
        reason: &str,
    ) -> Result<(), ReplayError> {
        self.store().set_outcome(job_id, outcome, reason)
    }

    /// The record of a job admitted before, if any.
    pub fn lookup(&self, job_id: &str) -> Option<ReplayRecord> {
        self.store().get(job_id).cloned()
    }

    /// Admitted jobs without an outcome (running, or interrupted by an agent stop), oldest
    /// first.
    pub fn unfinished(&self) -> Vec<ReplayRecord> {
        self.store().unfinished()
    }

    /// The policy admission enforces.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }
}

/// Rolling, blue-green and canary need a router. (Blue-green and canary also run a second
/// slot beside the first: `instances <= max_instances`, checked for every deploy, and the
/// config's rule that a routed app's port range holds `2 x max_instances` make both fit.)
fn check_strategy_fits(
    app: &crate::config::AppPolicy,
    release: &crate::job::ReleaseSpec,
) -> Result<(), AdmissionError> {
    match release.strategy {
        StrategyKind::Hot => return Ok(()),
        StrategyKind::Rolling | StrategyKind::BlueGreen | StrategyKind::Canary => {}
    }
    if !app.router.is_some() {
        return Err(AdmissionError::StrategyNeedsRouter {
            app: app.name.to_string(),
            strategy: release.strategy,
        });
    }
    Ok(())
}

/// The agent's clock in Unix seconds (0 before the epoch).
pub fn unix_now() -> i64 {
    now_ms() / 1000
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
