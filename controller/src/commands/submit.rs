//! `gantry job submit` and `gantry job watch`, and the steps `deploy`, `rollback`, `restart`,
//! `stop`, `promote`, `abort` and `quickstart` share: the client library's upload and follow,
//! shown through [`Events`] and ended with an exit code.

use std::path::Path;

use gantry_client::follow::{self, FollowError, WitnessOutcome};
use gantry_client::upload::{self, Holding, UploadError, UploadProgress};
use gantry_client::{Agent, ClientError};
use gantry_proto::v1::Outcome;
use indicatif::ProgressBar;

use crate::cli::{JobSubmitArgs, JobWatchArgs};
use crate::commands::job::{JobError, JobFile};
use crate::conn::{self, ConnError};
use crate::exit::Exit;
use crate::output::{Events, Mode, short};
use crate::report;

/// Why a job could not be handed over or followed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The connection flags are incomplete.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The agent could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The job file or a flag is wrong.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The agent does not hold the artifact and it could not be uploaded.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// The job could not be submitted or followed to its end.
    #[error(transparent)]
    Follow(#[from] FollowError),
    /// Ctrl-C while following: this command stops, the job does not.
    #[error(
        "interrupted: stopped following job {job_id}, but the job goes on on the agent; \
         follow it with: gantry job watch {job_id} (abort a rollout: gantry abort --app {app})"
    )]
    Interrupted {
        /// The job.
        job_id: String,
        /// Its app.
        app: String,
    },
}

impl SubmitError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            SubmitError::Conn(e) => e.exit(),
            SubmitError::Client(e) => e.fault().into(),
            SubmitError::Job(e) => e.exit(),
            SubmitError::Upload(e) => e.fault().into(),
            SubmitError::Follow(e) => e.fault().into(),
            // Not a result: the job's outcome is unknown here.
            SubmitError::Interrupted { .. } => Exit::Usage,
        }
    }
}

/// The exit code an outcome calls for.
pub fn outcome_exit(outcome: Outcome) -> Exit {
    match outcome {
        Outcome::Succeeded => Exit::Success,
        Outcome::Failed | Outcome::RolledBack | Outcome::Interrupted | Outcome::Unspecified => {
            Exit::JobFailed
        }
    }
}

/// The upload bar of [`Events`], drawn while an upload runs.
struct UploadBar<'a> {
    out: &'a Events,
    bar: Option<ProgressBar>,
}

