//! The pure checks of a fleet dispatch: a signed plan and a signed dispatch in, the job this
//! agent may run out (DESIGN "Fleet", docs/fleet.md).
//!
//! [`assess_plan`] judges the plan as a deploy job of its app would be judged: signatures over
//! the exact plan bytes under the plan's payload type ([`policy::signers_of`]), key validity,
//! a signer with a role allowed to deploy, and the app's quorum of approvals — the very
//! functions job admission calls. [`assess_dispatch`] then judges the dispatch: signed by a key
//! whose role may dispatch plans of the app, naming this plan's digest, this agent, a ring
//! whose selector this agent matches by its own config, the job id derived from plan, agent
//! and action, and a short, current window. Whatever needs the agent's disk (the epoch seen,
//! whether the plan ran here) is the agent's to check after these.

use gantry_proto::fleet::{self, verify_dispatch, verify_plan};
use gantry_proto::v1::{self, DispatchAction};
use prost::Message;

use super::explain::check_release;
use super::window::check_times;
use super::{AdmissionError, SignatureIn, decode, gates, policy};
use crate::config::{AppPolicy, Limits, Placement, Policy, TrustedKey};
use crate::job::{Action, AppName, JobSpec, ReleaseSpec, Sha256Hex};

/// Largest dispatch admission reads: a handful of short fields.
pub const MAX_DISPATCH_BYTES: usize = 4096;

/// Most rings a plan may have.
pub const MAX_RINGS: usize = 64;

/// A plan that meets the policy: what a dispatch of it may run.
#[derive(Debug, Clone)]
pub struct PassedPlan<'p> {
    /// The decoded plan.
    pub plan: v1::Plan,
    /// Lowercase hex SHA-256 of the plan bytes.
    pub digest: Sha256Hex,
    /// Its app's policy.
    pub app: &'p AppPolicy,
    /// Its release, validated as a deploy job's.
    pub release: ReleaseSpec,
    /// The trusted keys whose signatures on the plan count now.
    pub signers: Vec<&'p TrustedKey>,
    /// The gates this agent's environment requires, each met by the release's evidence.
    pub gates: Vec<gates::GateEvidence>,
}

/// A dispatch that passed every pure check, with the job it runs.
#[derive(Debug, Clone)]
pub struct PassedDispatch {
    /// The job this dispatch runs here: the derived id, this agent, the plan's app, deploy or
    /// rollback, the dispatch's window; the plan's release for a deploy.
    pub spec: JobSpec,
    /// The plan's id.
    pub plan_id: String,
    /// The ring index dispatched.
    pub ring: u32,
    /// That ring's name.
    pub ring_name: String,
    /// The service's lease epoch.
    pub epoch: u64,
    /// Deploy or rollback.
    pub action: DispatchAction,
    /// Key ids of the plan's valid signers, sorted.
    pub plan_signers: Vec<String>,
    /// Key ids of the dispatch's valid signers, sorted.
    pub dispatch_signers: Vec<String>,
}

/// The lowercase name of a dispatch action (`deploy`, `rollback`, `unspecified`).
pub fn action_name(a: DispatchAction) -> &'static str {
    match a {
        DispatchAction::Unspecified => "unspecified",
        DispatchAction::Deploy => "deploy",
        DispatchAction::Rollback => "rollback",
    }
}

/// Whether an agent with id `agent_id` and `placement` is in a ring with `selector`: its id is
/// listed, or the selector has labels and the agent has every one of them with exactly that
/// value. An empty selector matches no agent.
pub fn selects(selector: &v1::Selector, agent_id: &str, placement: &Placement) -> bool {
    selector.agent_ids.iter().any(|id| id == agent_id)
        || (!selector.labels.is_empty()
            && selector
                .labels
                .iter()
                .all(|(k, v)| placement.labels.get(k) == Some(v)))
}

fn invalid_plan(detail: impl Into<String>) -> AdmissionError {
    AdmissionError::InvalidPlan {
        detail: detail.into(),
    }
}

fn sorted_ids(keys: &[&TrustedKey]) -> Vec<String> {
    let mut ids: Vec<String> = keys.iter().map(|k| k.key_id.to_string()).collect();
    ids.sort();
    ids
}

