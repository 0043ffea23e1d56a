//! Fleet documents: the payload types a plan and a dispatch are signed under, and the job id
//! a dispatch must carry.
//!
//! A [`crate::v1::SignedPlan`] and a [`crate::v1::SignedDispatch`] are envelopes like a
//! `SignedJob`: Ed25519 over [`pae`](crate::envelope::pae)`(type, exact bytes)`, never over a
//! re-encoding. The job id of a plan's run on one agent is derived, not chosen: the service and
//! the agent both compute [`job_id`], so a service that restarts (or a second replica) sends the
//! same id again and the agent's replay store turns the resend into an attach, never a second
//! deploy.

use crate::envelope::{sign_payload, verify_payload};
use crate::keys::{KeyError, PublicKey, SigningKey, sha256_hex};
use crate::v1::{DispatchAction, Signature};

/// The DSSE payload type of a plan.
pub const PLAN_PAYLOAD_TYPE: &str = "application/vnd.gantry.plan.v1+protobuf";

/// The DSSE payload type of a dispatch.
pub const DISPATCH_PAYLOAD_TYPE: &str = "application/vnd.gantry.dispatch.v1+protobuf";

/// Signs a plan's exact protobuf bytes.
pub fn sign_plan(key: &SigningKey, plan_bytes: &[u8]) -> Signature {
    Signature {
        key_id: key.key_id().to_string(),
        sig: sign_payload(key, PLAN_PAYLOAD_TYPE, plan_bytes).to_vec(),
    }
}

/// Verifies one signature over a plan's exact bytes.
///
/// # Errors
/// [`KeyError::BadSignature`] when it does not verify under `key`.
pub fn verify_plan(key: &PublicKey, plan_bytes: &[u8], sig: &[u8]) -> Result<(), KeyError> {
    verify_payload(key, PLAN_PAYLOAD_TYPE, plan_bytes, sig)
}

/// Signs a dispatch's exact protobuf bytes (with the service's orchestrator key).
pub fn sign_dispatch(key: &SigningKey, dispatch_bytes: &[u8]) -> Signature {
    Signature {
        key_id: key.key_id().to_string(),
        sig: sign_payload(key, DISPATCH_PAYLOAD_TYPE, dispatch_bytes).to_vec(),
    }
}

/// Verifies one signature over a dispatch's exact bytes.
///
/// # Errors
/// [`KeyError::BadSignature`] when it does not verify under `key`.
pub fn verify_dispatch(key: &PublicKey, dispatch_bytes: &[u8], sig: &[u8]) -> Result<(), KeyError> {
    verify_payload(key, DISPATCH_PAYLOAD_TYPE, dispatch_bytes, sig)
}

/// Lowercase hex SHA-256 of a plan's exact bytes: what `Dispatch.plan_sha256` names.
pub fn plan_digest(plan_bytes: &[u8]) -> String {
    sha256_hex(plan_bytes)
}

/// The job id of `action` of plan `plan_id` on agent `agent_id`:
/// `plan-<24 hex>-deploy` or `plan-<24 hex>-rollback`, where the hex is the start of
/// SHA-256(`plan_id` NUL `agent_id`). Always a valid job id (`[A-Za-z0-9._:-]`, 39 or 41
/// bytes), the same on every replica of the service and on the agent.
pub fn job_id(plan_id: &str, agent_id: &str, action: DispatchAction) -> String {
    let mut input = Vec::with_capacity(plan_id.len() + agent_id.len() + 1);
    input.extend_from_slice(plan_id.as_bytes());
    input.push(0);
    input.extend_from_slice(agent_id.as_bytes());
    let digest = sha256_hex(&input);
    let what = match action {
        DispatchAction::Rollback => "rollback",
        DispatchAction::Deploy | DispatchAction::Unspecified => "deploy",
    };
    format!("plan-{}-{what}", &digest[..24])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_are_stable_per_plan_agent_and_action() {
        let a = job_id("rel-1.4.0", "web-1", DispatchAction::Deploy);
        assert_eq!(a, job_id("rel-1.4.0", "web-1", DispatchAction::Deploy));
        // A fixed vector: the service and the agent must agree byte for byte.
        assert_eq!(a, "plan-ccda96c06ae3d9a92240615d-deploy");
        assert_ne!(a, job_id("rel-1.4.0", "web-2", DispatchAction::Deploy));
        assert_ne!(a, job_id("rel-1.4.1", "web-1", DispatchAction::Deploy));
        let back = job_id("rel-1.4.0", "web-1", DispatchAction::Rollback);
        assert!(
            back.ends_with("-rollback") && back[..29] == a[..29],
            "{back}"
        );
        // The NUL separator: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(
            job_id("ab", "c", DispatchAction::Deploy),
            job_id("a", "bc", DispatchAction::Deploy)
        );
        assert!(a.len() <= 128 && a.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[test]
    fn plan_and_dispatch_signatures_do_not_verify_as_each_other() {
        let key = SigningKey::generate().unwrap();
        let bytes = b"the same bytes";
        let plan_sig = sign_plan(&key, bytes);
        let dispatch_sig = sign_dispatch(&key, bytes);
        verify_plan(&key.public_key(), bytes, &plan_sig.sig).unwrap();
        verify_dispatch(&key.public_key(), bytes, &dispatch_sig.sig).unwrap();
        assert!(verify_plan(&key.public_key(), bytes, &dispatch_sig.sig).is_err());
        assert!(verify_dispatch(&key.public_key(), bytes, &plan_sig.sig).is_err());
        assert!(crate::envelope::verify_job(&key.public_key(), bytes, &plan_sig.sig).is_err());
        assert_eq!(plan_sig.key_id, key.key_id().to_string());
        assert_eq!(plan_digest(bytes), sha256_hex(bytes));
    }
}
