//! `gantry deploy`: create, sign, upload, submit and watch in one step.

use std::time::SystemTime;

use gantry_client::Agent;
use gantry_proto::keys::SigningKey;

use crate::cli::DeployArgs;
use crate::commands::job::spec::{build_job, hash_file};
use crate::commands::job::{JobError, JobFile};
use crate::commands::submit::{SubmitError, ensure_artifact, submit_and_follow, submit_detached};
use crate::conn;
use crate::exit::Exit;
use crate::output::{Events, Mode};

/// Loads every `--key` and signs `file` with each.
///
/// # Errors
///
/// [`JobError`]: unreadable keys, the same key twice.
pub fn sign_all(file: &mut JobFile, keys: &[std::path::PathBuf]) -> Result<(), JobError> {
    for path in keys {
        file.sign(path, &SigningKey::read_pem_file(path)?)?;
    }
    Ok(())
}

/// `gantry deploy`.
///
/// # Errors
///
/// [`SubmitError`].
pub async fn run(args: DeployArgs) -> Result<Exit, SubmitError> {
    let settings = conn::settings(&args.conn)?;
    let artifact = args
        .artifact
        .as_deref()
        .map(|p| {
            hash_file(p).map_err(|source| JobError::ReadArtifact {
                path: p.to_owned(),
                source,
            })
        })
        .transpose()?;
    let job = build_job(
        &settings.agent_id,
        &args.spec,
        artifact.as_ref(),
        SystemTime::now(),
    )
    .map_err(JobError::from)?;
    let mut file = JobFile::new(job);
    sign_all(&mut file, &args.keys)?;
    let mut out = Events::new(Mode::detect(args.json));
    out.note(&format!(
        "job {} (digest {})",
        file.job.job_id,
        file.digest()
    ));
    let agent = Agent::connect(&settings).await?;
    ensure_artifact(&agent, &file, args.artifact.as_deref(), &out).await?;
    if args.detach {
        submit_detached(&agent, &file, &mut out).await
    } else {
        submit_and_follow(&agent, &file, &mut out).await
    }
}
