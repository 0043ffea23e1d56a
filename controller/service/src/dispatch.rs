//! Signing the short dispatch statement that sends one ring's step of a plan to one agent
//! (DESIGN "Fleet"): the plan's digest, the agent, the ring, the lease epoch, the derived job
//! id and the action, valid for a short window, signed with the service's orchestrator key.

use gantry_proto::fleet::{job_id, sign_dispatch};
use gantry_proto::keys::SigningKey;
use gantry_proto::v1::{Dispatch, DispatchAction, DispatchRequest, SignedDispatch};
use prost::Message;

use crate::plan::LoadedPlan;
use crate::store::HostAction;

/// The protocol action of a host action.
pub fn action(a: HostAction) -> DispatchAction {
    match a {
        HostAction::Deploy => DispatchAction::Deploy,
        HostAction::Rollback => DispatchAction::Rollback,
    }
}

/// The job id the agent runs `a` of this plan under.
pub fn host_job_id(plan: &LoadedPlan, agent_id: &str, a: HostAction) -> String {
    job_id(&plan.plan.plan_id, agent_id, action(a))
}

/// What one dispatch names.
#[derive(Debug, Clone, Copy)]
pub struct DispatchFor<'a> {
    /// The agent.
    pub agent_id: &'a str,
    /// The ring index.
    pub ring: u32,
    /// The lease epoch.
    pub epoch: u64,
    /// Deploy or roll back.
    pub action: HostAction,
    /// Unix seconds now.
    pub now_secs: i64,
    /// How long the dispatch is valid, in seconds.
    pub validity_secs: i64,
}

/// The signed plan plus a freshly signed dispatch for `what`.
pub fn request(key: &SigningKey, plan: &LoadedPlan, what: DispatchFor<'_>) -> DispatchRequest {
    let dispatch = Dispatch {
        plan_sha256: plan.sha256.clone(),
        agent_id: what.agent_id.to_owned(),
        ring: what.ring,
        epoch: what.epoch,
        job_id: host_job_id(plan, what.agent_id, what.action),
        action: action(what.action).into(),
        issued_at: what.now_secs,
        expires_at: what.now_secs.saturating_add(what.validity_secs),
    };
    let bytes = dispatch.encode_to_vec();
    let sig = sign_dispatch(key, &bytes);
    DispatchRequest {
        plan: Some(plan.signed.clone()),
        dispatch: Some(SignedDispatch {
            dispatch: bytes,
            signatures: vec![sig],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::fleet::verify_dispatch;
    use gantry_proto::v1::{Plan, Ring, Selector, Signature, SignedPlan};

    #[test]
    fn a_dispatch_names_the_plan_agent_ring_epoch_and_derived_job_and_verifies() {
        let plan = Plan {
            plan_id: "rel-1".into(),
            app: "web".into(),
            rings: vec![Ring {
                selector: Some(Selector {
                    agent_ids: vec!["web-1".into()],
                    labels: Default::default(),
                }),
                ..Ring::default()
            }],
            ..Plan::default()
        };
        let signed = SignedPlan {
            plan: plan.encode_to_vec(),
            signatures: vec![Signature {
                key_id: "k".into(),
                sig: vec![1],
            }],
            comments: Vec::new(),
        };
        let loaded = LoadedPlan::from_signed(signed.clone()).unwrap();
        let key = SigningKey::generate().unwrap();
        let req = request(
            &key,
            &loaded,
            DispatchFor {
                agent_id: "web-1",
                ring: 0,
                epoch: 7,
                action: HostAction::Rollback,
                now_secs: 1000,
                validity_secs: 60,
            },
        );
        assert_eq!(
            req.plan.unwrap(),
            signed,
            "the plan goes out exactly as signed"
        );
        let sd = req.dispatch.unwrap();
        verify_dispatch(&key.public_key(), &sd.dispatch, &sd.signatures[0].sig).unwrap();
        let d = Dispatch::decode(sd.dispatch.as_slice()).unwrap();
        assert_eq!(d.plan_sha256, loaded.sha256);
        assert_eq!((d.agent_id.as_str(), d.ring, d.epoch), ("web-1", 0, 7));
        assert_eq!(d.job_id, job_id("rel-1", "web-1", DispatchAction::Rollback));
        assert_eq!(d.action, i32::from(DispatchAction::Rollback));
        assert_eq!((d.issued_at, d.expires_at), (1000, 1060));
    }
}