/// The job a plan's run on this agent is, before its id and window are known: the plan's
/// release validated with the job decoder, so a plan's release obeys every rule a job's does.
fn plan_job(plan: &v1::Plan, job_id: &str, agent_id: &str, window: (i64, i64)) -> v1::Job {
    v1::Job {
        job_id: job_id.to_owned(),
        agent_id: agent_id.to_owned(),
        app: plan.app.clone(),
        action: v1::Action::Deploy.into(),
        issued_at: window.0,
        not_before: window.0,
        expires_at: window.1,
        release: plan.release.clone(),
        reason: plan.reason.clone(),
        restore_flags: false,
    }
}

/// Judges the signed plan against `policy` at `now` (Unix seconds), as a deploy job of its app.
///
/// # Errors
///
/// [`AdmissionError::DocumentTooLarge`] (over `limits.max_job_bytes`),
/// [`AdmissionError::PlanSignature`], [`AdmissionError::InvalidPlan`],
/// [`AdmissionError::PlanWindow`] (`limits.max_plan_validity`),
/// [`AdmissionError::AppNotConfigured`], [`AdmissionError::PlanRole`],
/// [`AdmissionError::PlanQuorum`], the release's own refusal (instances, router), or the
/// environment's ([`AdmissionError::PrereleaseRefused`], a gate's refusal).
pub fn assess_plan<'p>(
    policy: &'p Policy,
    limits: &Limits,
    plan_bytes: &[u8],
    sigs: &[SignatureIn],
    now: i64,
) -> Result<PassedPlan<'p>, AdmissionError> {
    if plan_bytes.len() > limits.max_job_bytes {
        return Err(AdmissionError::DocumentTooLarge {
            document: "plan",
            size: plan_bytes.len(),
            max: limits.max_job_bytes,
        });
    }
    let verified = policy::signers_of(policy, verify_plan, plan_bytes, sigs)
        .map_err(|e| AdmissionError::PlanSignature(Box::new(e)))?
        .keys;
    let (signers, not_valid) = policy::valid_at(&verified, now);
    if signers.is_empty() {
        return Err(AdmissionError::PlanSignature(Box::new(
            policy::key_not_valid(&not_valid),
        )));
    }
    let plan = v1::Plan::decode(plan_bytes).map_err(|e| invalid_plan(e.to_string()))?;
    if plan.plan_id.is_empty() || plan.plan_id.len() > 128 || plan.plan_id.contains('\0') {
        return Err(invalid_plan("plan_id must be 1 to 128 bytes without NUL"));
    }
    if plan.rings.is_empty() || plan.rings.len() > MAX_RINGS {
        return Err(invalid_plan(format!(
            "a plan has 1 to {MAX_RINGS} rings, this one {}",
            plan.rings.len()
        )));
    }
    if plan.expires_at < plan.not_before {
        return Err(invalid_plan(format!(
            "expires_at {} is before not_before {}",
            plan.expires_at, plan.not_before
        )));
    }
    check_times(
        plan.not_before,
        plan.expires_at,
        now,
        limits.clock_skew,
        limits.max_plan_validity,
    )
    .map_err(AdmissionError::PlanWindow)?;
    let app_name = AppName::new(&plan.app).map_err(|e| invalid_plan(format!("app: {e}")))?;
    let Some(app) = policy.apps.get(&app_name) else {
        return Err(AdmissionError::AppNotConfigured {
            app: app_name.to_string(),
        });
    };
    // A key that does not count explains a missing role or approval better than the numbers.
    let explain = |e: AdmissionError| {
        if not_valid.is_empty() {
            e
        } else {
            AdmissionError::PlanSignature(Box::new(policy::key_not_valid(&not_valid)))
        }
    };
    policy::check_role(app, Action::Deploy, &signers)
        .map_err(|e| explain(AdmissionError::PlanRole(Box::new(e))))?;
    policy::check_quorum(app, Action::Deploy, &signers).map_err(|e| {
        explain(match e {
            AdmissionError::QuorumNotMet { needed, got } => {
                AdmissionError::PlanQuorum { needed, got }
            }
            other => other,
        })
    })?;
    // The release is validated as a job's; the id and agent here are placeholders that the
    // job decoder accepts, the real ones come with the dispatch.
    let wire = plan_job(&plan, "plan", "", (plan.not_before, plan.expires_at));
    let release = decode::job_spec(&wire)
        .map_err(|e| invalid_plan(crate::error_chain(&e)))?
        .release
        .ok_or_else(|| invalid_plan("release: a plan needs one"))?;
    check_release(app, &release)?;
    ring_flag_percents(&plan, &release)?;
    // The environment's rules bind a plan as they bind a job: no pre-release where they are
    // refused, and every required gate met by signed evidence in the plan's release.
    let envs = &policy.environments;
    let rules = envs.in_force();
    gates::check_prerelease(envs, &rules, &release.version)?;
    let gates = gates::check_gates(envs, &rules, &policy.keys, &release, now)?;
    Ok(PassedPlan {
        gates,
        // The same digest as gantry_proto::fleet::plan_digest: lowercase hex SHA-256.
        digest: Sha256Hex::of(plan_bytes),
        plan,
        app,
        release,
        signers,
    })
}

