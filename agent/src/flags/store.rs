//! The flag set in force per app, persisted under `<data_dir>/flags/<app>.json` so that it is
//! served again after a restart without any controller, and so that versions only grow across
//! restarts.
//!
//! One JSON file per app, replaced atomically and durably ([`write_atomic`]): the signed bytes
//! (base64, so `gantry flags show` can re-verify them), the version, who signed, when each flag
//! was first admitted, the digests of every version admitted before (replays are refused), the
//! highest version ever admitted (a restored older set does not lower it), which set was
//! in force when each release was last replaced, and the canary splits a promoted canary left
//! in force ([`Split`]).
//!
//! Beside it, `<data_dir>/flags/<app>/<version>.pb` keeps the signed bytes of the sets a
//! rollback may restore: the one in force and those recorded for a release ([`archive`]).

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

/// Releases whose flag set is remembered for a rollback; the oldest sets go first beyond it.
pub const RELEASES_KEPT: usize = 64;

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
    /// Absent in files of earlier agents: the version is the highest.
    #[serde(default)]
    floor: u64,
    #[serde(default)]
    releases: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    splits: BTreeMap<String, Split>,
}

/// A canary's split of one flag: its canary variant served to `percent` percent of users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    /// Percent of users (0-100).
    pub percent: u32,
    /// The canary job that set it.
    pub job_id: String,
    /// The release that job deployed.
    pub release: String,
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
    /// The highest version ever admitted; a new set must be above it. Above `version` after a
    /// rollback restored an older set.
    pub floor: u64,
    /// Per release (SemVer text), the set version in force when it was last replaced.
    pub releases: BTreeMap<String, u64>,
    /// Per flag, the split a promoted canary left in force (applied while the flag allows it).
    pub splits: BTreeMap<String, Split>,
}

impl InForce {
    /// The version a new set must be above.
    pub fn floor(&self) -> u64 {
        self.floor.max(self.version)
    }
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
        floor: record.floor,
        releases: record.releases,
        splits: record.splits,
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
        floor: f.floor(),
        releases: f.releases.clone(),
        splits: f.splits.clone(),
    };
    let path = path_of(data_dir, app);
    let bytes = serde_json::to_vec_pretty(&record).map_err(|e| StoreError::Corrupt {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    write_atomic(&path, &bytes)?;
    Ok(())
}

/// The archive of an app's signed sets: `<data_dir>/flags/<app>/<version>.pb`.
pub mod archive {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use gantry_policy::job::AppName;
    use gantry_proto::v1;
    use prost::Message;

    use super::{StoreError, dir};
    use crate::state::{StateError, write_atomic};

    fn app_dir(data_dir: &Path, app: &AppName) -> PathBuf {
        dir(data_dir).join(app.as_str())
    }

    fn path_of(data_dir: &Path, app: &AppName, version: u64) -> PathBuf {
        app_dir(data_dir, app).join(format!("{version}.pb"))
    }

    /// Keeps the signed bytes of `version`, durably.
    ///
    /// # Errors
    ///
    /// [`StoreError::State`] when the directory or file cannot be written.
    pub fn put(
        data_dir: &Path,
        app: &AppName,
        version: u64,
        signed: &v1::SignedFlags,
    ) -> Result<(), StoreError> {
        let d = app_dir(data_dir, app);
        std::fs::create_dir_all(&d).map_err(|source| StateError::Write {
            path: d.clone(),
            source,
        })?;
        write_atomic(&path_of(data_dir, app, version), &signed.encode_to_vec())?;
        Ok(())
    }

    /// The signed set `version`; `None` when it is not kept.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the file cannot be read or does not decode.
    pub fn get(
        data_dir: &Path,
        app: &AppName,
        version: u64,
    ) -> Result<Option<v1::SignedFlags>, StoreError> {
        let path = path_of(data_dir, app, version);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::State(StateError::Read { path, source })),
        };
        v1::SignedFlags::decode(bytes.as_slice())
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path,
                detail: e.to_string(),
            })
    }

    /// Removes the kept sets whose version is not in `keep`. Returns how many went; a file
    /// that cannot be removed is left for the next time (only logged).
    pub fn prune(data_dir: &Path, app: &AppName, keep: &BTreeSet<u64>) -> usize {
        let Ok(entries) = std::fs::read_dir(app_dir(data_dir, app)) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(version) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".pb"))
                .and_then(|v| v.parse::<u64>().ok())
            else {
                continue;
            };
            if keep.contains(&version) {
                continue;
            }
            match std::fs::remove_file(entry.path()) {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!(
                    "cannot remove the archived flag set {}: {e}",
                    entry.path().display()
                ),
            }
        }
        removed
    }
}
