//! Making sure the agent holds the artifact a deploy names: asks first, and only when it lacks
//! it checks the local file against the job's digest and size and streams it in chunks.
//!
//! An upload resumes: when the agent holds part of the artifact from an interrupted upload
//! (`ArtifactPresence.held`), the file is sent from that byte (`ArtifactChunk.offset`), and a
//! connection that breaks mid-upload is retried [`UPLOAD_ATTEMPTS`] times in all, with
//! backoff, each time from what the agent then holds.

use std::io::{Read, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_proto::v1::{Action, ArtifactChunk, ArtifactPresence, ArtifactRef, Job};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_stream::wrappers::ReceiverStream;

use crate::connect::{Agent, ClientError};
use crate::fault::Fault;

/// Artifact upload chunk size.
pub const CHUNK: usize = 256 * 1024;

/// Attempts at one upload, the first included, when the connection breaks mid-upload (or the
/// agent is still finishing an earlier upload of the same artifact).
pub const UPLOAD_ATTEMPTS: u32 = 4;

/// The wait before the second attempt; it doubles for each one after.
const RETRY_BASE: Duration = Duration::from_millis(500);

/// Why the agent does not hold the artifact it needs.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Talking to the agent failed.
    #[error(transparent)]
    Client(#[from] ClientError),
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
}

impl UploadError {
    /// Whose side the failure is on.
    pub fn fault(&self) -> Fault {
        match self {
            UploadError::Client(e) => e.fault(),
            UploadError::ArtifactNeeded { .. }
            | UploadError::ArtifactMismatch { .. }
            | UploadError::ReadArtifact { .. } => Fault::Input,
            // The agent's answer does not vouch for what was sent: it is not taken.
            UploadError::ReceiptMismatch { .. } => Fault::Refused,
        }
    }
}

/// An artifact file's digest and size, as a job names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArtifactInfo {
    /// The file.
    pub path: PathBuf,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Bytes.
    pub size: u64,
}

/// Hashes a file in one streaming pass.
///
/// # Errors
///
/// The I/O error from opening or reading it.
pub fn hash_file(path: &Path) -> std::io::Result<ArtifactInfo> {
    let mut f = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
        size += n as u64;
    }
    Ok(ArtifactInfo {
        path: path.to_owned(),
        sha256: hex::encode(ctx.finish()),
        size,
    })
}

/// The artifact a job needs on the agent: a deploy's release; other actions need none.
pub fn artifact_of(job: &Job) -> Option<ArtifactRef> {
    job.release
        .as_ref()
        .filter(|_| job.action == Action::Deploy as i32)
        .map(|r| ArtifactRef {
            sha256: r.artifact_sha256.clone(),
            size: r.artifact_size,
        })
}

/// Hears how an upload goes (the CLI draws a bar; a service may log). Each method has a
/// default that does nothing.
pub trait UploadProgress {
    /// An upload of `total` bytes begins.
    fn started(&mut self, _total: u64) {}
    /// The agent holds the first `held` bytes of `total` from an interrupted upload; this
    /// attempt sends from there.
    fn resumed(&mut self, _held: u64, _total: u64) {}
    /// An attempt broke off (`reason`); attempt `next` of `of` starts after `delay`.
    fn retrying(&mut self, _next: u32, _of: u32, _reason: &str, _delay: Duration) {}
    /// `bytes` more were handed to the connection.
    fn sent(&mut self, _bytes: u64) {}
    /// Every byte was sent and the call has ended (its result is checked after this).
    fn finished(&mut self) {}
}

/// No progress reports.
impl UploadProgress for () {}

/// How the agent came to hold the artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holding {
    /// It had it already; nothing was sent.
    AlreadyPresent(ArtifactRef),
    /// It was uploaded now, and the agent's receipt names its digest.
    Uploaded(ArtifactRef),
}

