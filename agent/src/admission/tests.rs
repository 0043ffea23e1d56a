//! One test per attack on admission, each asserting the exact rejection.

#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use gantry_proto::envelope::{JOB_PAYLOAD_TYPE, pae, sign_job};
use gantry_proto::keys::SigningKey;
use gantry_proto::v1;
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::config::{AppPolicy, Limits, Policy, RunAs, TrustedKey};
use crate::job::{AppName, JobId, Probe, StrategyKind};
use crate::ledger::{LedgerError, Standing};
use crate::progress::Ended;

const NOW: i64 = 1_800_000_000;
const AGENT: &str = "agent-1";

struct Keys {
    deployer: SigningKey,
    approver1: SigningKey,
    approver2: SigningKey,
    /// Holds both roles.
    both: SigningKey,
}

fn keys() -> Keys {
    Keys {
        deployer: SigningKey::generate().unwrap(),
        approver1: SigningKey::generate().unwrap(),
        approver2: SigningKey::generate().unwrap(),
        both: SigningKey::generate().unwrap(),
    }
}

fn trusted(name: &str, key: &SigningKey, roles: &[&str]) -> TrustedKey {
    TrustedKey {
        name: name.to_owned(),
        file: std::path::PathBuf::from(format!("keys/{name}.pub")),
        key: key.public_key(),
        key_id: key.key_id(),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        not_before: None,
        not_after: None,
        revoked: false,
        revoked_reason: None,
    }
}

fn policy(k: &Keys, approvals: u32) -> Policy {
    let deployer: BTreeSet<String> = ["deployer".to_owned()].into();
    let allow = [
        Action::Deploy,
        Action::Rollback,
        Action::Restart,
        Action::Stop,
    ]
    .into_iter()
    .map(|a| (a, deployer.clone()))
    .collect();
    let web = AppName::new("web").unwrap();
    let app = AppPolicy {
        name: web.clone(),
        user: "nobody".to_owned(),
        run_as: RunAs::CurrentUser {
            uid: 65534,
            gid: 65534,
        },
        ports: 18000..=18009,
        max_instances: 4,
        stop_timeout: Duration::from_secs(10),
        approvals,
        deployer_may_approve: false,
        listen: None,
        router: crate::config::RouterConfig::None,
        allow,
    };
    Policy {
        keys: vec![
            trusted("deployer", &k.deployer, &["deployer"]),
            trusted("approver1", &k.approver1, &["approver"]),
            trusted("approver2", &k.approver2, &["approver"]),
            trusted("both", &k.both, &["deployer", "approver"]),
        ],
        apps: BTreeMap::from([(web, app)]),
    }
}

fn limits() -> Limits {
    Limits {
        max_job_bytes: 1024,
        max_artifact_bytes: 1 << 20,
        max_unpacked_bytes: 8 << 20,
        max_validity: Duration::from_secs(3600),
        clock_skew: Duration::from_secs(30),
        releases_kept: 5,
        client_rejections_burst: 100,
        client_rejections_per_second: 10,
        client_connections: 64,
    }
}

struct Fx {
    keys: Keys,
    dir: tempfile::TempDir,
    adm: Admission,
}

/// An admission over `policy`, with its replay store under `dir/jobs`.
fn open(policy: Policy, dir: &std::path::Path) -> Result<Admission, LedgerError> {
    Admission::new(
        Arc::new(policy),
        limits(),
        AGENT.to_owned(),
        &dir.join("jobs"),
    )
}

/// An admission over `policy` (built from `keys`), with its own replay store.
fn fx_policy(keys: Keys, policy: Policy) -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let adm = open(policy, dir.path()).unwrap();
    Fx { keys, dir, adm }
}

fn fx_with(approvals: u32) -> Fx {
    let keys = keys();
    let policy = policy(&keys, approvals);
    fx_policy(keys, policy)
}

fn fx() -> Fx {
    fx_with(0)
}

