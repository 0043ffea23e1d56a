//! The job ledger (the replay store): every admitted job id with the digest of its bytes and
//! where it stands, durably.
//!
//! One JSON file per job id, `<data_dir>/jobs/<job_id>.json`, written with
//! [`write_atomic`](crate::state::write_atomic) before the job is acknowledged, all loaded at
//! start. A job id is admitted once: admission looks it up and inserts it under one lock
//! ([`Ledger::lock`]), so two connections submitting the same job at once cannot both be
//! admitted. What happens to the job afterwards is a typed [`Standing`]: admitted (running,
//! or running when the agent stopped), refused after admission (its app was busy, or its
//! acceptance could not be recorded), or finished with an [`Ended`].
//!
//! The file keeps the shape earlier agents wrote (`outcome` and `reason` strings), so their
//! records load and an older agent still reads these (see the `record` module). A deleted or
//! emptied store is rebuilt at start from the audit log's `job.accepted` entries
//! ([`rebuild`]).

pub mod plans;
pub mod rebuild;
mod record;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use crate::job::{AppName, JobId, JobSpec, Sha256Hex};
use crate::progress::{Ended, Outcome};
use crate::state::{self, StateError};

pub use record::JobRecord;

/// Where an admitted job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Admitted and not ended: running, about to, or running when the agent stopped.
    Admitted,
    /// Admitted, then refused before it started; it never ran.
    Refused {
        /// Why, readable.
        why: String,
    },
    /// It ran and ended.
    Finished(Ended),
}

impl Standing {
    /// The outcome of a finished job.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Standing::Finished(ended) => Some(ended.outcome),
            Standing::Admitted | Standing::Refused { .. } => None,
        }
    }
}

/// The ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LedgerError {
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
    /// A record file holds an outcome no agent writes.
    #[error("replay record {} holds outcome {outcome:?}, not one of {:?}", path.display(), record::OUTCOMES)]
    BadOutcome {
        /// The file.
        path: PathBuf,
        /// The outcome found.
        outcome: String,
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
    /// A standing for a job the ledger does not know.
    #[error("job {job_id} is not in the replay store")]
    UnknownJob {
        /// The job.
        job_id: String,
    },
    /// The audit log could not be read to rebuild the store.
    #[error("cannot read the audit log to rebuild the replay store")]
    Rebuild(#[source] crate::audit::AuditError),
}

/// The job ledger over `<data_dir>/jobs`. Shared (`Arc`) by admission, the intake, the
/// executor and `watch`.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
    records: Mutex<HashMap<String, JobRecord>>,
    #[cfg(any(test, feature = "test-util"))]
    fail_writes: std::sync::atomic::AtomicBool,
}

/// The ledger, locked: look up and insert as one step.
#[derive(Debug)]
pub struct Locked<'a> {
    ledger: &'a Ledger,
    records: MutexGuard<'a, HashMap<String, JobRecord>>,
}

impl Locked<'_> {
    /// The record of a job admitted before, if any.
    pub fn get(&self, job_id: &str) -> Option<&JobRecord> {
        self.records.get(job_id)
    }

    /// Writes a new record durably, then indexes it.
    ///
    /// # Errors
    ///
    /// [`LedgerError::Write`] when the file cannot be written; nothing is indexed then.
    pub fn insert(&mut self, record: JobRecord) -> Result<(), LedgerError> {
        self.ledger.write(&record)?;
        self.records.insert(record.job_id.to_string(), record);
        Ok(())
    }

    /// Inserts job `spec` with `digest` as admitted now ([`Ledger::admitted`]).
    ///
    /// # Errors
    ///
    /// As [`Locked::insert`].
    pub fn admit(&mut self, spec: &JobSpec, digest: &Sha256Hex) -> Result<(), LedgerError> {
        self.insert(Ledger::admitted(
            spec.id.clone(),
            digest.clone(),
            spec.app.clone(),
            crate::clock::now_ms(),
        ))
    }
}

