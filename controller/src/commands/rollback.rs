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
    let mut file = JobFile::new(action_job(agent_id, args, action, to, now)?);
    sign_all(&mut file, &args.keys)?;
    Ok(file)
}

async fn submit_action(
    args: &ActionArgs,
    action: Action,
    to: Option<&str>,
) -> Result<Exit, SubmitError> {
    let settings = conn::settings(&args.conn)?;
    let file = signed_action_job(&settings.agent_id, args, action, to, SystemTime::now())?;
    let mut out = Events::new(Mode::detect(args.json));
    let agent = Agent::connect(&settings).await?;
    submit_and_follow(&agent, &file, &mut out).await
}

/// `gantry rollback`.
///
/// # Errors
///
/// [`SubmitError`].
pub async fn rollback(args: RollbackArgs) -> Result<Exit, SubmitError> {
    submit_action(&args.action, Action::Rollback, args.to.as_deref()).await
}

/// `gantry restart`, `stop`, `promote` and `abort`.
///
/// # Errors
///
/// [`SubmitError`].
pub async fn simple(args: ActionArgs, action: Action) -> Result<Exit, SubmitError> {
    submit_action(&args, action, None).await
}
