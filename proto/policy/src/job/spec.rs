//! The decoded job: release, health checks, rollout parameters, and the [`VerifiedJob`]
//! admission yields.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use gantry_proto::keys::KeyId;
use serde::{Deserialize, Serialize};

use super::kinds::{Action, StrategyKind};
use super::names::{AppName, JobId, Sha256Hex};
use super::prom_gate::PromGate;

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
    /// Release evidence as signed: DSSE envelopes (JSON) of gate statements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Vec<u8>>,
    /// The release notes (Markdown); empty when the job carries none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
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
    /// With [`RolloutSpec::canary_flag`]: percent of users served the flag's canary variant
    /// during the step (the step's weight unless the job says otherwise); `None` without.
    #[serde(default)]
    pub flag_percent: Option<u32>,
}

/// What a step does when its hold is over and a metric still has too few samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoData {
    /// Wait (saying why) until there are enough samples, or a promote or abort.
    #[default]
    Pause,
    /// Roll back.
    Fail,
    /// Go on without the verdict (said in the job's record).
    Pass,
}

impl NoData {
    /// `pause`, `fail` or `pass`.
    pub fn as_str(self) -> &'static str {
        match self {
            NoData::Pause => "pause",
            NoData::Fail => "fail",
            NoData::Pass => "pass",
        }
    }

    /// Parses [`NoData::as_str`]'s names.
    pub fn parse(s: &str) -> Option<NoData> {
        match s {
            "pause" => Some(NoData::Pause),
            "fail" => Some(NoData::Fail),
            "pass" => Some(NoData::Pass),
            _ => None,
        }
    }
}

/// What a canary's error rate and latency are judged against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compare {
    /// The fixed limits `max_error_rate` and `max_p95_latency`.
    #[default]
    Threshold,
    /// The stable cohort in the same window: one-sided tests of "canary worse" at
    /// `compare_alpha`.
    Stable,
}

impl Compare {
    /// `threshold` or `stable`.
    pub fn as_str(self) -> &'static str {
        match self {
            Compare::Threshold => "threshold",
            Compare::Stable => "stable",
        }
    }

    /// Parses [`Compare::as_str`]'s names.
    pub fn parse(s: &str) -> Option<Compare> {
        match s {
            "threshold" => Some(Compare::Threshold),
            "stable" => Some(Compare::Stable),
            _ => None,
        }
    }
}

/// The default significance of `compare = "stable"`'s tests.
pub const DEFAULT_COMPARE_ALPHA: f64 = 0.05;

/// What aborts a canary.
// Fields added later take their defaults in records written before them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
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
    /// HTTP mode: the largest share of 5xx responses (0 to 1).
    pub max_error_rate: f64,
    /// HTTP mode: the largest 95th percentile latency.
    pub max_p95_latency: Duration,
    /// Responses a metric needs before it may pass; `None`: the rule of three (see
    /// [`AnalysisSpec::min_samples_for`]).
    pub min_samples: Option<u64>,
    /// What a finished hold does while a metric has too few samples.
    pub no_data: NoData,
    /// Queries to a Prometheus server that must meet their conditions; `None`: none.
    pub prometheus: Option<PromGate>,
    /// Resident memory of a canary process as a share (0, 1] of the host's memory; `None`:
    /// not checked.
    pub max_memory_share: Option<f64>,
    /// Canary steps: what the canary's error rate and latency are judged against.
    pub compare: Compare,
    /// With [`Compare::Stable`]: the significance (0, 0.5] below which a test's p-value fails
    /// the canary.
    pub compare_alpha: f64,
}

/// The share of responses a p95 check allows to be slower than its threshold.
pub const P95_SLOW_SHARE: f64 = 0.05;

impl AnalysisSpec {
    /// Responses a metric that allows a share `allowed` of bad ones needs before it may pass:
    /// [`AnalysisSpec::min_samples`] when set, else the rule of three, `ceil(3 / allowed)`
    /// (0 bad ones in n responses bound the true share below 3/n with 95% confidence; so
    /// 3000 for an error rate of 0.001, 60 for a p95).
    pub fn min_samples_for(&self, allowed: f64) -> u64 {
        if let Some(n) = self.min_samples {
            return n;
        }
        if allowed <= 0.0 || !allowed.is_finite() {
            return u64::MAX;
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let n = (3.0 / allowed).ceil() as u64;
        n.max(1)
    }
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
            max_error_rate: 0.001,
            max_p95_latency: Duration::from_millis(200),
            min_samples: None,
            no_data: NoData::Pause,
            prometheus: None,
            max_memory_share: None,
            compare: Compare::Threshold,
            compare_alpha: DEFAULT_COMPARE_ALPHA,
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
    /// Every strategy: how long the new release is watched once the deploy is done.
    #[serde(default)]
    pub watch: Duration,
    /// Rolling: how long each batch's new instances are analysed once back in rotation.
    #[serde(default)]
    pub batch_analysis: Duration,
    /// Canary: the flag of the app's flag set that the steps release with the code.
    #[serde(default)]
    pub canary_flag: Option<String>,
    /// Canary with a flag, deployed by a fleet plan's ring with `flag_percent`: the percent
    /// served once promoted, and the most any step serves. `None`: 100.
    #[serde(default)]
    pub flag_limit: Option<u32>,
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
                    flag_percent: None,
                },
                CanaryStep {
                    weight: 50,
                    pause: Some(Duration::from_secs(30)),
                    flag_percent: None,
                },
                CanaryStep {
                    weight: 100,
                    pause: Some(Duration::ZERO),
                    flag_percent: None,
                },
            ],
            analysis: AnalysisSpec::default(),
            canary_instances: 1,
            watch: Duration::ZERO,
            batch_analysis: Duration::ZERO,
            canary_flag: None,
            flag_limit: None,
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
            .field("evidence", &self.evidence.len())
            .field("notes", &self.notes.len())
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
    /// For rollbacks: also restore the flag set that went with the target release.
    pub restore_flags: bool,
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
