//! Roles and quorum: who may do what, and what counts as an approval.

use super::*;

#[test]
fn missing_role() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let e = fx.refuse(&bytes, &[sign(&fx.keys.approver1, &bytes)]);
    match e {
        AdmissionError::MissingRole {
            action,
            app,
            needed,
            signer_roles,
        } => {
            assert_eq!((action, app.as_str()), (Action::Deploy, "web"));
            assert_eq!(needed, ["deployer"]);
            assert_eq!(signer_roles, ["approver"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_action_no_role_may_do_is_refused() {
    let fx = fx();
    let mut j = job("j1");
    j.action = v1::Action::Promote as i32;
    let e = fx.reject(&j);
    assert!(
        matches!(&e, AdmissionError::MissingRole { needed, .. } if needed.is_empty()),
        "{e:?}"
    );
}

#[test]
fn threshold_not_met() {
    let fx = fx_with(2);
    let bytes = job("j1").encode_to_vec();
    let sigs = signed(&bytes, &[&fx.keys.deployer, &fx.keys.approver1]);
    let e = fx.refuse(&bytes, &sigs);
    assert_quorum_not_met(&e, 2, 1);
    let sigs = signed(
        &bytes,
        &[&fx.keys.deployer, &fx.keys.approver1, &fx.keys.approver2],
    );
    let v = new_job(fx.admit(&bytes, &sigs));
    assert_eq!(v.signers.len(), 3);
}

#[test]
fn duplicated_signature_counts_once() {
    let fx = fx_with(2);
    let bytes = job("j1").encode_to_vec();
    let a = sign(&fx.keys.approver1, &bytes);
    let sigs = [sign(&fx.keys.deployer, &bytes), a.clone(), a];
    let e = fx.refuse(&bytes, &sigs);
    assert_quorum_not_met(&e, 2, 1);
}

#[test]
fn one_key_listed_under_two_hints_counts_once() {
    let fx = fx_with(2);
    let bytes = job("j1").encode_to_vec();
    let a = sign(&fx.keys.approver1, &bytes);
    let mut b = a.clone();
    b.key_id_hint = fx.keys.approver2.key_id().to_string();
    let sigs = [sign(&fx.keys.deployer, &bytes), a, b];
    let e = fx.refuse(&bytes, &sigs);
    assert_quorum_not_met(&e, 2, 1);
}

#[test]
fn a_deployer_does_not_approve_its_own_job() {
    let fx = fx_with(1);
    let bytes = job("j1").encode_to_vec();
    let e = fx.refuse(&bytes, &[sign(&fx.keys.both, &bytes)]);
    assert_quorum_not_met(&e, 1, 0);
    // With a deployer-only key acting as deployer, the dual-role key approves.
    let sigs = signed(&bytes, &[&fx.keys.both, &fx.keys.deployer]);
    new_job(fx.admit(&bytes, &sigs));
}
