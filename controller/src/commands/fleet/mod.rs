//! The controller service's commands: `server` runs it; `rollout start|status|pause|resume|
//! abort` and `fleet ls|audit|policy` talk to it over mutual TLS.
//!
//! * [`connect`]: the mTLS channel to the service and its statuses as typed errors.
//! * [`rollout`]: handing in a plan (and its artifact), status, pause/resume/abort.
//! * [`inventory`]: `fleet ls`, `fleet audit verify|tail`.
//! * [`policy`]: `fleet policy`, for security reviewers.
//! * [`server`]: `gantry server`.

pub mod connect;
pub mod inventory;
pub mod policy;
pub mod rollout;
pub mod server;

use std::path::PathBuf;

use crate::exit::Exit;

/// Why a service command did not work.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// A connection flag is missing.
    #[error("missing --{flag} (or ${env}): needed to reach the controller service")]
    MissingFlag {
        /// The flag.
        flag: &'static str,
        /// Its environment variable.
        env: &'static str,
    },
    /// A file could not be read.
    #[error("cannot read {what} {}: {source}", path.display())]
    Read {
        /// What it is.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The plan file is not a signed plan.
    #[error("{} is not a signed plan file: {reason}", path.display())]
    BadPlan {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The service could not be reached.
    #[error("cannot reach the controller service at {addr}: {reason}")]
    Connect {
        /// The address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The service refused the request (the input is wrong or not allowed).
    #[error("the controller service refused {op}: {message} ({code:?})")]
    Refused {
        /// The call.
        op: &'static str,
        /// The code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The service failed on its side or the connection broke.
    #[error("the controller service failed {op}: {message} ({code:?})")]
    Failed {
        /// The call.
        op: &'static str,
        /// The code.
        code: tonic::Code,
        /// Its message.
        message: String,
    },
    /// The service cannot start.
    #[error(transparent)]
    Server(#[from] gantry_service::server::ServerError),
    /// The service's config cannot be used.
    #[error(transparent)]
    Config(#[from] gantry_service::config::ConfigError),
}

impl FleetError {
    /// The exit code: input errors and unreachable services 2; refusals of who you are, and of
    /// what the service's rules do not allow now (`FAILED_PRECONDITION`: a plan `[promotion]`
    /// holds back, an unsigned plan, a control of an ended rollout), 3.
    pub fn exit(&self) -> Exit {
        match self {
            FleetError::MissingFlag { .. }
            | FleetError::Read { .. }
            | FleetError::BadPlan { .. }
            | FleetError::Connect { .. }
            | FleetError::Failed { .. }
            | FleetError::Server(_)
            | FleetError::Config(_) => Exit::Usage,
            FleetError::Refused { code, .. } => match code {
                tonic::Code::PermissionDenied
                | tonic::Code::Unauthenticated
                | tonic::Code::FailedPrecondition => Exit::Rejected,
                _ => Exit::Usage,
            },
        }
    }
}
