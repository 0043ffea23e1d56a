//! The one error type `gantry` ends with: every command's error, above the commands (they
//! import only [`crate::exit`]), each mapped to its exit code.

use gantry_proto::keys::KeyError;

use crate::commands::audit::AuditError;
use crate::commands::dev_pki::DevPkiError;
use crate::commands::flagset::FlagsCmdError;
use crate::commands::gate::GateError;
use crate::commands::job::JobError;
use crate::commands::quickstart::QuickstartError;
use crate::commands::release::ReleaseError;
use crate::commands::rollout::RolloutError;
use crate::commands::status::StatusError;
use crate::commands::submit::SubmitError;
use crate::exit::Exit;

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
    /// Fleet plan files (`rollout plan|show|sign|approve`).
    #[error(transparent)]
    Rollout(#[from] RolloutError),
    /// Uploading, submitting and following jobs (`job submit|watch`, `deploy`, `rollback` …).
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// `status`.
    #[error(transparent)]
    Status(#[from] StatusError),
    /// `audit`.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// `quickstart`.
    #[error(transparent)]
    Quickstart(#[from] QuickstartError),
    /// `flags`.
    #[error(transparent)]
    Flags(#[from] FlagsCmdError),
    /// The controller service's commands.
    #[error(transparent)]
    Fleet(#[from] crate::commands::fleet::FleetError),
    /// `gate evaluate`.
    #[error(transparent)]
    Gate(#[from] GateError),
    /// `release notes`.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// `release show`.
    #[error(transparent)]
    ReleaseShow(#[from] crate::commands::release::show::ShowError),
    /// `man`.
    #[error(transparent)]
    Man(#[from] crate::commands::man::ManError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

impl CliError {
    /// The exit code for this error; every variant is mapped, with no catch-all.
    pub fn exit(&self) -> Exit {
        match self {
            CliError::Key(_) | CliError::DevPki(_) | CliError::Man(_) | CliError::Runtime(_) => {
                Exit::Usage
            }
            CliError::Job(e) => e.exit(),
            CliError::Rollout(e) => e.exit(),
            CliError::Submit(e) => e.exit(),
            CliError::Status(e) => e.exit(),
            CliError::Audit(e) => e.exit(),
            CliError::Quickstart(e) => e.exit(),
            CliError::Flags(e) => e.exit(),
            CliError::Fleet(e) => e.exit(),
            CliError::Gate(e) => e.exit(),
            CliError::Release(e) => e.exit(),
            CliError::ReleaseShow(e) => e.exit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use gantry_client::ClientError;
    use gantry_client::follow::FollowError;
    use gantry_client::upload::UploadError;

    use super::*;
    use crate::commands::quickstart::WorkspaceError;
    use crate::conn::ConnError;
    use crate::flags::FlagError;

    #[test]
    fn every_error_maps_to_its_exit_code() {
        let rejected = ClientError::Rejected {
            op: "Submit",
            agent_id: "a".into(),
            code: tonic::Code::PermissionDenied,
            message: "missing role".into(),
        };
        let agent_failed = || ClientError::AgentFailed {
            op: "Submit",
            agent_id: "a".into(),
            code: tonic::Code::Unavailable,
            message: "audit log unavailable: No space left on device".into(),
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
                CliError::Status(StatusError::Conn(ConnError::MissingFlag {
                    flag: "agent",
                    env: "GANTRY_AGENT",
                })),
                Exit::Usage,
            ),
            (
                CliError::Submit(SubmitError::Conn(ConnError::MissingFlag {
                    flag: "agent",
                    env: "GANTRY_AGENT",
                })),
                Exit::Usage,
            ),
            (
                CliError::Status(StatusError::Client(rejected)),
                Exit::Rejected,
            ),
            (
                CliError::Status(StatusError::Client(agent_failed())),
                Exit::Usage,
            ),
            (
                CliError::Submit(SubmitError::Upload(UploadError::ArtifactNeeded {
                    sha256: "ab".into(),
                    size: 1,
                })),
                Exit::Usage,
            ),
            (
                CliError::Submit(SubmitError::Follow(FollowError::Client(
                    ClientError::Rejected {
                        op: "Submit",
                        agent_id: "a".into(),
                        code: tonic::Code::FailedPrecondition,
                        message: "expired".into(),
                    },
                ))),
                Exit::Rejected,
            ),
            (
                CliError::Submit(SubmitError::Follow(FollowError::Client(agent_failed()))),
                Exit::Usage,
            ),
            (
                CliError::Submit(SubmitError::Follow(FollowError::Lost {
                    job_id: "j".into(),
                    attempts: 5,
                    source: None,
                })),
                Exit::Usage,
            ),
            (
                CliError::Audit(AuditError::Key(KeyError::BadSignature)),
                Exit::Usage,
            ),
            (
                CliError::Audit(AuditError::Client(agent_failed())),
                Exit::Usage,
            ),
            (
                CliError::Quickstart(QuickstartError::Workspace(WorkspaceError::NoFreePorts)),
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
