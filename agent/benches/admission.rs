//! Admission throughput on one core, through the public API with a policy loaded from a real
//! config file ([`Config::load`]) and freshly generated keys:
//!
//! - `forged/attacker_key`: a job signed by a key the agent does not trust (the cost of a
//!   flood of forged jobs: no hint matches, so every trusted key is tried);
//! - `forged/garbage_sig`: 64 arbitrary bytes claiming the trusted deployer's key id; they are
//!   not a well-formed signature (scalar out of range), so each verification fails early;
//! - `forged/wrong_sig`: a well-formed signature by the attacker's key claiming the trusted
//!   deployer's key id: the worst case for garbage under a trusted id (the hinted key fails a
//!   full verification, then every other trusted key is tried);
//! - `valid/admit`: a correctly signed deploy with a fresh `job_id` each time, admitted and
//!   recorded durably in the replay store (one `write_atomic` with fsync per job);
//! - `verify_signers/*`: the signature check alone ([`verify_signers`]), to separate the
//!   Ed25519 cost from decoding, policy and the replay store's disk write.
//!
//! Each case runs with 2 trusted keys (like `deploy/agent.example.toml`) and with 8, since a
//! forged signature costs one verification per trusted key.
//!
//! `cargo bench -p gantry-agent --bench admission`. Files go under `GANTRY_BENCH_DIR` if set,
//! else under cargo's target tmp dir (not /tmp, which may be a tmpfs where fsync is free).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use gantry_agent::admission::policy::verify_signers;
use gantry_agent::admission::{Admission, AppView, SignatureIn};
use gantry_agent::config::Config;
use gantry_agent::config::raw::{RawApp, RawConfig};
use gantry_agent::job::{Action, AppName};
use gantry_proto::envelope::sign_job;
use gantry_proto::keys::{SigningKey, write_keypair};
use gantry_proto::v1;
use prost::Message;

const AGENT_ID: &str = "bench-agent";
const APP: &str = "web";

/// Trusted-key counts the cases run with.
const KEY_COUNTS: [usize; 2] = [2, 8];

fn bench_dir() -> tempfile::TempDir {
    let base = std::env::var_os("GANTRY_BENCH_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from);
    fs::create_dir_all(&base).expect("create the bench directory");
    tempfile::tempdir_in(base).expect("create a temp dir for the bench")
}

/// The user instances would run as: ours unless we are root (then `nobody`), as the config's
/// rules require.
fn app_user() -> String {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return "nobody".to_owned();
    }
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| "nobody".to_owned(), |u| u.name)
}

/// Writes keys, placeholder TLS files and an agent config with `keys` trusted keys (the first
/// a deployer, the rest approvers) into `dir`; returns the config path and the deployer key.
fn write_config(dir: &Path, keys: usize) -> (PathBuf, SigningKey) {
    fs::create_dir_all(dir.join("pki")).expect("mkdir pki");
    fs::create_dir_all(dir.join("keys")).expect("mkdir keys");
    // The config checks only that the TLS files exist; admission never reads them.
    for f in ["pki/ca.pem", "pki/agent.pem", "pki/agent.key"] {
        fs::write(dir.join(f), "placeholder").expect("write a TLS placeholder");
    }
    write_keypair(&dir.join("keys/agent")).expect("agent key");
    let (deployer, _, _) = write_keypair(&dir.join("keys/deployer")).expect("deployer key");
    let mut raw = RawConfig::new(AGENT_ID).client_name("controller").key(
        "deployer",
        "keys/deployer.pub",
        &["deployer"],
    );
    for i in 1..keys {
        write_keypair(&dir.join(format!("keys/approver{i}"))).expect("approver key");
        raw = raw.key(
            &format!("approver{i}"),
            &format!("keys/approver{i}.pub"),
            &["approver"],
        );
    }
    let mut app = RawApp::new(&app_user(), "18000-18009").allow(Action::Deploy, &["deployer"]);
    app.max_instances = 4;
    let text = raw.app(APP, app).to_toml().expect("render the config");
    let path = dir.join("agent.toml");
    fs::write(&path, text).expect("write the config");
    (path, deployer)
}

/// A fresh state: nothing deployed, nothing busy.
struct NoApps;

