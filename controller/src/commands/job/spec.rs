//! Building a `gantry.v1.Job` from flags, validating each on the way (stage two of parsing).

use std::collections::HashMap;
use std::time::SystemTime;

pub use gantry_client::upload::{ArtifactInfo, hash_file};
use gantry_proto::v1::{
    Action, ExecProbe, HealthCheck, HttpProbe, Job, Release, Strategy, TcpProbe, health_check,
};

use gantry_policy::job::{self, StrategyKind};

use crate::cli::JobSpecArgs;
use crate::flags::{self, FlagError};

/// Parses an action name.
///
/// # Errors
///
/// [`FlagError`] for `--action`.
pub fn parse_action(raw: &str) -> Result<Action, FlagError> {
    job::Action::parse(raw)
        .map(job::Action::to_wire)
        .ok_or_else(|| {
            let names: Vec<&str> = job::Action::ALL.iter().map(|a| a.as_str()).collect();
            FlagError::new(
                "--action",
                format!("{raw:?} is not one of {}", names.join(", ")),
            )
        })
}

fn parse_strategy(raw: &str) -> Result<Strategy, FlagError> {
    StrategyKind::parse(raw)
        .map(StrategyKind::to_wire)
        .ok_or_else(|| {
            let names: Vec<&str> = StrategyKind::ALL.iter().map(|k| k.as_str()).collect();
            FlagError::new(
                "--strategy",
                format!("{raw:?} is not one of {}", names.join(", ")),
            )
        })
}

/// Parses `http:/PATH[=STATUS]`, `tcp` or `exec:CMD ARGS...`.
///
/// # Errors
///
/// [`FlagError`] for `--health`.
pub fn parse_probe(raw: &str) -> Result<health_check::Probe, FlagError> {
    let bad = |why: &str| {
        FlagError::new(
            "--health",
            format!("{raw:?}: {why} (expected http:/PATH, tcp or exec:CMD ARGS...)"),
        )
    };
    if raw == "tcp" {
        return Ok(health_check::Probe::Tcp(TcpProbe {}));
    }
    if let Some(rest) = raw.strip_prefix("http:") {
        let (path, status) = match rest.rsplit_once('=') {
            Some((p, s)) => {
                let code: u32 = s
                    .parse()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| bad("status must be 100-599"))?;
                (p, code)
            }
            None => (rest, 0),
        };
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("the path must start with '/' and have no spaces"));
        }
        return Ok(health_check::Probe::Http(HttpProbe {
            path: path.to_owned(),
            expect_status: status,
        }));
    }
    if let Some(rest) = raw.strip_prefix("exec:") {
        let command: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
        if command.is_empty() {
            return Err(bad("exec needs a command"));
        }
        return Ok(health_check::Probe::Exec(ExecProbe { command }));
    }
    Err(bad("unknown probe"))
}

fn check_name(
    flag: &'static str,
    value: &str,
    max: usize,
    ok: impl Fn(char) -> bool,
    allowed: &str,
) -> Result<(), FlagError> {
    let first_ok = value
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if value.is_empty() || value.len() > max || !first_ok || !value.chars().all(ok) {
        return Err(FlagError::new(
            flag,
            format!(
                "{value:?} must be 1-{max} characters of {allowed}, starting with a letter or digit"
            ),
        ));
    }
    Ok(())
}

/// Validates an app name as the agent does.
///
/// # Errors
///
/// [`FlagError`] for `--app`.
pub fn check_app(app: &str) -> Result<(), FlagError> {
    check_name(
        "--app",
        app,
        63,
        |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_',
        "lowercase letters, digits, '-' and '_'",
    )
}

/// Validates a job id as the agent does.
///
/// # Errors
///
/// [`FlagError`] for `--job-id`.
pub fn check_job_id(id: &str) -> Result<(), FlagError> {
    check_name(
        "--job-id",
        id,
        128,
        |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'),
        "letters, digits, '.', '_', ':' and '-'",
    )
}

/// `<app>-<what>-<unix ms>-<8 random hex>`, with characters a job id may not hold replaced.
pub fn default_job_id(app: &str, what: &str, now: SystemTime) -> String {
    let ms = gantry_client::clock::unix_ms(now);
    let mut rnd = [0u8; 4];
    // A failed random source only weakens uniqueness; the millisecond stamp still separates jobs.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut rnd);
    let raw = format!("{app}-{what}-{ms}-{}", hex::encode(rnd));
    raw.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect()
}

/// The job's timing: issued now, valid from `--not-before` (default now) for `--valid-for`.
///
/// # Errors
///
/// [`FlagError`] for `--valid-for` or `--not-before`.
pub fn window(
    valid_for: &str,
    not_before: Option<&str>,
    now: SystemTime,
) -> Result<(i64, i64, i64), FlagError> {
    let issued_at = flags::unix_secs(now);
    let valid = flags::duration("--valid-for", valid_for)?;
    let not_before = match not_before {
        Some(raw) => flags::rfc3339("--not-before", raw)?,
        None => issued_at,
    };
    let secs =
        i64::try_from(valid.as_secs()).map_err(|_| FlagError::new("--valid-for", "too long"))?;
    if secs == 0 {
        return Err(FlagError::new("--valid-for", "must be at least 1s"));
    }
    Ok((issued_at, not_before, not_before.saturating_add(secs)))
}

