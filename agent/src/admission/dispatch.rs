//! Admission of a fleet dispatch: a signed plan plus a signed dispatch become the one job the
//! plan describes for this agent, or a [`Rejection`] that says why (docs/fleet.md).
//!
//! The pure checks are `gantry_policy::admission::fleet` (the plan as a deploy job of its
//! app, the dispatch's signer, digest, target, window, environment, ring and job id). Then,
//! under the [`PlanLedger`]'s lock and the job ledger's, what only this agent knows:
//!
//! 1. the epoch is not lower than the highest seen for the plan;
//! 2. the derived job id: admitted before with this plan's digest, the dispatch re-attaches
//!    to that job (its higher epoch recorded first), never a second run; with another
//!    plan's digest, it is refused as replayed;
//! 3. a deploy never downgrades; a rollback needs the plan's deploy to have run here, and
//!    returns to the release that deploy replaced (it stops the app when it replaced none);
//! 4. the app is not busy;
//! 5. the plan record (epoch, deploy job, replaced release), then the job id, durably.

use std::sync::Arc;

use gantry_policy::admission::fleet::{self, Here, PassedDispatch};
use gantry_proto::v1::DispatchAction;

use super::{Admission, AdmissionError, AppView, Rejection, SignatureIn};
use crate::config::Placement;
use crate::job::{Action, Sha256Hex, VerifiedJob};
use crate::ledger::plans::{PlanLedger, PlanRecord};
use crate::ledger::{JobRecord, Standing};

/// What the agent needs to admit dispatches: where it sits in the fleet and its plan records.
#[derive(Debug, Clone)]
pub struct FleetSeat {
    /// This agent's environment and labels, from its own config.
    pub placement: Placement,
    /// The plan records (epochs, deploys, replaced releases).
    pub plans: Arc<PlanLedger>,
}

/// A dispatch request as received: both envelopes' exact bytes and signatures.
#[derive(Debug, Clone, Copy)]
pub struct DispatchIn<'a> {
    /// `SignedPlan.plan`.
    pub plan: &'a [u8],
    /// `SignedPlan.signatures`.
    pub plan_sigs: &'a [SignatureIn],
    /// `SignedDispatch.dispatch`.
    pub dispatch: &'a [u8],
    /// `SignedDispatch.signatures`.
    pub dispatch_sigs: &'a [SignatureIn],
}

impl DispatchIn<'_> {
    /// Bytes received, both documents together.
    pub fn len(&self) -> usize {
        self.plan.len() + self.dispatch.len()
    }

    /// Whether both documents are empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The key ids every signature claims, the plan's first.
    pub fn claimed(&self) -> Vec<String> {
        self.plan_sigs
            .iter()
            .chain(self.dispatch_sigs)
            .map(|s| s.key_id_hint.clone())
            .collect()
    }
}

/// What a dispatched job's audit entries say about the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatched {
    /// The plan's id.
    pub plan_id: String,
    /// Lowercase hex SHA-256 of the plan bytes.
    pub plan_digest: Sha256Hex,
    /// The ring index.
    pub ring: u32,
    /// The ring's name.
    pub ring_name: String,
    /// The dispatch's epoch.
    pub epoch: u64,
    /// Deploy or rollback.
    pub action: DispatchAction,
    /// Key ids of the plan's valid signers, sorted.
    pub plan_signers: Vec<String>,
    /// Key ids of the dispatch's valid signers, sorted.
    pub dispatch_signers: Vec<String>,
    /// For a deploy: the version active when it was admitted, which a rollback of the plan
    /// returns to (`None`: nothing was, or this is not a new deploy).
    pub replaced: Option<String>,
}

/// A dispatch that passed admission.
// One value per dispatch: its size does not matter, and the variants are the interface.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmittedDispatch {
    /// A new job, now recorded: run it.
    New(VerifiedJob, Dispatched),
    /// The plan's job here was admitted before: follow it, run nothing.
    Duplicate(JobRecord, Dispatched),
}

impl Admission {
    /// The same admission, also admitting fleet dispatches from `seat`.
    #[must_use]
    pub fn with_fleet(mut self, seat: FleetSeat) -> Self {
        self.fleet = Some(seat);
        self
    }

    /// Runs the dispatch pipeline (see the module docs). `now_unix` is the agent's clock.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] carrying the [`AdmissionError`] and what was known of the job; its
    /// `job_digest` is the plan's digest.
    #[allow(clippy::result_large_err)] // as `admit`
    pub fn admit_dispatch(
        &self,
        input: DispatchIn<'_>,
        now_unix: i64,
        apps: &dyn AppView,
    ) -> Result<AdmittedDispatch, Rejection> {
        let digest = Sha256Hex::of(input.plan);
        let mut known = Rejection {
            error: AdmissionError::NoSignatures,
            job_id: None,
            app: None,
            claimed_key_ids: input.claimed(),
            job_digest: digest.to_string(),
        };
        match self.run_dispatch(input, &digest, now_unix, apps, &mut known) {
            Ok(admitted) => Ok(admitted),
            Err(error) => Err(Rejection { error, ..known }),
        }
    }

