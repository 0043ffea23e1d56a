//! What this agent remembers of each fleet plan it admitted a dispatch of: the highest lease
//! epoch it has seen (the fence against a controller that lost its lease), the job its deploy
//! ran as, and the release that deploy replaced (what a rollback dispatch returns to).
//!
//! Beside the job ledger, one JSON file per plan, `<data_dir>/plans/<sha256(plan_id)>.json`
//! (the plan id is free text; its digest is a safe file name), written with
//! [`write_atomic`](crate::state::write_atomic) before the dispatch it records is
//! acknowledged or begun, all loaded at start. Admission reads and updates it under
//! [`PlanLedger::lock`], so two dispatches of one plan are judged one after the other.
//!
//! A record missing at start while the audit log holds the plan's `job.accepted` entries (the
//! directory deleted or emptied) is written again from them
//! ([`PlanLedger::rebuild_from_log`]): the highest epoch of its accepted and resubmitted
//! dispatches, its deploy job and the release that deploy replaced. So deleting `plans/` does
//! not lower the epoch fence.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use super::LedgerError;
use crate::job::Sha256Hex;
use crate::state::{self, StateError};

/// One plan as this agent knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanRecord {
    /// The plan's id.
    pub plan_id: String,
    /// Lowercase hex SHA-256 of the plan bytes first admitted under this id.
    pub plan_digest: String,
    /// The highest dispatch epoch admitted for the plan.
    pub highest_epoch: u64,
    /// The job id the plan's deploy ran as here, once a deploy dispatch was admitted.
    #[serde(default)]
    pub deploy_job_id: Option<String>,
    /// The version that was active when that deploy was admitted; `None` when the app had
    /// none (a rollback then stops the app).
    #[serde(default)]
    pub replaced: Option<String>,
}

/// The plan records over `<data_dir>/plans`.
#[derive(Debug)]
pub struct PlanLedger {
    dir: PathBuf,
    records: Mutex<HashMap<String, PlanRecord>>,
}

/// The plan records, locked for a read-check-write.
#[derive(Debug)]
pub struct LockedPlans<'a> {
    ledger: &'a PlanLedger,
    records: MutexGuard<'a, HashMap<String, PlanRecord>>,
}

impl LockedPlans<'_> {
    /// The record of plan `plan_id`, if a dispatch of it was admitted before.
    pub fn get(&self, plan_id: &str) -> Option<&PlanRecord> {
        self.records.get(plan_id)
    }

    /// Writes `record` durably, then indexes it.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Write`] when the file cannot be written; nothing is indexed then.
    pub fn put(&mut self, record: PlanRecord) -> Result<(), LedgerError> {
        let path = self.ledger.path_of(&record.plan_id);
        let write_error = |source| LedgerError::Write {
            job_id: format!("plan {}", record.plan_id),
            source,
        };
        let bytes = serde_json::to_vec_pretty(&record).map_err(|source| {
            write_error(StateError::Corrupt {
                path: path.clone(),
                source,
            })
        })?;
        state::write_atomic(&path, &bytes).map_err(write_error)?;
        self.records.insert(record.plan_id.clone(), record);
        Ok(())
    }
}

impl PlanLedger {
    /// Creates the directory if needed and loads every record in it.
    ///
    /// # Errors
    ///
    /// [`LedgerError`] when the directory cannot be created or read, or a record is corrupt.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        fs::create_dir_all(dir).map_err(|source| LedgerError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
        let read_dir = |source| LedgerError::ReadDir {
            dir: dir.to_owned(),
            source,
        };
        let mut records = HashMap::new();
        for entry in fs::read_dir(dir).map_err(read_dir)? {
            let entry = entry.map_err(read_dir)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Temp files of an interrupted write_atomic start with '.'.
            if !name.ends_with(".json") || name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let record: PlanRecord = match state::read_json(&path) {
                Ok(Some(r)) => r,
                // Listed a moment ago; gone now means nothing to load.
                Ok(None) => continue,
                Err(source) => return Err(LedgerError::Load { path, source }),
            };
            records.insert(record.plan_id.clone(), record);
        }
        Ok(Self {
            dir: dir.to_owned(),
            records: Mutex::new(records),
        })
    }

    /// Locks the records for a read-check-write that must not interleave with another.
    pub fn lock(&self) -> LockedPlans<'_> {
        LockedPlans {
            ledger: self,
            // Updated only after a successful write: a panic while holding the lock leaves
            // the index consistent.
            records: self
                .records
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    /// The record of plan `plan_id`, if any.
    pub fn get(&self, plan_id: &str) -> Option<PlanRecord> {
        self.lock().get(plan_id).cloned()
    }

    fn path_of(&self, plan_id: &str) -> PathBuf {
        self.dir
            .join(format!("{}.json", Sha256Hex::of(plan_id.as_bytes())))
    }
}

/// The fields of the entries the rebuild reads.
#[derive(Deserialize)]
struct PlanLine {
    event: String,
    #[serde(default)]
    job_id: Option<String>,
    #[serde(default)]
    plan_id: Option<String>,
    #[serde(default)]
    plan_digest: Option<String>,
    #[serde(default)]
    epoch: Option<u64>,
    #[serde(default)]
    dispatch_action: Option<String>,
    #[serde(default)]
    replaced_version: Option<String>,
}

