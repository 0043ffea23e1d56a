//! Key lifecycle and approvals: validity windows, revocation, rotation, who approves.

use super::*;

/// `fx_with(approvals)`, with `edit` applied to the named trusted key.
fn fx_key(approvals: u32, name: &str, edit: impl FnOnce(&mut TrustedKey)) -> Fx {
    let keys = keys();
    let mut p = policy(&keys, approvals);
    edit(p.keys.iter_mut().find(|k| k.name == name).unwrap());
    fx_policy(keys, p)
}

fn assert_key_not_valid(e: &AdmissionError, name: &str, why: &str) {
    match e {
        AdmissionError::KeyNotValid {
            name: n, why: w, ..
        } => {
            assert_eq!(n, name, "{e}");
            assert_eq!(w, why, "{e}");
        }
        other => panic!("expected KeyNotValid for {name}, got {other:?}"),
    }
}

#[test]
fn key_outside_its_validity_window() {
    // Expired: not_after is exclusive.
    let fx = fx_key(0, "deployer", |k| k.not_after = Some(NOW));
    let e = fx.reject(&job("j1"));
    assert_key_not_valid(&e, "deployer", "expired at 2027-01-15T08:00:00Z");
    assert_eq!(
        e.to_string(),
        format!(
            "signature by key deployer ({}) does not count: expired at 2027-01-15T08:00:00Z",
            fx.keys.deployer.key_id()
        )
    );
    assert!(
        fx.adm.ledger().unfinished().is_empty(),
        "nothing was recorded"
    );
    assert_eq!(fx.adm.ledger().get("j1"), None);

    // Not yet valid: not_before is inclusive.
    let fx = fx_key(0, "deployer", |k| k.not_before = Some(NOW + 1));
    let e = fx.reject(&job("j1"));
    assert_key_not_valid(&e, "deployer", "not valid before 2027-01-15T08:00:01Z");
    let fx = fx_key(0, "deployer", |k| {
        k.not_before = Some(NOW);
        k.not_after = Some(NOW + 1);
    });
    let bytes = job("j1").encode_to_vec();
    new_job(fx.by_deployer(&bytes));
}

#[test]
fn revoked_key() {
    let fx = fx_key(0, "deployer", |k| {
        k.revoked = true;
        k.revoked_reason = Some("laptop stolen 2026-03-01".to_owned());
    });
    let e = fx.reject(&job("j1"));
    assert_key_not_valid(&e, "deployer", "revoked: laptop stolen 2026-03-01");
    assert!(fx.adm.ledger().unfinished().is_empty());

    let fx = fx_key(0, "deployer", |k| k.revoked = true);
    assert_key_not_valid(&fx.reject(&job("j1")), "deployer", "revoked");
}

#[test]
fn revoked_deployer_beside_a_valid_approver_is_named() {
    // The approver's signature is valid, but it holds no deploy role: the rejection names the
    // revoked key rather than a missing role.
    let fx = fx_key(0, "deployer", |k| k.revoked = true);
    let bytes = job("j1").encode_to_vec();
    let sigs = signed(&bytes, &[&fx.keys.deployer, &fx.keys.approver1]);
    let e = fx.refuse(&bytes, &sigs);
    assert_key_not_valid(&e, "deployer", "revoked");
}

#[test]
fn expired_approver_does_not_count_towards_the_quorum() {
    let fx = fx_key(2, "approver2", |k| k.not_after = Some(NOW - 3600));
    let bytes = job("j1").encode_to_vec();
    let sigs = signed(
        &bytes,
        &[&fx.keys.deployer, &fx.keys.approver1, &fx.keys.approver2],
    );
    let e = fx.refuse(&bytes, &sigs);
    assert_key_not_valid(&e, "approver2", "expired at 2027-01-15T07:00:00Z");
    // A valid signer that is not needed does not matter when the rest suffices.
    let fx = fx_key(1, "approver2", |k| k.revoked = true);
    let sigs = signed(
        &bytes,
        &[&fx.keys.deployer, &fx.keys.approver1, &fx.keys.approver2],
    );
    let v = new_job(fx.admit(&bytes, &sigs));
    assert_eq!(v.signers.len(), 2, "the revoked key is not a signer");
    assert!(!v.signers.contains(&fx.keys.approver2.key_id()));
}

