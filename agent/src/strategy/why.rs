//! Why a release was judged unhealthy or a job refused: the reasons the strategies end a step
//! with, each one's text as the job's result and the audit log show it.

use crate::health::analysis::ResourceBreach;
use crate::health::prometheus::PromVerdict;
use crate::health::signals::Verdict;

/// Why a release's instances or signals failed their checks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Unhealthy {
    /// A task that checked the instances ended without an answer (panicked or cancelled).
    #[error("{task} task failed: {error}")]
    Task {
        /// "health check", "health watch", "watch".
        task: &'static str,
        /// What the runtime said.
        error: String,
    },
    /// An instance did not pass its health check after it started.
    #[error("instance {index} (port {port}) is unhealthy: {why}")]
    Check {
        /// The instance.
        index: u32,
        /// Its port.
        port: u16,
        /// The health error's chain.
        why: String,
    },
    /// An instance exited, restarted or turned unhealthy while it was watched.
    #[error("instance {index} (port {port}): {why}")]
    Watched {
        /// The instance.
        index: u32,
        /// Its port.
        port: u16,
        /// What happened to it.
        why: String,
    },
    /// An instance failed during the post-deploy watch.
    #[error("instance {index} (port {port}) failed {secs:.1} s into the watch: {why}")]
    Watch {
        /// The instance.
        index: u32,
        /// Its port.
        port: u16,
        /// Seconds into the watch.
        secs: f64,
        /// The health error's chain.
        why: String,
    },
    /// The front door could not connect to the new slot during a blue-green preview.
    #[error("{errors} connection error(s) to the new slot during the preview")]
    PreviewConnErrors {
        /// Connection errors counted during the preview.
        errors: u64,
    },
    /// The canary's analysis ended without enough samples and `no_data = fail`.
    #[error("not enough data to judge the canary (no_data = fail): {missing}")]
    CanaryNoData {
        /// The metrics short of samples, "; "-separated.
        missing: String,
    },
    /// A canary instance restarted more often than allowed.
    #[error("canary instance {index} restarted {restarts} time(s) (limit {limit})")]
    CanaryRestarts {
        /// The instance.
        index: u32,
        /// Its restarts.
        restarts: u32,
        /// `max_restarts`.
        limit: u32,
    },
    /// The canary failed more health probes than allowed.
    #[error("{failures} failed health probe(s) of the canary (limit {limit})")]
    CanaryProbes {
        /// Failed probes so far.
        failures: u32,
        /// `max_probe_failures`.
        limit: u32,
    },
    /// The front door could not connect to the canary more often than allowed.
    #[error("{errors} front-door connection error(s) to the canary (limit {limit})")]
    CanaryConnErrors {
        /// Connection errors since the canary started.
        errors: u64,
        /// `max_conn_errors`.
        limit: u64,
    },
    /// A canary process crossed a CPU or memory limit.
    #[error("{breach}{how}")]
    Resources {
        /// The limit crossed and the measured value.
        breach: ResourceBreach,
        /// Where the memory limit came from ("" without one).
        how: String,
    },
    /// A canary's HTTP signal crossed its threshold.
    #[error("canary {0}")]
    CanarySignal(Verdict),
    /// A Prometheus check on the canary failed.
    #[error("canary {0}")]
    CanaryProm(PromVerdict),
    /// A cohort's or backend's HTTP signal crossed its threshold during a phase.
    #[error("{version} {window}{during}: {breach}")]
    Signal {
        /// The release.
        version: semver::Version,
        /// Which traffic was judged.
        window: String,
        /// "during the watch".
        during: &'static str,
        /// The failed verdict.
        breach: Verdict,
    },
    /// A Prometheus check failed during a phase.
    #[error("{version} {during}: {breach}")]
    Prom {
        /// The release.
        version: semver::Version,
        /// "during the watch".
        during: &'static str,
        /// The failed verdict.
        breach: PromVerdict,
    },
    /// A Prometheus check still had no value at a phase's end and `no_data = fail`.
    #[error("{version} {end} (no_data = fail): {first}")]
    PromNoData {
        /// The release.
        version: semver::Version,
        /// "at the end of the watch".
        end: &'static str,
        /// The first check without a value.
        first: PromVerdict,
    },
}

/// Why a job cannot be carried out as asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refused {
    /// The channel promote and abort jobs arrive on closed while a rollout waited.
    #[error("the control channel closed")]
    ControlClosed,
    /// The task that unpacked the release ended without an answer.
    #[error("unpacking task failed: {0}")]
    UnpackTask(String),
    /// The release names no command.
    #[error("release {version} has an empty command")]
    EmptyCommand {
        /// The release.
        version: semver::Version,
    },
    /// The release's command is not there to run as the app's user.
    #[error("release {version} cannot run its command {argv0:?}: {why}; nothing was changed")]
    CannotRun {
        /// The release.
        version: semver::Version,
        /// The command as the release names it.
        argv0: String,
        /// Where it was looked for and what is wrong with it.
        why: String,
    },
}
