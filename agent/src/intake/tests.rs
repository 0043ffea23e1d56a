//! The intake over a real admission, audit log, ledger and executor: a client that goes away
//! mid-acceptance, an acceptance past its deadline, and a refusal the ledger cannot record.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use gantry_proto::envelope::sign_job;
use gantry_proto::keys::SigningKey;
use gantry_proto::v1;
use prost::Message;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::*;
use crate::app::AppView;
use crate::audit::AuditOptions;
use crate::clock::FakeClock;
use crate::config::{
    AppPolicy, AuditSettings, Config, Limits, Policy, RouterConfig, RunAs, TlsConfig, TrustedKey,
};
use crate::job::{AppName, JobId, Sha256Hex};

const NOW: i64 = 1_800_000_000;
const AGENT: &str = "agent-1";

struct Fx {
    _dir: tempfile::TempDir,
    key: SigningKey,
    intake: Intake,
    executor: Executor,
    ledger: Arc<Ledger>,
    audit: AuditLog,
}

fn config(data_dir: &Path, key: &SigningKey) -> Config {
    let deployer: BTreeSet<String> = ["deployer".to_owned()].into();
    let web = AppName::new("web").unwrap();
    let app = AppPolicy {
        name: web.clone(),
        user: "nobody".to_owned(),
        run_as: RunAs::CurrentUser {
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
        },
        ports: 18000..=18009,
        max_instances: 4,
        stop_timeout: std::time::Duration::from_secs(10),
        approvals: 0,
        deployer_may_approve: false,
        dispatch: BTreeSet::new(),
        listen: None,
        router: RouterConfig::None,
        front_door_mode: crate::config::FrontDoorMode::Tcp,
        hold_timeout: crate::config::DEFAULT_HOLD_TIMEOUT,
        flags: None,
        limits: Default::default(),
        allow: [(Action::Deploy, deployer)].into_iter().collect(),
    };
    let policy = Policy {
        keys: vec![TrustedKey {
            name: "deployer".to_owned(),
            file: data_dir.join("deployer.pub"),
            key: key.public_key(),
            key_id: key.key_id(),
            roles: ["deployer".to_owned()].into(),
            not_before: None,
            not_after: None,
            revoked: false,
            revoked_reason: None,
        }],
        apps: BTreeMap::from([(web, app)]),
        environments: Default::default(),
    };
    Config {
        path: data_dir.join("agent.toml"),
        digest: Sha256Hex::of(b"config"),
        agent_id: AGENT.to_owned(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        controller: None,
        data_dir: data_dir.to_owned(),
        placement: Default::default(),
        tls: TlsConfig {
            ca: data_dir.join("ca.pem"),
            cert: data_dir.join("agent.pem"),
            key: data_dir.join("agent.key"),
            client_names: Vec::new(),
            client_fingerprints: Vec::new(),
            crl: None,
        },
        audit: AuditSettings {
            signing_key: data_dir.join("audit.key"),
            checkpoint_every: 0,
            checkpoint_interval: std::time::Duration::ZERO,
            max_file_bytes: 64 << 20,
            min_free_bytes: 0,
        },
        limits: Limits {
            max_job_bytes: 64 * 1024,
            max_artifact_bytes: 1 << 20,
            max_unpacked_bytes: 8 << 20,
            max_store_bytes: 8 << 30,
            max_unused_bytes_per_client: 2 << 30,
            unused_artifact_ttl: std::time::Duration::from_secs(3600),
            max_validity: std::time::Duration::from_secs(3600),
            clock_skew: std::time::Duration::from_secs(30),
            max_plan_validity: std::time::Duration::from_secs(14 * 86_400),
            max_dispatch_validity: std::time::Duration::from_secs(300),
            releases_kept: 5,
            client_rejections_burst: 100,
            client_rejections_per_second: 10,
            client_connections: 64,
        },
        policy: Arc::new(policy),
        metrics_listen: None,
    }
}

async fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate().unwrap();
    let config = Arc::new(config(dir.path(), &key));
    let (audit, _) = AuditLog::open(
        AuditOptions {
            dir: dir.path().join("audit"),
            checkpoint_every: 0,
            checkpoint_interval: std::time::Duration::ZERO,
            max_file_bytes: 64 << 20,
            min_free_bytes: 0,
        },
        Arc::new(SigningKey::generate().unwrap()),
    )
    .unwrap();
    let ledger = Arc::new(Ledger::open(&dir.path().join("jobs")).unwrap());
    let admission = Arc::new(Admission::over(
        Arc::clone(&config.policy),
        config.limits.clone(),
        AGENT.to_owned(),
        Arc::clone(&ledger),
    ));
    let store = Arc::new(
        crate::artifact::ArtifactStore::open(&dir.path().join("artifacts"), 1 << 20).unwrap(),
    );
    let executor = Executor::start(
        Arc::clone(&config),
        audit.clone(),
        Arc::clone(&ledger),
        store,
        TaskTracker::new(),
        CancellationToken::new(),
        crate::flags::Flags::open(Arc::clone(&config), audit.clone()).unwrap(),
    )
    .await
    .unwrap();
    let secrets = Arc::new(SecretsKey::load_or_create(dir.path()).unwrap());
    let intake = Intake::new(admission, audit.clone(), executor.clone(), secrets)
        .with_clock(Arc::new(FakeClock::at_ms(NOW * 1000)));
    Fx {
        _dir: dir,
        key,
        intake,
        executor,
        ledger,
        audit,
    }
}

