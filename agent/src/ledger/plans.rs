//! What this agent remembers of each fleet plan it admitted a dispatch of: the highest lease
//! epoch it has seen (the fence against a controller that lost its lease), the job its deploy
//! ran as, and the release that deploy replaced (what a rollback dispatch returns to).
//!
//! Beside the job ledger, one JSON file per plan, `<data_dir>/plans/<sha256(plan_id)>.json`
//! (the plan id is free text; its digest is a safe file name), written with
//! [`write_atomic`](crate::state::write_atomic) before the dispatch it records is
//! acknowledged or begun, all loaded at start. Admission reads and updates it under
//! [`PlanLedger::lock`], so two dispatches of one plan are judged one after the other.

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

#[cfg(test)]
mod tests {
    use super::*;

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