impl Ledger {
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
        let entries = fs::read_dir(dir).map_err(|source| LedgerError::ReadDir {
            dir: dir.to_owned(),
            source,
        })?;
        let mut records = HashMap::new();
        for entry in entries {
            let entry = entry.map_err(|source| LedgerError::ReadDir {
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
            let record = record::load(&entry.path())?;
            if record.job_id.as_str() != id {
                return Err(LedgerError::Mismatch {
                    path: entry.path(),
                    job_id: record.job_id.to_string(),
                });
            }
            records.insert(id.to_owned(), record);
        }
        Ok(Self {
            dir: dir.to_owned(),
            records: Mutex::new(records),
            #[cfg(any(test, feature = "test-util"))]
            fail_writes: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The directory the records live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Locks the ledger for a look-up and insert that must not interleave with another.
    pub fn lock(&self) -> Locked<'_> {
        Locked {
            ledger: self,
            records: self.records(),
        }
    }

    fn records(&self) -> MutexGuard<'_, HashMap<String, JobRecord>> {
        // The index is updated only after a successful write: a panic elsewhere while
        // holding the lock leaves it consistent.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The record of a job admitted before, if any.
    pub fn get(&self, job_id: &str) -> Option<JobRecord> {
        self.records().get(job_id).cloned()
    }

    /// How many jobs the ledger holds.
    pub fn len(&self) -> usize {
        self.records().len()
    }

    /// Whether the ledger holds no job.
    pub fn is_empty(&self) -> bool {
        self.records().is_empty()
    }

    /// Records how an admitted job ended.
    ///
    /// # Errors
    ///
    /// [`LedgerError::UnknownJob`] or a write failure.
    pub fn finish(&self, job_id: &JobId, ended: Ended) -> Result<(), LedgerError> {
        self.set(job_id, Standing::Finished(ended))
    }

    /// Records that an admitted job was refused before it started (it never ran).
    ///
    /// # Errors
    ///
    /// [`LedgerError::UnknownJob`] or a write failure.
    pub fn refuse(&self, job_id: &JobId, why: impl Into<String>) -> Result<(), LedgerError> {
        self.set(job_id, Standing::Refused { why: why.into() })
    }

    fn set(&self, job_id: &JobId, standing: Standing) -> Result<(), LedgerError> {
        let mut records = self.records();
        let mut record =
            records
                .get(job_id.as_str())
                .cloned()
                .ok_or_else(|| LedgerError::UnknownJob {
                    job_id: job_id.to_string(),
                })?;
        record.standing = standing;
        self.write(&record)?;
        records.insert(job_id.to_string(), record);
        Ok(())
    }

    /// Records still [`Standing::Admitted`], oldest first.
    pub fn unfinished(&self) -> Vec<JobRecord> {
        let mut v: Vec<JobRecord> = self
            .records()
            .values()
            .filter(|r| r.standing == Standing::Admitted)
            .cloned()
            .collect();
        v.sort_by(|a, b| {
            (a.accepted_at_ms, a.job_id.as_str()).cmp(&(b.accepted_at_ms, b.job_id.as_str()))
        });
        v
    }

    fn path_of(&self, job_id: &JobId) -> PathBuf {
        // JobId's character set has no '/' and cannot start with '.': a safe file name.
        self.dir.join(format!("{job_id}.json"))
    }

    fn write(&self, record: &JobRecord) -> Result<(), LedgerError> {
        let job_id = record.job_id.to_string();
        let path = self.path_of(&record.job_id);
        #[cfg(any(test, feature = "test-util"))]
        if self.fail_writes.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(LedgerError::Write {
                job_id,
                source: StateError::Write {
                    path,
                    source: io::Error::other("injected write failure"),
                },
            });
        }
        let bytes = record::to_bytes(record).map_err(|source| LedgerError::Write {
            job_id: job_id.clone(),
            source: StateError::Corrupt {
                path: path.clone(),
                source,
            },
        })?;
        state::write_atomic(&path, &bytes).map_err(|source| LedgerError::Write { job_id, source })
    }

    /// From now on every record write fails (or succeeds again), as on a full or read-only
    /// disk: the fault seam for tests of what the agent does when it cannot record a job.
    #[cfg(any(test, feature = "test-util"))]
    pub fn fail_writes(&self, fail: bool) {
        self.fail_writes
            .store(fail, std::sync::atomic::Ordering::SeqCst);
    }

    /// A record as admission inserts it: admitted now, nothing ended yet.
    pub fn admitted(job_id: JobId, digest: Sha256Hex, app: AppName, at_ms: i64) -> JobRecord {
        JobRecord {
            job_id,
            digest,
            app,
            accepted_at_ms: at_ms,
            standing: Standing::Admitted,
        }
    }
}