/// A hot deploy of web whose artifact is not in the store: it is accepted, runs and fails at
/// once, so a test can tell a job that ran from one left reserved.
fn job(id: &str) -> Vec<u8> {
    v1::Job {
        job_id: id.to_owned(),
        agent_id: AGENT.to_owned(),
        app: "web".to_owned(),
        action: v1::Action::Deploy as i32,
        issued_at: NOW - 10,
        not_before: NOW - 10,
        expires_at: NOW + 600,
        release: Some(v1::Release {
            version: "1.0.0".to_owned(),
            artifact_sha256: "ab".repeat(32),
            artifact_size: 1000,
            strategy: v1::Strategy::Hot as i32,
            instances: 1,
            command: vec!["bin/server".to_owned()],
            health: Some(v1::HealthCheck {
                probe: Some(v1::health_check::Probe::Http(v1::HttpProbe {
                    path: "/health".to_owned(),
                    expect_status: 0,
                })),
                ..v1::HealthCheck::default()
            }),
            ..v1::Release::default()
        }),
        reason: "test".to_owned(),
        restore_flags: false,
    }
    .encode_to_vec()
}

fn peer() -> PeerIdentity {
    PeerIdentity {
        fingerprint: "ab".repeat(32),
    }
}

impl Fx {
    fn sigs(&self, bytes: &[u8]) -> Vec<SignatureIn> {
        let s = sign_job(&self.key, bytes);
        vec![SignatureIn {
            key_id_hint: s.key_id,
            sig: s.sig,
        }]
    }

    async fn submit(&self, id: &str) -> Result<Submitted, IntakeError> {
        let bytes = job(id);
        self.intake
            .submit(&bytes, &self.sigs(&bytes), &peer(), ())
            .await
    }

    fn web(&self) -> AppName {
        AppName::new("web").unwrap()
    }