/// Makes sure the agent holds `want`, uploading `file` if it does not.
///
/// # Errors
///
/// [`UploadError`]: no file given when needed, a file that is not `want`, an unreadable file, a
/// failed call, a receipt for other bytes.
pub async fn ensure_artifact(
    agent: &Agent,
    want: &ArtifactRef,
    file: Option<&Path>,
    progress: &mut impl UploadProgress,
) -> Result<Holding, UploadError> {
    let presence = presence(agent, want).await?;
    if presence.present {
        return Ok(Holding::AlreadyPresent(want.clone()));
    }
    let path = file.ok_or_else(|| UploadError::ArtifactNeeded {
        sha256: want.sha256.clone(),
        size: want.size,
    })?;
    let info = hash_file(path).map_err(|source| UploadError::ReadArtifact {
        path: path.to_owned(),
        source,
    })?;
    if info.sha256 != want.sha256 || info.size != want.size {
        return Err(UploadError::ArtifactMismatch {
            path: path.to_owned(),
            found: info.sha256,
            found_size: info.size,
            expected: want.sha256.clone(),
            expected_size: want.size,
        });
    }
    upload_from(agent, path, want.clone(), Some(presence.held), progress).await?;
    Ok(Holding::Uploaded(want.clone()))
}

/// What the agent holds of `want`: all of it, or the bytes of an interrupted upload.
async fn presence(agent: &Agent, want: &ArtifactRef) -> Result<ArtifactPresence, UploadError> {
    Ok(agent
        .client
        .clone()
        .has_artifact(want.clone())
        .await
        .map_err(|s| agent.error("HasArtifact", s))?
        .into_inner())
}

/// Streams `path` as `want` in [`CHUNK`]-sized chunks (the first carries the metadata and the
/// offset), from the byte the agent holds of an interrupted upload, retrying a broken
/// connection (see [`UPLOAD_ATTEMPTS`]).
///
/// # Errors
///
/// [`UploadError`]: an unreadable file, a failed call, a receipt for other bytes.
pub async fn upload(
    agent: &Agent,
    path: &Path,
    want: ArtifactRef,
    progress: &mut impl UploadProgress,
) -> Result<(), UploadError> {
    upload_from(agent, path, want, None, progress).await
}

/// [`upload`], starting at `held` when the caller has just asked the agent.
async fn upload_from(
    agent: &Agent,
    path: &Path,
    want: ArtifactRef,
    mut held: Option<u64>,
    progress: &mut impl UploadProgress,
) -> Result<(), UploadError> {
    progress.started(want.size);
    let mut attempt = 1;
    loop {
        let from = match held.take() {
            Some(from) => from,
            None => {
                let presence = presence(agent, &want).await?;
                if presence.present {
                    // An earlier attempt completed though its answer was lost.
                    progress.finished();
                    return Ok(());
                }
                presence.held
            }
        };
        // A held count past the end cannot be this file's prefix: start again.
        let from = if from > want.size { 0 } else { from };
        if from > 0 {
            progress.resumed(from, want.size);
        }
        match send(agent, path, &want, from, progress).await {
            Ok(()) => return Ok(()),
            Err(Sent::Broken(status)) if attempt < UPLOAD_ATTEMPTS && retryable(&status, from) => {
                let delay = RETRY_BASE.saturating_mul(1 << (attempt - 1));
                attempt += 1;
                progress.retrying(attempt, UPLOAD_ATTEMPTS, status.message(), delay);
                tokio::time::sleep(delay).await;
            }
            Err(Sent::Broken(status)) => {
                progress.finished();
                return Err(agent.error("UploadArtifact", status).into());
            }
            Err(Sent::Failed(e)) => {
                progress.finished();
                return Err(e);
            }
        }
    }
}

/// Whether an attempt that ended with `status` may be tried again: the connection broke or
/// the agent is busy with an earlier upload of the artifact, or a resume from `from` raced
/// with what the agent holds (it is asked again). A refusal of the artifact itself is final.
fn retryable(status: &tonic::Status, from: u64) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Unavailable
        | Code::Unknown
        | Code::Cancelled
        | Code::Aborted
        | Code::DeadlineExceeded
        | Code::Internal => true,
        Code::FailedPrecondition => from > 0,
        Code::Ok
        | Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::ResourceExhausted
        | Code::OutOfRange
        | Code::Unimplemented
        | Code::DataLoss
        | Code::Unauthenticated => false,
    }
}

