//! `gantry rollback`, `restart`, `stop`, `promote` and `abort`: make, sign and submit an
//! action job, and follow it to its end.

use std::time::SystemTime;

use gantry_proto::v1::{Action, Job, Release};

use crate::cli::{ActionArgs, RollbackArgs};
use crate::client::{Agent, ConnSettings};
use crate::commands::deploy::sign_all;
use crate::commands::job::spec::{action_name, check_app, default_job_id, window};
use crate::commands::job::{JobError, JobFile};
use crate::commands::submit::submit_and_follow;
use crate::exit::{CliError, Exit};
use crate::flags;
use crate::output::{Events, Mode};

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
    })
}

/// Builds the action job for `agent_id` and signs it with every `--key`.
///
/// # Errors
///
/// [`JobError`]: a bad flag, an unreadable key, the same key twice.
pub fn signed_action_job(
    agent_id: &str,
    args: &ActionArgs,
    action: Action,
    to: Option<&str>,
    now: SystemTime,
) -> Result<JobFile, JobError> {
    let mut file = JobFile::new(action_job(agent_id, args, action, to, now)?);
    sign_all(&mut file, &args.keys)?;
    Ok(file)
}

async fn submit_action(
    args: &ActionArgs,
    action: Action,
    to: Option<&str>,
) -> Result<Exit, CliError> {
    let settings = ConnSettings::from_args(&args.conn)?;
    let file = signed_action_job(&settings.agent_id, args, action, to, SystemTime::now())?;
    let mut out = Events::new(Mode::detect(args.json));
    let agent = Agent::connect(&settings).await?;
    Ok(submit_and_follow(&agent, &file, &mut out).await?)
}

/// `gantry rollback`.
///
/// # Errors
///
/// [`CliError`].
pub async fn rollback(args: RollbackArgs) -> Result<Exit, CliError> {
    submit_action(&args.action, Action::Rollback, args.to.as_deref()).await
}

/// `gantry restart`, `stop`, `promote` and `abort`.
///
/// # Errors
///
/// [`CliError`].
pub async fn simple(args: ActionArgs, action: Action) -> Result<Exit, CliError> {
    submit_action(&args, action, None).await
}
