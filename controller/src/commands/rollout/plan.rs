//! `gantry rollout plan`, `rollout sign` and `rollout approve`: make a plan file, add
//! signatures.

use std::time::SystemTime;

use gantry_proto::keys::SigningKey;
use gantry_proto::v1::Plan;

use super::{PlanFile, RolloutError, rings};
use crate::cli::{RolloutPlanArgs, RolloutSignArgs};
use crate::commands::job::create::hash_artifact;
use crate::commands::job::spec;
use crate::flags::FlagError;

/// Builds the plan the flags describe: the release exactly as `job create` builds a deploy's,
/// the rings in order (the `--rings` file's first, then each `--ring`).
///
/// # Errors
///
/// [`RolloutError`]: a bad flag or ring, an unreadable artifact or rings file.
pub fn build_plan(args: &RolloutPlanArgs, now: SystemTime) -> Result<Plan, RolloutError> {
    if args.spec.action != "deploy" {
        return Err(FlagError::new("--action", "a plan always deploys its release").into());
    }
    if args.spec.job_id.is_some() {
        return Err(FlagError::new(
            "--job-id",
            "job ids of a plan derive from its plan id and each agent's id",
        )
        .into());
    }
    let artifact = hash_artifact(args.artifact.as_deref())?;
    // The agent id is the job's, not the plan's: any valid one lets the release be built.
    let job = spec::build_job("plan", &args.spec, artifact.as_ref(), now)?;
    let mut raw = match &args.rings_file {
        Some(path) => rings::read_file(path)?,
        None => Vec::new(),
    };
    for spec in &args.rings {
        raw.push(rings::parse_spec(spec)?);
    }
    if raw.is_empty() {
        return Err(
            FlagError::new("--ring", "a plan needs at least one ring (or --rings FILE)").into(),
        );
    }
    let rings = raw
        .iter()
        .enumerate()
        .map(|(i, r)| rings::build(r, i))
        .collect::<Result<Vec<_>, _>>()?;
    let plan_id = match &args.plan_id {
        Some(id) if id.is_empty() || id.len() > 128 || id.contains('\0') => {
            return Err(FlagError::new("--plan-id", "must be 1 to 128 bytes without NUL").into());
        }
        Some(id) => id.clone(),
        None => {
            let version = args.spec.version.as_deref().unwrap_or("unversioned");
            spec::default_job_id(&args.spec.app, version, now)
        }
    };
    Ok(Plan {
        plan_id,
        app: job.app,
        environment: args.environment.clone(),
        release: job.release,
        rings,
        issued_at: job.issued_at,
        not_before: job.not_before,
        expires_at: job.expires_at,
        reason: job.reason,
    })
}

/// `gantry rollout plan`.
///
/// The plan id defaults to `<app>-<version>-<unix ms>-<random hex>`, as a job id does.
///
/// # Errors
///
/// As [`build_plan`], and [`RolloutError::Write`].
pub fn plan(args: &RolloutPlanArgs) -> Result<(), RolloutError> {
    let plan = build_plan(args, SystemTime::now())?;
    let file = PlanFile::new(plan);
    file.write(&args.out)?;
    println!(
        "wrote plan {} ({} ring(s)) to {}",
        file.plan.plan_id,
        file.plan.rings.len(),
        args.out.display()
    );
    println!("digest: {}", file.digest());
    println!("next: gantry rollout sign --key KEY {}", args.out.display());
    Ok(())
}

/// Adds `args.key`'s signature to the plan file, with `comment` signed by the same key, and
/// rewrites the file.
fn add(
    args: &RolloutSignArgs,
    comment: Option<&str>,
) -> Result<(PlanFile, SigningKey), RolloutError> {
    let mut file = PlanFile::read(&args.plan)?;
    let key = SigningKey::read_pem_file(&args.key)?;
    file.sign(&args.plan, &key)?;
    if let Some(text) = comment {
        file.signed
            .comments
            .push(gantry_proto::attest::sign_comment(
                &key,
                &file.digest(),
                text,
            ));
    }
    file.write(&args.plan)?;
    Ok((file, key))
}

/// `gantry rollout sign`.
///
/// # Errors
///
/// [`RolloutError`]: unreadable plan or key, the key signed already, unwritable file.
pub fn sign(args: &RolloutSignArgs) -> Result<(), RolloutError> {
    let (file, key) = add(args, None)?;
    let n = file.signed.signatures.len();
    println!(
        "signed plan {} with key {} ({n} signature{})",
        file.plan.plan_id,
        key.key_id(),
        if n == 1 { "" } else { "s" }
    );
    Ok(())
}

/// `gantry rollout approve`: adds an approval signature (the same signature as `rollout
/// sign`; an agent counts it as an approval when the key holds the `approver` role).
///
/// # Errors
///
/// As [`sign`].
pub fn approve(args: &RolloutSignArgs, comment: Option<&str>) -> Result<(), RolloutError> {
    let (file, key) = add(args, comment)?;
    let n = file.signed.signatures.len();
    println!(
        "approved plan {} with key {}\n\
         this is an approval: it counts towards the app's approvals on each agent whose policy \
         gives this key the \"approver\" role\n\
         the plan now has {n} signature{}",
        file.plan.plan_id,
        key.key_id(),
        if n == 1 { "" } else { "s" }
    );
    if let Some(text) = comment {
        println!("with the comment, signed by the same key: {text:?}");
    }
    Ok(())
}
