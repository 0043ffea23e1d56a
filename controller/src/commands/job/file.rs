//! The job file: the protobuf encoding of `gantry.v1.SignedJob`, read, written atomically and
//! signed.

use std::path::Path;

use gantry_client::sign::{self, SignError};
use gantry_proto::envelope;
use gantry_proto::keys::SigningKey;
use gantry_proto::v1::{Job, SignedJob};
use prost::Message;

use crate::commands::envelope_file::{BoundedRead, read_bounded, write_atomic};

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
        Self::decode(path, &read_file(path)?)
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
        let bytes = read_file(path)?;
        let signed = SignedJob::decode(bytes.as_slice()).map_err(|source| JobError::Decode {
            path: path.to_owned(),
            what: "envelope",
            source,
        })?;
        Ok(match Job::decode(signed.job.as_slice()) {
            Ok(job) => (Self { signed, job }, None),
            Err(source) => (
                Self {
                    signed,
                    job: Job::default(),
                },
                Some(source),
            ),
        })
    }

    /// Writes the envelope atomically (temp file in the same directory, fsync, rename).
    ///
    /// # Errors
    ///
    /// [`JobError::Write`].
    pub fn write(&self, path: &Path) -> Result<(), JobError> {
        write_atomic(path, &self.signed.encode_to_vec()).map_err(|source| JobError::Write {
            path: path.to_owned(),
            source,
        })
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

/// A job file's bytes, at most [`MAX_JOB_FILE`].
fn read_file(path: &Path) -> Result<Vec<u8>, JobError> {
    read_bounded(path, MAX_JOB_FILE).map_err(|e| match e {
        BoundedRead::Io(source) => JobError::Read {
            path: path.to_owned(),
            source,
        },
        BoundedRead::TooLarge(size) => JobError::TooLarge {
            path: path.to_owned(),
            size,
        },
    })
}