fn job(id: &str) -> v1::Job {
    v1::Job {
        job_id: id.to_owned(),
        agent_id: AGENT.to_owned(),
        app: "web".to_owned(),
        action: v1::Action::Deploy as i32,
        issued_at: NOW - 10,
        not_before: NOW - 10,
        expires_at: NOW + 600,
        release: Some(v1::Release {
            version: "1.2.0".to_owned(),
            artifact_sha256: "ab".repeat(32),
            artifact_size: 1000,
            strategy: v1::Strategy::Hot as i32,
            instances: 2,
            command: vec!["bin/server".to_owned()],
            health: Some(v1::HealthCheck {
                probe: Some(v1::health_check::Probe::Http(v1::HttpProbe {
                    path: "/health".to_owned(),
                    expect_status: 0,
                })),
                ..v1::HealthCheck::default()
            }),
            env: [("MODE".to_owned(), "prod".to_owned())].into(),
            progress_deadline_secs: 0,
            secret_env: Vec::new(),
            rollout: None,
        }),
        reason: "test".to_owned(),
    }
}

fn sign(key: &SigningKey, bytes: &[u8]) -> SignatureIn {
    let s = sign_job(key, bytes);
    SignatureIn {
        key_id_hint: s.key_id,
        sig: s.sig,
    }
}

/// One signature over `bytes` by each of `keys`, in order.
fn signed(bytes: &[u8], keys: &[&SigningKey]) -> Vec<SignatureIn> {
    keys.iter().map(|k| sign(k, bytes)).collect()
}

#[derive(Default)]
struct Apps {
    current: Option<semver::Version>,
    on_disk: Vec<semver::Version>,
    busy: Option<JobId>,
}

impl Apps {
    /// An app with a job in progress.
    fn busy() -> Self {
        Self {
            busy: Some(JobId::new("web-running-1").unwrap()),
            ..Self::default()
        }
    }

    /// An app whose current release is `version`.
    fn at(version: semver::Version) -> Self {
        Self {
            current: Some(version),
            ..Self::default()
        }
    }
}

impl AppView for Apps {
    fn current_version(&self, _: &AppName) -> Option<semver::Version> {
        self.current.clone()
    }
    fn has_release(&self, _: &AppName, v: &semver::Version) -> bool {
        self.on_disk.contains(v)
    }
    fn busy_with(&self, _: &AppName) -> Option<JobId> {
        self.busy.clone()
    }
}

impl Fx {
    fn admit(&self, bytes: &[u8], sigs: &[SignatureIn]) -> Result<Admitted, Rejection> {
        self.admit_with(bytes, sigs, &Apps::default())
    }

    fn admit_with(
        &self,
        bytes: &[u8],
        sigs: &[SignatureIn],
        apps: &Apps,
    ) -> Result<Admitted, Rejection> {
        self.adm.admit(bytes, sigs, NOW, apps)
    }

    /// Admits `bytes` signed by the deployer.
    fn by_deployer(&self, bytes: &[u8]) -> Result<Admitted, Rejection> {
        self.by_deployer_with(bytes, &Apps::default())
    }

    /// Admits `bytes` signed by the deployer, with `apps` as the apps' state.
    fn by_deployer_with(&self, bytes: &[u8], apps: &Apps) -> Result<Admitted, Rejection> {
        self.admit_with(bytes, &[sign(&self.keys.deployer, bytes)], apps)
    }

    /// Admits `bytes` with `sigs`; returns the error.
    fn refuse(&self, bytes: &[u8], sigs: &[SignatureIn]) -> AdmissionError {
        self.admit(bytes, sigs).unwrap_err().error
    }

    /// Admits `job` signed by the deployer; returns the error.
    fn reject(&self, job: &v1::Job) -> AdmissionError {
        self.by_deployer(&job.encode_to_vec()).unwrap_err().error
    }
}

fn assert_quorum_not_met(e: &AdmissionError, needed: u32, got: u32) {
    assert!(
        matches!(e, AdmissionError::QuorumNotMet { needed: n, got: g } if *n == needed && *g == got),
        "{e:?}"
    );
}

fn assert_invalid_field(e: &AdmissionError, field: &str) {
    assert!(
        matches!(e, AdmissionError::InvalidJob { field: f, .. } if f == field),
        "{e:?}"
    );
}

