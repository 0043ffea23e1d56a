//! Signatures over the exact job bytes: forged, flipped, foreign and surplus signatures.

use super::*;

#[test]
fn a_deployer_signed_job_is_admitted_with_its_decoded_spec() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let v = new_job(fx.by_deployer(&bytes));
    assert_eq!(v.spec.id.as_str(), "j1");
    assert_eq!(v.spec.action, Action::Deploy);
    assert_eq!(v.digest, Sha256Hex::of(&bytes));
    assert_eq!(v.signers, vec![fx.keys.deployer.key_id()]);
    let r = v.spec.release.unwrap();
    assert_eq!(r.version, semver::Version::new(1, 2, 0));
    assert_eq!(r.strategy, StrategyKind::Hot);
    assert_eq!(
        r.health.probe,
        Probe::Http {
            path: "/health".into(),
            expect_status: None
        }
    );
    // Zero timings get sensible defaults.
    assert_eq!(r.health.interval, Duration::from_secs(1));
    assert_eq!(r.health.timeout, Duration::from_secs(2));
    assert_eq!(
        (r.health.healthy_threshold, r.health.unhealthy_threshold),
        (1, 3)
    );
    assert_eq!(r.health.deadline, Duration::from_secs(30));
    assert_eq!(r.progress_deadline, Duration::from_secs(600));
    assert_eq!(fx.adm.ledger().unfinished().len(), 1);
}

#[test]
fn no_signatures() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let e = fx.refuse(&bytes, &[]);
    assert!(matches!(e, AdmissionError::NoSignatures), "{e:?}");
}

#[test]
fn flipped_signature_bit() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let mut s = sign(&fx.keys.deployer, &bytes);
    s.sig[10] ^= 0x01;
    let e = fx.refuse(&bytes, &[s]);
    assert!(
        matches!(&e, AdmissionError::BadSignature { key_id } if *key_id == fx.keys.deployer.key_id().to_string()),
        "{e:?}"
    );
}

#[test]
fn flipped_payload_bit() {
    let fx = fx();
    let mut bytes = job("j1").encode_to_vec();
    let s = sign(&fx.keys.deployer, &bytes);
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let e = fx.refuse(&bytes, &[s]);
    assert!(matches!(e, AdmissionError::BadSignature { .. }), "{e:?}");
}

#[test]
fn payload_signed_under_another_pae_type() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let sig = fx
        .keys
        .deployer
        .sign(&pae("application/vnd.gantry.audit-checkpoint.v1", &bytes));
    let s = SignatureIn {
        key_id_hint: fx.keys.deployer.key_id().to_string(),
        sig: sig.to_vec(),
    };
    let e = fx.refuse(&bytes, &[s]);
    assert!(matches!(e, AdmissionError::BadSignature { .. }), "{e:?}");
    // Sanity: the same key over the job type is accepted.
    let good = fx.keys.deployer.sign(&pae(JOB_PAYLOAD_TYPE, &bytes));
    let s = SignatureIn {
        key_id_hint: String::new(),
        sig: good.to_vec(),
    };
    new_job(fx.admit(&bytes, &[s]));
}

#[test]
fn attacker_key() {
    let fx = fx();
    let attacker = SigningKey::generate().unwrap();
    let bytes = job("j1").encode_to_vec();
    let rej = fx.admit(&bytes, &[sign(&attacker, &bytes)]).unwrap_err();
    assert!(
        matches!(&rej.error, AdmissionError::UnknownKey { key_ids } if *key_ids == [attacker.key_id().to_string()]),
        "{:?}",
        rej.error
    );
    // Nothing was decoded before the signatures failed.
    assert_eq!(rej.job_id, None);
    assert_eq!(rej.claimed_key_ids, [attacker.key_id().to_string()]);
    assert_eq!(rej.job_digest, Sha256Hex::of(&bytes).to_string());
}

#[test]
fn trusted_key_id_with_another_keys_signature() {
    let fx = fx();
    let attacker = SigningKey::generate().unwrap();
    let bytes = job("j1").encode_to_vec();
    let mut s = sign(&attacker, &bytes);
    s.key_id_hint = fx.keys.deployer.key_id().to_string();
    let e = fx.refuse(&bytes, &[s]);
    assert!(
        matches!(&e, AdmissionError::BadSignature { key_id } if *key_id == fx.keys.deployer.key_id().to_string()),
        "{e:?}"
    );
}

#[test]
fn unknown_key() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let s = SignatureIn {
        key_id_hint: "00".repeat(32),
        sig: vec![7; 64],
    };
    let e = fx.refuse(&bytes, &[s]);
    assert!(matches!(e, AdmissionError::UnknownKey { .. }), "{e:?}");
}

#[test]
fn a_wrong_hint_is_only_a_hint() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let mut s = sign(&fx.keys.deployer, &bytes);
    s.key_id_hint = fx.keys.approver1.key_id().to_string();
    let v = new_job(fx.admit(&bytes, &[s]));
    assert_eq!(v.signers, vec![fx.keys.deployer.key_id()]);
}

#[test]
fn garbage_signatures_beside_a_valid_one_are_ignored() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let junk = SignatureIn {
        key_id_hint: "zz".into(),
        sig: vec![1, 2, 3],
    };
    new_job(fx.admit(&bytes, &[junk, sign(&fx.keys.deployer, &bytes)]));
}

#[test]
fn too_many_signatures() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let sigs = vec![sign(&fx.keys.deployer, &bytes); policy::MAX_SIGNATURES + 1];
    let e = fx.refuse(&bytes, &sigs);
    assert!(
        matches!(e, AdmissionError::TooManySignatures { count: 33, max: 32 }),
        "{e:?}"
    );
}

#[test]
fn exactly_max_signatures_are_looked_at() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let sigs = vec![sign(&fx.keys.deployer, &bytes); policy::MAX_SIGNATURES];
    new_job(fx.admit(&bytes, &sigs));
}
