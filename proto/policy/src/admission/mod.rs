//! The pure checks of admission: everything that decides whether a job is admitted and
//! needs neither the disk nor the agent's state.
//!
//! In admission order: signatures over the **raw** bytes, before decoding ([`policy`]),
//! protobuf decoding and field validation ([`decode`]), the validity window ([`window`]),
//! then roles and quorum ([`policy`]), then the environment's rules for a release
//! ([`gates`]: pre-releases and required gates). [`explain`] runs the same checks one at a time for
//! `gantry job show --policy`, so explanation and admission are one code path.
//!
//! The agent's `admission` module runs them in its pipeline, with the replay store and the
//! apps' state (downgrades, rollback targets, busy apps) that only the agent has.

pub mod decode;
pub mod explain;
pub mod fleet;
pub mod gates;
pub mod policy;
pub mod prom_gate;
pub mod window;

use crate::environment::GateKind;
use crate::job::{Action, StrategyKind};

pub use window::WindowError;

/// One signature as received: the claimed key id (a hint only) and the signature bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureIn {
    /// The `key_id` the sender claims; used to find the key fast, never trusted.
    pub key_id_hint: String,
    /// Ed25519 signature over `PAE(JOB_PAYLOAD_TYPE, job_bytes)`.
    pub sig: Vec<u8>,
}

impl SignatureIn {
    /// The signatures of an envelope (a job, plan, dispatch or flag set) as admission reads
    /// them.
    pub fn all_of(sigs: &[gantry_proto::v1::Signature]) -> Vec<SignatureIn> {
        sigs.iter().map(SignatureIn::from).collect()
    }
}

impl From<&gantry_proto::v1::Signature> for SignatureIn {
    fn from(s: &gantry_proto::v1::Signature) -> Self {
        SignatureIn {
            key_id_hint: s.key_id.clone(),
            sig: s.sig.clone(),
        }
    }
}

