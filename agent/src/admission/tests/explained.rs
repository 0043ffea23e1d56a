//! `gantry job show --policy` and admission judge alike: a job the explanation calls
//! admissible is admitted, and one it calls missing something is refused for that.

use super::*;

/// A signature by a key no config knows.
fn stranger() -> SigningKey {
    SigningKey::generate().unwrap()
}

/// Explains and admits `bytes` with `sigs` on `fx`; asserts they agree and returns whether
/// the job was admitted.
#[track_caller]
fn agree(fx: &Fx, case: &str, bytes: &[u8], sigs: &[SignatureIn]) -> bool {
    let reqs = explain::explain(fx.adm.policy(), &limits(), AGENT, bytes, sigs, NOW);
    let admitted = fx.admit(bytes, sigs);
    let missing: Vec<&explain::Requirement> = reqs.iter().filter(|r| !r.met).collect();
    match &admitted {
        Ok(_) => assert!(
            missing.is_empty(),
            "{case}: admitted, but the explanation says missing: {missing:#?}"
        ),
        Err(rejection) => {
            let first = missing.first().unwrap_or_else(|| {
                panic!("{case}: refused ({rejection}) but every requirement is met: {reqs:#?}")
            });
            // The first missing requirement is the refusal: its detail is the error's own
            // message, or for these two, the numbers and the key behind it.
            let why = crate::error::Chain(&rejection.error).to_string();
            let same = match (first.name, &rejection.error) {
                ("approvals", AdmissionError::QuorumNotMet { needed, got }) => first
                    .detail
                    .starts_with(&format!("{got} of {needed} needed")),
                ("key validity", AdmissionError::KeyNotValid { name, why, .. }) => {
                    first.detail.starts_with(&format!("key {name} ("))
                        && first.detail.ends_with(why.as_str())
                }
                _ => first.detail == why,
            };
            assert!(
                same,
                "{case}: refused with {why:?}, the first missing requirement is {first:?}"
            );
        }
    }
    admitted.is_ok()
}

#[test]
fn explanation_and_admission_agree_on_every_kind_of_job() {
    let keys = keys();
    let mut policy = policy(&keys, 1);
    // approver2 expired a while ago.
    policy.keys[2].not_after = Some(NOW - 3600);
    let fx = fx_policy(keys, policy);
    let k = &fx.keys;
    let stranger = stranger();
    let mut n = 0;
    let mut next = |mutate: &dyn Fn(&mut v1::Job)| {
        n += 1;
        let mut j = job(&format!("j{n}"));
        mutate(&mut j);
        j.encode_to_vec()
    };
    let same = |_: &mut v1::Job| {};

    let b = next(&same);
    assert!(agree(
        &fx,
        "deployer and approver",
        &b,
        &signed(&b, &[&k.deployer, &k.approver1])
    ));
    // The case: an extra approval by a key the config does not know is ignored by
    // admission, so it is no missing requirement either.
    let b = next(&same);
    let sigs = signed(&b, &[&k.deployer, &k.approver1, &stranger]);
    assert!(agree(&fx, "an extra unknown approval", &b, &sigs));
    let reqs = explain::explain(fx.adm.policy(), &limits(), AGENT, &b, &sigs, NOW);
    let other = reqs.iter().find(|r| r.name == "other signatures").unwrap();
    assert!(other.met && other.detail.contains("ignored"), "{other:?}");
    // An extra approval by an expired key is not needed, so it does not matter.
    let b = next(&same);
    let sigs = signed(&b, &[&k.deployer, &k.approver1, &k.approver2]);
    assert!(agree(&fx, "an extra expired approval", &b, &sigs));
    // A signature over other bytes besides valid ones.
    let b = next(&same);
    let mut sigs = signed(&b, &[&k.deployer, &k.approver1]);
    sigs.push(sign(&k.approver1, b"other bytes"));
    assert!(agree(&fx, "an extra bad signature", &b, &sigs));

    for (case, mutate, sign_with) in [
        (
            "deployer alone",
            &same as &dyn Fn(&mut v1::Job),
            vec![&k.deployer],
        ),
        (
            "deployer and a stranger",
            &same,
            vec![&k.deployer, &stranger],
        ),
        (
            "deployer and an expired approver",
            &same,
            vec![&k.deployer, &k.approver2],
        ),
        ("a stranger alone", &same, vec![&stranger]),
        ("an approver alone", &same, vec![&k.approver1]),
        (
            "another agent",
            &|j: &mut v1::Job| j.agent_id = "agent-2".to_owned(),
            vec![&k.deployer, &k.approver1],
        ),
        (
            "expired",
            &|j: &mut v1::Job| j.expires_at = NOW - 1,
            vec![&k.deployer, &k.approver1],
        ),
        (
            "an unknown app",
            &|j: &mut v1::Job| j.app = "db".to_owned(),
            vec![&k.deployer, &k.approver1],
        ),
        (
            "too many instances",
            &|j: &mut v1::Job| j.release.as_mut().unwrap().instances = 9,
            vec![&k.deployer, &k.approver1],
        ),
        (
            "rolling without a router",
            &|j: &mut v1::Job| j.release.as_mut().unwrap().strategy = v1::Strategy::Rolling as i32,
            vec![&k.deployer, &k.approver1],
        ),
        (
            "no version",
            &|j: &mut v1::Job| j.release.as_mut().unwrap().version = "one".to_owned(),
            vec![&k.deployer, &k.approver1],
        ),
    ] {
        let b = next(mutate);
        assert!(
            !agree(&fx, case, &b, &signed(&b, &sign_with)),
            "{case} was admitted"
        );
    }
    let b = next(&same);
    assert!(!agree(&fx, "unsigned", &b, &[]));
}
