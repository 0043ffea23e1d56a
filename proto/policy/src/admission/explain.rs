//! The policy's verdict on a job, requirement by requirement: the agent's admission and
//! `gantry job show --policy` both run [`assess`], so what is explained is what is enforced.
//!
//! [`assess`] makes every check that needs only the policy (size, signatures, key validity,
//! decoding, target, window, app, role, quorum, instance count, router, and for a deploy the
//! environment's pre-release rule and required gates), in admission order.
//! The agent stops at the first refusal ([`Mode::FirstRefusal`]: a forged job costs no more
//! than its signature check); [`explain`] goes on ([`Mode::Every`]) and lists each requirement
//! as met or missing. Either way the refusal is the first missing requirement's error, so
//! "missing" always means "the agent refuses". Checks that need the agent's state (downgrade,
//! rollback target, replay, busy app) are made by the agent after this.

use std::collections::BTreeSet;

use super::{AdmissionError, SignatureIn, decode, gates, policy, window};
use crate::config::{AppPolicy, Limits, Policy, TrustedKey};
use crate::job::{Action, JobSpec, ReleaseSpec, StrategyKind};

/// One requirement of the policy and whether the job meets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Short name: `size`, `signatures`, `other signatures`, `key validity`, `job`, `target`,
    /// `window`, `app`, `role`, `approvals`, `instances`, `strategy`, `environment`, `gates`.
    pub name: &'static str,
    /// Whether it is met. Every missing requirement makes the agent refuse the job.
    pub met: bool,
    /// What was found, or what is missing (admission's own message when it would reject).
    pub detail: String,
}

/// How far [`assess`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Stop at the first refusal (the agent).
    FirstRefusal,
    /// Judge every requirement that can be judged (`gantry job show --policy`).
    Every,
}

/// What the policy lets through: the job and who signed it.
#[derive(Debug, Clone)]
pub struct Passed<'p> {
    /// The decoded, validated job.
    pub spec: JobSpec,
    /// Its app's policy.
    pub app: &'p AppPolicy,
    /// The trusted keys whose signatures count at the time of the assessment.
    pub signers: Vec<&'p TrustedKey>,
}

/// The outcome of [`assess`].
#[derive(Debug)]
pub struct Assessment<'p> {
    /// Every requirement judged, in admission order.
    pub requirements: Vec<Requirement>,
    /// The job id, when the bytes decoded that far (not validated).
    pub job_id: Option<String>,
    /// The app name, when the bytes decoded that far (not validated).
    pub app: Option<String>,
    /// The first missing requirement's error, or what passed.
    pub verdict: Result<Passed<'p>, AdmissionError>,
}

/// Collects requirements; remembers the first refusal.
struct Judge {
    mode: Mode,
    requirements: Vec<Requirement>,
    refusal: Option<AdmissionError>,
    job_id: Option<String>,
    app: Option<String>,
}

/// Returned by [`Judge::fail`] when the assessment stops there.
struct Stop;

impl Judge {
    fn met(&mut self, name: &'static str, detail: impl Into<String>) {
        self.requirements.push(Requirement {
            name,
            met: true,
            detail: detail.into(),
        });
    }

    /// Records a missing requirement whose detail is the error's own message.
    fn refuse(&mut self, name: &'static str, error: AdmissionError) -> Result<(), Stop> {
        let detail = crate::error_chain(&error);
        self.fail(name, detail, error)
    }

    /// Records a missing requirement; the first one's `error` is the refusal.
    fn fail(
        &mut self,
        name: &'static str,
        detail: impl Into<String>,
        error: AdmissionError,
    ) -> Result<(), Stop> {
        self.requirements.push(Requirement {
            name,
            met: false,
            detail: detail.into(),
        });
        self.refusal.get_or_insert(error);
        match self.mode {
            Mode::FirstRefusal => Err(Stop),
            Mode::Every => Ok(()),
        }
    }
}

/// Judges `job_bytes` and `sigs` against `policy` and `limits` for agent `agent_id` at `now`
/// (Unix seconds); see the module docs.
pub fn assess<'p>(
    policy: &'p Policy,
    limits: &Limits,
    agent_id: &str,
    job_bytes: &[u8],
    sigs: &[SignatureIn],
    now: i64,
    mode: Mode,
) -> Assessment<'p> {
    let mut judge = Judge {
        mode,
        requirements: Vec::new(),
        refusal: None,
        job_id: None,
        app: None,
    };
    let passed = judge_all(&mut judge, policy, limits, agent_id, job_bytes, sigs, now);
    let verdict = match (judge.refusal, passed) {
        (Some(e), _) => Err(e),
        (None, Ok(Some(p))) => Ok(p),
        // Every path that yields no job records a refusal first; an empty signature list
        // is the closest error should that ever change.
        (None, Ok(None) | Err(Stop)) => Err(AdmissionError::NoSignatures),
    };
    Assessment {
        requirements: judge.requirements,
        job_id: judge.job_id,
        app: judge.app,
        verdict,
    }
}