impl AppView for NoApps {
    fn current_version(&self, _: &AppName) -> Option<semver::Version> {
        None
    }
    fn previous_version(&self, _: &AppName) -> Option<semver::Version> {
        None
    }
    fn has_release(&self, _: &AppName, _: &semver::Version) -> bool {
        false
    }
    fn busy_with(&self, _: &AppName) -> Option<gantry_agent::job::JobId> {
        None
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The encoded bytes of a hot deploy of `web` 1.2.0 with this `job_id`, valid for 10 minutes.
fn job_bytes(job_id: &str) -> Vec<u8> {
    let t = now();
    v1::Job {
        job_id: job_id.to_owned(),
        agent_id: AGENT_ID.to_owned(),
        app: APP.to_owned(),
        action: v1::Action::Deploy as i32,
        issued_at: t - 5,
        not_before: t - 5,
        expires_at: t + 600,
        release: Some(v1::Release {
            version: "1.2.0".to_owned(),
            artifact_sha256: "ab".repeat(32),
            artifact_size: 3_000_000,
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
        reason: "bench".to_owned(),
        restore_flags: false,
    }
    .encode_to_vec()
}

fn sign(key: &SigningKey, bytes: &[u8]) -> SignatureIn {
    let s = sign_job(key, bytes);
    SignatureIn {
        key_id_hint: s.key_id,
        sig: s.sig,
    }
}

/// One loaded config and its admission pipeline.
struct Fixture {
    _dir: tempfile::TempDir,
    config: Config,
    admission: Admission,
    deployer: SigningKey,
}

fn fixture(keys: usize) -> Fixture {
    let dir = bench_dir();
    let (path, deployer) = write_config(dir.path(), keys);
    let config = Config::load(&path).unwrap_or_else(|e| panic!("load {}: {e}", path.display()));
    assert_eq!(config.policy.keys.len(), keys);
    let admission = Admission::new(
        config.policy.clone(),
        config.limits.clone(),
        config.agent_id.clone(),
        &config.data_dir.join("jobs"),
    )
    .expect("open the replay store");
    Fixture {
        _dir: dir,
        config,
        admission,
        deployer,
    }
}

fn benches(c: &mut Criterion) {
    let attacker = SigningKey::generate().expect("attacker key");
    let counter = AtomicU64::new(0);
    let fresh_id = || format!("bench-{}", counter.fetch_add(1, Ordering::Relaxed));

    let mut group = c.benchmark_group("admission");
    group
        .throughput(Throughput::Elements(1))
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));

    for keys in KEY_COUNTS {
        let fx = fixture(keys);
        let bytes = job_bytes("bench-forged");
        let forged = [sign(&attacker, &bytes)];
        let garbage = [SignatureIn {
            key_id_hint: fx.deployer.key_id().to_string(),
            sig: (0u8..64)
                .map(|i| i.wrapping_mul(37).wrapping_add(11))
                .collect(),
        }];
        let mut wrong = forged.clone();
        wrong[0].key_id_hint = fx.deployer.key_id().to_string();
        let valid = [sign(&fx.deployer, &bytes)];

        // Sanity: each case ends the way it claims to.
        let admit = |bytes: &[u8], sigs: &[SignatureIn]| {
            fx.admission
                .admit(bytes, sigs, now(), &NoApps)
                .map_err(|r| r.error.to_string())
        };
        let err = admit(&bytes, &forged).expect_err("an attacker's signature is refused");
        assert!(err.contains("no signature is by a trusted key"), "{err}");
        let err = admit(&bytes, &garbage).expect_err("garbage signature bytes are refused");
        assert!(err.contains("does not verify"), "{err}");
        let err = admit(&bytes, &wrong).expect_err("another key's signature is refused");
        assert!(err.contains("does not verify"), "{err}");
        let probe = job_bytes(&fresh_id());
        if let Err(e) = admit(&probe, &[sign(&fx.deployer, &probe)]) {
            panic!("a valid job is admitted, got: {e}");
        }

        group.bench_function(BenchmarkId::new("forged/attacker_key", keys), |b| {
            b.iter(|| fx.admission.admit(&bytes, &forged, now(), &NoApps).is_err());
        });
        group.bench_function(BenchmarkId::new("forged/garbage_sig", keys), |b| {
            b.iter(|| {
                fx.admission
                    .admit(&bytes, &garbage, now(), &NoApps)
                    .is_err()
            });
        });
        group.bench_function(BenchmarkId::new("forged/wrong_sig", keys), |b| {
            b.iter(|| fx.admission.admit(&bytes, &wrong, now(), &NoApps).is_err());
        });
        group.bench_function(BenchmarkId::new("verify_signers/forged", keys), |b| {
            b.iter(|| verify_signers(&fx.config.policy, &bytes, &forged).is_err());
        });
        group.bench_function(BenchmarkId::new("verify_signers/valid", keys), |b| {
            b.iter(|| verify_signers(&fx.config.policy, &bytes, &valid).is_ok());
        });
        // Each admitted job needs its own id; signing it is the controller's work, not timed.
        group.bench_function(BenchmarkId::new("valid/admit", keys), |b| {
            b.iter_batched(
                || {
                    let bytes = job_bytes(&fresh_id());
                    let sig = sign(&fx.deployer, &bytes);
                    (bytes, [sig])
                },
                |(bytes, sigs)| fx.admission.admit(&bytes, &sigs, now(), &NoApps).is_ok(),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    benches(&mut c);
    c.final_summary();
}
