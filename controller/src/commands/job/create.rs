//! `gantry job create`, `job sign` and `job approve`: make a job file, add signatures.

use std::path::Path;
use std::time::SystemTime;

use gantry_proto::keys::SigningKey;

use super::{JobError, JobFile, spec};
use crate::cli::{JobCreateArgs, JobSignArgs};

/// The digest and size of `--artifact`, when given (a deploy's and a plan's release alike).
///
/// # Errors
///
/// [`JobError::ReadArtifact`] when the file cannot be read.
pub fn hash_artifact(path: Option<&Path>) -> Result<Option<spec::ArtifactInfo>, JobError> {
    path.map(|p| {
        spec::hash_file(p).map_err(|source| JobError::ReadArtifact {
            path: p.to_owned(),
            source,
        })
    })
    .transpose()
}

/// `gantry job create`.
///
/// # Errors
///
/// [`JobError`]: a bad flag, an unreadable artifact, an unwritable file.
pub fn create(args: &JobCreateArgs) -> Result<(), JobError> {
    let artifact = hash_artifact(args.artifact.as_deref())?;
    let job = spec::build_job(
        &args.agent_id,
        &args.spec,
        artifact.as_ref(),
        SystemTime::now(),
    )?;
    let file = JobFile::new(job);
    file.write(&args.out)?;
    println!("wrote job {} to {}", file.job.job_id, args.out.display());
    println!("digest: {}", file.digest());
    println!("next: gantry job sign --key KEY {}", args.out.display());
    Ok(())
}

/// `gantry job sign`.
///
/// # Errors
///
/// [`JobError`]: unreadable job or key, duplicate signature, unwritable file.
pub fn sign(args: &JobSignArgs) -> Result<(), JobError> {
    let mut file = JobFile::read(&args.job)?;
    let key = SigningKey::read_pem_file(&args.key)?;
    file.sign(&args.job, &key)?;
    file.write(&args.job)?;
    println!(
        "signed job {} with key {} ({} signature{})",
        file.job.job_id,
        key.key_id(),
        file.signed.signatures.len(),
        if file.signed.signatures.len() == 1 {
            ""
        } else {
            "s"
        }
    );
    Ok(())
}

/// `gantry job approve`: adds an approval signature (the same signature as `job sign`; the
/// agent counts it as an approval when the key holds the `approver` role).
///
/// # Errors
///
/// [`JobError`]: unreadable job or key, the key signed already, unwritable file.
pub fn approve(args: &JobSignArgs) -> Result<(), JobError> {
    approve_commented(args, None)
}

/// `gantry job approve [--comment TEXT]`: [`approve`], and with a comment, the comment signed
/// by the same key over this job's digest (`gantry_proto::attest::sign_comment`), so it
/// cannot be moved to another job or claimed by another approver.
///
/// # Errors
///
/// As [`approve`].
pub fn approve_commented(args: &JobSignArgs, comment: Option<&str>) -> Result<(), JobError> {
    let mut file = JobFile::read(&args.job)?;
    let key = SigningKey::read_pem_file(&args.key)?;
    file.sign(&args.job, &key)?;
    if let Some(text) = comment {
        file.signed
            .comments
            .push(gantry_proto::attest::sign_comment(
                &key,
                &file.digest(),
                text,
            ));
    }
    file.write(&args.job)?;
    print!("{}", approve_text(&file, &key.key_id().to_string()));
    if let Some(text) = comment {
        println!("with the comment, signed by the same key: {text:?}");
    }
    Ok(())
}

/// What `job approve` prints.
pub fn approve_text(file: &JobFile, key_id: &str) -> String {
    let n = file.signed.signatures.len();
    format!(
        "approved job {} with key {key_id}\n\
         this is an approval: it counts towards the app's approvals if the agent's policy gives \
         this key the \"approver\" role (never as the deployer's own signature unless \
         deployer_may_approve = true)\n\
         the job now has {n} signature{}\n",
        file.job.job_id,
        if n == 1 { "" } else { "s" }
    )
}