/// Why a job was refused. Each variant is one rule of the trust model.
// Not `#[non_exhaustive]`: the agent maps every variant to a gRPC code and an audit reason in
// exhaustive matches (no `_` arm), which must stop compiling when a rule is added here.
#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    /// The job bytes exceed `limits.max_job_bytes`.
    #[error("job is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// Size received.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The job carries no signature.
    #[error("job is not signed")]
    NoSignatures,
    /// More signatures than admission looks at.
    #[error("job carries {count} signatures, more than the {max} admission checks")]
    TooManySignatures {
        /// Signatures received.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// No signature is by a trusted key.
    #[error(
        "no signature is by a trusted key (claimed key ids: {})",
        list(key_ids)
    )]
    UnknownKey {
        /// The claimed key ids.
        key_ids: Vec<String>,
    },
    /// A signature claims a trusted key but does not verify, and none other does.
    #[error("signature claiming trusted key {key_id} does not verify")]
    BadSignature {
        /// The trusted key id claimed.
        key_id: String,
    },
    /// A signature verifies under a trusted key, but that key is revoked or outside its
    /// validity window at admission time, and without it the job has no valid signer or
    /// misses a role or approval.
    #[error("signature by key {name} ({key_id}) does not count: {why}")]
    KeyNotValid {
        /// The key's id.
        key_id: String,
        /// The key's name in the config.
        name: String,
        /// Why, e.g. `expired at 2026-01-02T03:04:05Z` or `revoked: laptop stolen`.
        why: String,
    },
    /// The signed bytes are not a protobuf `Job`.
    #[error("job is not a valid gantry.v1.Job: {detail}")]
    Malformed {
        /// prost's description.
        detail: String,
    },
    /// A field of the job is invalid.
    #[error("invalid job: {field} {problem}")]
    InvalidJob {
        /// The field, e.g. `release.instances`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The job is for another agent.
    #[error("job is for agent {found:?}, this is {expected:?}")]
    WrongAgent {
        /// This agent's id.
        expected: String,
        /// The job's agent id.
        found: String,
    },
    /// `not_before` is in the future (beyond the allowed clock skew).
    #[error("job is not valid before {not_before} (now {now})")]
    NotYetValid {
        /// The job's `not_before`.
        not_before: i64,
        /// The agent's time.
        now: i64,
    },
    /// `expires_at` has passed.
    #[error("job expired at {expires_at} (now {now})")]
    Expired {
        /// The job's `expires_at`.
        expires_at: i64,
        /// The agent's time.
        now: i64,
    },
    /// The validity window is longer than `limits.max_validity`.
    #[error("job is valid for {window_secs}s, more than the maximum of {max_secs}s")]
    WindowTooLong {
        /// `expires_at - not_before`.
        window_secs: i64,
        /// The limit.
        max_secs: u64,
    },
    /// The app is not in this agent's config.
    #[error("app {app:?} is not configured on this agent")]
    AppNotConfigured {
        /// The app named.
        app: String,
    },
    /// No signer holds a role allowed to do the action on the app.
    #[error(
        "{action} on app {app} needs a signature by a key with role {} (signers hold: {})",
        list_or(needed, "(no role: nobody may)"),
        list_or(signer_roles, "no roles")
    )]
    MissingRole {
        /// The action.
        action: Action,
        /// The app.
        app: String,
        /// Roles allowed to do it.
        needed: Vec<String>,
        /// Roles the valid signers hold.
        signer_roles: Vec<String>,
    },
    /// Too few approvals.
    #[error("job needs {needed} approval(s) by distinct approver keys, has {got}")]
    QuorumNotMet {
        /// Approvals required.
        needed: u32,
        /// Approvals present.
        got: u32,
    },
    /// The release version is not SemVer 2.0.
    #[error("version {version:?} is not SemVer: {detail}")]
    InvalidVersion {
        /// The version as given.
        version: String,
        /// The parser's description.
        detail: String,
    },
    /// A deploy would go to an older version.
    #[error("deploy of {requested} would downgrade from {current}; use a rollback")]
    Downgrade {
        /// The active version.
        current: semver::Version,
        /// The version in the job.
        requested: semver::Version,
    },
    /// A rollback names a release not on disk.
    #[error("rollback target {version} is not on disk")]
    RollbackTargetMissing {
        /// The version named.
        version: semver::Version,
    },
    /// The job id was admitted before with other bytes.
    #[error("job id {job_id} was already used for a different job")]
    Replayed {
        /// The job id.
        job_id: String,
    },
    /// Another job is running on the app.
    #[error(
        "app {app} is busy with job {job_id}: follow it with `gantry job watch {job_id}`, or \
         end a rollout with `gantry abort --app {app}`"
    )]
    AppBusy {
        /// The app.
        app: String,
        /// The job running on it.
        job_id: String,
    },
    /// A rolling, blue-green or canary deploy to an app with no router: neither `listen`
    /// (the front door) nor `[apps.NAME.nginx]` is configured.
    #[error(
        "app {app} has no router (set listen or [apps.{app}.nginx] in the agent's config): a \
         {strategy} deploy needs one; use the hot strategy"
    )]
    StrategyNeedsRouter {
        /// The app.
        app: String,
        /// The strategy the job asked for.
        strategy: StrategyKind,
    },
    /// A promote or abort job, but no rollout is in progress on the app.
    #[error("{action} on app {app}: no rollout is in progress")]
    NoRolloutInProgress {
        /// The app.
        app: String,
        /// The action (promote or abort).
        action: Action,
    },
    /// A fleet plan or dispatch is larger than admission reads.
    #[error("{document} is {size} bytes, more than the limit of {max}")]
    DocumentTooLarge {
        /// `plan` or `dispatch`.
        document: &'static str,
        /// Size received.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The plan's signatures do not count: none verifies under a trusted key, or no key that
    /// signed it is valid now (the cause says which).
    #[error("the plan's signatures do not count")]
    PlanSignature(#[source] Box<AdmissionError>),
    /// No valid signer of the plan holds a role allowed to deploy its app.
    #[error("the plan is not signed by a deployer")]
    PlanRole(#[source] Box<AdmissionError>),
    /// The plan has fewer approvals than a deploy of its app needs.
    #[error("the plan needs {needed} approval(s) by distinct approver keys, has {got}")]
    PlanQuorum {
        /// Approvals required.
        needed: u32,
        /// Approvals present.
        got: u32,
    },
    /// The plan bytes are not a valid `gantry.v1.Plan`.
    #[error("invalid plan: {detail}")]
    InvalidPlan {
        /// What is wrong.
        detail: String,
    },
    /// The plan is outside its validity window, or its window is longer than
    /// `limits.max_plan_validity`.
    #[error("plan {0}")]
    PlanWindow(WindowError),
    /// The dispatch's signatures do not count: none verifies under a trusted key, or no key
    /// that signed it is valid now.
    #[error("the dispatch's signatures do not count")]
    DispatchSignature(#[source] Box<AdmissionError>),
    /// No valid signer of the dispatch holds a role that may dispatch plans of the app.
    #[error(
        "dispatches of app {app} need a signature by a key with role {} (signers hold: {})",
        list_or(needed, "(no role: nobody may; see [apps.NAME.allow] dispatch)"),
        list_or(signer_roles, "no roles")
    )]
    DispatchRole {
        /// The plan's app.
        app: String,
        /// Roles that may sign dispatches of it.
        needed: Vec<String>,
        /// Roles the valid signers hold.
        signer_roles: Vec<String>,
    },
    /// The dispatch bytes are not a valid `gantry.v1.Dispatch`.
    #[error("invalid dispatch: {detail}")]
    InvalidDispatch {
        /// What is wrong.
        detail: String,
    },
    /// The dispatch is outside its validity window, or its window is longer than
    /// `limits.max_dispatch_validity`.
    #[error("dispatch {0}")]
    DispatchWindow(WindowError),
    /// The dispatch names another plan than the one sent with it.
    #[error("the dispatch is for plan digest {named}, the plan sent has digest {actual}")]
    PlanDigestMismatch {
        /// `Dispatch.plan_sha256`.
        named: String,
        /// The digest of the plan bytes received.
        actual: String,
    },
    /// The plan is for another environment than this agent's.
    #[error(
        "plan is for environment {plan:?}, this agent's is {}",
        agent.as_deref().map_or_else(|| "not set".to_owned(), |e| format!("{e:?}"))
    )]
    WrongEnvironment {
        /// The plan's environment.
        plan: String,
        /// This agent's `environment`, if set.
        agent: Option<String>,
    },
    /// This agent is not in the ring the dispatch names (or the plan has no such ring).
    #[error("agent {agent_id} is not in ring {ring} of plan {plan_id}: {why}")]
    NotInRing {
        /// This agent.
        agent_id: String,
        /// The ring index the dispatch names.
        ring: u32,
        /// The plan.
        plan_id: String,
        /// Why: the ring's selector, or that the plan has fewer rings.
        why: String,
    },
    /// The dispatch carries another job id than the one derived from plan, agent and action.
    #[error(
        "the dispatch's job id {found:?} is not {expected:?}, the one of this plan, agent and action"
    )]
    WrongJobId {
        /// `fleet::job_id(plan_id, agent_id, action)`.
        expected: String,
        /// The dispatch's.
        found: String,
    },
    /// The dispatch's epoch is lower than one this agent has seen for the plan: it comes from
    /// a controller that lost its lease.
    #[error(
        "dispatch epoch {epoch} of plan {plan_id} is below {highest}, the highest this agent has seen"
    )]
    StaleEpoch {
        /// The plan.
        plan_id: String,
        /// The dispatch's epoch.
        epoch: u64,
        /// The highest seen.
        highest: u64,
    },
    /// A rollback dispatch for a plan whose deploy never ran here.
    #[error("rollback of plan {plan_id}: the plan's deploy never ran on this agent")]
    RollbackWithoutDeploy {
        /// The plan.
        plan_id: String,
    },
    /// A version with a pre-release label, in an environment that refuses them.
    #[error(
        "version {version} is a pre-release, refused in environment {environment} (set \
         allow_prerelease = true in [environments.{environment}] to allow it)"
    )]
    PrereleaseRefused {
        /// The version.
        version: semver::Version,
        /// The agent's environment.
        environment: String,
    },
    /// A gate the environment requires has no evidence in the job.
    #[error(
        "environment {environment} requires gate {gate}: the job carries no evidence of it \
         (gantry gate evaluate, then --evidence)"
    )]
    GateMissing {
        /// The gate.
        gate: GateKind,
        /// The agent's environment.
        environment: String,
    },
    /// Signed evidence shows a required gate failed.
    #[error("gate {gate} failed: {detail}")]
    GateFailed {
        /// The gate.
        gate: GateKind,
        /// The measured values against their thresholds.
        detail: String,
    },
    /// Evidence is about another artifact than the job's.
    #[error("evidence {index} is for artifact {found}, the job deploys {expected}")]
    GateDigestMismatch {
        /// Index into `release.evidence`.
        index: usize,
        /// The job's artifact digest.
        expected: String,
        /// The statement's subject digests.
        found: String,
    },
    /// Evidence not signed by a valid key with role `ci`.
    #[error("evidence {index} is not signed by a valid key with role ci: {detail}")]
    GateSignerRole {
        /// Index into `release.evidence`.
        index: usize,
        /// Who signed it, or that nobody trusted did.
        detail: String,
    },
    /// Evidence past its expiry.
    #[error("evidence {index} expired at {expires_at} (now {now})")]
    GateExpired {
        /// Index into `release.evidence`.
        index: usize,
        /// The statement's `expiresAt`.
        expires_at: i64,
        /// The agent's time.
        now: i64,
    },
    /// Evidence that is not a DSSE envelope of a gate statement.
    #[error("evidence {index} is not usable: {detail}")]
    GateInvalid {
        /// Index into `release.evidence`.
        index: usize,
        /// What is wrong.
        detail: String,
    },
    /// The agent's replay store could not record the job (the job is refused: fail closed).
    ///
    /// The cause is the agent's `ReplayError`, boxed because the store (and its disk
    /// errors) belongs to the agent, not to the policy.
    #[error("cannot record the job")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync + 'static>),
}

fn list(v: &[String]) -> String {
    list_or(v, "none")
}

fn list_or(v: &[String], empty: &str) -> String {
    if v.is_empty() {
        empty.to_owned()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use gantry_proto::v1;

    use super::SignatureIn;

    #[test]
    fn an_envelopes_signatures_are_read_in_order_with_their_claimed_key_ids() {
        let wire = [
            v1::Signature {
                key_id: "k1".into(),
                sig: vec![1, 2],
            },
            v1::Signature {
                key_id: String::new(),
                sig: vec![3],
            },
        ];
        assert_eq!(
            SignatureIn::all_of(&wire),
            [
                SignatureIn {
                    key_id_hint: "k1".into(),
                    sig: vec![1, 2],
                },
                SignatureIn {
                    key_id_hint: String::new(),
                    sig: vec![3],
                },
            ]
        );
        assert!(SignatureIn::all_of(&[]).is_empty());
    }
}
