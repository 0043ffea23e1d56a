//! The ledger: typed standings, the file format earlier agents wrote, and the rebuild from the
//! audit log.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gantry_proto::keys::SigningKey;
use serde_json::json;

use super::*;
use crate::audit::{AuditLog, AuditOptions, Entry};

fn id(s: &str) -> JobId {
    JobId::new(s).unwrap()
}

fn digest(s: &str) -> Sha256Hex {
    Sha256Hex::of(s.as_bytes())
}

fn admit(ledger: &Ledger, job: &str, at_ms: i64) {
    let record = Ledger::admitted(id(job), digest(job), AppName::new("web").unwrap(), at_ms);
    ledger.lock().insert(record).unwrap();
}

#[test]
fn outcomes_are_recorded_and_unfinished_jobs_listed() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    admit(&ledger, "j1", 1);
    admit(&ledger, "j2", 2);
    ledger
        .finish(&id("j1"), Ended::rolled_back("unhealthy"))
        .unwrap();
    let left: Vec<String> = ledger
        .unfinished()
        .iter()
        .map(|r| r.job_id.to_string())
        .collect();
    assert_eq!(left, ["j2"]);
    assert_eq!(
        ledger.get("j1").unwrap().standing.outcome(),
        Some(Outcome::RolledBack)
    );
    assert!(ledger.get("nope").is_none());
    let e = ledger.finish(&id("zz"), Ended::failed("")).unwrap_err();
    assert!(matches!(e, LedgerError::UnknownJob { .. }), "{e:?}");

    // And all of it after a restart.
    let again = Ledger::open(dir.path()).unwrap();
    assert_eq!(
        again.get("j1").unwrap().standing,
        Standing::Finished(Ended::rolled_back("unhealthy"))
    );
    assert_eq!(again.unfinished().len(), 1);
}

#[test]
fn a_job_refused_after_admission_is_recorded_refused_and_not_left_unfinished() {
    // The intake records a job refused because its app became busy; unrecorded, the next
    // start would report it as interrupted.
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    admit(&ledger, "j1", 1);
    ledger
        .refuse(&id("j1"), "app web is busy with job j0")
        .unwrap();
    assert!(ledger.unfinished().is_empty());
    let refused = Standing::Refused {
        why: "app web is busy with job j0".to_owned(),
    };
    assert_eq!(ledger.get("j1").unwrap().standing, refused);
    let again = Ledger::open(dir.path()).unwrap();
    assert_eq!(again.get("j1").unwrap().standing, refused);
    assert!(again.unfinished().is_empty());
}

/// A record file exactly as the agent before the ledger wrote it.
fn old_record(dir: &Path, job: &str, outcome: Option<&str>, reason: &str) {
    let text = json!({
        "job_id": job,
        "digest": digest(job).to_string(),
        "app": "web",
        "accepted_at_ms": 1_700_000_000_000_i64,
        "outcome": outcome,
        "reason": reason,
    });
    std::fs::write(
        dir.join(format!("{job}.json")),
        serde_json::to_vec_pretty(&text).unwrap(),
    )
    .unwrap();
}

#[test]
fn records_in_the_old_format_load() {
    let dir = tempfile::tempdir().unwrap();
    old_record(dir.path(), "running", None, "");
    old_record(dir.path(), "ok", Some("succeeded"), "healthy");
    old_record(dir.path(), "back", Some("rolled_back"), "unhealthy");
    old_record(dir.path(), "gone", Some("interrupted"), "the agent stopped");
    old_record(
        dir.path(),
        "busy",
        Some("rejected"),
        "app web is busy with job j0",
    );
    // The server wrote "failed" for an acceptance it could not record.
    old_record(
        dir.path(),
        "unrecorded",
        Some("failed"),
        "audit log unavailable: disk full",
    );
    let ledger = Ledger::open(dir.path()).unwrap();
    let standing = |job: &str| ledger.get(job).unwrap().standing;
    assert_eq!(standing("running"), Standing::Admitted);
    assert_eq!(
        standing("ok"),
        Standing::Finished(Ended::succeeded("healthy"))
    );
    assert_eq!(
        standing("back"),
        Standing::Finished(Ended::rolled_back("unhealthy"))
    );
    assert_eq!(
        standing("gone"),
        Standing::Finished(Ended::interrupted("the agent stopped"))
    );
    assert_eq!(
        standing("busy"),
        Standing::Refused {
            why: "app web is busy with job j0".to_owned()
        }
    );
    assert_eq!(
        standing("unrecorded"),
        Standing::Finished(Ended::failed("audit log unavailable: disk full"))
    );
    let record = ledger.get("ok").unwrap();
    assert_eq!(record.digest, digest("ok"));
    assert_eq!(record.accepted_at_ms, 1_700_000_000_000);
    assert_eq!(
        ledger
            .unfinished()
            .iter()
            .map(|r| r.job_id.to_string())
            .collect::<Vec<_>>(),
        ["running"]
    );
}

