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
//! 5. the app is configured, the signers hold an allowed role, approvals reach the quorum,
//!    instance counts fit, the strategy has its router;
//! 6. action checks: deploys never downgrade, rollback targets exist;
//! 7. replay (the [`Ledger`]): identical bytes of a known job are a duplicate, other bytes
//!    under a known id are refused; then the app must not be busy; then the job id is recorded
//!    durably.
//!
//! Steps 1 to 5 are [`explain::assess`], the code `gantry job show --policy` runs too, so a
//! job it calls admissible passes them here and one it calls missing something is refused
//! for that. Step 7 runs under one lock, so two connections submitting the same job at once cannot both
//! be admitted.
//!
//! The TLS client's identity is checked by the server (CA chain and fingerprint pin) before a
//! job gets here; it grants nothing by itself and is only reported.

pub mod dispatch;
#[cfg(test)]
pub(crate) mod tests;

use std::path::Path;
use std::sync::Arc;

use crate::config::{Limits, Policy};
use crate::job::{Action, Sha256Hex, VerifiedJob};
use crate::ledger::{JobRecord, Ledger, LedgerError};

// The pure checks live in gantry-policy, shared with the controller's `job show --policy`;
// re-exported so that `admission::decode` and friends keep their paths.
pub use gantry_policy::admission::{
    AdmissionError, SignatureIn, WindowError, decode, explain, fleet, policy, window,
};
// Defined on the app floor, which the executor implements it from; named here for callers.
pub use crate::app::AppView;

/// A job that passed admission.
// One value per submitted job: its size does not matter, and the variants are the interface.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admitted {
    /// A new job, now recorded: run it.
    New(VerifiedJob),
    /// The identical bytes of a job admitted before: report or follow that job, run nothing.
    Duplicate(JobRecord),
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

/// The admission pipeline over one policy and one job ledger.
#[derive(Debug)]
pub struct Admission {
    policy: Arc<Policy>,
    limits: Limits,
    agent_id: String,
    ledger: Arc<Ledger>,
    /// Set by [`Admission::with_fleet`]; without it every dispatch is refused.
    fleet: Option<dispatch::FleetSeat>,
}

impl Admission {
    /// Opens the ledger in `jobs_dir` (creating it), loads every record, and admits over it.
    ///
    /// # Errors
    ///
    /// [`LedgerError`] when the directory cannot be created or read, or a record is corrupt.
    pub fn new(
        policy: Arc<Policy>,
        limits: Limits,
        agent_id: String,
        jobs_dir: &Path,
    ) -> Result<Self, LedgerError> {
        let ledger = Arc::new(Ledger::open(jobs_dir)?);
        Ok(Self::over(policy, limits, agent_id, ledger))
    }

    /// Admits over a ledger opened by the caller (the daemon shares it with the executor).
    pub fn over(
        policy: Arc<Policy>,
        limits: Limits,
        agent_id: String,
        ledger: Arc<Ledger>,
    ) -> Self {
        Self {
            policy,
            limits,
            agent_id,
            ledger,
            fleet: None,
        }
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
        // The policy's checks, the very ones `gantry job show --policy` explains.
        let assessment = explain::assess(
            &self.policy,
            &self.limits,
            &self.agent_id,
            job_bytes,
            sigs,
            now,
            explain::Mode::FirstRefusal,
        );
        known.job_id = assessment.job_id;
        known.app = assessment.app;
        let explain::Passed { spec, signers, .. } = assessment.verdict?;

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
                let target = spec
                    .target_version
                    .clone()
                    .or_else(|| apps.previous_version(&spec.app));
                if let Some(target) = target {
                    self.check_rollback_target(&target)?;
                }
            }
            Action::Restart | Action::Stop | Action::Promote | Action::Abort => {}
        }
        let mut ledger = self.ledger.lock();
        if let Some(record) = ledger.get(spec.id.as_str()) {
            return if record.digest == *digest {
                Ok(Admitted::Duplicate(record.clone()))
            } else {
                Err(AdmissionError::Replayed {
                    job_id: spec.id.to_string(),
                })
            };
        }
        match (spec.action, apps.busy_with(&spec.app)) {
            // Promote and abort act on the rollout in progress: they need one.
            (Action::Promote | Action::Abort, None) => {
                return Err(AdmissionError::NoRolloutInProgress {
                    app: spec.app.to_string(),
                    action: spec.action,
                });
            }
            (Action::Promote | Action::Abort, Some(_)) => {}
            (Action::Deploy | Action::Rollback | Action::Restart | Action::Stop, Some(holder)) => {
                return Err(AdmissionError::AppBusy {
                    app: spec.app.to_string(),
                    job_id: holder.to_string(),
                });
            }
            (Action::Deploy | Action::Rollback | Action::Restart | Action::Stop, None) => {}
        }
        ledger
            .admit(&spec, digest)
            .map_err(|e| AdmissionError::Store(Box::new(e)))?;
        drop(ledger);

        let mut signer_ids: Vec<_> = signers.iter().map(|k| k.key.key_id()).collect();
        signer_ids.sort();
        Ok(Admitted::New(VerifiedJob {
            spec,
            digest: digest.clone(),
            signers: signer_ids,
        }))
    }

    /// The ledger admission records admitted jobs in.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// A rollback returns to a release deployed earlier, perhaps while the environment allowed
    /// pre-releases: the environment's rule in force now applies to it as to a deploy.
    fn check_rollback_target(&self, target: &semver::Version) -> Result<(), AdmissionError> {
        let envs = &self.policy.environments;
        gantry_policy::admission::gates::check_prerelease(envs, &envs.in_force(), target)
    }

    /// The policy admission enforces.
    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }
}

pub use crate::clock::unix_now;
