//! Errors to gRPC status codes and audit reason codes, in one exhaustive match each (no `_`
//! arm, so a new variant must be placed): admission's, the intake's, a watch's, the audit
//! log's and the artifact store's.

use tonic::{Code, Status};

use crate::admission::{AdmissionError, WindowError};
use crate::artifact::ArtifactError;
use crate::audit::AuditError;
use crate::error::reason;
use crate::intake::{IntakeError, KnownError};

/// The gRPC code a rejection is answered with.
pub fn code(e: &AdmissionError) -> Code {
    match e {
        AdmissionError::TooLarge { .. }
        | AdmissionError::TooManySignatures { .. }
        | AdmissionError::DocumentTooLarge { .. } => Code::ResourceExhausted,
        AdmissionError::NoSignatures
        | AdmissionError::UnknownKey { .. }
        | AdmissionError::BadSignature { .. }
        | AdmissionError::PlanSignature(_)
        | AdmissionError::DispatchSignature(_) => Code::Unauthenticated,
        AdmissionError::Malformed { .. }
        | AdmissionError::InvalidJob { .. }
        | AdmissionError::InvalidVersion { .. }
        | AdmissionError::InvalidPlan { .. }
        | AdmissionError::InvalidDispatch { .. }
        | AdmissionError::PlanDigestMismatch { .. }
        | AdmissionError::WrongJobId { .. }
        | AdmissionError::GateInvalid { .. } => Code::InvalidArgument,
        AdmissionError::WrongAgent { .. }
        | AdmissionError::MissingRole { .. }
        | AdmissionError::QuorumNotMet { .. }
        | AdmissionError::KeyNotValid { .. }
        | AdmissionError::Downgrade { .. }
        | AdmissionError::PlanRole(_)
        | AdmissionError::PlanQuorum { .. }
        | AdmissionError::DispatchRole { .. }
        | AdmissionError::WrongEnvironment { .. }
        | AdmissionError::NotInRing { .. }
        | AdmissionError::GateSignerRole { .. } => Code::PermissionDenied,
        AdmissionError::NotYetValid { .. }
        | AdmissionError::Expired { .. }
        | AdmissionError::WindowTooLong { .. }
        | AdmissionError::RollbackTargetMissing { .. }
        | AdmissionError::StrategyNeedsRouter { .. }
        | AdmissionError::NoRolloutInProgress { .. }
        | AdmissionError::PlanWindow(_)
        | AdmissionError::DispatchWindow(_)
        | AdmissionError::StaleEpoch { .. }
        | AdmissionError::RollbackWithoutDeploy { .. }
        | AdmissionError::PrereleaseRefused { .. }
        | AdmissionError::GateMissing { .. }
        | AdmissionError::GateFailed { .. }
        | AdmissionError::GateDigestMismatch { .. }
        | AdmissionError::GateExpired { .. } => Code::FailedPrecondition,
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
        AdmissionError::PrereleaseRefused { .. } => "prerelease_refused",
        AdmissionError::GateMissing { .. } => "gate_missing",
        AdmissionError::GateFailed { .. } => "gate_failed",
        AdmissionError::GateDigestMismatch { .. } => "gate_digest_mismatch",
        AdmissionError::GateSignerRole { .. } => "gate_signer_role",
        AdmissionError::GateExpired { .. } => "gate_expired",
        AdmissionError::GateInvalid { .. } => "gate_invalid",
        AdmissionError::Store(_) => "replay_store_unavailable",
        AdmissionError::DocumentTooLarge { .. } => "too_large",
        AdmissionError::PlanSignature(_) => "plan_signature",
        AdmissionError::PlanRole(_) => "plan_role",
        AdmissionError::PlanQuorum { .. } => "plan_quorum",
        AdmissionError::InvalidPlan { .. } => "invalid_plan",
        AdmissionError::PlanWindow(w) => match w {
            WindowError::NotYetValid { .. } => "plan_not_yet_valid",
            WindowError::Expired { .. } => "plan_expired",
            WindowError::TooLong { .. } => "plan_window_too_long",
        },
        AdmissionError::DispatchSignature(_) => "dispatch_signature",
        AdmissionError::DispatchRole { .. } => "dispatch_role",
        AdmissionError::InvalidDispatch { .. } => "invalid_dispatch",
        AdmissionError::DispatchWindow(w) => match w {
            WindowError::NotYetValid { .. } => "dispatch_not_yet_valid",
            WindowError::Expired { .. } => "dispatch_expired",
            WindowError::TooLong { .. } => "dispatch_window_too_long",
        },
        AdmissionError::PlanDigestMismatch { .. } => "plan_digest_mismatch",
        AdmissionError::WrongEnvironment { .. } => "wrong_environment",
        AdmissionError::NotInRing { .. } => "not_in_ring",
        AdmissionError::WrongJobId { .. } => "wrong_job_id",
        AdmissionError::StaleEpoch { .. } => "stale_epoch",
        AdmissionError::RollbackWithoutDeploy { .. } => "rollback_without_deploy",
    }
}