#[test]
fn records_are_written_in_the_old_format() {
    // So that an agent rolled back to the previous version still reads them.
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    admit(&ledger, "j1", 5);
    admit(&ledger, "j2", 6);
    ledger
        .finish(&id("j1"), Ended::succeeded("healthy"))
        .unwrap();
    ledger.refuse(&id("j2"), "busy").unwrap();
    let read = |job: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("{job}.json"))).unwrap())
            .unwrap()
    };
    assert_eq!(read("j1")["outcome"], "succeeded");
    assert_eq!(read("j1")["reason"], "healthy");
    assert_eq!(read("j1")["accepted_at_ms"], 5);
    assert_eq!(read("j2")["outcome"], "rejected");
    assert_eq!(read("j2")["reason"], "busy");
}

#[test]
fn an_outcome_no_agent_writes_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    old_record(dir.path(), "j1", Some("exploded"), "");
    let e = Ledger::open(dir.path()).unwrap_err();
    assert!(
        matches!(&e, LedgerError::BadOutcome { outcome, .. } if outcome == "exploded"),
        "{e:?}"
    );
    assert!(e.to_string().contains("j1.json"), "{e}");
}

#[test]
fn a_record_write_that_fails_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path()).unwrap();
    admit(&ledger, "j1", 1);
    ledger.fail_writes(true);
    let record = Ledger::admitted(id("j2"), digest("j2"), AppName::new("web").unwrap(), 2);
    let e = ledger.lock().insert(record).unwrap_err();
    assert!(matches!(e, LedgerError::Write { .. }), "{e:?}");
    assert!(ledger.get("j2").is_none());
    let e = ledger.finish(&id("j1"), Ended::succeeded("")).unwrap_err();
    assert!(matches!(e, LedgerError::Write { .. }), "{e:?}");
    assert_eq!(ledger.get("j1").unwrap().standing, Standing::Admitted);
}

fn audit_log(dir: &Path) -> AuditLog {
    let opts = AuditOptions {
        dir: dir.to_owned(),
        checkpoint_every: 0,
        checkpoint_interval: Duration::ZERO,
        max_file_bytes: 64 << 20,
        min_free_bytes: 0,
    };
    AuditLog::open(opts, Arc::new(SigningKey::generate().unwrap()))
        .unwrap()
        .0
}

fn accepted(job: &str) -> Entry {
    Entry::new("job.accepted")
        .with("job_id", json!(job))
        .with("job_digest", json!(digest(job)))
        .with("app", json!("web"))
        .with("action", json!("deploy"))
}

#[tokio::test]
async fn a_deleted_store_is_rebuilt_from_the_audit_log() {
    let data = tempfile::tempdir().unwrap();
    let audit_dir = data.path().join("audit");
    let log = audit_log(&audit_dir);
    for job in ["done", "running", "back"] {
        log.append(accepted(job)).await.unwrap();
    }
    let ended = |event: &str, job: &str, reason: &str| {
        Entry::new(event)
            .with("job_id", json!(job))
            .with("app", json!("web"))
            .with("reason", json!(reason))
    };
    log.append(ended("job.succeeded", "done", "healthy"))
        .await
        .unwrap();
    log.append(ended("job.rolled_back", "back", "unhealthy"))
        .await
        .unwrap();
    // A rejected job was never accepted: nothing to restore.
    log.append(Entry::new("job.rejected").with("job_id", json!("forged")))
        .await
        .unwrap();
    log.close().await.unwrap();

    let jobs = data.path().join("jobs");
    let ledger = Ledger::open(&jobs).unwrap();
    // One record survived; the others were deleted.
    admit(&ledger, "done", 1);
    ledger
        .finish(&id("done"), Ended::succeeded("healthy"))
        .unwrap();
    std::fs::remove_file(jobs.join("done.json")).unwrap();
    admit(&ledger, "back", 1);
    let ledger = Ledger::open(&jobs).unwrap();
    let rebuilt = ledger.rebuild_from_log(&audit_dir).unwrap();
    assert_eq!(rebuilt.ended, [id("back")]);
    let mut restored: Vec<String> = rebuilt.restored.iter().map(ToString::to_string).collect();
    restored.sort();
    assert_eq!(restored, ["done", "running"]);
    assert_eq!(
        ledger.get("done").unwrap().standing,
        Standing::Finished(Ended::succeeded("healthy"))
    );
    assert_eq!(ledger.get("done").unwrap().digest, digest("done"));
    // Accepted and never ended: reported interrupted at start, like any job a stop cut.
    assert_eq!(ledger.get("running").unwrap().standing, Standing::Admitted);
    // The record on disk said "admitted" but the log has its end (its outcome could not be
    // written): finished as logged, so the start-up does not end it again as interrupted.
    assert_eq!(
        ledger.get("back").unwrap().standing,
        Standing::Finished(Ended {
            outcome: Outcome::RolledBack,
            reason: "unhealthy".to_owned()
        })
    );
    assert!(ledger.get("forged").is_none());

    // Written durably, and nothing is left to restore.
    let reopened = Ledger::open(&jobs).unwrap();
    assert_eq!(reopened.len(), 3);
    assert_eq!(
        reopened.rebuild_from_log(&audit_dir).unwrap(),
        rebuild::Rebuilt::default()
    );
}
