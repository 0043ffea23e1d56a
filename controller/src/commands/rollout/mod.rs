//! `gantry rollout plan|show|sign|approve`: fleet plan files (docs/fleet.md), one concern per
//! module.
//!
//! A plan file is exactly the protobuf encoding of `gantry.v1.SignedPlan`: the plan's bytes,
//! which never change once created, and the signatures over them, as a job file is for a job.
//!
//! * [`rings`]: `--ring` specs and `--rings` TOML to `gantry.v1.Ring` (stage two of parsing).
//! * [`file`](mod@file): the plan file format ([`PlanFile`]): read, write, sign.
//! * [`plan`](mod@plan): `rollout plan`, `rollout sign`, `rollout approve`.
//! * [`show`](mod@show): `rollout show`, as text or JSON, and `--policy` with the agent's own
//!   checks from gantry-policy.

pub mod file;
pub mod plan;
pub mod rings;
pub mod show;

#[cfg(test)]
mod tests;

use std::path::PathBuf;

use gantry_proto::keys::KeyError;

use crate::commands::job::JobError;
use crate::exit::Exit;
use crate::flags::FlagError;

pub use file::PlanFile;
pub use plan::{approve, plan, sign};
pub use show::show;

/// Largest plan file read (the agents' default limit is far below this).
const MAX_PLAN_FILE: u64 = 1024 * 1024;

/// Why a plan file could not be made, read, signed or shown.
#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    /// A flag is wrong.
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// The release flags or the artifact (as `job create` reads them).
    #[error(transparent)]
    Release(#[from] JobError),
    /// The rings file could not be read.
    #[error("cannot read rings file {}", path.display())]
    ReadRings {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The rings file is not valid TOML of rings.
    #[error("rings file {} is not valid: {detail}", path.display())]
    ParseRings {
        /// The file.
        path: PathBuf,
        /// The parser's message (names the line).
        detail: String,
    },
    /// The plan file could not be read.
    #[error("cannot read plan file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The plan file is too large to be a plan.
    #[error("plan file {} is {size} bytes; a plan file is at most {MAX_PLAN_FILE}", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The plan file is not a `SignedPlan`, or its plan bytes are not a `Plan`.
    #[error("plan file {} is not a gantry.v1.SignedPlan ({what})", path.display())]
    Decode {
        /// The file.
        path: PathBuf,
        /// Which layer failed.
        what: &'static str,
        /// The cause.
        #[source]
        source: prost::DecodeError,
    },
    /// The plan file could not be written.
    #[error("cannot write plan file {}", path.display())]
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
    /// The key has signed this plan already.
    #[error("plan file {} is already signed by key {key_id}", path.display())]
    AlreadySigned {
        /// The file.
        path: PathBuf,
        /// The key.
        key_id: String,
    },
    /// The agent config given to `--policy` is not valid.
    #[error("cannot evaluate the policy")]
    Policy(#[source] gantry_policy::config::ConfigErrors),
    /// `rollout show --policy`: the plan misses requirements of that policy (they were
    /// printed).
    #[error(
        "{missing} requirement(s) of the policy in {} missing: the agent would refuse dispatches of plan file {}",
        policy.display(),
        plan.display()
    )]
    PolicyNotMet {
        /// The plan file.
        plan: PathBuf,
        /// The agent config.
        policy: PathBuf,
        /// How many requirements are missing.
        missing: usize,
    },
}

impl RolloutError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            RolloutError::Release(e) => e.exit(),
            RolloutError::Flag(_)
            | RolloutError::ReadRings { .. }
            | RolloutError::ParseRings { .. }
            | RolloutError::Read { .. }
            | RolloutError::TooLarge { .. }
            | RolloutError::Decode { .. }
            | RolloutError::Write { .. }
            | RolloutError::Key(_)
            | RolloutError::AlreadySigned { .. }
            | RolloutError::Policy(_) => Exit::Usage,
            RolloutError::PolicyNotMet { .. } => Exit::Rejected,
        }
    }
}
