//! The replay store: every admitted job id with the digest of its bytes, durably.
//!
//! One JSON file per job id, `<data_dir>/jobs/<job_id>.json`, written with
//! [`write_atomic`](crate::state::write_atomic) before the job is acknowledged, all loaded at
//! start. A job id is admitted once: the identical bytes again are a duplicate (the caller
//! re-attaches to the job), other bytes under a known id are a replay and are refused.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::job::{AppName, JobId, Sha256Hex};
use crate::state::{self, StateError};

/// The outcomes [`ReplayRecord::outcome`] may hold: how a job ended, or `rejected` for a job
/// admitted but refused before it started (its app was busy).
pub const OUTCOMES: [&str; 5] = [
    "succeeded",
    "failed",
    "rolled_back",
    "interrupted",
    "rejected",
];

/// What the agent remembers about an admitted job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayRecord {
    /// The job id.
    pub job_id: JobId,
    /// SHA-256 of the exact job bytes admitted.
    pub digest: Sha256Hex,
    /// The app it acts on.
    pub app: AppName,
    /// When it was admitted, Unix milliseconds.
    pub accepted_at_ms: i64,
    /// `None` while it runs (or was running when the agent stopped); then one of [`OUTCOMES`].
    pub outcome: Option<String>,
    /// Why it ended that way (empty while running).
    pub reason: String,
}

/// The replay store could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The store directory could not be created.
    #[error("cannot create the replay store directory {}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The store directory could not be listed.
    #[error("cannot list the replay store directory {}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A record file could not be read or parsed.
    #[error("cannot load replay record {}", path.display())]
    Load {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: StateError,
    },
    /// A record file's name does not match the job id inside it.
    #[error("replay record {} holds job id {job_id:?}, not the one its name says", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The id inside.
        job_id: String,
    },
    /// A record could not be written.
    #[error("cannot record job {job_id} in the replay store")]
    Write {
        /// The job.
        job_id: String,
        /// The cause.
        #[source]
        source: StateError,
    },
    /// An outcome for a job the store does not know.
    #[error("job {job_id} is not in the replay store")]
    UnknownJob {
        /// The job.
        job_id: String,
    },
    /// An outcome outside [`OUTCOMES`].
    #[error("outcome {outcome:?} for job {job_id} is not one of {OUTCOMES:?}")]
    BadOutcome {
        /// The job.
        job_id: String,
        /// The outcome given.
        outcome: String,
    },
}

/// The in-memory index over the record files.
#[derive(Debug)]
pub(crate) struct ReplayStore {
    dir: PathBuf,
    records: HashMap<String, ReplayRecord>,
}

impl ReplayStore {
    /// Creates the directory if needed and loads every record in it.
    pub(crate) fn open(dir: &Path) -> Result<Self, ReplayError> {
        fs::create_dir_all(dir).map_err(|source| ReplayError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
        let entries = fs::read_dir(dir).map_err(|source| ReplayError::ReadDir {
            dir: dir.to_owned(),
            source,
        })?;
        let mut records = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| ReplayError::ReadDir {
                dir: dir.to_owned(),
                source,
            })?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            // Temp files of an interrupted write_atomic start with '.'; they never were records.
            let Some(id) = name
                .strip_suffix(".json")
                .filter(|_| !name.starts_with('.'))
            else {
                continue;
            };
            let path = entry.path();
            let record: ReplayRecord = state::read_json(&path)
                .map_err(|source| ReplayError::Load {
                    path: path.clone(),
                    source,
                })?
                .ok_or_else(|| ReplayError::Load {
                    path: path.clone(),
                    source: StateError::Read {
                        path: path.clone(),
                        source: io::Error::from(io::ErrorKind::NotFound),
                    },
                })?;
            if record.job_id.as_str() != id {
                return Err(ReplayError::Mismatch {
                    path,
                    job_id: record.job_id.to_string(),
                });
            }
            records.insert(id.to_owned(), record);
        }
        Ok(Self {
            dir: dir.to_owned(),
            records,
        })
    }

    fn path_of(&self, job_id: &JobId) -> PathBuf {
        // JobId's character set has no '/' and cannot start with '.': a safe file name.
        self.dir.join(format!("{job_id}.json"))
    }

    fn write(&self, record: &ReplayRecord) -> Result<(), ReplayError> {
        let job_id = record.job_id.to_string();
        let bytes = serde_json::to_vec_pretty(record).map_err(|e| ReplayError::Write {
            job_id: job_id.clone(),
            source: StateError::Corrupt {
                path: self.path_of(&record.job_id),
                source: e,
            },
        })?;
        state::write_atomic(&self.path_of(&record.job_id), &bytes)
            .map_err(|source| ReplayError::Write { job_id, source })
    }

    pub(crate) fn get(&self, job_id: &str) -> Option<&ReplayRecord> {
        self.records.get(job_id)
    }

    /// Writes the record durably, then indexes it.
    pub(crate) fn insert(&mut self, record: ReplayRecord) -> Result<(), ReplayError> {
        self.write(&record)?;
        self.records.insert(record.job_id.to_string(), record);
        Ok(())
    }

    pub(crate) fn set_outcome(
        &mut self,
        job_id: &JobId,
        outcome: &str,
        reason: &str,
    ) -> Result<(), ReplayError> {
        if !OUTCOMES.contains(&outcome) {
            return Err(ReplayError::BadOutcome {
                job_id: job_id.to_string(),
                outcome: outcome.to_owned(),
            });
        }
        let mut record =
            self.records
                .get(job_id.as_str())
                .cloned()
                .ok_or_else(|| ReplayError::UnknownJob {
                    job_id: job_id.to_string(),
                })?;
        record.outcome = Some(outcome.to_owned());
        record.reason = reason.to_owned();
        self.write(&record)?;
        self.records.insert(job_id.to_string(), record);
        Ok(())
    }

    /// Records without an outcome, oldest first.
    pub(crate) fn unfinished(&self) -> Vec<ReplayRecord> {
        let mut v: Vec<ReplayRecord> = self
            .records
            .values()
            .filter(|r| r.outcome.is_none())
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            (a.accepted_at_ms, a.job_id.as_str()).cmp(&(b.accepted_at_ms, b.job_id.as_str()))
        });
        v
    }
}