/// Builds the job the flags describe, for `agent_id`.
///
/// # Errors
///
/// [`FlagError`] naming the first bad or missing flag.
pub fn build_job(
    agent_id: &str,
    spec: &JobSpecArgs,
    artifact: Option<&ArtifactInfo>,
    now: SystemTime,
) -> Result<Job, FlagError> {
    if agent_id.is_empty() {
        return Err(FlagError::new("--agent-id", "must not be empty"));
    }
    check_app(&spec.app)?;
    let action = parse_action(&spec.action)?;
    let version = spec
        .version
        .as_deref()
        .map(|v| flags::semver("--version", v))
        .transpose()?;
    let (issued_at, not_before, expires_at) =
        window(&spec.valid_for, spec.not_before.as_deref(), now)?;

    let release = match action {
        Action::Deploy => Some(build_release(spec, version.as_ref(), artifact)?),
        Action::Rollback => version.as_ref().map(|v| Release {
            version: v.to_string(),
            ..Release::default()
        }),
        Action::Restart | Action::Stop | Action::Promote | Action::Abort | Action::Unspecified => {
            if version.is_some() {
                return Err(FlagError::new(
                    "--version",
                    format!("is only for deploy and rollback, not {}", spec.action),
                ));
            }
            None
        }
    };
    if action != Action::Deploy {
        super::rollout::refuse_for_action(&spec.rollout, &spec.action)?;
        if spec.notes.is_some() || !spec.evidence.is_empty() {
            return Err(FlagError::new(
                if spec.notes.is_some() {
                    "--notes"
                } else {
                    "--evidence"
                },
                format!("is only for deploy, not {}", spec.action),
            ));
        }
        if artifact.is_some() {
            return Err(FlagError::new(
                "--artifact",
                format!("is only for deploy, not {}", spec.action),
            ));
        }
        if !spec.command.is_empty() {
            return Err(FlagError::new(
                "-- COMMAND",
                format!("is only for deploy, not {}", spec.action),
            ));
        }
    }

    let job_id = match &spec.job_id {
        Some(id) => {
            check_job_id(id)?;
            id.clone()
        }
        None => {
            let what = version
                .as_ref()
                .map_or_else(|| job::action_name(action).to_owned(), ToString::to_string);
            default_job_id(&spec.app, &what, now)
        }
    };

    Ok(Job {
        job_id,
        agent_id: agent_id.to_owned(),
        app: spec.app.clone(),
        action: action as i32,
        issued_at,
        not_before,
        expires_at,
        release,
        reason: spec.reason.clone(),
        restore_flags: false,
    })
}

fn build_release(
    spec: &JobSpecArgs,
    version: Option<&semver::Version>,
    artifact: Option<&ArtifactInfo>,
) -> Result<Release, FlagError> {
    let version = version.ok_or_else(|| FlagError::new("--version", "is required for a deploy"))?;
    let artifact = artifact.ok_or_else(|| {
        FlagError::new(
            "--artifact",
            "is required for a deploy (the job carries its SHA-256 and size)",
        )
    })?;
    if spec.command.is_empty() {
        return Err(FlagError::new(
            "-- COMMAND",
            "a deploy needs the instance's command after `--`",
        ));
    }
    let mut env = HashMap::new();
    for kv in &spec.env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| FlagError::new("--env", format!("{kv:?} is not K=V")))?;
        if k.is_empty() || k.contains('\0') || v.contains('\0') {
            return Err(FlagError::new(
                "--env",
                format!("{kv:?}: the name must be non-empty and neither part may hold NUL"),
            ));
        }
        if k == "PORT" || k.starts_with("GANTRY_") {
            return Err(FlagError::new(
                "--env",
                format!("{k} is set by the agent and cannot be overridden"),
            ));
        }
        if env.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(FlagError::new("--env", format!("{k} is given twice")));
        }
    }
    let mut secret_env = Vec::new();
    for kv in &spec.secret_env {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| FlagError::new("--secret-env", "an entry is not K=V"))?;
        if k.is_empty() || k.contains('\0') || v.contains('\0') {
            return Err(FlagError::new(
                "--secret-env",
                format!("{k:?}: the name must be non-empty and neither part may hold NUL"),
            ));
        }
        if k == "PORT" || k.starts_with("GANTRY_") {
            return Err(FlagError::new(
                "--secret-env",
                format!("{k} is set by the agent and cannot be overridden"),
            ));
        }
        if env.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(FlagError::new(
                "--secret-env",
                format!("{k} is given twice (or also with --env)"),
            ));
        }
        secret_env.push(k.to_owned());
    }
    secret_env.sort();
    let strategy = parse_strategy(&spec.strategy)?;
    let rollout = super::rollout::build_rollout(strategy, &spec.rollout)?;
    let (notes, evidence) = super::extras::read(spec, &artifact.sha256)?;
    Ok(Release {
        version: version.to_string(),
        artifact_sha256: artifact.sha256.clone(),
        artifact_size: artifact.size,
        strategy: strategy as i32,
        instances: flags::positive_u32("--instances", &spec.instances)?,
        command: spec.command.clone(),
        health: Some(HealthCheck {
            probe: Some(parse_probe(&spec.health)?),
            interval_ms: flags::millis_u32("--health-interval", &spec.health_interval)?,
            timeout_ms: flags::millis_u32("--health-timeout", &spec.health_timeout)?,
            healthy_threshold: flags::positive_u32("--healthy-threshold", &spec.healthy_threshold)?,
            unhealthy_threshold: flags::positive_u32(
                "--unhealthy-threshold",
                &spec.unhealthy_threshold,
            )?,
            deadline_ms: flags::millis_u32("--health-deadline", &spec.health_deadline)?,
        }),
        env,
        progress_deadline_secs: flags::secs_u32("--progress-deadline", &spec.progress_deadline)?,
        secret_env,
        rollout,
        evidence,
        notes,
    })
}
