//! Exit codes (a contract, see DESIGN "Commands") and the one error type `gantry` ends with.

use std::process::ExitCode;

use gantry_proto::keys::KeyError;

use crate::client::ClientError;
use crate::commands::audit::AuditError;
use crate::commands::dev_pki::DevPkiError;
use crate::commands::job::JobError;
use crate::commands::quickstart::QuickstartError;
use crate::commands::submit::SubmitError;

/// How `gantry` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done; the job succeeded.
    Success = 0,
    /// 1: the job failed, was rolled back or interrupted (or the audit log failed verification).
    JobFailed = 1,
    /// 2: a usage or input error, or the agent could not be reached.
    Usage = 2,
    /// 3: the agent rejected the request.
    Rejected = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Every error a command can end with.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `keygen` and key files.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// `dev-pki`.
    #[error(transparent)]
    DevPki(#[from] DevPkiError),
    /// Job files and flags.
    #[error(transparent)]
    Job(#[from] JobError),
    /// Talking to the agent.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Uploading, submitting and following jobs.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// `audit` and `status`.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// `quickstart`.
    #[error(transparent)]
    Quickstart(#[from] QuickstartError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl CliError {
    /// The exit code for this error; every variant is mapped, with no catch-all.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Key(_) | CliError::DevPki(_) | CliError::Runtime(_) => Exit::Usage,
            CliError::Job(e) => e.exit(),
            CliError::Client(e) => e.exit(),
            CliError::Submit(e) => e.exit(),
            CliError::Audit(e) => e.exit(),
            CliError::Quickstart(e) => e.exit(),
        }
    }
}