impl UploadProgress for UploadBar<'_> {
    fn started(&mut self, total: u64) {
        self.bar = Some(self.out.upload_bar(total));
    }

    fn resumed(&mut self, held: u64, total: u64) {
        self.out
            .note(&format!("resuming the upload at {held} of {total} bytes"));
        if let Some(bar) = &self.bar {
            bar.set_position(held);
        }
    }

    fn retrying(&mut self, next: u32, of: u32, reason: &str, delay: std::time::Duration) {
        self.out.note(&format!(
            "the upload broke off ({reason}); trying again in {} ms (attempt {next} of {of})",
            delay.as_millis()
        ));
        if let Some(bar) = &self.bar {
            bar.set_position(0);
        }
    }

    fn sent(&mut self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }

    fn finished(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// Makes sure the agent holds the artifact a deploy names, uploading it if not.
///
/// # Errors
///
/// [`SubmitError::Upload`]: no artifact given when needed, a mismatching file, upload failure.
pub async fn ensure_artifact(
    agent: &Agent,
    file: &JobFile,
    artifact: Option<&Path>,
    out: &Events,
) -> Result<(), SubmitError> {
    let Some(want) = upload::artifact_of(&file.job) else {
        return Ok(());
    };
    let mut bar = UploadBar { out, bar: None };
    match upload::ensure_artifact(agent, &want, artifact, &mut bar).await? {
        Holding::AlreadyPresent(a) => out.note(&format!(
            "artifact sha256:{} is already on the agent",
            short(&a.sha256)
        )),
        Holding::Uploaded(a) => out.note(&format!(
            "uploaded artifact sha256:{} ({} bytes)",
            short(&a.sha256),
            a.size
        )),
    }
    Ok(())
}

/// Submits a signed job and follows it to its end; returns the outcome's exit code.
///
/// # Errors
///
/// [`SubmitError::Follow`]: a rejection (exit 3), a failure on the agent's side, or a
/// connection that keeps failing.
pub async fn submit_and_follow(
    agent: &Agent,
    file: &JobFile,
    out: &mut Events,
) -> Result<Exit, SubmitError> {
    let followed = tokio::select! {
        f = follow::submit_and_follow(agent, &file.signed, &file.job.job_id, out) => f,
        _ = tokio::signal::ctrl_c() => return Err(interrupted(file, out)),
    };
    ended(followed, out)
}

/// Ctrl-C while following `file`'s job.
fn interrupted(file: &JobFile, out: &mut Events) -> SubmitError {
    out.clear();
    SubmitError::Interrupted {
        job_id: file.job.job_id.clone(),
        app: file.job.app.clone(),
    }
}

/// Submits a signed job and returns once the agent has accepted it (`--detach`), saying how
/// to follow it; exit 0, or the outcome's exit code if the job had already ended.
///
/// # Errors
///
/// [`SubmitError::Follow`], as [`submit_and_follow`].
pub async fn submit_detached(
    agent: &Agent,
    file: &JobFile,
    out: &mut Events,
) -> Result<Exit, SubmitError> {
    let detached = tokio::select! {
        d = follow::submit_detached(agent, &file.signed, &file.job.job_id, out) => d,
        _ = tokio::signal::ctrl_c() => return Err(interrupted(file, out)),
    };
    match detached {
        Ok(follow::Detached::Accepted { job_id }) => {
            out.clear();
            out.note(&format!(
                "detached: job {job_id} goes on on the agent; follow it with: gantry job watch {job_id}"
            ));
            Ok(Exit::Success)
        }
        Ok(follow::Detached::Finished(f)) => ended(Ok(f), out),
        Err(e) => ended(Err(e), out),
    }
}

/// Follows a job by id (`Watch`) to its end.
///
/// # Errors
///
/// [`SubmitError::Follow`]: unknown job (exit 3), or a connection that keeps failing.
pub async fn watch(agent: &Agent, job_id: &str, out: &mut Events) -> Result<Exit, SubmitError> {
    let followed = follow::watch(agent, job_id, out).await;
    ended(followed, out)
}

/// The exit code of a followed job; warns when its checkpoint could not be witnessed. A
/// checkpoint that does not extend the witnessed one is a witness alarm: exit 1 whatever the
/// job's outcome, since the agent's account of it cannot be trusted (the exit code `audit
/// verify` gives a log that fails verification).
fn ended(
    followed: Result<follow::Followed, FollowError>,
    out: &mut Events,
) -> Result<Exit, SubmitError> {
    let followed = match followed {
        Ok(f) => f,
        Err(e) => {
            out.clear();
            return Err(e.into());
        }
    };
    match &followed.witness {
        WitnessOutcome::NoCheckpoint | WitnessOutcome::Kept { .. } => {}
        WitnessOutcome::NotWitnessed(nw) => eprintln!(
            "warning: cannot keep the audit checkpoint (seq {}) as witness: {}",
            nw.seq,
            report::chain(&nw.error).join(": ")
        ),
        WitnessOutcome::Alarm(alarm) => {
            out.witness_alarm(alarm);
            return Ok(Exit::JobFailed);
        }
    }
    Ok(outcome_exit(followed.outcome))
}

/// `gantry job submit`.
///
/// # Errors
///
/// [`SubmitError`].
pub async fn run_submit(args: JobSubmitArgs) -> Result<Exit, SubmitError> {
    let (file, undecodable) = JobFile::read_for_submit(&args.job)?;
    let settings = conn::settings(&args.conn)?;
    let mut out = Events::new(Mode::detect(args.json));
    if let Some(e) = undecodable {
        eprintln!(
            "warning: the job bytes in {} do not decode as gantry.v1.Job ({e}); submitting them for the agent to judge",
            args.job.display()
        );
    }
    if file.signed.signatures.is_empty() {
        return Err(FollowError::Unsigned {
            job_id: file.job.job_id.clone(),
        }
        .into());
    }
    let agent = Agent::connect(&settings).await?;
    ensure_artifact(&agent, &file, args.artifact.as_deref(), &out).await?;
    if args.detach {
        submit_detached(&agent, &file, &mut out).await
    } else {
        submit_and_follow(&agent, &file, &mut out).await
    }
}

/// `gantry job watch`.
///
/// # Errors
///
/// [`SubmitError`].
pub async fn run_watch(args: JobWatchArgs) -> Result<Exit, SubmitError> {
    let settings = conn::settings(&args.conn)?;
    let mut out = Events::new(Mode::detect(args.json));
    let agent = Agent::connect(&settings).await?;
    watch(&agent, &args.job_id, &mut out).await
}

#[cfg(test)]
#[path = "submit_tests.rs"]
mod tests;
