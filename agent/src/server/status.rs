//! Admission errors to gRPC status codes and audit reason codes, in one exhaustive match each.

use tonic::{Code, Status};

use crate::admission::AdmissionError;

/// The gRPC code a rejection is answered with.
pub fn code(e: &AdmissionError) -> Code {
    match e {
        AdmissionError::TooLarge { .. } | AdmissionError::TooManySignatures { .. } => {
            Code::ResourceExhausted
        }
        AdmissionError::NoSignatures
        | AdmissionError::UnknownKey { .. }
        | AdmissionError::BadSignature { .. } => Code::Unauthenticated,
        AdmissionError::Malformed { .. }
        | AdmissionError::InvalidJob { .. }
        | AdmissionError::InvalidVersion { .. } => Code::InvalidArgument,
        AdmissionError::WrongAgent { .. }
        | AdmissionError::MissingRole { .. }
        | AdmissionError::QuorumNotMet { .. }
        | AdmissionError::KeyNotValid { .. }
        | AdmissionError::Downgrade { .. } => Code::PermissionDenied,
        AdmissionError::NotYetValid { .. }
        | AdmissionError::Expired { .. }
        | AdmissionError::WindowTooLong { .. }
        | AdmissionError::RollbackTargetMissing { .. }
        | AdmissionError::StrategyNeedsRouter { .. }
        | AdmissionError::NoRolloutInProgress { .. } => Code::FailedPrecondition,
        AdmissionError::AppNotConfigured { .. } => Code::NotFound,
        AdmissionError::Replayed { .. } => Code::AlreadyExists,
        AdmissionError::AppBusy { .. } => Code::Aborted,
        AdmissionError::Store(_) => Code::Unavailable,
    }
}

/// The short, stable reason code recorded in `job.rejected` entries.
pub fn reason_code(e: &AdmissionError) -> &'static str {
    match e {
        AdmissionError::TooLarge { .. } => "too_large",
        AdmissionError::TooManySignatures { .. } => "too_many_signatures",
        AdmissionError::NoSignatures => "no_signatures",
        AdmissionError::UnknownKey { .. } => "unknown_key",
        AdmissionError::BadSignature { .. } => "bad_signature",
        AdmissionError::Malformed { .. } => "malformed",
        AdmissionError::InvalidJob { .. } => "invalid_job",
        AdmissionError::InvalidVersion { .. } => "invalid_version",
        AdmissionError::WrongAgent { .. } => "wrong_agent",
        AdmissionError::MissingRole { .. } => "missing_role",
        AdmissionError::QuorumNotMet { .. } => "quorum_not_met",
        AdmissionError::KeyNotValid { .. } => "key_not_valid",
        AdmissionError::Downgrade { .. } => "downgrade",
        AdmissionError::NotYetValid { .. } => "not_yet_valid",
        AdmissionError::Expired { .. } => "expired",
        AdmissionError::WindowTooLong { .. } => "window_too_long",
        AdmissionError::RollbackTargetMissing { .. } => "rollback_target_missing",
        AdmissionError::AppNotConfigured { .. } => "app_not_configured",
        AdmissionError::Replayed { .. } => "replayed",
        AdmissionError::AppBusy { .. } => "app_busy",
        AdmissionError::StrategyNeedsRouter { .. } => "strategy_needs_router",
        AdmissionError::NoRolloutInProgress { .. } => "no_rollout_in_progress",
        AdmissionError::Store(_) => "replay_store_unavailable",
    }
}

/// The status a rejected job is answered with; the message names the cause.
pub fn rejection(e: &AdmissionError) -> Status {
    Status::new(
        code(e),
        format!("job rejected: {}", crate::error::reason(e)),
    )
}
