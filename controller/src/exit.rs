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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flags::FlagError;

    #[test]
    fn exit_codes_are_the_contract() {
        assert_eq!(Exit::Success as u8, 0);
        assert_eq!(Exit::JobFailed as u8, 1);
        assert_eq!(Exit::Usage as u8, 2);
        assert_eq!(Exit::Rejected as u8, 3);
    }

    #[test]
    fn every_error_maps_to_its_exit_code() {
        let rejected = ClientError::Rejected {
            op: "Submit",
            agent_id: "a".into(),
            code: tonic::Code::PermissionDenied,
            message: "missing role".into(),
        };
        let cases: Vec<(CliError, Exit)> = vec![
            (CliError::Key(KeyError::BadSignature), Exit::Usage),
            (
                CliError::DevPki(DevPkiError::Exists { path: "x".into() }),
                Exit::Usage,
            ),
            (
                CliError::Job(JobError::Flag(FlagError::new("--instances", "0"))),
                Exit::Usage,
            ),
            (
                CliError::Client(ClientError::MissingFlag {
                    flag: "agent",
                    env: "GANTRY_AGENT",
                }),
                Exit::Usage,
            ),
            (CliError::Client(rejected), Exit::Rejected),
            (
                CliError::Submit(SubmitError::ArtifactNeeded {
                    sha256: "ab".into(),
                    size: 1,
                }),
                Exit::Usage,
            ),
            (
                CliError::Submit(SubmitError::Client(ClientError::Rejected {
                    op: "Submit",
                    agent_id: "a".into(),
                    code: tonic::Code::FailedPrecondition,
                    message: "expired".into(),
                })),
                Exit::Rejected,
            ),
            (
                CliError::Audit(AuditError::Key(KeyError::BadSignature)),
                Exit::Usage,
            ),
            (
                CliError::Quickstart(QuickstartError::NoFreePorts),
                Exit::Usage,
            ),
            (
                CliError::Quickstart(QuickstartError::JobFailed {
                    what: "deploy".into(),
                    outcome: "failed".into(),
                    reason: "unhealthy".into(),
                    log: "l".into(),
                }),
                Exit::JobFailed,
            ),
            (CliError::Runtime(std::io::Error::other("x")), Exit::Usage),
        ];
        for (err, code) in cases {
            assert_eq!(err.exit(), code, "{err}");
        }
    }
}
