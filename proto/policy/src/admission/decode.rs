//! From the signed bytes to a [`JobSpec`]: protobuf decoding and field validation.
//!
//! Runs only after the signatures over the raw bytes verified. Everything a job names is
//! checked here once, so that later modules work with valid domain types: ids and app names
//! safe as path components, a SemVer version, a digest, a non-empty command, a health check
//! with sane timings, and an environment that cannot override what the agent sets.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use gantry_proto::v1;
use prost::Message;

use super::AdmissionError;
use crate::job::{
    Action, AnalysisSpec, AppName, BatchSize, CanaryStep, Compare, HealthSpec, JobId, JobSpec,
    NoData, Probe, ReleaseSpec, RolloutSpec, Sha256Hex, StrategyKind,
};

/// Probe interval when the job leaves it 0.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);
/// Probe timeout when the job leaves it 0.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Consecutive passes when the job leaves it 0.
pub const DEFAULT_HEALTHY_THRESHOLD: u32 = 1;
/// Consecutive failures when the job leaves it 0.
pub const DEFAULT_UNHEALTHY_THRESHOLD: u32 = 3;
/// Health deadline when the job leaves it 0.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);
/// Progress deadline when the job leaves it 0.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);

/// Longest duration any rollout field may ask for.
pub const MAX_ROLLOUT_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Most canary steps a job may have.
pub const MAX_CANARY_STEPS: usize = 20;

/// Decodes the protobuf `Job`.
///
/// # Errors
///
/// [`AdmissionError::Malformed`] with prost's description.
pub fn decode_job(bytes: &[u8]) -> Result<v1::Job, AdmissionError> {
    v1::Job::decode(bytes).map_err(|e| AdmissionError::Malformed {
        detail: e.to_string(),
    })
}