/// Each ring's `flag_percent`: only for a release whose canary releases a flag, at most 100,
/// and never below an earlier ring's (a ring without one serves 100%).
fn ring_flag_percents(plan: &v1::Plan, release: &ReleaseSpec) -> Result<(), AdmissionError> {
    let with_flag = release.rollout.canary_flag.is_some();
    let mut previous: Option<(usize, u32)> = None;
    for (i, ring) in plan.rings.iter().enumerate() {
        if !with_flag {
            if ring.flag_percent.is_some() {
                return Err(invalid_plan(format!(
                    "rings[{i}].flag_percent needs release.rollout.canary_flag (a canary that \
                     releases a flag)"
                )));
            }
            continue;
        }
        let p = ring.flag_percent.unwrap_or(100);
        if p > 100 {
            return Err(invalid_plan(format!(
                "rings[{i}].flag_percent {p} is more than 100 (percent)"
            )));
        }
        if let Some((at, before)) = previous
            && p < before
        {
            return Err(invalid_plan(format!(
                "rings[{i}].flag_percent {p} is less than ring {at}'s {before}: a user served \
                 the flag's canary variant keeps it, so rings must not lower it"
            )));
        }
        previous = Some((i, p));
    }
    Ok(())
}

/// Where this agent stands, for [`assess_dispatch`].
#[derive(Debug, Clone, Copy)]
pub struct Here<'a> {
    /// This agent's id.
    pub agent_id: &'a str,
    /// Its environment and labels, from its own config.
    pub placement: &'a Placement,
}

