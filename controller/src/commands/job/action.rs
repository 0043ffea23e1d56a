//! Action jobs: rollback, restart, stop, promote and abort, built from their flags.

use std::time::SystemTime;

use gantry_policy::job::action_name;
use gantry_proto::v1::{Action, Job, Release};

use super::JobError;
use super::spec::{check_app, default_job_id, window};
use crate::cli::ActionArgs;
use crate::flags;

/// Builds an action job for `args.app`.
///
/// # Errors
///
/// [`JobError::Flag`] for a bad app, version or validity.
pub fn action_job(
    agent_id: &str,
    args: &ActionArgs,
    action: Action,
    to: Option<&str>,
    now: SystemTime,
) -> Result<Job, JobError> {
    check_app(&args.app)?;
    let target = to.map(|v| flags::semver("--to", v)).transpose()?;
    let (issued_at, not_before, expires_at) = window(&args.valid_for, None, now)?;
    let what = match &target {
        Some(v) => format!("{}-{v}", action_name(action)),
        None => action_name(action).to_owned(),
    };
    Ok(Job {
        job_id: default_job_id(&args.app, &what, now),
        agent_id: agent_id.to_owned(),
        app: args.app.clone(),
        action: action as i32,
        issued_at,
        not_before,
        expires_at,
        release: target.map(|v| Release {
            version: v.to_string(),
            ..Release::default()
        }),
        reason: args.reason.clone(),
        restore_flags: false,
    })
}
