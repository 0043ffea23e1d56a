//! Uploading an artifact, submitting a signed job and following its events to the end;
//! re-attaching with `Watch` when the stream drops. Shared by `job submit`, `job watch`,
//! `deploy`, `rollback`, `restart` and `stop`.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use gantry_proto::v1::{
    Action, ArtifactChunk, ArtifactRef, JobEvent, Outcome, WatchRequest, job_event,
};
use tokio::io::AsyncReadExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::{JobSubmitArgs, JobWatchArgs};
use crate::client::{Agent, ClientError, ConnSettings};
use crate::commands::job::spec::hash_file;
use crate::commands::job::{JobError, JobFile};
use crate::exit::{CliError, Exit};
use crate::output::{Events, Mode};
use crate::witness;

/// Artifact upload chunk size.
pub const CHUNK: usize = 256 * 1024;
/// How many times a dropped event stream is re-attached before giving up.
pub const REATTACH_ATTEMPTS: u32 = 5;

/// Why a job could not be handed over or followed.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// Talking to the agent failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The job file or a flag is wrong.
    #[error(transparent)]
    Job(#[from] JobError),
    /// The agent lacks the artifact and none was given.
    #[error(
        "the agent does not have artifact sha256:{sha256} ({size} bytes); pass it with --artifact FILE"
    )]
    ArtifactNeeded {
        /// Its digest.
        sha256: String,
        /// Its size.
        size: u64,
    },
    /// The given artifact is not the one the job names.
    #[error("artifact {} is sha256:{found} ({found_size} bytes) but the job names sha256:{expected} ({expected_size} bytes)", path.display())]
    ArtifactMismatch {
        /// The file given.
        path: PathBuf,
        /// Its digest.
        found: String,
        /// Its size.
        found_size: u64,
        /// The job's digest.
        expected: String,
        /// The job's size.
        expected_size: u64,
    },
    /// The artifact could not be read.
    #[error("cannot read artifact {}", path.display())]
    ReadArtifact {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The agent stored something other than what was sent.
    #[error("the agent acknowledged artifact sha256:{got} but sha256:{sent} was sent")]
    ReceiptMismatch {
        /// Sent digest.
        sent: String,
        /// Acknowledged digest.
        got: String,
    },
    /// The event stream kept dropping.
    #[error(
        "lost the event stream of job {job_id} {attempts} times; the job may still be running (see: gantry job watch {job_id})"
    )]
    Lost {
        /// The job.
        job_id: String,
        /// Attempts made.
        attempts: u32,
        /// The last cause.
        #[source]
        source: Option<ClientError>,
    },
    /// The job is not signed.
    #[error("job {job_id} has no signatures; sign it first: gantry job sign --key KEY FILE")]
    Unsigned {
        /// The job.
        job_id: String,
    },
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] gantry_proto::keys::KeyError),
}

impl SubmitError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            SubmitError::Client(e) => e.exit(),
            SubmitError::Job(e) => e.exit(),
            SubmitError::ArtifactNeeded { .. }
            | SubmitError::ArtifactMismatch { .. }
            | SubmitError::ReadArtifact { .. }
            | SubmitError::Unsigned { .. }
            | SubmitError::Key(_)
            | SubmitError::Lost { .. } => Exit::Usage,
            SubmitError::ReceiptMismatch { .. } => Exit::Rejected,
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

/// Makes sure the agent holds the artifact a deploy names, uploading it if not.
///
/// # Errors
///
/// [`SubmitError`]: no artifact given when needed, a mismatching file, upload failure.
pub async fn ensure_artifact(
    agent: &Agent,
    file: &JobFile,
    artifact: Option<&Path>,
    out: &Events,
) -> Result<(), SubmitError> {
    let Some(release) = file
        .job
        .release
        .as_ref()
        .filter(|_| file.job.action == Action::Deploy as i32)
    else {
        return Ok(());
    };
    let want = ArtifactRef {
        sha256: release.artifact_sha256.clone(),
        size: release.artifact_size,
    };
    let present = agent
        .client
        .clone()
        .has_artifact(want.clone())
        .await
        .map_err(|s| agent.error("HasArtifact", s))?
        .into_inner()
        .present;
    if present {
        out.note(&format!(
            "artifact sha256:{} is already on the agent",
            short(&want.sha256)
        ));
        return Ok(());
    }
    let path = artifact.ok_or_else(|| SubmitError::ArtifactNeeded {
        sha256: want.sha256.clone(),
        size: want.size,
    })?;
    let info = hash_file(path).map_err(|source| SubmitError::ReadArtifact {
        path: path.to_owned(),
        source,
    })?;
    if info.sha256 != want.sha256 || info.size != want.size {
        return Err(SubmitError::ArtifactMismatch {
            path: path.to_owned(),
            found: info.sha256,
            found_size: info.size,
            expected: want.sha256,
            expected_size: want.size,
        });
    }
    upload(agent, path, want, out).await
}