    /// Waits until the job has ended in the ledger.
    async fn ended(&self, id: &str) -> Standing {
        for _ in 0..500 {
            if let Some(record) = self.ledger.get(id)
                && record.standing != Standing::Admitted
            {
                return record.standing;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("job {id} never ended: {:?}", self.ledger.get(id));
    }
}

fn lines(audit: &AuditLog) -> Vec<String> {
    crate::audit::read_lines(audit.dir(), 1)
        .unwrap()
        .into_iter()
        .map(|(_, l)| l)
        .collect()
}

#[tokio::test]
async fn a_client_that_cancels_mid_acceptance_leaves_no_app_reserved() {
    let mut fx = fx().await;
    // The acceptance waits at its gate until the call is gone.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    fx.intake = fx.intake.clone().with_gate(Arc::clone(&gate));
    let bytes = job("j1");
    let sigs = fx.sigs(&bytes);
    // Polled once: admission runs (the ledger now holds j1), then the call is dropped while
    // the acceptance is under way, as when the client cancels or its connection drops.
    let cut = tokio::time::timeout(
        std::time::Duration::ZERO,
        fx.intake.submit(&bytes, &sigs, &peer(), ()),
    )
    .await;
    assert!(cut.is_err(), "the call was not cut: {cut:?}");
    assert!(fx.ledger.get("j1").is_some(), "admission did not run");
    gate.add_permits(1);

    // The acceptance ran to its end anyway: the job was accepted, ran, and ended.
    let standing = fx.ended("j1").await;
    assert!(
        matches!(&standing, Standing::Finished(e) if e.outcome == crate::progress::Outcome::Failed),
        "{standing:?}"
    );
    // The executor releases the app just after it records the end.
    for _ in 0..500 {
        if fx.executor.busy_with(&fx.web()).is_none() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        fx.executor.busy_with(&fx.web()).is_none(),
        "web is still reserved"
    );
    let log = lines(&fx.audit);
    assert!(
        log.iter().any(|l| l.contains("\"job.accepted\"")),
        "{log:?}"
    );
    // And the app takes the next job.
    match fx.submit("j2").await {
        Ok(Submitted::Started(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_acceptance_past_its_deadline_releases_the_app_and_runs_nothing() {
    let mut fx = fx().await;
    // The acceptance cannot record before its (zero) deadline: its gate has no permit.
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    fx.intake = fx
        .intake
        .clone()
        .with_deadline(std::time::Duration::ZERO)
        .with_gate(Arc::clone(&gate));
    match fx.submit("j1").await {
        Err(IntakeError::Deadline(d)) => assert_eq!(d, std::time::Duration::ZERO),
        other => panic!("{other:?}"),
    }
    assert!(
        fx.executor.busy_with(&fx.web()).is_none(),
        "web is still reserved"
    );
    assert!(fx.executor.job("j1").is_none(), "it started");
    match fx.ledger.get("j1").unwrap().standing {
        Standing::Refused { why } => assert!(why.contains("not durable"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Not left pending for a watcher, nor reported interrupted at the next start.
    assert!(fx.ledger.unfinished().is_empty());
    match fx.intake.known("j1").await {
        Err(KnownError::Refused { why, .. }) => assert!(why.contains("not durable"), "{why}"),
        other => panic!("{other:?}"),
    }
}

impl Fx {
    /// Admits `id`, then lets job j0 take web before `id` reserves it: the race between two
    /// connections that admission alone cannot close.
    async fn accept_after_j0_took_web(&self, id: &str) -> Result<Submitted, IntakeError> {
        let bytes = job(id);
        let sigs = self.sigs(&bytes);
        let admitted = self
            .intake
            .admission
            .admit(&bytes, &sigs, NOW, &self.executor);
        let Ok(Admitted::New(verified)) = admitted else {
            panic!("{admitted:?}");
        };
        self.executor
            .reserve(&self.web(), &JobId::new("j0").unwrap())
            .unwrap();
        let accept = Acceptance {
            bytes: bytes.len(),
            claimed: claimed(&sigs),
            peer: peer(),
            fleet: None,
        };
        self.intake.accept(verified, accept).await
    }
}

#[tokio::test]
async fn a_busy_app_refuses_the_job_and_the_ledger_says_so() {
    let fx = fx().await;
    match fx.accept_after_j0_took_web("j1").await {
        Err(IntakeError::Busy(r)) => {
            assert!(
                matches!(&r.error, AdmissionError::AppBusy { app, .. } if app == "web"),
                "{r:?}"
            );
            assert_eq!(r.job_id.as_deref(), Some("j1"));
        }
        other => panic!("{other:?}"),
    }
    match fx.ledger.get("j1").unwrap().standing {
        Standing::Refused { why } => assert!(why.contains("j0"), "{why}"),
        other => panic!("{other:?}"),
    }
    // The job holding the app keeps it.
    assert!(fx.executor.busy_with(&fx.web()).is_some());
}

/// Collects what the agent logs.
#[derive(Clone, Default)]
struct Logged(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logged {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_refusal_the_ledger_cannot_write_is_logged_and_still_answered() {
    let logged = Logged::default();
    let sink = logged.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .finish();
    // A current-thread test runtime: the acceptance task runs on this thread too.
    let _guard = tracing::subscriber::set_default(subscriber);
    let fx = fx().await;
    // Admission records j1; then the disk refuses every write.
    let bytes = job("j1");
    let sigs = fx.sigs(&bytes);
    let admitted = fx.intake.admission.admit(&bytes, &sigs, NOW, &fx.executor);
    let Ok(Admitted::New(verified)) = admitted else {
        panic!("{admitted:?}");
    };
    fx.executor
        .reserve(&fx.web(), &JobId::new("j0").unwrap())
        .unwrap();
    fx.ledger.fail_writes(true);
    let accept = Acceptance {
        bytes: bytes.len(),
        claimed: claimed(&sigs),
        peer: peer(),
        fleet: None,
    };
    match fx.intake.accept(verified, accept).await {
        Err(IntakeError::Busy(_)) => {}
        other => panic!("{other:?}"),
    }
    let text = String::from_utf8_lossy(&logged.0.lock().unwrap()).into_owned();
    assert!(
        text.contains("cannot record the refusal") && text.contains("injected write failure"),
        "{text}"
    );
}