fn new_job(r: Result<Admitted, Rejection>) -> VerifiedJob {
    match r {
        Ok(Admitted::New(j)) => j,
        Ok(Admitted::Duplicate(rec)) => panic!("duplicate: {rec:?}"),
        Err(e) => panic!("{e}: {:?}", e.error),
    }
}

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

#[test]
fn wrong_agent() {
    let fx = fx();
    let mut j = job("j1");
    j.agent_id = "agent-2".into();
    let e = fx.reject(&j);
    assert!(
        matches!(&e, AdmissionError::WrongAgent { expected, found } if expected == AGENT && found == "agent-2"),
        "{e:?}"
    );
}

#[test]
fn empty_agent() {
    let fx = fx();
    let mut j = job("j1");
    j.agent_id.clear();
    let e = fx.reject(&j);
    assert!(
        matches!(&e, AdmissionError::WrongAgent { found, .. } if found.is_empty()),
        "{e:?}"
    );
}

#[test]
fn expired() {
    let fx = fx();
    let mut j = job("j1");
    j.expires_at = NOW;
    let e = fx.reject(&j);
    assert!(
        matches!(
            e,
            AdmissionError::Expired {
                expires_at: NOW,
                now: NOW
            }
        ),
        "{e:?}"
    );
}

#[test]
fn not_yet_valid() {
    let fx = fx();
    let mut j = job("j1");
    j.not_before = NOW + 31;
    let e = fx.reject(&j);
    assert!(
        matches!(e, AdmissionError::NotYetValid { not_before, now: NOW } if not_before == NOW + 31),
        "{e:?}"
    );
    // Within the clock skew it is admitted.
    j.not_before = NOW + 30;
    let bytes = j.encode_to_vec();
    new_job(fx.by_deployer(&bytes));
}

#[test]
fn window_over_max() {
    let fx = fx();
    let mut j = job("j1");
    j.not_before = NOW - 10;
    j.expires_at = NOW + 3591;
    let e = fx.reject(&j);
    assert!(
        matches!(
            e,
            AdmissionError::WindowTooLong {
                window_secs: 3601,
                max_secs: 3600
            }
        ),
        "{e:?}"
    );
}

#[test]
fn hostile_times_do_not_overflow() {
    let fx = fx();
    let mut j = job("j1");
    j.not_before = i64::MIN;
    j.expires_at = i64::MAX;
    let e = fx.reject(&j);
    assert!(matches!(e, AdmissionError::WindowTooLong { .. }), "{e:?}");
    j.not_before = i64::MAX;
    let e = fx.reject(&j);
    assert!(matches!(e, AdmissionError::NotYetValid { .. }), "{e:?}");
}

#[test]
fn replay_with_same_bytes_is_a_duplicate() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let sigs = [sign(&fx.keys.deployer, &bytes)];
    new_job(fx.admit(&bytes, &sigs));
    match fx.admit(&bytes, &sigs) {
        Ok(Admitted::Duplicate(rec)) => {
            assert_eq!(rec.job_id.as_str(), "j1");
            assert_eq!(rec.digest, Sha256Hex::of(&bytes));
            assert_eq!(rec.standing, Standing::Admitted);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn replay_with_other_bytes_is_refused() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    new_job(fx.by_deployer(&bytes));
    let mut other = job("j1");
    other.reason = "second try".into();
    let e = fx.reject(&other);
    assert!(
        matches!(&e, AdmissionError::Replayed { job_id } if job_id == "j1"),
        "{e:?}"
    );
}

#[test]
fn replay_after_restart() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let sigs = [sign(&fx.keys.deployer, &bytes)];
    new_job(fx.admit(&bytes, &sigs));
    fx.adm
        .ledger()
        .finish(&JobId::new("j1").unwrap(), Ended::succeeded("healthy"))
        .unwrap();

    let restarted = open(policy(&fx.keys, 0), fx.dir.path()).unwrap();
    match restarted.admit(&bytes, &sigs, NOW, &Apps::default()) {
        Ok(Admitted::Duplicate(rec)) => {
            assert_eq!(
                rec.standing,
                Standing::Finished(Ended::succeeded("healthy"))
            );
        }
        other => panic!("{other:?}"),
    }
    let mut other = job("j1");
    other.reason = "again".into();
    let other = other.encode_to_vec();
    let e = restarted
        .admit(
            &other,
            &[sign(&fx.keys.deployer, &other)],
            NOW,
            &Apps::default(),
        )
        .unwrap_err()
        .error;
    assert!(matches!(e, AdmissionError::Replayed { .. }), "{e:?}");
}

