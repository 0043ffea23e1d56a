//! Pre-releases and required gates, one refusal per rule.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gantry_proto::attest::{
    Envelope, GATE_PREDICATE_TYPE, GateResult, GateResults, PolicyRef, STATEMENT_TYPE, Statement,
    Subject, Verdict, Verifier,
};
use gantry_proto::keys::SigningKey;

use super::*;
use crate::job::{HealthSpec, Probe, Sha256Hex, StrategyKind};

const NOW: i64 = 1_800_000_000;

fn trusted(name: &str, key: &SigningKey, roles: &[&str]) -> TrustedKey {
    TrustedKey {
        name: name.to_owned(),
        file: "k.pub".into(),
        key: key.public_key(),
        key_id: key.key_id(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        not_before: None,
        not_after: None,
        revoked: false,
        revoked_reason: None,
    }
}

fn release(version: &str, evidence: Vec<Vec<u8>>) -> ReleaseSpec {
    ReleaseSpec {
        version: semver::Version::parse(version).unwrap(),
        artifact_sha256: Sha256Hex::of(b"artifact"),
        artifact_size: 8,
        strategy: StrategyKind::Hot,
        instances: 1,
        command: vec!["bin/app".to_owned()],
        health: HealthSpec {
            probe: Probe::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 1,
            deadline: Duration::from_secs(5),
        },
        env: BTreeMap::new(),
        secret_env: BTreeSet::new(),
        progress_deadline: Duration::from_secs(60),
        rollout: Default::default(),
        evidence,
        notes: String::new(),
    }
}

/// A gate's result as `gantry gate evaluate` signs it (shared with the plan tests).
pub(crate) fn gate(name: &str, result: Verdict) -> GateResult {
    GateResult {
        name: name.to_owned(),
        result,
        measured: BTreeMap::from([("pass_rate_percent".to_owned(), 100.0)]),
        thresholds: BTreeMap::from([("pass_rate_percent".to_owned(), ">= 100".to_owned())]),
        source: "junit.xml".to_owned(),
    }
}

/// A DSSE envelope of a gate statement for `digest`, signed by `key` (shared with the plan
/// tests).
pub(crate) fn evidence(
    key: &SigningKey,
    digest: &str,
    expires_at: i64,
    gates: Vec<GateResult>,
) -> Vec<u8> {
    let st = Statement {
        type_: STATEMENT_TYPE.to_owned(),
        subject: vec![Subject {
            name: "app.tar.gz".to_owned(),
            digest: BTreeMap::from([("sha256".to_owned(), digest.to_owned())]),
        }],
        predicate_type: GATE_PREDICATE_TYPE.to_owned(),
        predicate: GateResults {
            verifier: Verifier {
                id: "test".to_owned(),
            },
            time_verified: "2027-01-15T08:00:00Z".to_owned(),
            expires_at,
            policy: PolicyRef {
                uri: "builtin:cd-model".to_owned(),
                digest: BTreeMap::new(),
            },
            verification_result: Verdict::Passed,
            gates,
        },
    };
    Envelope::sign(&st, key).unwrap().to_json().unwrap()
}

fn production(gates: &[GateKind]) -> (Environments, EnvironmentRules) {
    let envs = Environments {
        current: Some("production".to_owned()),
        tables: BTreeMap::new(),
    };
    let mut rules = envs.in_force();
    rules.require_gates = gates.iter().copied().collect();
    (envs, rules)
}

struct Fixture {
    ci: SigningKey,
    deployer: SigningKey,
    keys: Vec<TrustedKey>,
    digest: String,
}

fn fixture() -> Fixture {
    let ci = SigningKey::generate().unwrap();
    let deployer = SigningKey::generate().unwrap();
    let keys = vec![
        trusted("ci", &ci, &["ci"]),
        trusted("deployer", &deployer, &["deployer"]),
    ];
    Fixture {
        ci,
        deployer,
        keys,
        digest: Sha256Hex::of(b"artifact").to_string(),
    }
}

#[test]
fn production_refuses_a_prerelease_and_demo_allows_it() {
    let (envs, rules) = production(&[]);
    let rc = semver::Version::parse("1.2.3-rc.1").unwrap();
    let e = check_prerelease(&envs, &rules, &rc).unwrap_err();
    assert!(matches!(e, AdmissionError::PrereleaseRefused { .. }));
    assert_eq!(
        e.to_string(),
        "version 1.2.3-rc.1 is a pre-release, refused in environment production (set \
         allow_prerelease = true in [environments.production] to allow it)"
    );
    check_prerelease(&envs, &rules, &semver::Version::new(1, 2, 3)).unwrap();
    let demo = Environments {
        current: Some("demo".to_owned()),
        tables: BTreeMap::new(),
    };
    check_prerelease(&demo, &demo.in_force(), &rc).unwrap();
}

#[test]
fn passed_evidence_signed_by_ci_for_the_artifact_meets_the_gates() {
    let f = fixture();
    let (envs, rules) = production(&[GateKind::Tests, GateKind::Coverage]);
    let ev = evidence(
        &f.ci,
        &f.digest,
        NOW + 3600,
        vec![
            gate("tests", Verdict::Passed),
            gate("coverage", Verdict::Passed),
        ],
    );
    let met = check_gates(&envs, &rules, &f.keys, &release("1.0.0", vec![ev]), NOW).unwrap();
    assert_eq!(met.len(), 2);
    assert_eq!(met[0].gate, GateKind::Tests);
    assert_eq!(met[0].signer, "ci");
}

#[test]
fn a_missing_gate_is_refused() {
    let f = fixture();
    let (envs, rules) = production(&[GateKind::Tests, GateKind::Security]);
    let ev = evidence(
        &f.ci,
        &f.digest,
        NOW + 3600,
        vec![gate("tests", Verdict::Passed)],
    );
    let e = check_gates(&envs, &rules, &f.keys, &release("1.0.0", vec![ev]), NOW).unwrap_err();
    assert!(
        matches!(
            e,
            AdmissionError::GateMissing {
                gate: GateKind::Security,
                ..
            }
        ),
        "{e}"
    );
    let e = check_gates(&envs, &rules, &f.keys, &release("1.0.0", vec![]), NOW).unwrap_err();
    assert_eq!(
        e.to_string(),
        "environment production requires gate tests: the job carries no evidence of it \
         (gantry gate evaluate, then --evidence)"
    );
}

#[test]
fn a_failed_gate_is_refused_naming_its_values() {
    let f = fixture();
    let (envs, rules) = production(&[GateKind::Tests]);
    let ev = evidence(
        &f.ci,
        &f.digest,
        NOW + 3600,
        vec![gate("tests", Verdict::Failed)],
    );
    let e = check_gates(&envs, &rules, &f.keys, &release("1.0.0", vec![ev]), NOW).unwrap_err();
    assert_eq!(
        e.to_string(),
        "gate tests failed: pass_rate_percent 100 (needs >= 100)"
    );
}

#[test]
fn evidence_for_another_digest_is_refused() {
    let f = fixture();
    let (envs, rules) = production(&[GateKind::Tests]);
    let other = "cd".repeat(32);
    let ev = evidence(
        &f.ci,
        &other,
        NOW + 3600,
        vec![gate("tests", Verdict::Passed)],
    );
    let e = check_gates(&envs, &rules, &f.keys, &release("1.0.0", vec![ev]), NOW).unwrap_err();
    assert!(
        matches!(&e, AdmissionError::GateDigestMismatch { index: 0, found, .. } if *found == other),
        "{e}"
    );
}

#[test]
fn evidence_signed_by_a_key_without_the_ci_role_is_refused() {
    let f = fixture();
    let (envs, rules) = production(&[GateKind::Tests]);
    let ev = evidence(
        &f.deployer,
        &f.digest,
        NOW + 3600,
        vec![gate("tests", Verdict::Passed)],
    );
    let e = check_gates(&envs, &rules, &f.keys, &release("1.0.0", vec![ev]), NOW).unwrap_err();
    assert_eq!(
        e.to_string(),
        "evidence 0 is not signed by a valid key with role ci: key deployer holds deployer"
    );
    let stranger = SigningKey::generate().unwrap();
    let ev = evidence(
        &stranger,
        &f.digest,
        NOW + 3600,
        vec![gate("tests", Verdict::Passed)],
    );
    let e = check_gates(&envs, &rules, &f.keys, &release("1.0.0", vec![ev]), NOW).unwrap_err();
    assert!(
        e.to_string().ends_with("it is signed by no trusted key"),
        "{e}"
    );
}

#[test]
fn a_revoked_ci_key_does_not_count() {
    let mut f = fixture();
    f.keys[0].revoked = true;
    let (envs, rules) = production(&[GateKind::Tests]);
    let ev = evidence(
        &f.ci,
        &f.digest,
        NOW + 3600,
        vec![gate("tests", Verdict::Passed)],
    );
    let e = check_gates(&envs, &rules, &f.keys, &release("1.0.0", vec![ev]), NOW).unwrap_err();
    assert!(
        e.to_string().ends_with("key ci does not count: revoked"),
        "{e}"
    );
}

#[test]
fn expired_and_malformed_evidence_is_refused() {
    let f = fixture();
    let (envs, rules) = production(&[GateKind::Tests]);
    let ev = evidence(&f.ci, &f.digest, NOW, vec![gate("tests", Verdict::Passed)]);
    let e = check_gates(&envs, &rules, &f.keys, &release("1.0.0", vec![ev]), NOW).unwrap_err();
    assert!(
        matches!(e, AdmissionError::GateExpired { index: 0, .. }),
        "{e}"
    );
    let e = check_gates(
        &envs,
        &rules,
        &f.keys,
        &release("1.0.0", vec![b"{not json".to_vec()]),
        NOW,
    )
    .unwrap_err();
    assert!(
        matches!(e, AdmissionError::GateInvalid { index: 0, .. }),
        "{e}"
    );
}

#[test]
fn no_required_gate_reads_no_evidence() {
    let f = fixture();
    let (envs, rules) = production(&[]);
    let met = check_gates(
        &envs,
        &rules,
        &f.keys,
        &release("1.0.0", vec![b"garbage".to_vec()]),
        NOW,
    )
    .unwrap();
    assert!(met.is_empty());
}

#[test]
fn a_usable_envelope_meets_the_gate_even_beside_a_bad_one() {
    let f = fixture();
    let (envs, rules) = production(&[GateKind::Tests]);
    let good = evidence(
        &f.ci,
        &f.digest,
        NOW + 60,
        vec![gate("tests", Verdict::Passed)],
    );
    let met = check_gates(
        &envs,
        &rules,
        &f.keys,
        &release("1.0.0", vec![b"garbage".to_vec(), good]),
        NOW,
    )
    .unwrap();
    assert_eq!(met.len(), 1);
}