/// Judges the signed dispatch of `plan` for this agent at `now` (Unix seconds).
///
/// # Errors
///
/// [`AdmissionError::DocumentTooLarge`], [`AdmissionError::DispatchSignature`],
/// [`AdmissionError::DispatchRole`], [`AdmissionError::InvalidDispatch`],
/// [`AdmissionError::PlanDigestMismatch`], [`AdmissionError::WrongAgent`],
/// [`AdmissionError::DispatchWindow`] (`limits.max_dispatch_validity`),
/// [`AdmissionError::WrongEnvironment`], [`AdmissionError::NotInRing`],
/// [`AdmissionError::WrongJobId`].
pub fn assess_dispatch(
    policy: &Policy,
    limits: &Limits,
    here: Here<'_>,
    plan: &PassedPlan<'_>,
    dispatch_bytes: &[u8],
    sigs: &[SignatureIn],
    now: i64,
) -> Result<PassedDispatch, AdmissionError> {
    if dispatch_bytes.len() > MAX_DISPATCH_BYTES {
        return Err(AdmissionError::DocumentTooLarge {
            document: "dispatch",
            size: dispatch_bytes.len(),
            max: MAX_DISPATCH_BYTES,
        });
    }
    let verified = policy::signers_of(policy, verify_dispatch, dispatch_bytes, sigs)
        .map_err(|e| AdmissionError::DispatchSignature(Box::new(e)))?
        .keys;
    let (signers, not_valid) = policy::valid_at(&verified, now);
    if signers.is_empty() {
        return Err(AdmissionError::DispatchSignature(Box::new(
            policy::key_not_valid(&not_valid),
        )));
    }
    let app = plan.app;
    if !signers.iter().any(|k| !k.roles.is_disjoint(&app.dispatch)) {
        if !not_valid.is_empty() {
            return Err(AdmissionError::DispatchSignature(Box::new(
                policy::key_not_valid(&not_valid),
            )));
        }
        let mut held: Vec<String> = signers.iter().flat_map(|k| k.roles.clone()).collect();
        held.sort();
        held.dedup();
        return Err(AdmissionError::DispatchRole {
            app: app.name.to_string(),
            needed: app.dispatch.iter().cloned().collect(),
            signer_roles: held,
        });
    }
    let d = v1::Dispatch::decode(dispatch_bytes).map_err(|e| AdmissionError::InvalidDispatch {
        detail: e.to_string(),
    })?;
    if d.plan_sha256 != plan.digest.as_str() {
        return Err(AdmissionError::PlanDigestMismatch {
            named: d.plan_sha256,
            actual: plan.digest.to_string(),
        });
    }
    if d.agent_id.is_empty() || d.agent_id != here.agent_id {
        return Err(AdmissionError::WrongAgent {
            expected: here.agent_id.to_owned(),
            found: d.agent_id,
        });
    }
    if d.expires_at < d.issued_at {
        return Err(AdmissionError::InvalidDispatch {
            detail: format!(
                "expires_at {} is before issued_at {}",
                d.expires_at, d.issued_at
            ),
        });
    }
    check_times(
        d.issued_at,
        d.expires_at,
        now,
        limits.clock_skew,
        limits.max_dispatch_validity,
    )
    .map_err(AdmissionError::DispatchWindow)?;
    let action = match DispatchAction::try_from(d.action) {
        Ok(a @ (DispatchAction::Deploy | DispatchAction::Rollback)) => a,
        Ok(DispatchAction::Unspecified) | Err(_) => {
            return Err(AdmissionError::InvalidDispatch {
                detail: format!("action {} is neither deploy nor rollback", d.action),
            });
        }
    };
    let p = &plan.plan;
    let env = here.placement.environment.as_deref().unwrap_or_default();
    if p.environment != env {
        return Err(AdmissionError::WrongEnvironment {
            plan: p.environment.clone(),
            agent: here.placement.environment.clone(),
        });
    }
    let not_in_ring = |why: String| AdmissionError::NotInRing {
        agent_id: here.agent_id.to_owned(),
        ring: d.ring,
        plan_id: p.plan_id.clone(),
        why,
    };
    let ring = usize::try_from(d.ring)
        .ok()
        .and_then(|i| p.rings.get(i))
        .ok_or_else(|| not_in_ring(format!("the plan has {} ring(s)", p.rings.len())))?;
    let selector = ring.selector.clone().unwrap_or_default();
    if !selects(&selector, here.agent_id, here.placement) {
        return Err(not_in_ring(format!(
            "ring {:?} selects {}",
            ring.name,
            selector_text(&selector)
        )));
    }
    let expected = fleet::job_id(&p.plan_id, here.agent_id, action);
    if d.job_id != expected {
        return Err(AdmissionError::WrongJobId {
            expected,
            found: d.job_id,
        });
    }
    let mut wire = plan_job(p, &expected, here.agent_id, (d.issued_at, d.expires_at));
    if action == DispatchAction::Rollback {
        // The target is the release the plan replaced here, which only the agent knows.
        wire.action = v1::Action::Rollback.into();
        wire.release = None;
    }
    let mut spec = decode::job_spec(&wire).map_err(|e| invalid_plan(crate::error_chain(&e)))?;
    if action == DispatchAction::Deploy {
        let mut release = plan.release.clone();
        release.rollout.flag_limit = ring.flag_percent;
        spec.release = Some(release);
    }
    Ok(PassedDispatch {
        spec,
        plan_id: p.plan_id.clone(),
        ring: d.ring,
        ring_name: ring.name.clone(),
        epoch: d.epoch,
        action,
        plan_signers: sorted_ids(&plan.signers),
        dispatch_signers: sorted_ids(&signers),
    })
}