#[test]
fn concurrent_double_submission_admits_once() {
    let fx = fx();
    let adm = Arc::new(fx.adm);
    for round in 0..20 {
        let bytes = job(&format!("j{round}")).encode_to_vec();
        let sigs = vec![sign(&fx.keys.deployer, &bytes)];
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (adm, bytes, sigs, barrier) =
                    (adm.clone(), bytes.clone(), sigs.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // The app reports busy only once a job was recorded, as the executor would.
                    let apps = Apps::default();
                    adm.admit(&bytes, &sigs, NOW, &apps)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let new = results
            .iter()
            .filter(|r| matches!(r, Ok(Admitted::New(_))))
            .count();
        let dup = results
            .iter()
            .filter(|r| matches!(r, Ok(Admitted::Duplicate(_))))
            .count();
        assert_eq!((new, dup), (1, 1), "round {round}: {results:?}");
    }
}

#[test]
fn unknown_action_value() {
    let fx = fx();
    let mut j = job("j1");
    j.action = 99;
    let e = fx.reject(&j);
    assert_invalid_field(&e, "action");
    j.action = 0;
    let e = fx.reject(&j);
    assert_invalid_field(&e, "action");
}

#[test]
fn app_names_that_escape_paths() {
    let fx = fx();
    for bad in [
        "../web",
        "web/../../etc",
        "/etc",
        "a/b",
        "web\0",
        "-web",
        ".",
        "",
    ] {
        let mut j = job("j1");
        j.app = bad.to_owned();
        let bytes = j.encode_to_vec();
        let rej = fx.by_deployer(&bytes).unwrap_err();
        assert!(
            matches!(&rej.error, AdmissionError::InvalidJob { field, .. } if field == "app"),
            "{bad:?}: {:?}",
            rej.error
        );
        // The rejection still names what was claimed, for the audit entry.
        assert_eq!(rej.app.as_deref(), Some(bad));
        assert_eq!(rej.job_id.as_deref(), Some("j1"));
    }
}

#[test]
fn job_ids_that_escape_paths() {
    let fx = fx();
    for bad in ["../x", "a/b", ".hidden", "", "x\0"] {
        let mut j = job(bad);
        j.app = "web".into();
        let e = fx.reject(&j);
        assert!(
            matches!(&e, AdmissionError::InvalidJob { field, .. } if field == "job_id"),
            "{bad:?}: {e:?}"
        );
    }
}

#[test]
fn invalid_version() {
    let fx = fx();
    let mut j = job("j1");
    if let Some(r) = j.release.as_mut() {
        r.version = "1.2".into();
    }
    let e = fx.reject(&j);
    assert!(
        matches!(&e, AdmissionError::InvalidVersion { version, .. } if version == "1.2"),
        "{e:?}"
    );
}

#[test]
fn env_may_not_override_what_the_agent_sets() {
    let fx = fx();
    for bad in ["PORT", "GANTRY_APP", "1X", "A=B", ""] {
        let mut j = job("j1");
        if let Some(r) = j.release.as_mut() {
            r.env.insert(bad.to_owned(), "x".into());
        }
        let e = fx.reject(&j);
        assert!(
            matches!(&e, AdmissionError::InvalidJob { field, .. } if field == "release.env"),
            "{bad:?}: {e:?}"
        );
    }
}

#[test]
fn a_deploy_needs_a_complete_release() {
    let fx = fx();
    type Breaker = fn(&mut v1::Release);
    let cases: [(&str, Breaker); 5] = [
        ("release.instances", |r| r.instances = 0),
        ("release.command", |r| r.command.clear()),
        ("release.artifact_sha256", |r| {
            r.artifact_sha256 = "AB".repeat(32)
        }),
        ("release.health", |r| r.health = None),
        ("release.health.probe", |r| {
            r.health = Some(v1::HealthCheck::default())
        }),
    ];
    for (field, break_it) in cases {
        let mut j = job("j1");
        if let Some(r) = j.release.as_mut() {
            break_it(r);
        }
        let e = fx.reject(&j);
        assert!(
            matches!(&e, AdmissionError::InvalidJob { field: f, .. } if f == field),
            "{field}: {e:?}"
        );
    }
    let mut j = job("j1");
    j.release = None;
    let e = fx.reject(&j);
    assert_invalid_field(&e, "release");
}

#[test]
fn more_instances_than_the_app_may_run() {
    let fx = fx();
    let mut j = job("j1");
    if let Some(r) = j.release.as_mut() {
        r.instances = 5;
    }
    let e = fx.reject(&j);
    assert!(
        matches!(&e, AdmissionError::InvalidJob { field, problem } if field == "release.instances" && problem.contains("max_instances 4")),
        "{e:?}"
    );
}

#[test]
fn downgrade() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let apps = Apps::at(semver::Version::new(2, 0, 0));
    let e = fx.by_deployer_with(&bytes, &apps).unwrap_err().error;
    assert!(
        matches!(&e, AdmissionError::Downgrade { current, requested }
            if *current == semver::Version::new(2, 0, 0) && *requested == semver::Version::new(1, 2, 0)),
        "{e:?}"
    );
    // Redeploying the current version or going up is fine.
    let apps = Apps::at(semver::Version::new(1, 2, 0));
    new_job(fx.by_deployer_with(&bytes, &apps));
}