/// The status a rejected job is answered with; the message names the cause.
pub fn rejection(e: &AdmissionError) -> Status {
    Status::new(code(e), format!("job rejected: {}", reason(e)))
}

/// The status a submission the intake did not start is answered with. A rejection is answered
/// by [`rejection`] once the server has recorded it; the others are the agent failing on its
/// side (`UNAVAILABLE`/`INTERNAL`, which `gantry` reports with exit 2).
pub fn intake(e: &IntakeError) -> Status {
    match e {
        IntakeError::Rejected(r) | IntakeError::Busy(r) => rejection(&r.error),
        IntakeError::Audit(e) => audit(e),
        IntakeError::Deadline(_) => Status::unavailable(format!(
            "audit log unavailable: {}; the job did not run",
            reason(e)
        )),
        IntakeError::Cut(_) => Status::internal(format!("{}; the job did not run", reason(e))),
    }
}

/// The short reason code a submission the intake did not start is logged with.
pub fn intake_reason(e: &IntakeError) -> &'static str {
    match e {
        IntakeError::Rejected(r) | IntakeError::Busy(r) => reason_code(&r.error),
        IntakeError::Audit(_) => "audit_unavailable",
        IntakeError::Deadline(_) => "accept_deadline",
        IntakeError::Cut(_) => "accept_cut",
    }
}

/// The status of a `watch` (or resubmission) of a job that cannot be followed.
pub fn known(e: &KnownError) -> Status {
    let text = reason(e);
    match e {
        KnownError::NotFound { .. } => Status::not_found(text),
        KnownError::Refused { .. } => Status::aborted(text),
        KnownError::Pending { .. } => Status::unavailable(text),
    }
}

/// The status of a request the audit log cannot record: `UNAVAILABLE` while the log is failed
/// closed or its disk nearly full (it comes back on its own), `INTERNAL` for what should never
/// happen on a running log. Each message says `audit log unavailable`.
pub fn audit(e: &AuditError) -> Status {
    match e {
        // Their own message starts with "audit log unavailable".
        AuditError::Unavailable { .. }
        | AuditError::LowSpace { .. }
        | AuditError::HeldFull { .. } => Status::unavailable(reason(e)),
        AuditError::StatFs { .. } | AuditError::Closed => {
            Status::unavailable(format!("audit log unavailable: {}", reason(e)))
        }
        AuditError::CreateDir { .. }
        | AuditError::NoLog { .. }
        | AuditError::ListDir { .. }
        | AuditError::Open { .. }
        | AuditError::Read { .. }
        | AuditError::Recover { .. }
        | AuditError::Corrupt { .. }
        | AuditError::InvalidEntry { .. }
        | AuditError::Spawn { .. }
        | AuditError::Chain { .. }
        | AuditError::TornTail { .. }
        | AuditError::Misnamed { .. }
        | AuditError::Output { .. } => {
            Status::internal(format!("audit log unavailable: {}", reason(e)))
        }
    }
}

