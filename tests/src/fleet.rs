//! Fleet documents for tests that play the controller service: plans and dispatches built,
//! signed and sent as the service would, and an agent config that trusts an orchestrator key.
//!
//! A test makes its own orchestrator key ([`Orchestrator::create`]), lets the agent trust it
//! for dispatches ([`trust_orchestrator`]), builds a [`v1::Plan`] for a release of the sample
//! app ([`release`], [`plan`], [`ring_of_ids`], [`ring_of_labels`]), signs it with the
//! environment's human keys ([`sign_plan`]) and dispatches it ([`dispatch`],
//! [`Orchestrator::sign`], [`crate::grpc::dispatch_raw`]).

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use anyhow::Context;
use gantry_policy::config::raw::RawConfig;
use gantry_policy::job::Sha256Hex;
use gantry_proto::fleet::{self, plan_digest};
use gantry_proto::keys::{SigningKey, write_keypair};
use gantry_proto::v1::{self, DispatchAction, DispatchRequest, SignedDispatch, SignedPlan};
use prost::Message;

use crate::env::{KeyPair, TestEnv};
use crate::probe::unix_now;

/// The role the agent's config gives the orchestrator key.
pub const ORCHESTRATOR_ROLE: &str = "orchestrator";

/// The service's dispatch-signing key, generated in the test.
pub struct Orchestrator {
    /// The key.
    pub key: SigningKey,
    /// Its files under `<root>/keys/orchestrator.{key,pub}`.
    pub pair: KeyPair,
}

impl Orchestrator {
    /// Generates a key pair under `env.root/keys/<name>`.
    ///
    /// # Errors
    ///
    /// When the files cannot be written.
    pub fn create(env: &TestEnv, name: &str) -> anyhow::Result<Orchestrator> {
        let (key, key_path, pub_path) = write_keypair(&env.root.join("keys").join(name))
            .with_context(|| format!("cannot write the {name} key pair"))?;
        Ok(Orchestrator {
            key,
            pair: KeyPair {
                key: key_path,
                public: pub_path,
            },
        })
    }

    /// Signs `dispatch`'s encoding.
    pub fn sign(&self, dispatch: &v1::Dispatch) -> SignedDispatch {
        sign_dispatch_with(&self.key, dispatch)
    }
}

/// Signs `dispatch` with any key (a test's forger, say).
pub fn sign_dispatch_with(key: &SigningKey, dispatch: &v1::Dispatch) -> SignedDispatch {
    let bytes = dispatch.encode_to_vec();
    SignedDispatch {
        signatures: vec![fleet::sign_dispatch(key, &bytes)],
        dispatch: bytes,
    }
}

/// Edits `raw` so that the key in `pub_file` (relative to the config's directory or absolute)
/// holds [`ORCHESTRATOR_ROLE`] and may sign dispatches for app `web`; sets the agent's
/// `environment` and `labels`.
pub fn trust_orchestrator(
    raw: &mut RawConfig,
    pub_file: &Path,
    environment: Option<&str>,
    labels: &[(&str, &str)],
) {
    *raw = raw.clone().key(
        "orchestrator",
        &pub_file.to_string_lossy(),
        &[ORCHESTRATOR_ROLE],
    );
    if let Some(web) = raw.apps.remove("web") {
        raw.apps
            .insert("web".to_owned(), web.allow_dispatch(&[ORCHESTRATOR_ROLE]));
    }
    raw.environment = environment.map(str::to_owned);
    raw.labels = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
}