fn rollback_to(id: &str, version: &str) -> v1::Job {
    let mut j = job(id);
    j.action = v1::Action::Rollback as i32;
    j.release = Some(v1::Release {
        version: version.to_owned(),
        ..v1::Release::default()
    });
    j
}

#[test]
fn rollback_target_missing() {
    let fx = fx();
    let e = fx.reject(&rollback_to("j1", "1.0.0"));
    assert!(
        matches!(&e, AdmissionError::RollbackTargetMissing { version } if *version == semver::Version::new(1, 0, 0)),
        "{e:?}"
    );
    let bytes = rollback_to("j2", "1.0.0").encode_to_vec();
    let apps = Apps {
        on_disk: vec![semver::Version::new(1, 0, 0)],
        ..Apps::default()
    };
    let v = new_job(fx.by_deployer_with(&bytes, &apps));
    assert_eq!(v.spec.target_version, Some(semver::Version::new(1, 0, 0)));
    assert_eq!(v.spec.release, None);
    // A rollback without a version goes to the previous release: nothing to check here.
    let mut j = job("j3");
    j.action = v1::Action::Rollback as i32;
    j.release = None;
    let bytes = j.encode_to_vec();
    let v = new_job(fx.by_deployer(&bytes));
    assert_eq!(v.spec.target_version, None);
}

/// A job whose encoding is exactly `len` bytes.
fn job_of_len(id: &str, len: usize) -> Vec<u8> {
    let mut j = job(id);
    j.reason.clear();
    let base = j.encode_to_vec().len();
    for pad in 0..len {
        j.reason = "x".repeat(pad);
        let bytes = j.encode_to_vec();
        if bytes.len() == len {
            return bytes;
        }
        assert!(
            bytes.len() < len || pad == 0,
            "cannot hit {len} from {base}"
        );
    }
    panic!("cannot build a job of {len} bytes");
}

#[test]
fn size_at_limit_minus_one_limit_and_limit_plus_one() {
    let fx = fx();
    let max = limits().max_job_bytes;
    for (id, len) in [("ja", max - 1), ("jb", max)] {
        let bytes = job_of_len(id, len);
        new_job(fx.by_deployer(&bytes));
    }
    let bytes = job_of_len("jc", max + 1);
    let e = fx.by_deployer(&bytes).unwrap_err().error;
    assert!(
        matches!(e, AdmissionError::TooLarge { size, max: m } if size == max + 1 && m == max),
        "{e:?}"
    );
}

