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
    Action, AppName, HealthSpec, JobId, JobSpec, Probe, ReleaseSpec, Sha256Hex, StrategyKind,
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
        Ok(v1::Action::Deploy) => Ok(Action::Deploy),
        Ok(v1::Action::Rollback) => Ok(Action::Rollback),
        Ok(v1::Action::Restart) => Ok(Action::Restart),
        Ok(v1::Action::Stop) => Ok(Action::Stop),
        Ok(v1::Action::Promote) => Ok(Action::Promote),
        Ok(v1::Action::Abort) => Ok(Action::Abort),
        Ok(v1::Action::Unspecified) => Err(invalid("action", "is unspecified")),
        Err(_) => Err(invalid("action", format!("unknown action value {value}"))),
    }
}

fn strategy(value: i32) -> Result<StrategyKind, AdmissionError> {
    match v1::Strategy::try_from(value) {
        // An unspecified strategy is the simplest one, as the controller's default is.
        Ok(v1::Strategy::Unspecified | v1::Strategy::Hot) => Ok(StrategyKind::Hot),
        Ok(v1::Strategy::Rolling) => Ok(StrategyKind::Rolling),
        Ok(v1::Strategy::BlueGreen) => Ok(StrategyKind::BlueGreen),
        Ok(v1::Strategy::Canary) => Ok(StrategyKind::Canary),
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
        rollout: rollout(r.rollout.as_ref())?,
    })
}

/// The rollout parameters with defaults filled in.
fn rollout(r: Option<&v1::Rollout>) -> Result<crate::job::RolloutSpec, AdmissionError> {
    let spec = crate::job::RolloutSpec::default();
    let Some(_r) = r else { return Ok(spec) };
    Ok(spec)
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
