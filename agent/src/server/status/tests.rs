//! What a client sees for each error the server maps: the code `gantry` turns into an exit
//! code, and a message naming the cause.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tonic::Code;

use super::*;
use crate::admission::Rejection;
use crate::job::Sha256Hex;

fn rejection(error: AdmissionError) -> Rejection {
    Rejection {
        error,
        job_id: Some("j1".to_owned()),
        app: Some("web".to_owned()),
        claimed_key_ids: Vec::new(),
        job_digest: "00".repeat(32),
    }
}

fn disk_full() -> AuditError {
    AuditError::Unavailable {
        cause: "cannot write audit-1.jsonl: No space left on device".to_owned(),
    }
}

#[test]
fn a_rejected_or_busy_job_is_answered_with_its_admission_code() {
    let busy = IntakeError::Busy(Box::new(rejection(AdmissionError::AppBusy {
        app: "web".to_owned(),
        job_id: "deploy-1".to_owned(),
    })));
    let s = intake(&busy);
    assert_eq!(s.code(), Code::Aborted);
    assert!(s.message().starts_with("job rejected: "), "{}", s.message());
    assert!(s.message().contains("web"), "{}", s.message());
    assert_eq!(intake_reason(&busy), "app_busy");

    let forged = IntakeError::Rejected(Box::new(rejection(AdmissionError::NoSignatures)));
    assert_eq!(intake(&forged).code(), Code::Unauthenticated);
    assert_eq!(intake_reason(&forged), "no_signatures");
}

#[test]
fn an_acceptance_the_log_cannot_record_is_the_agent_failing_on_its_side() {
    let e = IntakeError::Audit(disk_full());
    let s = intake(&e);
    assert_eq!(s.code(), Code::Unavailable);
    assert!(
        s.message()
            .starts_with("audit log unavailable: cannot write audit-1.jsonl"),
        "{}",
        s.message()
    );
    assert_eq!(intake_reason(&e), "audit_unavailable");

    let late = IntakeError::Deadline(Duration::from_secs(10));
    let s = intake(&late);
    assert_eq!(s.code(), Code::Unavailable);
    assert!(s.message().contains("10s"), "{}", s.message());
    assert!(s.message().contains("did not run"), "{}", s.message());
    assert_eq!(intake_reason(&late), "accept_deadline");

    let cut = IntakeError::Cut("task panicked".to_owned());
    assert_eq!(intake(&cut).code(), Code::Internal);
    assert_eq!(intake_reason(&cut), "accept_cut");
}

#[test]
fn audit_errors_say_audit_log_unavailable_once() {
    let s = audit(&disk_full());
    assert_eq!(s.code(), Code::Unavailable);
    assert_eq!(
        s.message(),
        "audit log unavailable: cannot write audit-1.jsonl: No space left on device"
    );
    let low = AuditError::LowSpace {
        dir: PathBuf::from("/var/lib/gantry/audit"),
        free: 10,
        min: 100,
    };
    let s = audit(&low);
    assert_eq!(s.code(), Code::Unavailable);
    assert!(
        s.message()
            .starts_with("audit log unavailable: only 10 bytes"),
        "{}",
        s.message()
    );
    assert_eq!(s.message().matches("audit log unavailable").count(), 1);
    let held = AuditError::HeldFull {
        cause: "disk full".to_owned(),
        held: 3,
    };
    assert_eq!(audit(&held).code(), Code::Unavailable);
    let s = audit(&AuditError::Closed);
    assert_eq!(s.code(), Code::Unavailable);
    assert_eq!(s.message(), "audit log unavailable: audit log is closed");
    let s = audit(&AuditError::InvalidEntry {
        event: "seq".to_owned(),
        reason: "reserved".to_owned(),
    });
    assert_eq!(s.code(), Code::Internal);
    assert!(
        s.message().starts_with("audit log unavailable: "),
        "{}",
        s.message()
    );
}

