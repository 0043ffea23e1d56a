//! `gantry rollback`, `restart`, `stop`, `promote` and `abort`: make, sign and submit an
//! action job, and follow it to its end.

use std::time::SystemTime;

use gantry_client::Agent;
use gantry_proto::v1::Action;

use crate::cli::{ActionArgs, RollbackArgs};
use crate::commands::deploy::sign_all;
use crate::commands::job::{JobError, JobFile, action_job};
use crate::commands::submit::{SubmitError, submit_and_follow};
use crate::conn;
use crate::exit::Exit;
use crate::output::{Events, Mode};

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
    signed(action_job(agent_id, args, action, to, now)?, args)
}

/// The rollback job of `args` for `agent_id`, signed with every `--key`.
///
/// # Errors
///
/// [`JobError`], as for [`signed_action_job`].
pub fn signed_rollback_job(
    agent_id: &str,
    args: &RollbackArgs,
    now: SystemTime,
) -> Result<JobFile, JobError> {
    let mut job = action_job(
        agent_id,
        &args.action,
        Action::Rollback,
        args.to.as_deref(),
        now,
    )?;
    job.restore_flags = args.restore_flags;
    signed(job, &args.action)
}

fn signed(job: gantry_proto::v1::Job, args: &ActionArgs) -> Result<JobFile, JobError> {
    let mut file = JobFile::new(job);
    sign_all(&mut file, &args.keys)?;
    Ok(file)
}

async fn submit(
    settings: &gantry_client::ConnSettings,
    file: &JobFile,
    args: &ActionArgs,
) -> Result<Exit, SubmitError> {
    let mut out = Events::new(Mode::detect(args.json));
    let agent = Agent::connect(settings).await?;
    submit_and_follow(&agent, file, &mut out).await
}

/// `gantry rollback`.
///
/// # Errors
///
/// [`SubmitError`].
pub async fn rollback(args: RollbackArgs) -> Result<Exit, SubmitError> {
    let settings = conn::settings(&args.action.conn)?;
    let file = signed_rollback_job(&settings.agent_id, &args, SystemTime::now())?;
    submit(&settings, &file, &args.action).await
}

/// `gantry restart`, `stop`, `promote` and `abort`.
///
/// # Errors
///
/// [`SubmitError`].
pub async fn simple(args: ActionArgs, action: Action) -> Result<Exit, SubmitError> {
    let settings = conn::settings(&args.conn)?;
    let file = signed_action_job(&settings.agent_id, &args, action, None, SystemTime::now())?;
    submit(&settings, &file, &args).await
}