fn invalid(field: &str, problem: impl Into<String>) -> AdmissionError {
    AdmissionError::InvalidJob {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

fn version(v: &str) -> Result<semver::Version, AdmissionError> {
    semver::Version::parse(v).map_err(|e| AdmissionError::InvalidVersion {
        version: v.to_owned(),
        detail: e.to_string(),
    })
}

/// The domain action of a wire action value.
///
/// # Errors
///
/// [`AdmissionError::InvalidJob`] for `ACTION_UNSPECIFIED` and values this agent does not know.
pub fn action(value: i32) -> Result<Action, AdmissionError> {
    match v1::Action::try_from(value) {
        Ok(wire) => Action::from_wire(wire).ok_or_else(|| invalid("action", "is unspecified")),
        Err(_) => Err(invalid("action", format!("unknown action value {value}"))),
    }
}

fn strategy(value: i32) -> Result<StrategyKind, AdmissionError> {
    match v1::Strategy::try_from(value) {
        // An unspecified strategy is the simplest one, as the controller's default is.
        Ok(wire) => Ok(StrategyKind::from_wire(wire).unwrap_or(StrategyKind::Hot)),
        Err(_) => Err(invalid(
            "release.strategy",
            format!("unknown strategy value {value}"),
        )),
    }
}

/// Converts and validates a decoded job.
///
/// # Errors
///
/// [`AdmissionError::InvalidJob`] naming the field and the problem, or
/// [`AdmissionError::InvalidVersion`] for a version that is not SemVer 2.0.
pub fn job_spec(job: &v1::Job) -> Result<JobSpec, AdmissionError> {
    let id = JobId::new(&job.job_id).map_err(|e| invalid("job_id", e.to_string()))?;
    let app = AppName::new(&job.app).map_err(|e| invalid("app", e.to_string()))?;
    let action = action(job.action)?;
    if job.expires_at < job.not_before {
        return Err(invalid(
            "expires_at",
            format!("{} is before not_before {}", job.expires_at, job.not_before),
        ));
    }
    if job.reason.contains('\0') {
        return Err(invalid("reason", "contains NUL"));
    }
    let (release, target_version) = match action {
        Action::Deploy => {
            let r = job
                .release
                .as_ref()
                .ok_or_else(|| invalid("release", "a deploy needs one"))?;
            (Some(release(r)?), None)
        }
        Action::Rollback => match &job.release {
            Some(r) if !r.version.is_empty() => (None, Some(version(&r.version)?)),
            _ => (None, None),
        },
        // Other actions act on what is installed; a release on them means nothing.
        Action::Restart | Action::Stop | Action::Promote | Action::Abort => (None, None),
    };
    if job.restore_flags && action != Action::Rollback {
        return Err(invalid(
            "restore_flags",
            format!("only a rollback restores flags, not a {action}"),
        ));
    }
    Ok(JobSpec {
        id,
        agent_id: job.agent_id.clone(),
        app,
        action,
        issued_at: job.issued_at,
        not_before: job.not_before,
        expires_at: job.expires_at,
        release,
        target_version,
        restore_flags: job.restore_flags,
        reason: job.reason.clone(),
    })
}

fn argv(field: &str, args: &[String]) -> Result<Vec<String>, AdmissionError> {
    match args.first() {
        None => return Err(invalid(field, "is empty")),
        Some(first) if first.is_empty() => return Err(invalid(field, "program name is empty")),
        Some(_) => {}
    }
    if args.iter().any(|a| a.contains('\0')) {
        return Err(invalid(field, "an argument contains NUL"));
    }
    Ok(args.to_vec())
}

fn release(r: &v1::Release) -> Result<ReleaseSpec, AdmissionError> {
    let version = version(&r.version)?;
    let artifact_sha256 = Sha256Hex::new(&r.artifact_sha256)
        .map_err(|e| invalid("release.artifact_sha256", e.to_string()))?;
    if r.artifact_size == 0 {
        return Err(invalid("release.artifact_size", "is 0"));
    }
    if r.instances == 0 {
        return Err(invalid("release.instances", "is 0"));
    }
    let command = argv("release.command", &r.command)?;
    let health = health(r.health.as_ref())?;
    let mut env = BTreeMap::new();
    for (k, v) in &r.env {
        check_env_name(k)?;
        if v.contains('\0') {
            return Err(invalid("release.env", format!("value of {k} contains NUL")));
        }
        env.insert(k.clone(), v.clone());
    }
    let mut secret_env = BTreeSet::new();
    for k in &r.secret_env {
        if !env.contains_key(k) {
            return Err(invalid(
                "release.secret_env",
                format!("{k:?} is not a key of release.env"),
            ));
        }
        secret_env.insert(k.clone());
    }
    Ok(ReleaseSpec {
        version,
        artifact_sha256,
        artifact_size: r.artifact_size,
        strategy: strategy(r.strategy)?,
        instances: r.instances,
        command,
        health,
        env,
        secret_env,
        progress_deadline: match r.progress_deadline_secs {
            0 => DEFAULT_PROGRESS_DEADLINE,
            s => Duration::from_secs(u64::from(s)),
        },
        rollout: canary_only(
            strategy(r.strategy)?,
            rollout(r.rollout.as_ref(), r.instances)?,
        )?,
        evidence: r.evidence.clone(),
        notes: r.notes.clone(),
    })
}

/// The rollout parameters with defaults filled in (every zero field takes its default, see
/// [`RolloutSpec::default`] and [`AnalysisSpec::default`]).
///
/// # Errors
///
/// [`AdmissionError::InvalidJob`] naming the field (`release.rollout.batch`,
/// `release.rollout.steps[1].weight`, ...) and the problem.
pub fn rollout(r: Option<&v1::Rollout>, instances: u32) -> Result<RolloutSpec, AdmissionError> {
    let d = RolloutSpec::default();
    let Some(r) = r else { return Ok(d) };
    let canary_flag = canary_flag(&r.canary_flag)?;
    let healthy_deadline = match r.healthy_deadline_ms {
        0 => None,
        ms => Some(duration("release.rollout.healthy_deadline_ms", ms)?),
    };
    let canary_instances = match r.canary_instances {
        0 => d.canary_instances,
        n if n > instances => {
            return Err(invalid(
                "release.rollout.canary_instances",
                format!("{n} is more than release.instances {instances}"),
            ));
        }
        n => n,
    };
    Ok(RolloutSpec {
        batch: batch(&r.batch)?,
        min_healthy_time: duration("release.rollout.min_healthy_time_ms", r.min_healthy_time_ms)?,
        watch: duration("release.rollout.watch_ms", r.watch_ms)?,
        batch_analysis: duration("release.rollout.batch_analysis_ms", r.batch_analysis_ms)?,
        healthy_deadline,
        auto_revert: !r.no_auto_revert,
        drain_timeout: duration_or(
            "release.rollout.drain_timeout_ms",
            r.drain_timeout_ms,
            d.drain_timeout,
        )?,
        preview_weight: percent("release.rollout.preview_weight", r.preview_weight)?,
        preview: duration("release.rollout.preview_ms", r.preview_ms)?,
        scale_down_delay: duration_or(
            "release.rollout.scale_down_delay_ms",
            r.scale_down_delay_ms,
            d.scale_down_delay,
        )?,
        auto_promote: !r.manual_promote,
        steps: flag_percents(
            if r.steps.is_empty() {
                d.steps
            } else {
                steps(&r.steps)?
            },
            &r.steps,
            canary_flag.is_some(),
        )?,
        analysis: match &r.analysis {
            None => d.analysis,
            Some(a) => analysis(a)?,
        },
        canary_instances,
        canary_flag,
        flag_limit: None,
    })
}

/// Longest flag key a canary may name.
pub const MAX_FLAG_KEY: usize = 256;

/// `release.rollout.canary_flag`: empty is none; else at most [`MAX_FLAG_KEY`] bytes, no
/// control characters.
fn canary_flag(key: &str) -> Result<Option<String>, AdmissionError> {
    const FIELD: &str = "release.rollout.canary_flag";
    if key.is_empty() {
        return Ok(None);
    }
    if key.len() > MAX_FLAG_KEY {
        return Err(invalid(
            FIELD,
            format!(
                "is {} bytes, more than the maximum of {MAX_FLAG_KEY}",
                key.len()
            ),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(invalid(FIELD, format!("{key:?} holds a control character")));
    }
    Ok(Some(key.to_owned()))
}

/// Each step's flag percent: the one the job gives (at most 100, never below the previous
/// step's), else the step's weight; `None` for every step without a canary flag, where the
/// job may give none.
fn flag_percents(
    mut steps: Vec<CanaryStep>,
    wire: &[v1::CanaryStep],
    with_flag: bool,
) -> Result<Vec<CanaryStep>, AdmissionError> {
    let field = |i: usize| format!("release.rollout.steps[{i}].flag_percent");
    if !with_flag {
        return match wire.iter().position(|s| s.flag_percent.is_some()) {
            Some(i) => Err(invalid(
                &field(i),
                "needs release.rollout.canary_flag (the flag it sets)",
            )),
            None => Ok(steps),
        };
    }
    let mut previous = 0;
    for (i, step) in steps.iter_mut().enumerate() {
        let given = wire.get(i).and_then(|w| w.flag_percent);
        let p = match given {
            Some(p) => percent(&field(i), p)?,
            None => step.weight,
        };
        if p < previous {
            return Err(invalid(
                &field(i),
                format!(
                    "{p} is less than the previous step's {previous}: a user served the flag's \
                     canary variant keeps it, so flag percents must not decrease"
                ),
            ));
        }
        previous = p;
        step.flag_percent = Some(p);
    }
    Ok(steps)
}

/// Refuses `release.rollout.canary_flag` on a strategy other than canary.
fn canary_only(strategy: StrategyKind, r: RolloutSpec) -> Result<RolloutSpec, AdmissionError> {
    if r.canary_flag.is_some() && strategy != StrategyKind::Canary {
        return Err(invalid(
            "release.rollout.canary_flag",
            format!("is for the canary strategy, not {strategy}"),
        ));
    }
    Ok(r)
}

/// `"N"` (N >= 1) or `"P%"` (1 <= P <= 100); empty is the default, one at a time.
fn batch(value: &str) -> Result<BatchSize, AdmissionError> {
    const FIELD: &str = "release.rollout.batch";
    if value.is_empty() {
        return Ok(RolloutSpec::default().batch);
    }
    let bad = || {
        invalid(
            FIELD,
            format!("{value:?} is not a count like \"2\" or a percent like \"25%\""),
        )
    };
    let (digits, is_percent) = match value.strip_suffix('%') {
        Some(d) => (d, true),
        None => (value, false),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u32 = digits.parse().map_err(|_| bad())?;
    match (is_percent, n) {
        (_, 0) => Err(invalid(
            FIELD,
            format!("{value:?} is zero: a batch needs at least one instance"),
        )),
        (true, p) if p > 100 => Err(invalid(FIELD, format!("{value:?} is more than 100%"))),
        (true, p) => Ok(BatchSize::Percent(p)),
        (false, n) => Ok(BatchSize::Count(n)),
    }
}

/// Milliseconds as a duration, at most [`MAX_ROLLOUT_DURATION`].
fn duration(field: &str, ms: u32) -> Result<Duration, AdmissionError> {
    let d = Duration::from_millis(u64::from(ms));
    if d > MAX_ROLLOUT_DURATION {
        return Err(invalid(
            field,
            format!(
                "{ms} ms is longer than the maximum of {} ms (24 h)",
                MAX_ROLLOUT_DURATION.as_millis()
            ),
        ));
    }
    Ok(d)
}

/// Like [`duration`], with 0 meaning `default`.
fn duration_or(field: &str, ms: u32, default: Duration) -> Result<Duration, AdmissionError> {
    if ms == 0 {
        Ok(default)
    } else {
        duration(field, ms)
    }
}

fn percent(field: &str, value: u32) -> Result<u32, AdmissionError> {
    if value > 100 {
        return Err(invalid(
            field,
            format!("{value} is more than 100 (percent)"),
        ));
    }
    Ok(value)
}

fn steps(wire: &[v1::CanaryStep]) -> Result<Vec<CanaryStep>, AdmissionError> {
    if wire.len() > MAX_CANARY_STEPS {
        return Err(invalid(
            "release.rollout.steps",
            format!(
                "has {} steps, more than the maximum of {MAX_CANARY_STEPS}",
                wire.len()
            ),
        ));
    }
    let mut out: Vec<CanaryStep> = Vec::with_capacity(wire.len());
    for (i, step) in wire.iter().enumerate() {
        let weight = percent(&format!("release.rollout.steps[{i}].weight"), step.weight)?;
        if let Some(prev) = out.last()
            && weight < prev.weight
        {
            return Err(invalid(
                &format!("release.rollout.steps[{i}].weight"),
                format!(
                    "{weight} is less than the previous step's {}: weights must not decrease",
                    prev.weight
                ),
            ));
        }
        let pause = if step.until_promote {
            None
        } else {
            Some(duration(
                &format!("release.rollout.steps[{i}].pause_ms"),
                step.pause_ms,
            )?)
        };
        out.push(CanaryStep {
            weight,
            pause,
            flag_percent: None,
        });
    }
    Ok(out)
}

fn analysis(a: &v1::Analysis) -> Result<AnalysisSpec, AdmissionError> {
    let d = AnalysisSpec::default();
    let max_cpu_percent = if a.max_cpu_percent == 0.0 {
        None
    } else if a.max_cpu_percent.is_finite() && a.max_cpu_percent > 0.0 {
        Some(a.max_cpu_percent)
    } else {
        return Err(invalid(
            "release.rollout.analysis.max_cpu_percent",
            format!(
                "{} is not a positive number of percent (0: not checked)",
                a.max_cpu_percent
            ),
        ));
    };
    let max_error_rate = if a.max_error_rate == 0.0 {
        d.max_error_rate
    } else if a.max_error_rate.is_finite() && a.max_error_rate > 0.0 && a.max_error_rate < 1.0 {
        a.max_error_rate
    } else {
        return Err(invalid(
            "release.rollout.analysis.max_error_rate",
            format!(
                "{} is not a share between 0 and 1 (0: the default, {})",
                a.max_error_rate, d.max_error_rate
            ),
        ));
    };
    let no_data = match a.no_data.as_str() {
        "" => d.no_data,
        s => NoData::parse(s).ok_or_else(|| {
            invalid(
                "release.rollout.analysis.no_data",
                format!("{s:?} is not pause, fail or pass"),
            )
        })?,
    };
    let compare = match a.compare.as_str() {
        "" => d.compare,
        s => Compare::parse(s).ok_or_else(|| {
            invalid(
                "release.rollout.analysis.compare",
                format!("{s:?} is not threshold or stable"),
            )
        })?,
    };
    let compare_alpha = if a.compare_alpha == 0.0 {
        d.compare_alpha
    } else if a.compare_alpha.is_sign_positive() && a.compare_alpha <= 0.5 {
        a.compare_alpha
    } else {
        return Err(invalid(
            "release.rollout.analysis.compare_alpha",
            format!(
                "{} is not a significance above 0 and at most 0.5 (0: the default, {})",
                a.compare_alpha, d.compare_alpha
            ),
        ));
    };
    let pick = |v: u32, d: u32| if v == 0 { d } else { v };
    Ok(AnalysisSpec {
        compare,
        compare_alpha,
        max_error_rate,
        max_p95_latency: duration_or(
            "release.rollout.analysis.max_p95_latency_ms",
            a.max_p95_latency_ms,
            d.max_p95_latency,
        )?,
        min_samples: (a.min_samples != 0).then_some(a.min_samples),
        no_data,
        max_probe_failures: pick(a.max_probe_failures, d.max_probe_failures),
        max_restarts: pick(a.max_restarts, d.max_restarts),
        max_conn_errors: match a.max_conn_errors {
            0 => d.max_conn_errors,
            n => u64::from(n),
        },
        max_cpu_percent,
        max_memory_bytes: (a.max_memory_bytes != 0).then_some(a.max_memory_bytes),
        max_memory_share: memory_share(a.max_memory_share)?,
        prometheus: a
            .prometheus
            .as_ref()
            .map(super::prom_gate::decode)
            .transpose()?,
        interval: duration_or(
            "release.rollout.analysis.interval_ms",
            a.interval_ms,
            d.interval,
        )?,
    })
}

/// 0: not checked; else a share above 0 and at most 1.
fn memory_share(share: f64) -> Result<Option<f64>, AdmissionError> {
    if share == 0.0 {
        Ok(None)
    } else if (0.0..=1.0).contains(&share) {
        // 0 (either sign) took the branch above; NaN is in no range.
        Ok(Some(share))
    } else {
        Err(invalid(
            "release.rollout.analysis.max_memory_share",
            format!("{share} is not a share above 0 and at most 1 (0: not checked)"),
        ))
    }
}

fn check_env_name(k: &str) -> Result<(), AdmissionError> {
    let valid = k
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(invalid(
            "release.env",
            format!("{k:?} is not a variable name"),
        ));
    }
    if k == "PORT" || k.starts_with("GANTRY_") {
        return Err(invalid("release.env", format!("{k} is set by the agent")));
    }
    Ok(())
}

fn ms_or(value: u32, default: Duration) -> Duration {
    if value == 0 {
        default
    } else {
        Duration::from_millis(u64::from(value))
    }
}

fn health(h: Option<&v1::HealthCheck>) -> Result<HealthSpec, AdmissionError> {
    use v1::health_check::Probe as P;
    let h = h.ok_or_else(|| invalid("release.health", "a deploy needs a health check"))?;
    let probe = match &h.probe {
        None => return Err(invalid("release.health.probe", "is missing")),
        Some(P::Http(http)) => {
            let path_ok = http.path.starts_with('/')
                && !http
                    .path
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control());
            if !path_ok {
                return Err(invalid(
                    "release.health.http.path",
                    format!("{:?} is not an absolute request path", http.path),
                ));
            }
            let expect_status = match http.expect_status {
                0 => None,
                s @ 100..=599 => u16::try_from(s).ok(),
                s => {
                    return Err(invalid(
                        "release.health.http.expect_status",
                        format!("{s} is not an HTTP status"),
                    ));
                }
            };
            Probe::Http {
                path: http.path.clone(),
                expect_status,
            }
        }
        Some(P::Tcp(_)) => Probe::Tcp,
        Some(P::Exec(exec)) => Probe::Exec {
            command: argv("release.health.exec.command", &exec.command)?,
        },
    };
    let pick = |v: u32, d: u32| if v == 0 { d } else { v };
    Ok(HealthSpec {
        probe,
        interval: ms_or(h.interval_ms, DEFAULT_INTERVAL),
        timeout: ms_or(h.timeout_ms, DEFAULT_TIMEOUT),
        healthy_threshold: pick(h.healthy_threshold, DEFAULT_HEALTHY_THRESHOLD),
        unhealthy_threshold: pick(h.unhealthy_threshold, DEFAULT_UNHEALTHY_THRESHOLD),
        deadline: ms_or(h.deadline_ms, DEFAULT_DEADLINE),
    })
}

#[cfg(test)]
#[path = "decode_tests.rs"]
mod tests;