#[test]
fn a_watch_of_an_unknown_refused_or_pending_job() {
    let s = known(&KnownError::NotFound {
        job_id: "nope".to_owned(),
    });
    assert_eq!(s.code(), Code::NotFound);
    assert_eq!(s.message(), "no job \"nope\" is known to this agent");
    let s = known(&KnownError::Refused {
        job_id: "j1".to_owned(),
        why: "app web is busy with job j0".to_owned(),
    });
    assert_eq!(s.code(), Code::Aborted);
    assert_eq!(
        s.message(),
        "job j1 ended rejected: app web is busy with job j0"
    );
    let s = known(&KnownError::Pending {
        job_id: "j1".to_owned(),
    });
    assert_eq!(s.code(), Code::Unavailable);
    assert!(s.message().contains("not known yet"), "{}", s.message());
}

fn digest() -> Sha256Hex {
    Sha256Hex::of(b"artifact")
}

#[test]
fn an_artifact_the_client_got_wrong_is_refused_as_its_fault() {
    let cases = [
        (
            ArtifactError::TooLarge {
                digest: digest(),
                size: 10,
                max: 5,
            },
            Code::ResourceExhausted,
        ),
        (
            ArtifactError::Oversize {
                digest: digest(),
                declared: 5,
            },
            Code::InvalidArgument,
        ),
        (
            ArtifactError::SizeMismatch {
                digest: digest(),
                expected: 5,
                actual: 4,
            },
            Code::InvalidArgument,
        ),
        (
            ArtifactError::DigestMismatch {
                expected: digest(),
                actual: Sha256Hex::of(b"other"),
            },
            Code::InvalidArgument,
        ),
        (
            ArtifactError::UploadFailed { digest: digest() },
            Code::InvalidArgument,
        ),
        (
            ArtifactError::ResumePastEnd {
                digest: digest(),
                offset: 6,
                size: 5,
            },
            Code::InvalidArgument,
        ),
        (
            ArtifactError::ResumeMismatch {
                digest: digest(),
                offset: 3,
                held: 2,
            },
            Code::FailedPrecondition,
        ),
        (
            ArtifactError::UploadBusy { digest: digest() },
            Code::Aborted,
        ),
        (
            ArtifactError::Missing {
                digest: digest(),
                size: 5,
            },
            Code::FailedPrecondition,
        ),
        (
            ArtifactError::DigestConflict {
                version: semver::Version::new(1, 0, 0),
                on_disk: digest(),
                wanted: Sha256Hex::of(b"other"),
            },
            Code::FailedPrecondition,
        ),
        (
            ArtifactError::DigestUnknown {
                version: semver::Version::new(1, 0, 0),
                wanted: digest(),
            },
            Code::FailedPrecondition,
        ),
        (
            ArtifactError::NotOnDisk {
                version: semver::Version::new(1, 0, 0),
                path: PathBuf::from("/x"),
            },
            Code::FailedPrecondition,
        ),
    ];
    for (e, code) in cases {
        let s = artifact(&e);
        assert_eq!(s.code(), code, "{e:?}");
        assert!(
            s.message().starts_with("artifact refused: "),
            "{}",
            s.message()
        );
    }
}

#[test]
fn an_artifact_the_agent_cannot_store_is_the_agent_failing_on_its_side() {
    // Every ArtifactError answered INVALID_ARGUMENT before, a full disk included, and gantry
    // then said the artifact was refused (exit 3).
    let full = ArtifactError::Io {
        op: "write",
        path: PathBuf::from("/var/lib/gantry/artifacts/.upload-1"),
        source: io::Error::other("No space left on device"),
    };
    let s = artifact(&full);
    assert_eq!(s.code(), Code::Unavailable);
    assert_eq!(
        s.message(),
        "the agent cannot store the artifact: cannot write /var/lib/gantry/artifacts/.upload-1: No space left on device"
    );
    let rng = ArtifactError::Random {
        path: PathBuf::from("/var/lib/gantry/artifacts"),
    };
    let s = artifact(&rng);
    assert_eq!(s.code(), Code::Internal);
    assert!(s.message().contains("random temp name"), "{}", s.message());
}

