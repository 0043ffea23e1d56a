//! A job as the agent's modules see it: validated domain types, decoded once by admission.
//!
//! Proto types stop at the edge; everything past admission works with these.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use gantry_proto::keys::KeyId;
use gantry_proto::v1;
use serde::{Deserialize, Serialize};

/// Why a name taken from a job or the config is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} is empty")]
    Empty {
        /// What kind of name ("app name", "job id").
        kind: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{kind} {name:?} is longer than {max} bytes")]
    TooLong {
        /// What kind of name.
        kind: &'static str,
        /// The offending name.
        name: String,
        /// The limit.
        max: usize,
    },
    /// The name has a character outside the allowed set, or starts with one not allowed first.
    #[error("{kind} {name:?} may only contain {allowed}")]
    BadCharacter {
        /// What kind of name.
        kind: &'static str,
        /// The offending name.
        name: String,
        /// The allowed set, for the message.
        allowed: &'static str,
    },
}

fn check_name(
    kind: &'static str,
    name: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            kind,
            name: name.to_owned(),
            max,
        });
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !name.chars().all(ok) {
        return Err(NameError::BadCharacter {
            kind,
            name: name.to_owned(),
            allowed,
        });
    }
    Ok(())
}

/// An app name: `[a-z0-9][a-z0-9_-]{0,62}`, safe as a path component and a user-visible label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl AppName {
    /// Validates an app name.
    ///
    /// # Errors
    ///
    /// [`NameError`] when it is empty, longer than 63 bytes, or has a character outside
    /// lowercase letters, digits, `-` and `_` (or does not start with a letter or digit).
    pub fn new(name: &str) -> Result<Self, NameError> {
        check_name(
            "app name",
            name,
            63,
            "lowercase letters, digits, '-' and '_', starting with a letter or digit",
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_',
        )?;
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(&s)
    }
}

