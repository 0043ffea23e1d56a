//! One ledger record and its file format.
//!
//! The file keeps the shape every earlier agent wrote, `{"job_id", "digest", "app",
//! "accepted_at_ms", "outcome", "reason"}` with `outcome` `null` or a string, so old records
//! load and an older agent (after a downgrade) still reads new ones. The strings map to
//! [`Standing`] here and nowhere else: `null` is admitted, `"rejected"` refused, an
//! [`Outcome`] name finished.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{LedgerError, Standing};
use crate::job::{AppName, JobId, Sha256Hex};
use crate::progress::{Ended, Outcome};
use crate::state::{self, StateError};

/// The `outcome` strings a record file may hold.
pub(super) const OUTCOMES: [&str; 5] =
    ["succeeded", "failed", "rolled_back", "interrupted", REFUSED];

/// The `outcome` string of a job refused after admission.
const REFUSED: &str = "rejected";

/// What the agent remembers about an admitted job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// The job id.
    pub job_id: JobId,
    /// SHA-256 of the exact job bytes admitted.
    pub digest: Sha256Hex,
    /// The app it acts on.
    pub app: AppName,
    /// When it was admitted, Unix milliseconds.
    pub accepted_at_ms: i64,
    /// Where it stands.
    pub standing: Standing,
}

/// The record as stored.
#[derive(Serialize, Deserialize)]
struct RecordFile {
    job_id: JobId,
    digest: Sha256Hex,
    app: AppName,
    accepted_at_ms: i64,
    outcome: Option<String>,
    #[serde(default)]
    reason: String,
}

pub(super) fn to_bytes(record: &JobRecord) -> Result<Vec<u8>, serde_json::Error> {
    let (outcome, reason) = match &record.standing {
        Standing::Admitted => (None, String::new()),
        Standing::Refused { why } => (Some(REFUSED.to_owned()), why.clone()),
        Standing::Finished(ended) => (
            Some(ended.outcome.as_str().to_owned()),
            ended.reason.clone(),
        ),
    };
    serde_json::to_vec_pretty(&RecordFile {
        job_id: record.job_id.clone(),
        digest: record.digest.clone(),
        app: record.app.clone(),
        accepted_at_ms: record.accepted_at_ms,
        outcome,
        reason,
    })
}

/// Reads the record file at `path`.
pub(super) fn load(path: &Path) -> Result<JobRecord, LedgerError> {
    let file: RecordFile = state::read_json(path)
        .map_err(|source| LedgerError::Load {
            path: path.to_owned(),
            source,
        })?
        .ok_or_else(|| LedgerError::Load {
            path: path.to_owned(),
            source: StateError::Read {
                path: path.to_owned(),
                source: io::Error::from(io::ErrorKind::NotFound),
            },
        })?;
    let standing = match file.outcome.as_deref() {
        None => Standing::Admitted,
        Some(REFUSED) => Standing::Refused { why: file.reason },
        Some(name) => match Outcome::parse(name) {
            Some(outcome) => Standing::Finished(Ended {
                outcome,
                reason: file.reason,
            }),
            None => {
                return Err(LedgerError::BadOutcome {
                    path: path.to_owned(),
                    outcome: name.to_owned(),
                });
            }
        },
    };
    Ok(JobRecord {
        job_id: file.job_id,
        digest: file.digest,
        app: file.app,
        accepted_at_ms: file.accepted_at_ms,
        standing,
    })
}
