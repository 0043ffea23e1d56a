//! One test per attack on admission, each asserting the exact rejection: the shared fixtures
//! here, the tests in `tests/<check>.rs`, one file per check the pipeline runs.

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

/// A trusted key `name` with `roles`, valid at any time (also for the flags tests).
pub(crate) fn trusted(name: &str, key: &SigningKey, roles: &[&str]) -> TrustedKey {
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
        dispatch: BTreeSet::new(),
        listen: None,
        router: crate::config::RouterConfig::None,
        front_door_mode: crate::config::FrontDoorMode::Tcp,
        hold_timeout: crate::config::DEFAULT_HOLD_TIMEOUT,
        allow,
        flags: None,
        limits: Default::default(),
    };
    Policy {
        keys: vec![
            trusted("deployer", &k.deployer, &["deployer"]),
            trusted("approver1", &k.approver1, &["approver"]),
            trusted("approver2", &k.approver2, &["approver"]),
            trusted("both", &k.both, &["deployer", "approver"]),
        ],
        apps: BTreeMap::from([(web, app)]),
        environments: Default::default(),
    }
}

/// Small limits, a one-hour validity window (also for the flags tests).
pub(crate) fn limits() -> Limits {
    Limits {
        max_job_bytes: 1024,
        max_artifact_bytes: 1 << 20,
        max_unpacked_bytes: 8 << 20,
        max_store_bytes: 8 << 30,
        max_unused_bytes_per_client: 2 << 30,
        unused_artifact_ttl: std::time::Duration::from_secs(3600),
        max_validity: Duration::from_secs(3600),
        clock_skew: Duration::from_secs(30),
        max_plan_validity: Duration::from_secs(14 * 86_400),
        max_dispatch_validity: Duration::from_secs(300),
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
            evidence: Vec::new(),
            notes: String::new(),
        }),
        reason: "test".to_owned(),
        restore_flags: false,
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
    previous: Option<semver::Version>,
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
    fn previous_version(&self, _: &AppName) -> Option<semver::Version> {
        self.previous.clone()
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

fn web_mut(p: &mut Policy) -> &mut AppPolicy {
    p.apps.get_mut(&AppName::new("web").unwrap()).unwrap()
}

mod apps;
mod decoding;
mod dispatches;
mod environments;
mod explained;
mod keys;
mod replays;
mod roles;
mod rollout;
mod signatures;
mod validity;