impl From<AppName> for String {
    fn from(n: AppName) -> String {
        n.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job id: 1–128 bytes of `[A-Za-z0-9._:-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// Validates a job id.
    ///
    /// # Errors
    ///
    /// [`NameError`] when it is empty, longer than 128 bytes or has a character outside the set.
    pub fn new(id: &str) -> Result<Self, NameError> {
        check_name(
            "job id",
            id,
            128,
            "letters, digits, '.', '_', ':' and '-', starting with a letter or digit",
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'),
        )?;
        Ok(Self(id.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobId {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(&s)
    }
}

impl From<JobId> for String {
    fn from(n: JobId) -> String {
        n.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a job asks the agent to do. Each action has its own role requirement in the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Install and start a release.
    Deploy,
    /// Return to the previous release, or a named one still on disk.
    Rollback,
    /// Restart the current release's instances.
    Restart,
    /// Stop all instances.
    Stop,
    /// Continue a paused rollout.
    Promote,
    /// Abort a rollout in progress.
    Abort,
}

impl Action {
    /// Every action, in policy order.
    pub const ALL: [Action; 6] = [
        Action::Deploy,
        Action::Rollback,
        Action::Restart,
        Action::Stop,
        Action::Promote,
        Action::Abort,
    ];

    /// The lowercase name used in the config, the audit log and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Deploy => "deploy",
            Action::Rollback => "rollback",
            Action::Restart => "restart",
            Action::Stop => "stop",
            Action::Promote => "promote",
            Action::Abort => "abort",
        }
    }

    /// The action named `name` (as [`Action::as_str`] spells it), if there is one.
    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The action of a wire value; `None` for `ACTION_UNSPECIFIED`.
    pub fn from_wire(a: v1::Action) -> Option<Action> {
        match a {
            v1::Action::Unspecified => None,
            v1::Action::Deploy => Some(Action::Deploy),
            v1::Action::Rollback => Some(Action::Rollback),
            v1::Action::Restart => Some(Action::Restart),
            v1::Action::Stop => Some(Action::Stop),
            v1::Action::Promote => Some(Action::Promote),
            v1::Action::Abort => Some(Action::Abort),
        }
    }

    /// The wire value of this action.
    pub fn to_wire(self) -> v1::Action {
        match self {
            Action::Deploy => v1::Action::Deploy,
            Action::Rollback => v1::Action::Rollback,
            Action::Restart => v1::Action::Restart,
            Action::Stop => v1::Action::Stop,
            Action::Promote => v1::Action::Promote,
            Action::Abort => v1::Action::Abort,
        }
    }
}

/// The name of a wire action, as [`Action::as_str`] spells it; `unspecified` for
/// `ACTION_UNSPECIFIED`.
pub fn action_name(a: v1::Action) -> &'static str {
    Action::from_wire(a).map_or("unspecified", Action::as_str)
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a release replaces the one running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyKind {
    /// Stop old, switch, start new; brief downtime by design.
    Hot,
    /// Replace instances in batches.
    Rolling,
    /// Start a full new set, then switch all traffic at once.
    BlueGreen,
    /// Shift traffic in weighted steps with analysis.
    Canary,
}

impl StrategyKind {
    /// The name used in the audit log and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyKind::Hot => "hot",
            StrategyKind::Rolling => "rolling",
            StrategyKind::BlueGreen => "blue-green",
            StrategyKind::Canary => "canary",
        }
    }

    /// Every strategy, simplest first.
    pub const ALL: [StrategyKind; 4] = [
        StrategyKind::Hot,
        StrategyKind::Rolling,
        StrategyKind::BlueGreen,
        StrategyKind::Canary,
    ];

    /// The strategy named `name` (as [`StrategyKind::as_str`] spells it), if there is one.
    pub fn parse(name: &str) -> Option<StrategyKind> {
        StrategyKind::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The strategy of a wire value; `None` for `STRATEGY_UNSPECIFIED` (which the agent runs
    /// as hot, see [`crate::admission::decode`]).
    pub fn from_wire(s: v1::Strategy) -> Option<StrategyKind> {
        match s {
            v1::Strategy::Unspecified => None,
            v1::Strategy::Hot => Some(StrategyKind::Hot),
            v1::Strategy::Rolling => Some(StrategyKind::Rolling),
            v1::Strategy::BlueGreen => Some(StrategyKind::BlueGreen),
            v1::Strategy::Canary => Some(StrategyKind::Canary),
        }
    }

    /// The wire value of this strategy.
    pub fn to_wire(self) -> v1::Strategy {
        match self {
            StrategyKind::Hot => v1::Strategy::Hot,
            StrategyKind::Rolling => v1::Strategy::Rolling,
            StrategyKind::BlueGreen => v1::Strategy::BlueGreen,
            StrategyKind::Canary => v1::Strategy::Canary,
        }
    }
}

/// The name of a wire strategy, as [`StrategyKind::as_str`] spells it; `unspecified` for
/// `STRATEGY_UNSPECIFIED`.
pub fn strategy_name(s: v1::Strategy) -> &'static str {
    StrategyKind::from_wire(s).map_or("unspecified", StrategyKind::as_str)
}

impl fmt::Display for StrategyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A lowercase hex SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

/// A digest that is not 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SHA-256 digest (64 lowercase hex characters)")]
pub struct DigestError(pub String);

impl Sha256Hex {
    /// Validates a hex digest.
    ///
    /// # Errors
    ///
    /// [`DigestError`] unless it is exactly 64 lowercase hex characters.
    pub fn new(s: &str) -> Result<Self, DigestError> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(DigestError(s.to_owned()))
        }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            data,
        )))
    }

    /// The digest as hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256Hex {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, DigestError> {
        Self::new(&s)
    }
}

impl From<Sha256Hex> for String {
    fn from(d: Sha256Hex) -> String {
        d.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a health probe checks on one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Probe {
    /// `GET path` on the instance's port; healthy on the expected status (any 2xx if `None`).
    Http {
        /// Request path, starting with `/`.
        path: String,
        /// Expected status code.
        expect_status: Option<u16>,
    },
    /// A TCP connect to the instance's port.
    Tcp,
    /// A command run in the release directory; healthy when it exits 0.
    Exec {
        /// argv.
        command: Vec<String>,
    },
}

/// A health check with its timing and thresholds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthSpec {
    /// What to probe.
    pub probe: Probe,
    /// Time between probes.
    pub interval: Duration,
    /// Time one probe may take.
    pub timeout: Duration,
    /// Consecutive successes to be healthy.
    pub healthy_threshold: u32,
    /// Consecutive failures to be unhealthy.
    pub unhealthy_threshold: u32,
    /// An instance not healthy by then is unhealthy.
    pub deadline: Duration,
}

/// What a deploy installs and how.
///
/// Its `Debug` shows env names only, never values, so tracing cannot leak secrets.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSpec {
    /// The release version.
    pub version: semver::Version,
    /// Digest of the `.tar.gz` artifact.
    pub artifact_sha256: Sha256Hex,
    /// Size of the artifact in bytes.
    pub artifact_size: u64,
    /// How it replaces the running release.
    pub strategy: StrategyKind,
    /// How many instances.
    pub instances: u32,
    /// argv of one instance, run in the release directory.
    pub command: Vec<String>,
    /// How the agent decides an instance is healthy.
    pub health: HealthSpec,
    /// Extra environment (the agent adds `PORT` and `GANTRY_*`).
    pub env: BTreeMap<String, String>,
    /// Keys of `env` whose values are secret: never written in clear outside the state file.
    #[serde(default)]
    pub secret_env: BTreeSet<String>,
    /// The whole job must finish within this time.
    pub progress_deadline: Duration,
    /// Parameters of rolling, blue-green and canary deploys (defaults for hot).
    #[serde(default)]
    pub rollout: RolloutSpec,
}

/// How many instances a rolling batch replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BatchSize {
    /// This many instances.
    Count(u32),
    /// This percent of the instances (1–100), rounded up, at least one.
    Percent(u32),
}

impl BatchSize {
    /// The batch size for `instances` instances: at least 1, at most `instances`.
    pub fn of(self, instances: u32) -> u32 {
        let n = match self {
            BatchSize::Count(n) => n,
            BatchSize::Percent(p) => (instances * p).div_ceil(100),
        };
        n.clamp(1, instances.max(1))
    }
}

/// One canary step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CanaryStep {
    /// Percent of new connections to the canary (0–100).
    pub weight: u32,
    /// How long to hold it; `None`: until a signed promote job.
    pub pause: Option<Duration>,
}

/// What aborts a canary.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AnalysisSpec {
    /// Failed health probes of canary instances.
    pub max_probe_failures: u32,
    /// Restarts of canary instances.
    pub max_restarts: u32,
    /// Front-door connection errors to canary backends.
    pub max_conn_errors: u64,
    /// CPU of a canary process, percent of one core; `None`: not checked.
    pub max_cpu_percent: Option<f64>,
    /// Resident memory of a canary process in bytes; `None`: not checked.
    pub max_memory_bytes: Option<u64>,
    /// How often the analysis runs.
    pub interval: Duration,
}

impl Default for AnalysisSpec {
    fn default() -> Self {
        Self {
            max_probe_failures: 3,
            max_restarts: 0,
            max_conn_errors: 5,
            max_cpu_percent: None,
            max_memory_bytes: None,
            interval: Duration::from_secs(1),
        }
    }
}

impl Eq for AnalysisSpec {}

/// Parameters of rolling, blue-green and canary deploys, with the defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutSpec {
    /// Rolling: instances per batch.
    pub batch: BatchSize,
    /// An instance must stay healthy this long after its check passes.
    pub min_healthy_time: Duration,
    /// Per instance: healthy by then or the deploy fails. `None`: the health check's deadline.
    pub healthy_deadline: Option<Duration>,
    /// Return updated instances to the previous release on failure.
    pub auto_revert: bool,
    /// How long a backend out of rotation keeps its open connections.
    pub drain_timeout: Duration,
    /// Blue-green: percent of new connections to the new slot during the preview.
    pub preview_weight: u32,
    /// Blue-green: how long the preview lasts.
    pub preview: Duration,
    /// Blue-green: how long the old slot keeps running after the switch.
    pub scale_down_delay: Duration,
    /// Blue-green: switch once healthy (true) or wait for a signed promote job.
    pub auto_promote: bool,
    /// Canary: the steps.
    pub steps: Vec<CanaryStep>,
    /// Canary: the abort thresholds.
    pub analysis: AnalysisSpec,
    /// Canary: how many canary instances.
    pub canary_instances: u32,
}

impl Default for RolloutSpec {
    fn default() -> Self {
        Self {
            batch: BatchSize::Count(1),
            min_healthy_time: Duration::ZERO,
            healthy_deadline: None,
            auto_revert: true,
            drain_timeout: Duration::from_secs(30),
            preview_weight: 0,
            preview: Duration::ZERO,
            scale_down_delay: Duration::from_secs(600),
            auto_promote: true,
            steps: vec![
                CanaryStep {
                    weight: 10,
                    pause: Some(Duration::from_secs(30)),
                },
                CanaryStep {
                    weight: 50,
                    pause: Some(Duration::from_secs(30)),
                },
                CanaryStep {
                    weight: 100,
                    pause: Some(Duration::ZERO),
                },
            ],
            analysis: AnalysisSpec::default(),
            canary_instances: 1,
        }
    }
}

impl fmt::Debug for ReleaseSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values are left out (not only the secret ones): a value is not known to be
        // harmless just because the job did not mark it.
        f.debug_struct("ReleaseSpec")
            .field("version", &self.version)
            .field("artifact_sha256", &self.artifact_sha256)
            .field("artifact_size", &self.artifact_size)
            .field("strategy", &self.strategy)
            .field("instances", &self.instances)
            .field("command", &self.command)
            .field("health", &self.health)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("secret_env", &self.secret_env)
            .field("progress_deadline", &self.progress_deadline)
            .field("rollout", &self.rollout)
            .finish()
    }
}

/// A decoded, validated job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    /// Unique job id.
    pub id: JobId,
    /// The target agent.
    pub agent_id: String,
    /// The app it acts on.
    pub app: AppName,
    /// What it does.
    pub action: Action,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub expires_at: i64,
    /// For deploys: the release. For rollbacks: `None`, or a release whose version names the
    /// target (only `version` is meaningful then).
    pub release: Option<ReleaseSpec>,
    /// For rollbacks to a named release: the version.
    pub target_version: Option<semver::Version>,
    /// Free-form reason.
    pub reason: String,
}

/// A job whose signatures and policy checks have passed. Only admission constructs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedJob {
    /// The decoded job.
    pub spec: JobSpec,
    /// SHA-256 of the exact job bytes the signatures cover.
    pub digest: Sha256Hex,
    /// Key ids (computed from the public keys, not the hints) of every valid signer.
    pub signers: Vec<KeyId>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_names_reject_path_tricks() {
        for bad in ["", "../x", "a/b", "a\0b", "-x", "X", "a b", &"a".repeat(64)] {
            assert!(AppName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            AppName::new("web-1_a").map(|n| n.to_string()),
            Ok("web-1_a".to_owned())
        );
    }

    #[test]
    fn job_ids_reject_leading_dash_and_slashes() {
        for bad in ["", "-j", "a/b", ".x", &"j".repeat(129)] {
            assert!(JobId::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(JobId::new("deploy-2026-11-26T12:00:00.1").is_ok());
    }

    #[test]
    fn names_round_trip_through_parse_and_the_wire() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.as_str()), Some(a));
            assert_eq!(Action::from_wire(a.to_wire()), Some(a));
            assert_eq!(action_name(a.to_wire()), a.as_str());
        }
        for k in StrategyKind::ALL {
            assert_eq!(StrategyKind::parse(k.as_str()), Some(k));
            assert_eq!(StrategyKind::from_wire(k.to_wire()), Some(k));
            assert_eq!(strategy_name(k.to_wire()), k.as_str());
        }
        assert_eq!(action_name(v1::Action::Unspecified), "unspecified");
        assert_eq!(strategy_name(v1::Strategy::Unspecified), "unspecified");
        assert_eq!(Action::parse("Deploy"), None);
        assert_eq!(StrategyKind::parse("blue_green"), None);
    }

    #[test]
    fn digests_are_lowercase_hex() {
        assert!(Sha256Hex::new(&"A".repeat(64)).is_err());
        assert!(Sha256Hex::new(&"a".repeat(63)).is_err());
        assert_eq!(Sha256Hex::of(b"").as_str().len(), 64);
    }
}