impl PlanLedger {
    /// Writes a record again for every plan the audit log in `audit_dir` shows dispatched here
    /// (`job.accepted` entries with a `plan_id`) that the store does not hold; returns their
    /// plan ids, in the order the log first shows them.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Rebuild`] when the log cannot be read, or the write error of a record.
    pub fn rebuild_from_log(&self, audit_dir: &Path) -> Result<Vec<String>, LedgerError> {
        let mut found: Vec<PlanRecord> = Vec::new();
        let mut plan_of_job: HashMap<String, usize> = HashMap::new();
        crate::audit::scan(audit_dir, 1, |_, line| {
            // Only acceptances and resubmissions carry a plan's facts: skip the rest unparsed.
            let accepted = contains(line, b"\"event\":\"job.accepted\"");
            if !accepted && !contains(line, b"\"event\":\"job.resubmitted\"") {
                return Ok(());
            }
            let Ok(entry) = serde_json::from_slice::<PlanLine>(line) else {
                return Ok(());
            };
            let (Some(job_id), Some(epoch)) = (entry.job_id, entry.epoch) else {
                return Ok(());
            };
            if entry.event == "job.resubmitted" {
                if let Some(&i) = plan_of_job.get(&job_id) {
                    found[i].highest_epoch = found[i].highest_epoch.max(epoch);
                }
                return Ok(());
            }
            let (Some(plan_id), Some(plan_digest)) = (entry.plan_id, entry.plan_digest) else {
                return Ok(());
            };
            if self.get(&plan_id).is_some() {
                return Ok(());
            }
            let i = match found.iter().position(|r| r.plan_id == plan_id) {
                Some(i) => i,
                None => {
                    found.push(PlanRecord {
                        plan_id,
                        plan_digest,
                        highest_epoch: epoch,
                        deploy_job_id: None,
                        replaced: None,
                    });
                    found.len() - 1
                }
            };
            let record = &mut found[i];
            record.highest_epoch = record.highest_epoch.max(epoch);
            if entry.dispatch_action.as_deref() == Some("deploy") {
                record.deploy_job_id = Some(job_id.clone());
                record.replaced = entry.replaced_version;
            }
            plan_of_job.insert(job_id, i);
            Ok(())
        })
        .map_err(LedgerError::Rebuild)?;
        let mut plans = self.lock();
        let mut ids = Vec::with_capacity(found.len());
        for record in found {
            ids.push(record.plan_id.clone());
            plans.put(record)?;
        }
        Ok(ids)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::time::Duration;

    use gantry_proto::keys::SigningKey;
    use serde_json::json;

    use crate::audit::{AuditLog, AuditOptions, Entry};

    #[tokio::test]
    async fn a_deleted_store_is_rebuilt_from_the_audit_log_with_the_highest_epoch() {
        let data = tempfile::tempdir().unwrap();
        let audit_dir = data.path().join("audit");
        let opts = AuditOptions {
            dir: audit_dir.clone(),
            checkpoint_every: 0,
            checkpoint_interval: Duration::ZERO,
            max_file_bytes: 64 << 20,
            min_free_bytes: 0,
        };
        let log = AuditLog::open(opts, Arc::new(SigningKey::generate().unwrap()))
            .unwrap()
            .0;
        let accepted = |job: &str, action: &str, epoch: u64| {
            Entry::new("job.accepted")
                .with("job_id", json!(job))
                .with("plan_id", json!("rel-2"))
                .with("plan_digest", json!("d".repeat(64)))
                .with("epoch", json!(epoch))
                .with("dispatch_action", json!(action))
                .with("replaced_version", json!("1.0.0"))
        };
        log.append(accepted("plan-a-deploy", "deploy", 2))
            .await
            .unwrap();
        log.append(
            Entry::new("job.resubmitted")
                .with("job_id", json!("plan-a-deploy"))
                .with("epoch", json!(7)),
        )
        .await
        .unwrap();
        log.append(accepted("plan-a-rollback", "rollback", 5))
            .await
            .unwrap();
        // A job that is not a plan's: nothing to restore.
        log.append(Entry::new("job.accepted").with("job_id", json!("j1")))
            .await
            .unwrap();
        log.close().await.unwrap();

        let plans = PlanLedger::open(&data.path().join("plans")).unwrap();
        assert_eq!(plans.rebuild_from_log(&audit_dir).unwrap(), vec!["rel-2"]);
        let record = PlanLedger::open(&data.path().join("plans"))
            .unwrap()
            .get("rel-2")
            .unwrap();
        assert_eq!(record.highest_epoch, 7);
        assert_eq!(record.deploy_job_id.as_deref(), Some("plan-a-deploy"));
        assert_eq!(record.replaced.as_deref(), Some("1.0.0"));
        // Held records are never overwritten by what the log says.
        assert!(plans.rebuild_from_log(&audit_dir).unwrap().is_empty());
    }

    #[test]
    fn records_survive_a_reopen_and_update_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let plans = PlanLedger::open(dir.path()).unwrap();
        let record = PlanRecord {
            plan_id: "rel/2.0 with spaces".to_owned(),
            plan_digest: "d".repeat(64),
            highest_epoch: 4,
            deploy_job_id: Some("plan-x-deploy".to_owned()),
            replaced: Some("1.0.0".to_owned()),
        };
        plans.lock().put(record.clone()).unwrap();
        let mut higher = record.clone();
        higher.highest_epoch = 9;
        plans.lock().put(higher.clone()).unwrap();
        drop(plans);
        let again = PlanLedger::open(dir.path()).unwrap();
        assert_eq!(again.get("rel/2.0 with spaces"), Some(higher));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
