//! The flag set in force per app, persisted under `<data_dir>/flags/<app>.json` so that it is
//! served again after a restart without any controller, and so that versions only grow across
//! restarts.
//!
//! One JSON file per app, replaced atomically and durably ([`write_atomic`]): the signed bytes
//! (base64, so `gantry flags show` can re-verify them), the version, who signed, when each flag
//! was first admitted, and the digests of every version admitted before (replays are refused).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use gantry_flags::FlagSet;
use gantry_policy::job::AppName;
use gantry_proto::v1;
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::state::{StateError, write_atomic};

/// Versions of a set admitted before, kept to refuse their replay.
const HISTORY_KEPT: usize = 1000;

/// When a flag first appeared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Age {
    /// Unix seconds.
    pub created_at: i64,
    /// The set version that added it.
    pub created_version: u64,
}

/// A version admitted before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Its version.
    pub version: u64,
    /// SHA-256 of its signed bytes.
    pub digest: String,
}

/// The file's content.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    version: u64,
    digest: String,
    /// `SignedFlags`, protobuf, base64.
    signed: String,
    signers: Vec<String>,
    admitted_at: i64,
    ages: BTreeMap<String, Age>,
    history: Vec<Seen>,
}

/// An app's set in force.
#[derive(Debug, Clone)]
pub struct InForce {
    /// Its version.
    pub version: u64,
    /// SHA-256 of its signed bytes.
    pub digest: String,
    /// The signed document as received.
    pub signed: v1::SignedFlags,
    /// Its definition, parsed.
    pub set: FlagSet,
    /// Names of the keys whose signatures counted.
    pub signers: Vec<String>,
    /// When it was admitted (Unix seconds).
    pub admitted_at: i64,
    /// When each flag was first admitted.
    pub ages: BTreeMap<String, Age>,
    /// Earlier versions, oldest first.
    pub history: Vec<Seen>,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the file.
    #[error(transparent)]
    State(#[from] StateError),
    /// A file that does not hold what this module writes.
    #[error("flag store {path} is corrupt: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

/// The directory of the flag files.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("flags")
}

fn path_of(data_dir: &Path, app: &AppName) -> PathBuf {
    dir(data_dir).join(format!("{app}.json"))
}

/// Loads an app's set in force; `None` when it never had one.
///
/// # Errors
///
/// [`StoreError`] when the file cannot be read or does not decode.
pub fn load(data_dir: &Path, app: &AppName) -> Result<Option<InForce>, StoreError> {
    let path = path_of(data_dir, app);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StoreError::State(StateError::Read {
                path: path.clone(),
                source,
            }));
        }
    };
    let corrupt = |detail: String| StoreError::Corrupt {
        path: path.clone(),
        detail,
    };
    let record: Record = serde_json::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    let raw = STANDARD
        .decode(&record.signed)
        .map_err(|e| corrupt(e.to_string()))?;
    let signed = v1::SignedFlags::decode(raw.as_slice()).map_err(|e| corrupt(e.to_string()))?;
    let doc = v1::FlagSet::decode(signed.flags.as_slice()).map_err(|e| corrupt(e.to_string()))?;
    let set = FlagSet::parse(&doc.definition_json).map_err(|e| corrupt(e.to_string()))?;
    Ok(Some(InForce {
        version: record.version,
        digest: record.digest,
        signed,
        set,
        signers: record.signers,
        admitted_at: record.admitted_at,
        ages: record.ages,
        history: record.history,
    }))
}

/// Writes an app's set in force, atomically and durably.
///
/// # Errors
///
/// [`StoreError::State`] when the directory or file cannot be written.
pub fn save(data_dir: &Path, app: &AppName, f: &InForce) -> Result<(), StoreError> {
    let d = dir(data_dir);
    std::fs::create_dir_all(&d).map_err(|source| StateError::Write {
        path: d.clone(),
        source,
    })?;
    let mut history = f.history.clone();
    if history.len() > HISTORY_KEPT {
        history.drain(..history.len() - HISTORY_KEPT);
    }
    let record = Record {
        version: f.version,
        digest: f.digest.clone(),
        signed: STANDARD.encode(f.signed.encode_to_vec()),
        signers: f.signers.clone(),
        admitted_at: f.admitted_at,
        ages: f.ages.clone(),
        history,
    };
    let path = path_of(data_dir, app);
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    write_atomic(&path, &bytes)?;
    Ok(())
}
