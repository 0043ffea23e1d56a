//! Rebuilding the ledger from the audit log at start.
//!
//! Every job the agent accepted has a durable `job.accepted` entry (written before the job
//! runs), and every job that ended has a `job.succeeded`/`failed`/`rolled_back`/`interrupted`
//! entry. A record missing from `<data_dir>/jobs` (the directory deleted, emptied, or one file
//! removed) while its `job.accepted` is in the log is written again from those entries, so a
//! captured job inside its validity window is never admitted twice. A job accepted without an
//! end entry comes back [`Standing::Admitted`] and is reported interrupted, like any job a
//! stopped agent left.
//!
//! A record that is still [`Standing::Admitted`] although the log has the job's end entry (its
//! outcome could not be written: a full disk at the job's end, the entry held and written
//! later) is finished with that outcome, so the start-up does not end the job a second time
//! as interrupted: every job has exactly one end entry.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use super::{JobRecord, Ledger, LedgerError, Standing};
use crate::job::{AppName, JobId, Sha256Hex};
use crate::progress::{Ended, Outcome};

/// The fields of the job entries the rebuild reads.
#[derive(Deserialize)]
struct JobLine {
    event: String,
    #[serde(default)]
    ts: String,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    job_digest: Option<String>,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// The outcome an end entry records.
fn ended_by(event: &str) -> Option<Outcome> {
    match event {
        "job.succeeded" => Some(Outcome::Succeeded),
        "job.failed" => Some(Outcome::Failed),
        "job.rolled_back" => Some(Outcome::RolledBack),
        "job.interrupted" => Some(Outcome::Interrupted),
        _ => None,
    }
}

/// Unix milliseconds of an entry's RFC 3339 `ts` (0 when unreadable: it only orders the
/// interrupted jobs reported at start).
fn ms_of(ts: &str) -> i64 {
    humantime::parse_rfc3339(ts).map_or(0, crate::clock::system_ms)
}

/// What [`Ledger::rebuild_from_log`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rebuilt {
    /// Records written again (the log shows them accepted, the ledger lacked them), oldest
    /// first.
    pub restored: Vec<JobId>,
    /// Records that said "admitted" while the log has the job's end: finished with the logged
    /// outcome.
    pub ended: Vec<JobId>,
}

impl Ledger {
    /// Writes a record again for every job the audit log in `audit_dir` shows accepted and the
    /// ledger does not hold, and finishes every record the log shows ended; says which.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Rebuild`] when the log cannot be read, or the write error of a record.
    pub fn rebuild_from_log(&self, audit_dir: &Path) -> Result<Rebuilt, LedgerError> {
        let mut missing: HashMap<String, JobRecord> = HashMap::new();
        let mut ends: Vec<(JobId, Ended)> = Vec::new();
        crate::audit::scan(audit_dir, 1, |_, line| {
            // Most lines are steps and checkpoints: skip them before parsing.
            if !contains(line, b"\"event\":\"job.") {
                return Ok(());
            }
            let Ok(entry) = serde_json::from_slice::<JobLine>(line) else {
                return Ok(());
            };
            let Some(id) = entry.job_id.as_deref() else {
                return Ok(());
            };
            if entry.event == "job.accepted" {
                if self.get(id).is_some() {
                    return Ok(());
                }
                let parsed = (
                    JobId::new(id),
                    entry.job_digest.as_deref().map(Sha256Hex::new),
                    entry.app.as_deref().map(AppName::new),
                );
                if let (Ok(job_id), Some(Ok(digest)), Some(Ok(app))) = parsed {
                    let record = Ledger::admitted(job_id, digest, app, ms_of(&entry.ts));
                    missing.insert(id.to_owned(), record);
                } else {
                    tracing::warn!(
                        job_id = id,
                        "a job.accepted entry without a readable digest or app; not restored"
                    );
                }
            } else if let Some(outcome) = ended_by(&entry.event) {
                let ended = Ended {
                    outcome,
                    reason: entry.reason.unwrap_or_default(),
                };
                if let Some(record) = missing.get_mut(id) {
                    record.standing = Standing::Finished(ended);
                } else if let Some(record) = self.get(id)
                    && record.standing == Standing::Admitted
                {
                    ends.push((record.job_id, ended));
                }
            }
            Ok(())
        })
        .map_err(LedgerError::Rebuild)?;
        let mut restored: Vec<JobRecord> = missing.into_values().collect();
        restored.sort_by(|a, b| {
            (a.accepted_at_ms, a.job_id.as_str()).cmp(&(b.accepted_at_ms, b.job_id.as_str()))
        });
        let mut ids = Vec::with_capacity(restored.len());
        {
            let mut ledger = self.lock();
            for record in restored {
                ids.push(record.job_id.clone());
                ledger.insert(record)?;
            }
        }
        let mut ended = Vec::with_capacity(ends.len());
        for (job_id, outcome) in ends {
            self.finish(&job_id, outcome)?;
            ended.push(job_id);
        }
        Ok(Rebuilt {
            restored: ids,
            ended,
        })
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
