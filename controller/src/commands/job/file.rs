//! The job file: the protobuf encoding of `gantry.v1.SignedJob`, read, written atomically and
//! signed.

use std::io::Write;
use std::path::Path;

use gantry_client::sign::{self, SignError};
use gantry_proto::envelope;
use gantry_proto::keys::SigningKey;
use gantry_proto::v1::{Job, SignedJob};
use prost::Message;

use super::{JobError, MAX_JOB_FILE};

/// A job file in memory: the envelope and the decoded job.
#[derive(Debug, Clone)]
pub struct JobFile {
    /// The envelope, as read.
    pub signed: SignedJob,
    /// `signed.job` decoded (for display and flow decisions; signatures cover the bytes).
    pub job: Job,
}

impl JobFile {
    /// Wraps a new job with no signatures.
    pub fn new(job: Job) -> Self {
        Self {
            signed: SignedJob {
                job: job.encode_to_vec(),
                signatures: Vec::new(),
                comments: Vec::new(),
            },
            job,
        }
    }

    /// Decodes an envelope.
    ///
    /// # Errors
    ///
    /// [`JobError::Decode`] naming `path`.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<Self, JobError> {
        let signed = SignedJob::decode(bytes).map_err(|source| JobError::Decode {
            path: path.to_owned(),
            what: "envelope",
            source,
        })?;
        let job = Job::decode(signed.job.as_slice()).map_err(|source| JobError::Decode {
            path: path.to_owned(),
            what: "job bytes",
            source,
        })?;
        Ok(Self { signed, job })
    }

    /// Reads and decodes a job file.
    ///
    /// # Errors
    ///
    /// [`JobError`] when it cannot be read or decoded.
    pub fn read(path: &Path) -> Result<Self, JobError> {
        let read_err = |source| JobError::Read {
            path: path.to_owned(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_err)?.len();
        if size > MAX_JOB_FILE {
            return Err(JobError::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        let bytes = std::fs::read(path).map_err(read_err)?;
        Self::decode(path, &bytes)
    }

    /// Reads a job file to hand to an agent: the envelope must decode, the job bytes need not,
    /// because the agent is the judge of what it is sent (it checks signatures over the raw
    /// bytes before decoding them). When they do not decode, `job` is empty and the decode
    /// error is returned beside it.
    ///
    /// # Errors
    ///
    /// [`JobError`] when the file cannot be read or is not an envelope.
    pub fn read_for_submit(path: &Path) -> Result<(Self, Option<prost::DecodeError>), JobError> {
        match Self::read(path) {
            Ok(f) => Ok((f, None)),
            Err(JobError::Decode {
                what: "job bytes",
                source,
                ..
            }) => {
                let bytes = std::fs::read(path).map_err(|source| JobError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let signed =
                    SignedJob::decode(bytes.as_slice()).map_err(|source| JobError::Decode {
                        path: path.to_owned(),
                        what: "envelope",
                        source,
                    })?;
                Ok((
                    Self {
                        signed,
                        job: Job::default(),
                    },
                    Some(source),
                ))
            }
            Err(e) => Err(e),
        }
    }

    /// Writes the envelope atomically (temp file in the same directory, fsync, rename).
    ///
    /// # Errors
    ///
    /// [`JobError::Write`].
    pub fn write(&self, path: &Path) -> Result<(), JobError> {
        let write_err = |source| JobError::Write {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(write_err)?;
        tmp.write_all(&self.signed.encode_to_vec())
            .map_err(write_err)?;
        tmp.as_file().sync_all().map_err(write_err)?;
        tmp.persist(path).map_err(|e| write_err(e.error))?;
        Ok(())
    }

    /// The job digest (SHA-256 of the exact job bytes).
    pub fn digest(&self) -> String {
        envelope::job_digest(&self.signed.job)
    }

    /// Adds `key`'s signature.
    ///
    /// # Errors
    ///
    /// [`JobError::AlreadySigned`] when `key` signed it already (by key id or by a verifying signature).
    pub fn sign(&mut self, path: &Path, key: &SigningKey) -> Result<(), JobError> {
        sign::add_signature(&mut self.signed, key).map_err(|e| match e {
            SignError::AlreadySigned { key_id } => JobError::AlreadySigned {
                path: path.to_owned(),
                key_id: key_id.to_string(),
            },
        })?;
        Ok(())
    }
}