/// A selector as a reviewer reads it: `agents a, b` and/or `labels k=v, ...`; `nothing` when
/// empty.
pub fn selector_text(s: &v1::Selector) -> String {
    let mut parts = Vec::new();
    if !s.agent_ids.is_empty() {
        parts.push(format!("agents {}", s.agent_ids.join(", ")));
    }
    if !s.labels.is_empty() {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        parts.push(format!("every agent labelled {}", labels.join(", ")));
    }
    if parts.is_empty() {
        "nothing".to_owned()
    } else {
        parts.join(" or ")
    }
}

/// What an agent with `cfg`'s policy would say of a signed plan, requirement by requirement,
/// for `gantry rollout show --policy`: the plan as its own admission judges it
/// ([`assess_plan`], so explained is enforced), then the agent-side conditions every dispatch
/// of it must meet here: the environment, a ring whose selector names this agent, and a key
/// that may sign its dispatches.
pub fn explain_plan(
    cfg: &crate::config::Config,
    plan_bytes: &[u8],
    sigs: &[SignatureIn],
    now: i64,
) -> Vec<super::explain::Requirement> {
    use super::explain::Requirement;
    let req = |name, met, detail: String| Requirement { name, met, detail };
    let mut out = Vec::new();
    let passed = match assess_plan(&cfg.policy, &cfg.limits, plan_bytes, sigs, now) {
        Ok(p) => p,
        Err(e) => {
            out.push(req("plan", false, crate::error_chain(&e)));
            return out;
        }
    };
    let names: Vec<&str> = passed.signers.iter().map(|k| k.name.as_str()).collect();
    out.push(req(
        "plan",
        true,
        format!(
            "signed as a deploy of {} needs (by {}; {} approval(s) required)",
            passed.app.name,
            names.join(", "),
            passed.app.approvals
        ),
    ));
    if !passed.gates.is_empty() {
        out.push(req(
            "gates",
            true,
            passed
                .gates
                .iter()
                .map(|g| format!("{} passed (signed by {})", g.gate, g.signer))
                .collect::<Vec<_>>()
                .join("; "),
        ));
    }
    let env = cfg.placement.environment.as_deref().unwrap_or_default();
    let p = &passed.plan;
    out.push(if p.environment == env {
        req(
            "environment",
            true,
            format!("{:?}, this agent's", p.environment),
        )
    } else {
        let e = AdmissionError::WrongEnvironment {
            plan: p.environment.clone(),
            agent: cfg.placement.environment.clone(),
        };
        req("environment", false, crate::error_chain(&e))
    });
    let rings: Vec<String> = p
        .rings
        .iter()
        .enumerate()
        .filter(|(_, r)| {
            selects(
                &r.selector.clone().unwrap_or_default(),
                &cfg.agent_id,
                &cfg.placement,
            )
        })
        .map(|(i, r)| format!("{i} ({})", r.name))
        .collect();
    out.push(if rings.is_empty() {
        req(
            "ring",
            false,
            format!(
                "no ring selects agent {} (labels: {})",
                cfg.agent_id,
                labels_text(&cfg.placement)
            ),
        )
    } else {
        req(
            "ring",
            true,
            format!(
                "this agent is in ring {}; its job ids: {} and {}",
                rings.join(", "),
                fleet::job_id(&p.plan_id, &cfg.agent_id, DispatchAction::Deploy),
                fleet::job_id(&p.plan_id, &cfg.agent_id, DispatchAction::Rollback)
            ),
        )
    });
    out.push(if passed.app.dispatch.is_empty() {
        req(
            "dispatch",
            false,
            format!(
                "no role may sign dispatches of app {} ([apps.{}.allow] dispatch)",
                passed.app.name, passed.app.name
            ),
        )
    } else {
        let roles: Vec<&str> = passed.app.dispatch.iter().map(String::as_str).collect();
        req(
            "dispatch",
            true,
            format!("signed by a key with role {}", roles.join(" or ")),
        )
    });
    out
}

fn labels_text(p: &Placement) -> String {
    if p.labels.is_empty() {
        return "none".to_owned();
    }
    p.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
#[path = "fleet_tests.rs"]
mod tests;
