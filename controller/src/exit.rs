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

    /// Which status codes are which fault is `classify`'s (tested with it in gantry-client);
    /// here, what each fault ends `gantry` with, and one status of each kind end to end.
    #[test]
    fn refusals_are_exit_3_and_failures_on_the_agents_side_or_the_way_exit_2() {
        assert_eq!(Exit::from(Fault::Refused), Exit::Rejected);
        assert_eq!(Exit::from(Fault::AgentFailed), Exit::Usage);
        assert_eq!(Exit::from(Fault::Connection), Exit::Usage);
        assert_eq!(Exit::from(Fault::Input), Exit::Usage);

        let exit_of = |status| Exit::from(classify("Submit", "127.0.0.1:1", "a1", status).fault());
        assert_eq!(
            exit_of(tonic::Status::permission_denied("no")),
            Exit::Rejected
        );
        assert_eq!(exit_of(tonic::Status::data_loss("disk full")), Exit::Usage);
        let mut reset = tonic::Status::unavailable("connection reset");
        reset.set_source(std::sync::Arc::new(std::io::Error::other("reset")));
        assert_eq!(exit_of(reset), Exit::Usage);
    }
}
