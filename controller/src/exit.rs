//! Exit codes (a contract, see DESIGN "Commands"): the leaf every command imports.
//!
//! 0 success; 1 the job failed or was rolled back; 2 a usage or input error, an agent that
//! could not be reached, or one that failed on its side (not a refusal: its audit log is full,
//! say, and the same job may pass later); 3 rejected by the agent.

use std::process::ExitCode;

use gantry_client::Fault;

/// How `gantry` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 0: done; the job succeeded.
    Success = 0,
    /// 1: the job failed, was rolled back or interrupted (or the audit log failed verification).
    JobFailed = 1,
    /// 2: a usage or input error, or the agent could not be reached or failed on its side.
    Usage = 2,
    /// 3: the agent rejected the request.
    Rejected = 3,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// What a failure talking to an agent ends `gantry` with.
impl From<Fault> for Exit {
    fn from(f: Fault) -> Exit {
        match f {
            Fault::Input | Fault::Connection => Exit::Usage,
            // Not 3: the agent did not judge the request; a retry may pass (exit 2 is what an
            // agent out of reach gives too).
            Fault::AgentFailed => Exit::Usage,
            Fault::Refused => Exit::Rejected,
        }
    }
}

#[cfg(test)]
mod tests {
    use gantry_client::connect::classify;

    use super::*;

    #[test]
    fn exit_codes_are_the_contract() {
        assert_eq!(Exit::Success as u8, 0);
        assert_eq!(Exit::JobFailed as u8, 1);
        assert_eq!(Exit::Usage as u8, 2);
        assert_eq!(Exit::Rejected as u8, 3);
    }

    #[test]
    fn admission_statuses_are_rejections_exit_3() {
        for code in [
            tonic::Code::Unauthenticated,
            tonic::Code::PermissionDenied,
            tonic::Code::FailedPrecondition,
            tonic::Code::AlreadyExists,
            tonic::Code::InvalidArgument,
            tonic::Code::NotFound,
            tonic::Code::ResourceExhausted,
            tonic::Code::Aborted,
            tonic::Code::OutOfRange,
        ] {
            let e = classify(
                "Submit",
                "127.0.0.1:1",
                "a1",
                tonic::Status::new(code, "no"),
            );
            assert_eq!(Exit::from(e.fault()), Exit::Rejected, "{code:?}");
            assert!(e.to_string().contains("agent a1 refused Submit: no"), "{e}");
        }
    }

    #[test]
    fn failures_on_the_agents_side_are_exit_2_not_3() {
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::Internal,
            tonic::Code::DataLoss,
            tonic::Code::Unknown,
        ] {
            let e = classify(
                "Submit",
                "127.0.0.1:1",
                "a1",
                tonic::Status::new(code, "audit log unavailable: disk full"),
            );
            assert_eq!(Exit::from(e.fault()), Exit::Usage, "{code:?}");
            assert!(
                e.to_string().contains("agent a1 failed Submit on its side")
                    && e.to_string().contains("audit log unavailable: disk full"),
                "{e}"
            );
        }
    }

    #[test]
    fn statuses_with_a_transport_cause_are_exit_2() {
        let mut status = tonic::Status::unavailable("connection reset");
        status.set_source(std::sync::Arc::new(std::io::Error::other("reset")));
        let e = classify("Submit", "127.0.0.1:1", "a1", status);
        assert_eq!(Exit::from(e.fault()), Exit::Usage);
        assert!(
            e.to_string()
                .starts_with("cannot reach agent at 127.0.0.1:1"),
            "{e}"
        );
    }
}