#[test]
fn rotation_overlap_old_and_new_keys_both_valid() {
    let keys = keys();
    let new = SigningKey::generate().unwrap();
    let mut p = policy(&keys, 0);
    // The old deployer key ends at NOW + 1h; the new one started an hour ago.
    p.keys[0].name = "deployer-2026".to_owned();
    p.keys[0].not_after = Some(NOW + 3600);
    let mut k = trusted("deployer-2027", &new, &["deployer"]);
    k.not_before = Some(NOW - 3600);
    p.keys.push(k);
    let fx = fx_policy(keys, p);

    // During the overlap, either key deploys.
    for (id, key) in [("old-1", &fx.keys.deployer), ("new-1", &new)] {
        let bytes = job(id).encode_to_vec();
        let v = new_job(fx.admit(&bytes, &[sign(key, &bytes)]));
        assert_eq!(v.signers, [key.key_id()]);
    }
    // After the old key's not_after, only the new one.
    let after = NOW + 3600;
    let job_after = |id| {
        let mut j = job(id);
        j.not_before = after - 10;
        j.expires_at = after + 600;
        j.encode_to_vec()
    };
    let admit_after =
        |bytes: &[u8], sigs: &[SignatureIn]| fx.adm.admit(bytes, sigs, after, &Apps::default());
    let bytes = job_after("old-2");
    let e = admit_after(&bytes, &[sign(&fx.keys.deployer, &bytes)])
        .unwrap_err()
        .error;
    assert_key_not_valid(&e, "deployer-2026", "expired at 2027-01-15T09:00:00Z");
    let bytes = job_after("new-2");
    let both = signed(&bytes, &[&fx.keys.deployer, &new]);
    match admit_after(&bytes, &both) {
        Ok(Admitted::New(v)) => assert_eq!(v.signers, [new.key_id()]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn deployer_may_approve_off_the_deployers_key_never_approves() {
    // Default: a key holding both roles cannot deploy and approve alone.
    let fx = fx_with(1);
    assert!(
        !fx.adm
            .policy()
            .apps
            .values()
            .any(|a| a.deployer_may_approve)
    );
    let bytes = job("j1").encode_to_vec();
    let e = fx.refuse(&bytes, &[sign(&fx.keys.both, &bytes)]);
    assert_quorum_not_met(&e, 1, 0);
    // Another approver makes the quorum.
    let sigs = signed(&bytes, &[&fx.keys.both, &fx.keys.approver1]);
    new_job(fx.admit(&bytes, &sigs));
}

#[test]
fn deployer_may_approve_on_the_deployers_key_counts_as_an_approval() {
    let keys = keys();
    let mut p = policy(&keys, 1);
    web_mut(&mut p).deployer_may_approve = true;
    let fx = fx_policy(keys, p);
    let bytes = job("j1").encode_to_vec();
    new_job(fx.admit(&bytes, &[sign(&fx.keys.both, &bytes)]));
    // It still counts once: two approvals need another approver key.
    let keys2 = self::keys();
    let mut p = policy(&keys2, 2);
    web_mut(&mut p).deployer_may_approve = true;
    let fx = fx_policy(keys2, p);
    let bytes = job("j2").encode_to_vec();
    let s = sign(&fx.keys.both, &bytes);
    let e = fx.refuse(&bytes, &[s.clone(), s.clone()]);
    assert_quorum_not_met(&e, 2, 1);
    new_job(fx.admit(&bytes, &[s, sign(&fx.keys.approver2, &bytes)]));
}

#[test]
fn one_key_under_two_ids_in_the_policy_counts_once() {
    // Config refuses a public key listed twice; a hand-built policy that lists one under two
    // names (and so two entries) still counts it once.
    let keys = keys();
    let mut p = policy(&keys, 2);
    p.keys
        .push(trusted("approver1-again", &keys.approver1, &["approver"]));
    let fx = fx_policy(keys, p);
    let bytes = job("j1").encode_to_vec();
    let a = sign(&fx.keys.approver1, &bytes);
    let mut b = a.clone();
    b.key_id_hint = String::new();
    let sigs = [sign(&fx.keys.deployer, &bytes), a, b];
    let e = fx.refuse(&bytes, &sigs);
    assert_quorum_not_met(&e, 2, 1);
}

#[test]
fn approvals_count_distinct_public_keys() {
    let k = keys();
    let p = policy(&k, 2);
    let app = &p.apps[&AppName::new("web").unwrap()];
    let d = &p.keys[0];
    let a1 = &p.keys[1];
    let both = &p.keys[3];
    assert_eq!(policy::approvals(app, Action::Deploy, &[d, a1, a1]), 1);
    assert_eq!(policy::approvals(app, Action::Deploy, &[both]), 0);
    assert_eq!(policy::approvals(app, Action::Deploy, &[both, d]), 1);
    assert_eq!(policy::approvals(app, Action::Deploy, &[both, a1]), 1);
}
