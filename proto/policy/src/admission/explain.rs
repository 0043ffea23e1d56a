//! Which of a policy's requirements a job meets, before it is sent: `gantry job show --policy`.
//!
//! Runs the same checks as the agent's `Admission::admit` (signatures, key validity, decoding,
//! target, window, app, role, quorum), one at a time, and reports each as met or missing
//! instead of stopping at the first failure. Checks that need the agent's state (replay,
//! downgrade, rollback target, busy app) are not made here.

use std::collections::BTreeSet;

use super::{AdmissionError, SignatureIn, decode, policy, window};
use crate::config::{Limits, Policy};

/// One requirement of the policy and whether the job meets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    /// Short name: `signatures`, `trusted signers`, `key validity`, `job`, `target`,
    /// `window`, `app`, `role`, `approvals`.
    pub name: &'static str,
    /// Whether it is met.
    pub met: bool,
    /// What was found, or what is missing (admission's own message when it would reject).
    pub detail: String,
}

fn req(name: &'static str, met: bool, detail: impl Into<String>) -> Requirement {
    Requirement {
        name,
        met,
        detail: detail.into(),
    }
}

fn err(name: &'static str, e: &AdmissionError) -> Requirement {
    req(name, false, crate::error_chain(e))
}

/// Evaluates `job_bytes` and `sigs` against `policy` and `limits` for agent `agent_id` at
/// `now` (Unix seconds). Every requirement that can be judged is listed, in admission order.
pub fn explain(
    policy: &Policy,
    limits: &Limits,
    agent_id: &str,
    job_bytes: &[u8],
    sigs: &[SignatureIn],
    now: i64,
) -> Vec<Requirement> {
    let mut out = Vec::new();
    if job_bytes.len() > limits.max_job_bytes {
        out.push(err(
            "size",
            &AdmissionError::TooLarge {
                size: job_bytes.len(),
                max: limits.max_job_bytes,
            },
        ));
    }
    // Per signature: which trusted key, if any, made it.
    let mut untrusted = 0usize;
    for sig in sigs {
        if policy::verify_signers(policy, job_bytes, std::slice::from_ref(sig)).is_err() {
            untrusted += 1;
        }
    }
    let verified = match policy::verify_signers(policy, job_bytes, sigs) {
        Ok(v) => v,
        Err(e) => {
            out.push(err("signatures", &e));
            Vec::new()
        }
    };
    if !verified.is_empty() {
        let names: Vec<String> = verified
            .iter()
            .map(|k| {
                format!(
                    "{} ({})",
                    k.name,
                    k.roles.iter().cloned().collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        out.push(req(
            "signatures",
            true,
            format!(
                "{} valid signature(s) by trusted keys: {}",
                verified.len(),
                names.join("; ")
            ),
        ));
        if untrusted > 0 {
            out.push(req(
                "trusted signers",
                false,
                format!(
                    "{untrusted} signature(s) are by no trusted key or do not verify (ignored)"
                ),
            ));
        }
    }
    let (signers, not_valid) = policy::valid_at(&verified, now);
    if !verified.is_empty() {
        if not_valid.is_empty() {
            out.push(req("key validity", true, "every signing key is valid now"));
        } else {
            for (k, why) in &not_valid {
                out.push(req(
                    "key validity",
                    false,
                    format!("key {} ({}) does not count: {why}", k.name, k.key_id),
                ));
            }
        }
    }

    let spec = match decode::decode_job(job_bytes).and_then(|j| decode::job_spec(&j)) {
        Ok(spec) => spec,
        Err(e) => {
            out.push(err("job", &e));
            return out;
        }
    };
    if spec.agent_id.is_empty() || spec.agent_id != agent_id {
        out.push(err(
            "target",
            &AdmissionError::WrongAgent {
                expected: agent_id.to_owned(),
                found: spec.agent_id.clone(),
            },
        ));
    } else {
        out.push(req("target", true, format!("agent {agent_id}")));
    }
    match window::check_window(&spec, now, limits) {
        Ok(()) => out.push(req(
            "window",
            true,
            format!(
                "valid now, {}s long (maximum {}s)",
                spec.expires_at.saturating_sub(spec.not_before),
                limits.max_validity.as_secs()
            ),
        )),
        Err(e) => out.push(err("window", &e)),
    }
    let Some(app) = policy.apps.get(&spec.app) else {
        out.push(err(
            "app",
            &AdmissionError::AppNotConfigured {
                app: spec.app.to_string(),
            },
        ));
        return out;
    };
    out.push(req("app", true, format!("{} is configured", app.name)));
    match policy::check_role(app, spec.action, &signers) {
        Ok(()) => {
            let needed = app.roles_for(spec.action);
            let holders: BTreeSet<&str> = signers
                .iter()
                .filter(|k| !k.roles.is_disjoint(&needed))
                .map(|k| k.name.as_str())
                .collect();
            out.push(req(
                "role",
                true,
                format!(
                    "{} on {} by {}",
                    spec.action,
                    app.name,
                    holders.into_iter().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Err(e) => out.push(err("role", &e)),
    }
    let got = policy::approvals(app, spec.action, &signers);
    let rule = if app.deployer_may_approve {
        "distinct approver keys, the deployer's own may count"
    } else {
        "distinct approver keys besides the deployer's"
    };
    out.push(req(
        "approvals",
        got >= app.approvals,
        format!("{got} of {} needed ({rule})", app.approvals),
    ));
    out
}