    fn run_dispatch(
        &self,
        input: DispatchIn<'_>,
        digest: &Sha256Hex,
        now: i64,
        apps: &dyn AppView,
        known: &mut Rejection,
    ) -> Result<AdmittedDispatch, AdmissionError> {
        let seat = self.fleet.as_ref().ok_or_else(|| {
            AdmissionError::Store("this agent was started without a plan store".into())
        })?;
        let plan =
            fleet::assess_plan(&self.policy, &self.limits, input.plan, input.plan_sigs, now)?;
        known.app = Some(plan.plan.app.clone());
        let here = Here {
            agent_id: &self.agent_id,
            placement: &seat.placement,
        };
        let passed = fleet::assess_dispatch(
            &self.policy,
            &self.limits,
            here,
            &plan,
            input.dispatch,
            input.dispatch_sigs,
            now,
        )?;
        known.job_id = Some(passed.spec.id.to_string());
        let mut signers: Vec<_> = plan.signers.iter().map(|k| k.key.key_id()).collect();
        signers.sort();
        let mut facts = facts(&passed, digest);
        let PassedDispatch { mut spec, .. } = passed;

        let mut plans = seat.plans.lock();
        let prior = plans.get(&facts.plan_id).cloned();
        if let Some(p) = &prior {
            if facts.epoch < p.highest_epoch {
                return Err(AdmissionError::StaleEpoch {
                    plan_id: facts.plan_id.clone(),
                    epoch: facts.epoch,
                    highest: p.highest_epoch,
                });
            }
            if p.plan_digest != digest.as_str() {
                // Another plan under an id this agent has run: its job ids are taken.
                return Err(AdmissionError::Replayed {
                    job_id: spec.id.to_string(),
                });
            }
        }
        let store = |e| AdmissionError::Store(Box::new(e));
        let mut record = prior.clone().unwrap_or_else(|| PlanRecord {
            plan_id: facts.plan_id.clone(),
            plan_digest: digest.to_string(),
            highest_epoch: facts.epoch,
            deploy_job_id: None,
            replaced: None,
        });
        record.highest_epoch = record.highest_epoch.max(facts.epoch);

        let mut ledger = self.ledger.lock();
        if let Some(job) = ledger.get(spec.id.as_str()) {
            if job.digest != *digest {
                return Err(AdmissionError::Replayed {
                    job_id: spec.id.to_string(),
                });
            }
            let job = job.clone();
            drop(ledger);
            // The higher epoch is the fence from now on, even though nothing new runs.
            plans.put(record).map_err(store)?;
            return Ok(AdmittedDispatch::Duplicate(job, facts));
        }
        match facts.action {
            DispatchAction::Rollback => {
                let ran = prior
                    .as_ref()
                    .and_then(|p| p.deploy_job_id.as_deref())
                    .and_then(|id| ledger.get(id))
                    .is_some_and(|j| !matches!(j.standing, Standing::Refused { .. }));
                if !ran {
                    return Err(AdmissionError::RollbackWithoutDeploy {
                        plan_id: facts.plan_id.clone(),
                    });
                }
                match prior.as_ref().and_then(|p| p.replaced.as_deref()) {
                    Some(v) => {
                        let target = semver::Version::parse(v).map_err(|e| {
                            AdmissionError::InvalidVersion {
                                version: v.to_owned(),
                                detail: e.to_string(),
                            }
                        })?;
                        if !apps.has_release(&spec.app, &target) {
                            return Err(AdmissionError::RollbackTargetMissing { version: target });
                        }
                        self.check_rollback_target(&target)?;
                        spec.target_version = Some(target);
                    }
                    // The plan's deploy was the app's first release here: before it, nothing
                    // ran, so returning to that is stopping the app.
                    None => spec.action = Action::Stop,
                }
            }
            // assess_dispatch lets only deploy and rollback through.
            DispatchAction::Deploy | DispatchAction::Unspecified => {
                let current = apps.current_version(&spec.app);
                if let (Some(current), Some(release)) = (&current, &spec.release)
                    && release.version < *current
                {
                    return Err(AdmissionError::Downgrade {
                        current: current.clone(),
                        requested: release.version.clone(),
                    });
                }
                record.deploy_job_id = Some(spec.id.to_string());
                record.replaced = current.map(|v| v.to_string());
                facts.replaced.clone_from(&record.replaced);
            }
        }
        if let Some(holder) = apps.busy_with(&spec.app) {
            return Err(AdmissionError::AppBusy {
                app: spec.app.to_string(),
                job_id: holder.to_string(),
            });
        }
        plans.put(record).map_err(store)?;
        ledger.admit(&spec, digest).map_err(store)?;
        drop(ledger);
        drop(plans);
        Ok(AdmittedDispatch::New(
            VerifiedJob {
                spec,
                digest: digest.clone(),
                signers,
            },
            facts,
        ))
    }
}

fn facts(passed: &PassedDispatch, digest: &Sha256Hex) -> Dispatched {
    Dispatched {
        plan_id: passed.plan_id.clone(),
        plan_digest: digest.clone(),
        ring: passed.ring,
        ring_name: passed.ring_name.clone(),
        epoch: passed.epoch,
        action: passed.action,
        plan_signers: passed.plan_signers.clone(),
        dispatch_signers: passed.dispatch_signers.clone(),
        replaced: None,
    }
}