#[test]
fn every_dispatch_refusal_has_its_own_documented_reason_and_a_refusal_code() {
    let doc = include_str!("../../../../docs/audit-log.md");
    let window = || WindowError::Expired {
        expires_at: 1,
        now: 2,
    };
    let cases = [
        (
            AdmissionError::PlanSignature(Box::new(AdmissionError::NoSignatures)),
            "plan_signature",
            Code::Unauthenticated,
        ),
        (
            AdmissionError::PlanRole(Box::new(AdmissionError::NoSignatures)),
            "plan_role",
            Code::PermissionDenied,
        ),
        (
            AdmissionError::PlanQuorum { needed: 2, got: 1 },
            "plan_quorum",
            Code::PermissionDenied,
        ),
        (
            AdmissionError::InvalidPlan {
                detail: "x".to_owned(),
            },
            "invalid_plan",
            Code::InvalidArgument,
        ),
        (
            AdmissionError::PlanWindow(window()),
            "plan_expired",
            Code::FailedPrecondition,
        ),
        (
            AdmissionError::DispatchSignature(Box::new(AdmissionError::NoSignatures)),
            "dispatch_signature",
            Code::Unauthenticated,
        ),
        (
            AdmissionError::DispatchRole {
                app: "web".to_owned(),
                needed: vec!["orchestrator".to_owned()],
                signer_roles: Vec::new(),
            },
            "dispatch_role",
            Code::PermissionDenied,
        ),
        (
            AdmissionError::InvalidDispatch {
                detail: "x".to_owned(),
            },
            "invalid_dispatch",
            Code::InvalidArgument,
        ),
        (
            AdmissionError::DispatchWindow(window()),
            "dispatch_expired",
            Code::FailedPrecondition,
        ),
        (
            AdmissionError::PlanDigestMismatch {
                named: "a".to_owned(),
                actual: "b".to_owned(),
            },
            "plan_digest_mismatch",
            Code::InvalidArgument,
        ),
        (
            AdmissionError::WrongEnvironment {
                plan: "production".to_owned(),
                agent: None,
            },
            "wrong_environment",
            Code::PermissionDenied,
        ),
        (
            AdmissionError::NotInRing {
                agent_id: "a".to_owned(),
                ring: 0,
                plan_id: "p".to_owned(),
                why: "w".to_owned(),
            },
            "not_in_ring",
            Code::PermissionDenied,
        ),
        (
            AdmissionError::WrongJobId {
                expected: "e".to_owned(),
                found: "f".to_owned(),
            },
            "wrong_job_id",
            Code::InvalidArgument,
        ),
        (
            AdmissionError::StaleEpoch {
                plan_id: "p".to_owned(),
                epoch: 1,
                highest: 2,
            },
            "stale_epoch",
            Code::FailedPrecondition,
        ),
        (
            AdmissionError::RollbackWithoutDeploy {
                plan_id: "p".to_owned(),
            },
            "rollback_without_deploy",
            Code::FailedPrecondition,
        ),
    ];
    let mut seen = std::collections::BTreeSet::new();
    for (error, reason, grpc) in cases {
        assert_eq!(reason_code(&error), reason, "{error:?}");
        assert!(seen.insert(reason), "{reason} twice");
        assert!(
            doc.contains(&format!("`{reason}`")),
            "{reason} is not in docs/audit-log.md"
        );
        let s = rejection_status(&error);
        assert_eq!(s.code(), grpc, "{reason}: {s:?}");
    }
    assert!(
        AdmissionError::WrongEnvironment {
            plan: "production".to_owned(),
            agent: None,
        }
        .to_string()
        .contains("this agent's is not set")
    );
}

fn rejection_status(e: &AdmissionError) -> tonic::Status {
    super::rejection(e)
}
