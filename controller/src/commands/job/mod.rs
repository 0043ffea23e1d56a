//! `gantry job create|sign|approve|show`: job files, one concern per module.
//!
//! A job file is exactly the protobuf encoding of `gantry.v1.SignedJob`: the job's bytes, which
//! never change once created, and the signatures over them.
//!
//! * [`spec`]: flags to a `gantry.v1.Job` (stage two of parsing); [`rollout`]: its rollout part
//!   ([`prom_flags`]: its Prometheus gate).
//! * [`action`]: the action jobs (rollback, restart, stop, promote, abort).
//! * [`file`](mod@file): the job file format ([`JobFile`]): read, write, sign.
//! * [`create`](mod@create): `job create`, `job sign`, `job approve`.
//! * [`show`](mod@show): `job show`, as text or JSON.
//! * [`explain`]: `job show --policy`: the job against an agent's policy, with the agent's own
//!   checks from gantry-policy.

pub mod action;
pub mod create;
pub mod explain;
pub mod extras;
pub mod file;
pub mod prom_flags;
pub mod release_extras_view;
pub mod rollout;
pub mod show;
pub mod spec;

use std::path::PathBuf;

use gantry_proto::keys::KeyError;

use crate::exit::Exit;
use crate::flags::FlagError;

pub use action::action_job;
pub use create::{approve, approve_commented, approve_text, create, sign};
pub use explain::{evaluate, policy_json, policy_text, requirements_text};
pub use file::JobFile;
pub use show::{
    SigCheck, check_each, check_signatures, comment_verdict, probe_text, show, show_json,
    show_text, shown_env, signatures_text,
};

/// Largest job file read (the agent's default limit is far below this).
const MAX_JOB_FILE: u64 = 1024 * 1024;

/// Why a job file could not be made, read, signed or shown.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// A flag is wrong.
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// The artifact could not be read.
    #[error("cannot read artifact {}", path.display())]
    ReadArtifact {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The job file could not be read.
    #[error("cannot read job file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The job file is too large to be a job.
    #[error("job file {} is {size} bytes; a job file is at most {MAX_JOB_FILE}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The job file is not a `SignedJob`, or its job bytes are not a `Job`.
    #[error("job file {} is not a gantry.v1.SignedJob ({what})", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// Which layer failed.
        what: &'static str,
        /// The cause.
        #[source]
        source: prost::DecodeError,
    },
    /// The job file could not be written.
    #[error("cannot write job file {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A key file could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The agent config given to `--policy` is not valid.
    #[error("cannot evaluate the policy")]
    Policy(#[source] gantry_policy::config::ConfigErrors),
    /// `job show --policy`: the job misses requirements of that policy (they were printed).
    #[error(
        "{missing} requirement(s) of the policy in {} missing: the agent would reject job file {}",
        policy.display(),
        job.display()
    )]
    PolicyNotMet {
        /// The job file.
        job: PathBuf,
        /// The agent config.
        policy: PathBuf,
        /// How many requirements are missing.
        missing: usize,
    },
    /// The key has signed this job already.
    #[error("job file {} is already signed by key {key_id}", path.display())]
    AlreadySigned {
        /// The file.
        path: PathBuf,
        /// The key.
        key_id: String,
    },
}

impl JobError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            JobError::Flag(_)
            | JobError::ReadArtifact { .. }
            | JobError::Read { .. }
            | JobError::TooLarge { .. }
            | JobError::Decode { .. }
            | JobError::Write { .. }
            | JobError::Key(_)
            | JobError::Policy(_)
            | JobError::AlreadySigned { .. } => Exit::Usage,
            JobError::PolicyNotMet { .. } => Exit::Rejected,
        }
    }
}

#[cfg(test)]
mod tests;