/// [`assess`] in [`Mode::Every`]: every requirement that can be judged, met or missing.
pub fn explain(
    policy: &Policy,
    limits: &Limits,
    agent_id: &str,
    job_bytes: &[u8],
    sigs: &[SignatureIn],
    now: i64,
) -> Vec<Requirement> {
    assess(policy, limits, agent_id, job_bytes, sigs, now, Mode::Every).requirements
}

fn key_list(keys: &[&TrustedKey]) -> String {
    keys.iter()
        .map(|k| {
            let roles: Vec<&str> = k.roles.iter().map(String::as_str).collect();
            format!("{} ({})", k.name, roles.join(", "))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The checks, in admission order. `Ok(None)`: a check that later ones depend on failed.
fn judge_all<'p>(
    j: &mut Judge,
    policy: &'p Policy,
    limits: &Limits,
    agent_id: &str,
    job_bytes: &[u8],
    sigs: &[SignatureIn],
    now: i64,
) -> Result<Option<Passed<'p>>, Stop> {
    if job_bytes.len() > limits.max_job_bytes {
        j.refuse(
            "size",
            AdmissionError::TooLarge {
                size: job_bytes.len(),
                max: limits.max_job_bytes,
            },
        )?;
    }

    let verified = match policy::signers(policy, job_bytes, sigs) {
        Ok(s) => {
            j.met(
                "signatures",
                format!(
                    "{} valid signature(s) by trusted keys: {}",
                    s.keys.len(),
                    key_list(&s.keys)
                ),
            );
            if s.ignored > 0 {
                // Admission counts only trusted keys' valid signatures; the others are
                // ignored, so they are no reason to refuse.
                j.met(
                    "other signatures",
                    format!(
                        "{} signature(s) by no trusted key or that do not verify: ignored",
                        s.ignored
                    ),
                );
            }
            s.keys
        }
        Err(e) => {
            j.refuse("signatures", e)?;
            Vec::new()
        }
    };
    // One time for every key-validity decision of this job.
    let (signers, not_valid) = policy::valid_at(&verified, now);
    if !verified.is_empty() {
        if signers.is_empty() {
            j.refuse("key validity", policy::key_not_valid(&not_valid))?;
        } else if not_valid.is_empty() {
            j.met("key validity", "every signing key is valid now");
        }
        // Otherwise some keys count and some do not: whether that matters is known once the
        // role and quorum are (below).
    }

    let wire = match decode::decode_job(job_bytes) {
        Ok(w) => w,
        Err(e) => {
            j.refuse("job", e)?;
            return Ok(None);
        }
    };
    j.job_id = Some(wire.job_id.clone());
    j.app = Some(wire.app.clone());
    let spec = match decode::job_spec(&wire) {
        Ok(s) => s,
        Err(e) => {
            j.refuse("job", e)?;
            return Ok(None);
        }
    };

    if spec.agent_id.is_empty() || spec.agent_id != agent_id {
        j.refuse(
            "target",
            AdmissionError::WrongAgent {
                expected: agent_id.to_owned(),
                found: spec.agent_id.clone(),
            },
        )?;
    } else {
        j.met("target", format!("agent {agent_id}"));
    }
    match window::check_window(&spec, now, limits) {
        Ok(()) => j.met(
            "window",
            format!(
                "valid now, {}s long (maximum {}s)",
                spec.expires_at.saturating_sub(spec.not_before),
                limits.max_validity.as_secs()
            ),
        ),
        Err(e) => j.refuse("window", e)?,
    }
    let Some(app) = policy.apps.get(&spec.app) else {
        j.refuse(
            "app",
            AdmissionError::AppNotConfigured {
                app: spec.app.to_string(),
            },
        )?;
        return Ok(None);
    };
    j.met("app", format!("{} is configured", app.name));

    let role = policy::check_role(app, spec.action, &signers);
    let quorum = policy::check_quorum(app, spec.action, &signers);
    if !signers.is_empty() && !not_valid.is_empty() {
        // A key that does not count is the better explanation of a missing role or approval;
        // when nothing is missing, it is merely not needed.
        let matters = role.is_err() || quorum.is_err();
        for (k, why) in &not_valid {
            let detail = format!("key {} ({}) does not count: {why}", k.name, k.key_id);
            if matters {
                j.fail("key validity", detail, policy::key_not_valid(&not_valid))?;
            } else {
                j.met(
                    "key validity",
                    format!("{detail}; the job does not need it"),
                );
            }
        }
    }
    match role {
        Ok(()) => {
            let needed = app.roles_for(spec.action);
            let holders: BTreeSet<&str> = signers
                .iter()
                .filter(|k| !k.roles.is_disjoint(&needed))
                .map(|k| k.name.as_str())
                .collect();
            j.met(
                "role",
                format!(
                    "{} on {} by {}",
                    spec.action,
                    app.name,
                    holders.into_iter().collect::<Vec<_>>().join(", ")
                ),
            );
        }
        Err(e) => j.refuse("role", e)?,
    }
    let got = policy::approvals(app, spec.action, &signers);
    let rule = if app.deployer_may_approve {
        "distinct approver keys, the deployer's own may count"
    } else {
        "distinct approver keys besides the deployer's"
    };
    let detail = format!("{got} of {} needed ({rule})", app.approvals);
    match quorum {
        Ok(_) => j.met("approvals", detail),
        Err(e) => j.fail("approvals", detail, e)?,
    }

    if let Some(release) = &spec.release {
        judge_release(j, app, release)?;
        if spec.action == Action::Deploy {
            judge_environment(j, policy, release, now)?;
        }
    }
    Ok(Some(Passed { spec, app, signers }))
}

/// Checks that `release` fits `app` as a job's release must: the instance count and the
/// router its strategy needs. The same checks as [`assess`] makes, for a fleet plan's release.
///
/// # Errors
///
/// [`AdmissionError::InvalidJob`] for too many instances,
/// [`AdmissionError::StrategyNeedsRouter`] for a strategy the app cannot route.
pub fn check_release(app: &AppPolicy, release: &ReleaseSpec) -> Result<(), AdmissionError> {
    let mut judge = Judge {
        mode: Mode::FirstRefusal,
        requirements: Vec::new(),
        refusal: None,
        job_id: None,
        app: None,
    };
    // Stopping at the first refusal is the only way it returns early; the refusal says why.
    let _stopped = judge_release(&mut judge, app, release);
    judge.refusal.map_or(Ok(()), Err)
}

/// The instance count fits `max_instances`; rolling, blue-green and canary have a router.
/// (Blue-green and canary also run a second slot beside the first: `instances <=
/// max_instances` and the config's rule that a routed app's port range holds
/// `2 x max_instances` make both fit.)
fn judge_release(j: &mut Judge, app: &AppPolicy, release: &ReleaseSpec) -> Result<(), Stop> {
    if release.instances > app.max_instances {
        j.refuse(
            "instances",
            AdmissionError::InvalidJob {
                field: "release.instances".to_owned(),
                problem: format!(
                    "{} is more than app {}'s max_instances {}",
                    release.instances, app.name, app.max_instances
                ),
            },
        )?;
    } else {
        j.met(
            "instances",
            format!(
                "{} (app {} allows {})",
                release.instances, app.name, app.max_instances
            ),
        );
    }
    match release.strategy {
        StrategyKind::Hot => j.met("strategy", "hot (needs no router)"),
        StrategyKind::Rolling | StrategyKind::BlueGreen | StrategyKind::Canary
            if app.router.is_some() =>
        {
            j.met(
                "strategy",
                format!(
                    "{} through the app's {}",
                    release.strategy,
                    app.router.kind()
                ),
            );
        }
        StrategyKind::Rolling | StrategyKind::BlueGreen | StrategyKind::Canary => {
            j.refuse(
                "strategy",
                AdmissionError::StrategyNeedsRouter {
                    app: app.name.to_string(),
                    strategy: release.strategy,
                },
            )?;
        }
    }
    Ok(())
}

/// A deploy's version against the environment's pre-release rule, and its evidence against
/// the gates the environment requires.
fn judge_environment(
    j: &mut Judge,
    policy: &Policy,
    release: &ReleaseSpec,
    now: i64,
) -> Result<(), Stop> {
    let envs = &policy.environments;
    let rules = envs.in_force();
    match gates::check_prerelease(envs, &rules, &release.version) {
        // Nothing to say about a release in an agent with no environment.
        Ok(()) if release.version.pre.is_empty() && envs.current.is_none() => {}
        Ok(()) if release.version.pre.is_empty() => j.met(
            "environment",
            format!("{} in {}", release.version, envs.current_name()),
        ),
        Ok(()) => j.met(
            "environment",
            format!(
                "pre-release {} allowed in {}",
                release.version,
                envs.current_name()
            ),
        ),
        Err(e) => j.refuse("environment", e)?,
    }
    if rules.require_gates.is_empty() {
        return Ok(());
    }
    match gates::check_gates(envs, &rules, &policy.keys, release, now) {
        Ok(met) => j.met(
            "gates",
            met.iter()
                .map(|g| format!("{} passed (signed by {})", g.gate, g.signer))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        Err(e) => j.refuse("gates", e)?,
    }
    Ok(())
}