async fn upload(
    agent: &Agent,
    path: &Path,
    want: ArtifactRef,
    out: &Events,
) -> Result<(), SubmitError> {
    let read_err = |source| SubmitError::ReadArtifact {
        path: path.to_owned(),
        source,
    };
    let mut f = tokio::fs::File::open(path).await.map_err(read_err)?;
    let bar = out.upload_bar(want.size);
    let (tx, rx) = tokio::sync::mpsc::channel::<ArtifactChunk>(4);
    let sent = want.sha256.clone();
    let call = {
        let mut client = agent.client.clone();
        tokio::spawn(async move { client.upload_artifact(ReceiverStream::new(rx)).await })
    };
    let mut meta = Some(want.clone());
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = read_full(&mut f, &mut buf).await.map_err(read_err)?;
        if n == 0 && meta.is_none() {
            break;
        }
        let chunk = ArtifactChunk {
            meta: meta.take(),
            data: buf[..n].to_vec(),
        };
        if tx.send(chunk).await.is_err() {
            break; // the call ended early; its result says why
        }
        bar.inc(n as u64);
        if n == 0 {
            break;
        }
    }
    drop(tx);
    let result = call.await.map_err(|e| SubmitError::ReadArtifact {
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    bar.finish_and_clear();
    let receipt = result
        .map_err(|s| agent.error("UploadArtifact", s))?
        .into_inner();
    if receipt.sha256 != sent {
        return Err(SubmitError::ReceiptMismatch {
            sent,
            got: receipt.sha256,
        });
    }
    out.note(&format!(
        "uploaded artifact sha256:{} ({} bytes)",
        short(&sent),
        want.size
    ));
    Ok(())
}

async fn read_full(f: &mut tokio::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = f.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

fn short(hex: &str) -> &str {
    hex.get(..12).unwrap_or(hex)
}

/// Submits a signed job and follows it to its end; returns the outcome's exit code.
///
/// Before the agent has accepted the job, a broken connection is retried by resubmitting the
/// identical bytes (the agent treats that as re-attaching); after, by `Watch`. Events already
/// shown are skipped by `seq`.
///
/// # Errors
///
/// [`SubmitError`]: a rejection (exit 3), or a connection that keeps failing.
pub async fn submit_and_follow(
    agent: &Agent,
    file: &JobFile,
    out: &mut Events,
) -> Result<Exit, SubmitError> {
    if file.signed.signatures.is_empty() {
        return Err(SubmitError::Unsigned {
            job_id: file.job.job_id.clone(),
        });
    }
    follow(agent, &file.job.job_id, Some(file), out).await
}

/// Follows a job by id (`Watch`) to its end.
///
/// # Errors
///
/// [`SubmitError`]: unknown job (exit 3), or a connection that keeps failing.
pub async fn watch(agent: &Agent, job_id: &str, out: &mut Events) -> Result<Exit, SubmitError> {
    follow(agent, job_id, None, out).await
}

async fn follow(
    agent: &Agent,
    job_id: &str,
    submit: Option<&JobFile>,
    out: &mut Events,
) -> Result<Exit, SubmitError> {
    let mut job_id = job_id.to_owned();
    let mut last_seq = 0u64;
    let mut accepted = submit.is_none();
    let mut failures = 0u32;
    let mut last_error: Option<ClientError> = None;
    loop {
        if failures > 0 {
            if failures > REATTACH_ATTEMPTS {
                out.clear();
                return Err(SubmitError::Lost {
                    job_id: job_id.to_owned(),
                    attempts: failures - 1,
                    source: last_error,
                });
            }
            let delay = Duration::from_millis(250 * (1 << failures.min(5)));
            out.note(&format!("event stream of job {job_id} lost; re-attaching in {}ms (attempt {failures} of {REATTACH_ATTEMPTS})", delay.as_millis()));
            tokio::time::sleep(delay).await;
        }
        let (op, call) = match submit {
            Some(file) if !accepted => (
                "Submit",
                agent.client.clone().submit(file.signed.clone()).await,
            ),
            _ => (
                "Watch",
                agent
                    .client
                    .clone()
                    .watch(WatchRequest {
                        job_id: job_id.to_owned(),
                    })
                    .await,
            ),
        };
        let mut stream = match call {
            Ok(r) => r.into_inner(),
            Err(status) => {
                let e = agent.error(op, status);
                if e.is_transport() {
                    failures += 1;
                    last_error = Some(e);
                    continue;
                }
                out.clear();
                return Err(e.into());
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(ev)) => {
                    failures = 0;
                    if ev.seq <= last_seq && last_seq > 0 {
                        continue;
                    }
                    last_seq = ev.seq;
                    if !ev.job_id.is_empty() && ev.job_id != job_id {
                        job_id = ev.job_id.clone();
                    }
                    if matches!(ev.kind, Some(job_event::Kind::Accepted(_))) {
                        accepted = true;
                    }
                    out.event(&ev);
                    if let Some(exit) = finished(agent, &ev) {
                        return Ok(exit);
                    }
                }
                Ok(None) => {
                    failures += 1;
                    last_error = None;
                    break;
                }
                Err(status) => {
                    let e = agent.error(op, status);
                    if !e.is_transport() {
                        out.clear();
                        return Err(e.into());
                    }
                    failures += 1;
                    last_error = Some(e);
                    break;
                }
            }
        }
    }
}

/// For a finished event: witnesses its checkpoint and gives the exit code.
fn finished(agent: &Agent, ev: &JobEvent) -> Option<Exit> {
    let Some(job_event::Kind::Finished(f)) = &ev.kind else {
        return None;
    };
    if let Some(cp) = &f.checkpoint {
        let now_ms = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let stored = match &agent.witness_dir {
            Some(dir) => witness::record(dir, &agent.agent_id, cp.seq, &cp.line, now_ms),
            None => Err(witness::WitnessError::NoStateDir),
        };
        if let Err(e) = stored {
            let mut msg = format!(
                "warning: cannot keep the audit checkpoint (seq {}) as witness: {e}",
                cp.seq
            );
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("{msg}");
        }
    }
    Some(outcome_exit(
        Outcome::try_from(f.outcome).unwrap_or(Outcome::Unspecified),
    ))
}

/// `gantry job submit`.
///
/// # Errors
///
/// [`CliError`].
pub async fn run_submit(args: JobSubmitArgs) -> Result<Exit, CliError> {
    let (file, undecodable) = JobFile::read_for_submit(&args.job)?;
    let settings = ConnSettings::from_args(&args.conn)?;
    let mut out = Events::new(Mode::detect(args.json));
    if let Some(e) = undecodable {
        eprintln!(
            "warning: the job bytes in {} do not decode as gantry.v1.Job ({e}); submitting them for the agent to judge",
            args.job.display()
        );
    }
    if file.signed.signatures.is_empty() {
        return Err(SubmitError::Unsigned {
            job_id: file.job.job_id.clone(),
        }
        .into());
    }
    let agent = Agent::connect(&settings).await?;
    ensure_artifact(&agent, &file, args.artifact.as_deref(), &out).await?;
    Ok(submit_and_follow(&agent, &file, &mut out).await?)
}

/// `gantry job watch`.
///
/// # Errors
///
/// [`CliError`].
pub async fn run_watch(args: JobWatchArgs) -> Result<Exit, CliError> {
    let settings = ConnSettings::from_args(&args.conn)?;
    let mut out = Events::new(Mode::detect(args.json));
    let agent = Agent::connect(&settings).await?;
    Ok(watch(&agent, &args.job_id, &mut out).await?)
}
#[cfg(test)]
#[path = "submit_tests.rs"]
mod tests;