/// How one attempt ended, if not with the agent's receipt.
enum Sent {
    /// The call failed; maybe worth another attempt.
    Broken(tonic::Status),
    /// Not worth another attempt.
    Failed(UploadError),
}

/// One attempt: the file from byte `from` to its end, in one `UploadArtifact` call.
async fn send(
    agent: &Agent,
    path: &Path,
    want: &ArtifactRef,
    from: u64,
    progress: &mut impl UploadProgress,
) -> Result<(), Sent> {
    let read_err = |source| {
        Sent::Failed(UploadError::ReadArtifact {
            path: path.to_owned(),
            source,
        })
    };
    let mut f = tokio::fs::File::open(path).await.map_err(read_err)?;
    f.seek(SeekFrom::Start(from)).await.map_err(read_err)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<ArtifactChunk>(4);
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
            offset: if meta.is_some() { from } else { 0 },
            meta: meta.take(),
            data: buf[..n].to_vec(),
        };
        if tx.send(chunk).await.is_err() {
            break; // the call ended early; its result says why
        }
        progress.sent(n as u64);
        if n == 0 {
            break;
        }
    }
    drop(tx);
    let result = call.await.map_err(|e| read_err(std::io::Error::other(e)))?;
    let receipt = result.map_err(Sent::Broken)?.into_inner();
    progress.finished();
    if receipt.sha256 != want.sha256 {
        return Err(Sent::Failed(UploadError::ReceiptMismatch {
            sent: want.sha256.clone(),
            got: receipt.sha256,
        }));
    }
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

#[cfg(test)]
mod tests {
    use gantry_proto::v1::Release;

    use super::*;

    #[test]
    fn only_a_deploy_needs_its_artifact() {
        let mut job = Job {
            action: Action::Deploy as i32,
            release: Some(Release {
                artifact_sha256: "ab".into(),
                artifact_size: 3,
                ..Release::default()
            }),
            ..Job::default()
        };
        assert_eq!(
            artifact_of(&job),
            Some(ArtifactRef {
                sha256: "ab".into(),
                size: 3
            })
        );
        job.action = Action::Rollback as i32;
        assert_eq!(artifact_of(&job), None);
        job.action = Action::Deploy as i32;
        job.release = None;
        assert_eq!(artifact_of(&job), None);
    }

    #[test]
    fn hash_file_streams_digest_and_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a");
        std::fs::write(&path, vec![1u8; CHUNK + 5]).unwrap();
        let info = hash_file(&path).unwrap();
        assert_eq!(info.size, (CHUNK + 5) as u64);
        let want = ring::digest::digest(&ring::digest::SHA256, &vec![1u8; CHUNK + 5]);
        assert_eq!(info.sha256, hex::encode(want));
        assert_eq!(info.path, path);
    }

    #[test]
    fn a_broken_connection_is_retried_and_a_refusal_is_not() {
        use tonic::{Code, Status};
        for code in [
            Code::Unavailable,
            Code::Unknown,
            Code::Cancelled,
            Code::Aborted,
        ] {
            assert!(retryable(&Status::new(code, "x"), 0), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::ResourceExhausted,
            Code::PermissionDenied,
            Code::Unauthenticated,
        ] {
            assert!(!retryable(&Status::new(code, "x"), 5), "{code:?}");
        }
        // A resume that raced with the agent's held bytes asks again; a fresh upload the
        // agent refuses as a precondition does not.
        assert!(retryable(
            &Status::failed_precondition("resumes at byte"),
            5
        ));
        assert!(!retryable(&Status::failed_precondition("x"), 0));
    }

    #[test]
    fn input_errors_are_the_callers() {
        let e = UploadError::ArtifactNeeded {
            sha256: "ab".into(),
            size: 1,
        };
        assert_eq!(e.fault(), Fault::Input);
        assert!(e.to_string().contains("--artifact"), "{e}");
    }
}