/// The release of the sample app at `artifact` (version `version`): hot, `instances`
/// instances, `bin/gantry-sample-app`, healthy on `GET /health`, as `job create` writes it.
///
/// # Errors
///
/// When the artifact cannot be read.
pub fn release(version: &str, artifact: &Path, instances: u32) -> anyhow::Result<v1::Release> {
    let bytes =
        fs::read(artifact).with_context(|| format!("cannot read {}", artifact.display()))?;
    Ok(v1::Release {
        version: version.to_owned(),
        artifact_sha256: Sha256Hex::of(&bytes).to_string(),
        artifact_size: u64::try_from(bytes.len())?,
        strategy: v1::Strategy::Hot.into(),
        instances,
        command: vec!["bin/gantry-sample-app".to_owned()],
        health: Some(v1::HealthCheck {
            probe: Some(v1::health_check::Probe::Http(v1::HttpProbe {
                path: "/health".to_owned(),
                expect_status: 0,
            })),
            interval_ms: 200,
            deadline_ms: 20_000,
            ..v1::HealthCheck::default()
        }),
        ..v1::Release::default()
    })
}

/// A ring selecting agents by id.
pub fn ring_of_ids(name: &str, ids: &[&str]) -> v1::Ring {
    v1::Ring {
        name: name.to_owned(),
        selector: Some(v1::Selector {
            agent_ids: ids.iter().map(|s| (*s).to_owned()).collect(),
            labels: HashMap::new(),
        }),
        max_parallel: "1".to_owned(),
        min_healthy: "100%".to_owned(),
        ..v1::Ring::default()
    }
}

/// A ring selecting agents by labels (every one equal).
pub fn ring_of_labels(name: &str, labels: &[(&str, &str)]) -> v1::Ring {
    v1::Ring {
        name: name.to_owned(),
        selector: Some(v1::Selector {
            agent_ids: Vec::new(),
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }),
        max_parallel: "1".to_owned(),
        min_healthy: "100%".to_owned(),
        ..v1::Ring::default()
    }
}

/// A plan of app `web` for `environment`, valid from a minute ago for a day.
pub fn plan(
    plan_id: &str,
    environment: &str,
    release: v1::Release,
    rings: Vec<v1::Ring>,
) -> v1::Plan {
    let now = unix_now();
    v1::Plan {
        plan_id: plan_id.to_owned(),
        app: "web".to_owned(),
        environment: environment.to_owned(),
        release: Some(release),
        rings,
        issued_at: now - 60,
        not_before: now - 60,
        expires_at: now + 86_400,
        reason: format!("plan {plan_id}"),
    }
}

/// Signs `plan`'s encoding with each key file of `keys`, in order.
///
/// # Errors
///
/// When a key file cannot be read.
pub fn sign_plan(plan: &v1::Plan, keys: &[&KeyPair]) -> anyhow::Result<SignedPlan> {
    let bytes = plan.encode_to_vec();
    let mut signatures = Vec::new();
    for pair in keys {
        let key = read_key(&pair.key)?;
        signatures.push(fleet::sign_plan(&key, &bytes));
    }
    Ok(SignedPlan {
        plan: bytes,
        signatures,
        comments: Vec::new(),
    })
}

/// Reads a PKCS#8 private key file.
///
/// # Errors
///
/// When it cannot be read or parsed.
pub fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    SigningKey::read_pem_file(path).with_context(|| format!("cannot read key {}", path.display()))
}

/// The dispatch of `action` of `signed` (ring `ring`, epoch `epoch`) to `agent_id`, with the
/// derived job id and a one-minute window from now.
///
/// # Errors
///
/// When the plan bytes do not decode.
pub fn dispatch(
    signed: &SignedPlan,
    agent_id: &str,
    ring: u32,
    epoch: u64,
    action: DispatchAction,
) -> anyhow::Result<v1::Dispatch> {
    let plan = v1::Plan::decode(signed.plan.as_slice())?;
    let now = unix_now();
    Ok(v1::Dispatch {
        plan_sha256: plan_digest(&signed.plan),
        agent_id: agent_id.to_owned(),
        ring,
        epoch,
        job_id: fleet::job_id(&plan.plan_id, agent_id, action),
        action: action.into(),
        issued_at: now - 5,
        expires_at: now + 60,
    })
}

/// The request the service sends.
pub fn request(plan: &SignedPlan, dispatch: SignedDispatch) -> DispatchRequest {
    DispatchRequest {
        plan: Some(plan.clone()),
        dispatch: Some(dispatch),
    }
}