/// The status of an upload the artifact store refused: what the client sent is
/// `INVALID_ARGUMENT` (or `RESOURCE_EXHAUSTED` for its size), the agent's own disk and random
/// source are `UNAVAILABLE` and `INTERNAL` (the agent failed on its side).
pub fn artifact(e: &ArtifactError) -> Status {
    let refused = || format!("artifact refused: {}", reason(e));
    match e {
        ArtifactError::TooLarge { .. }
        | ArtifactError::StoreFull { .. }
        | ArtifactError::ClientBudget { .. }
        | ArtifactError::DiskLow { .. } => Status::resource_exhausted(refused()),
        ArtifactError::Oversize { .. }
        | ArtifactError::SizeMismatch { .. }
        | ArtifactError::DigestMismatch { .. }
        | ArtifactError::UploadFailed { .. }
        | ArtifactError::ResumePastEnd { .. }
        | ArtifactError::Unpack { .. } => Status::invalid_argument(refused()),
        ArtifactError::ResumeMismatch { .. } => Status::failed_precondition(refused()),
        // Not the client's fault: the other upload ends and the agent accepts a resume then.
        ArtifactError::UploadBusy { .. } => Status::aborted(refused()),
        ArtifactError::Missing { .. }
        | ArtifactError::NotOnDisk { .. }
        | ArtifactError::DigestConflict { .. }
        | ArtifactError::DigestUnknown { .. } => Status::failed_precondition(refused()),
        ArtifactError::Io { .. } => Status::unavailable(format!(
            "the agent cannot store the artifact: {}",
            reason(e)
        )),
        ArtifactError::Random { .. } => Status::internal(format!(
            "the agent cannot store the artifact: {}",
            reason(e)
        )),
    }
}

#[cfg(test)]
mod tests;

/// The status a refused or failed flag push is answered with; the message names the cause.
pub fn flags(e: &crate::flags::FlagsError) -> Status {
    use crate::flags::FlagsError as F;
    let text = format!("flag set rejected: {}", reason(e));
    let code = match e {
        F::Signature(inner) => code(inner),
        F::TooLarge { .. } => Code::ResourceExhausted,
        F::Malformed { .. } | F::InvalidField { .. } | F::Definition(_) | F::Targeting { .. } => {
            Code::InvalidArgument
        }
        F::WrongAgent { .. }
        | F::KillSwitchOnly { .. }
        | F::MissingRole { .. }
        | F::QuorumNotMet { .. }
        | F::OlderVersion { .. } => Code::PermissionDenied,
        F::NotYetValid { .. } | F::Expired { .. } | F::WindowTooLong { .. } => {
            Code::FailedPrecondition
        }
        F::AppNotConfigured { .. }
        | F::FlagsNotEnabled { .. }
        | F::NoSetForRelease { .. }
        | F::NotKept { .. }
        | F::NoFlagSet { .. }
        | F::UnknownFlag { .. } => Code::NotFound,
        F::CannotSplit { .. } => Code::FailedPrecondition,
        F::Replayed { .. } => Code::AlreadyExists,
        F::Store(_) => Code::Unavailable,
        F::Audit(a) => return audit(a),
    };
    Status::new(code, text)
}

/// The short, stable reason code of `flags.rejected` entries.
pub fn flags_reason(e: &crate::flags::FlagsError) -> &'static str {
    use crate::flags::FlagsError as F;
    match e {
        F::TooLarge { .. } => "too_large",
        F::Signature(inner) => reason_code(inner),
        F::Malformed { .. } => "malformed",
        F::InvalidField { .. } => "invalid_flags",
        F::AppNotConfigured { .. } => "app_not_configured",
        F::FlagsNotEnabled { .. } => "flags_not_enabled",
        F::WrongAgent { .. } => "wrong_agent",
        F::NotYetValid { .. } => "not_yet_valid",
        F::Expired { .. } => "expired",
        F::WindowTooLong { .. } => "window_too_long",
        F::Replayed { .. } => "replayed",
        F::OlderVersion { .. } => "older_version",
        F::Definition(_) | F::Targeting { .. } => "invalid_definition",
        F::KillSwitchOnly { .. } => "kill_switch_exceeded",
        F::MissingRole { .. } => "missing_role",
        F::QuorumNotMet { .. } => "quorum_not_met",
        F::NoSetForRelease { .. } => "no_set_for_release",
        F::NotKept { .. } => "not_kept",
        F::NoFlagSet { .. } => "no_flag_set",
        F::UnknownFlag { .. } => "unknown_flag",
        F::CannotSplit { .. } => "cannot_split",
        F::Store(_) => "store_unavailable",
        F::Audit(_) => "audit_unavailable",
    }
}