#[test]
fn malformed_protobuf_signed_garbage() {
    let fx = fx();
    let bytes = vec![0xff; 12];
    let rej = fx.by_deployer(&bytes).unwrap_err();
    assert!(
        matches!(rej.error, AdmissionError::Malformed { .. }),
        "{:?}",
        rej.error
    );
    assert_eq!(rej.job_id, None);
}

#[test]
fn unconfigured_app() {
    let fx = fx();
    let mut j = job("j1");
    j.app = "api".into();
    let e = fx.reject(&j);
    assert!(
        matches!(&e, AdmissionError::AppNotConfigured { app } if app == "api"),
        "{e:?}"
    );
}

#[test]
fn busy_app() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let apps = Apps::busy();
    let e = fx.by_deployer_with(&bytes, &apps).unwrap_err().error;
    assert!(
        matches!(&e, AdmissionError::AppBusy { app, job_id } if app == "web" && job_id == "web-running-1"),
        "{e:?}"
    );
    // The refusal says which job holds the app and how to follow or end it.
    let says = e.to_string();
    for words in [
        "job web-running-1",
        "gantry job watch web-running-1",
        "gantry abort --app web",
    ] {
        assert!(says.contains(words), "{says:?} does not say {words:?}");
    }
    // Refused jobs are not recorded: the same job is admitted once the app is free.
    new_job(fx.by_deployer(&bytes));
}

#[test]
fn a_corrupt_replay_record_stops_startup() {
    let fx = fx();
    let jobs = fx.dir.path().join("jobs");
    std::fs::write(jobs.join("j9.json"), b"{oops").unwrap();
    let e = open(policy(&fx.keys, 0), fx.dir.path()).unwrap_err();
    assert!(matches!(e, LedgerError::Load { .. }), "{e:?}");
    assert!(e.to_string().contains("j9.json"), "{e}");
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(job) = decode::decode_job(&bytes) {
            let _ = decode::job_spec(&job);
        }
    }

    #[test]
    fn decode_of_mutated_jobs_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = job("j1").encode_to_vec();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        if let Ok(job) = decode::decode_job(&bytes) {
            let _ = decode::job_spec(&job);
        }
    }

    #[test]
    fn window_check_never_panics(nb in any::<i64>(), ex in any::<i64>(), now in any::<i64>()) {
        let mut spec = decode::job_spec(&job("j1")).unwrap();
        spec.not_before = nb;
        spec.expires_at = ex;
        let _ = window::check_window(&spec, now, &limits());
    }
}

// ---------------------------------------------------------------------------------------------
// Key lifecycle and approvals

/// `fx_with(approvals)`, with `edit` applied to the named trusted key.
fn fx_key(approvals: u32, name: &str, edit: impl FnOnce(&mut TrustedKey)) -> Fx {
    let keys = keys();
    let mut p = policy(&keys, approvals);
    edit(p.keys.iter_mut().find(|k| k.name == name).unwrap());
    fx_policy(keys, p)
}

fn web_mut(p: &mut Policy) -> &mut AppPolicy {
    p.apps.get_mut(&AppName::new("web").unwrap()).unwrap()
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

#[test]
fn secret_env_names_are_decoded_and_must_be_env_keys() {
    let fx = fx();
    let mut j = job("j1");
    let r = j.release.as_mut().unwrap();
    r.env.insert("DB_PASSWORD".to_owned(), "s3cret".to_owned());
    r.secret_env = vec!["DB_PASSWORD".to_owned()];
    let bytes = j.encode_to_vec();
    let v = new_job(fx.by_deployer(&bytes));
    let release = v.spec.release.unwrap();
    assert_eq!(
        release.secret_env.iter().collect::<Vec<_>>(),
        ["DB_PASSWORD"]
    );
    assert!(!format!("{release:?}").contains("s3cret"));

    let mut j = job("j2");
    j.release.as_mut().unwrap().secret_env = vec!["NOT_IN_ENV".to_owned()];
    let e = fx.reject(&j);
    assert_eq!(
        e.to_string(),
        "invalid job: release.secret_env \"NOT_IN_ENV\" is not a key of release.env"
    );
}

mod explained;
mod rollout;
