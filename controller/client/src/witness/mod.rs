//! The controller as a witness: the newest signed audit checkpoint received from each agent,
//! kept per agent id *and* checkpoint key in
//! `$GANTRY_STATE_DIR/witness/<agent_id>/<key_id>.json` (default `$XDG_STATE_HOME/gantry`,
//! then `~/.local/state/gantry`). Two agents that share an id (every quickstart agent is
//! `quickstart-agent`) sign with different keys, so neither's witness is taken for the other's.
//!
//! The witness only moves forward along one chain: a new checkpoint replaces the stored one
//! only when [`extend::check_extends`] holds (it verifies under the agent's key, and the lines
//! from the witnessed checkpoint to it chain); anything else is a [`WitnessAlarm`] and the old
//! witness is kept. `audit verify` fails when the agent's log no longer extends it.

mod extend;
#[cfg(test)]
mod tests;

pub use extend::{WitnessAlarm, check_checkpoint, check_extends};

use std::io::Write;
use std::path::{Path, PathBuf};

use gantry_proto::keys::KeyId;
use serde::{Deserialize, Serialize};

use crate::fault::Fault;

/// Why the witness store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// No state directory could be determined.
    #[error("no state directory: set GANTRY_STATE_DIR, XDG_STATE_HOME or HOME")]
    NoStateDir,
    /// The agent id cannot be a file name.
    #[error("agent id {0:?} cannot name a witness file")]
    BadAgentId(String),
    /// The checkpoint's key id is not 64 lowercase hex digits.
    #[error("key id {0:?} cannot name a witness file")]
    BadKeyId(String),
    /// The file could not be read or written.
    #[error("cannot {op} witness file {}", path.display())]
    Io {
        /// "read", "write" or "list".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a witness record.
    #[error("witness file {} is corrupt", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
}

impl WitnessError {
    /// Whose side the failure is on: the store is the caller's.
    pub fn fault(&self) -> Fault {
        match self {
            WitnessError::NoStateDir
            | WitnessError::BadAgentId(_)
            | WitnessError::BadKeyId(_)
            | WitnessError::Io { .. }
            | WitnessError::Corrupt { .. } => Fault::Input,
        }
    }
}

/// One witnessed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Witnessed {
    /// The agent (as its certificate named it).
    pub agent_id: String,
    /// The key that signed the checkpoint (files of earlier versions lack it: taken from the
    /// line when read).
    #[serde(default)]
    pub key_id: String,
    /// The checkpoint entry's seq.
    pub seq: u64,
    /// The checkpoint entry's exact line.
    pub line: String,
    /// When it was received, Unix ms.
    pub received_ms: i64,
}

/// The default state directory, from the environment (`GANTRY_STATE_DIR`, then
/// `$XDG_STATE_HOME/gantry`, then `~/.local/state/gantry`).
///
/// # Errors
///
/// [`WitnessError::NoStateDir`] when none of the variables is set.
pub fn state_dir() -> Result<PathBuf, WitnessError> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("GANTRY_STATE_DIR") {
        return Ok(d);
    }
    if let Some(d) = var("XDG_STATE_HOME") {
        return Ok(d.join("gantry"));
    }
    var("HOME")
        .map(|h| h.join(".local/state/gantry"))
        .ok_or(WitnessError::NoStateDir)
}

fn check_agent_id(agent_id: &str) -> Result<(), WitnessError> {
    let ok = !agent_id.is_empty()
        && agent_id.len() <= 253
        && !agent_id.starts_with('.')
        && agent_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(WitnessError::BadAgentId(agent_id.to_owned()))
    }
}

/// The witness file of `agent_id`'s checkpoints signed by `key_id`, under `state_dir`.
///
/// # Errors
///
/// [`WitnessError::BadAgentId`] for ids that are not a safe file name.
pub fn path_for(state_dir: &Path, agent_id: &str, key_id: &KeyId) -> Result<PathBuf, WitnessError> {
    check_agent_id(agent_id)?;
    Ok(state_dir
        .join("witness")
        .join(agent_id)
        .join(format!("{key_id}.json")))
}

/// The file earlier versions kept, keyed by agent id alone: still read, for its key only.
fn legacy_path(state_dir: &Path, agent_id: &str) -> Result<PathBuf, WitnessError> {
    check_agent_id(agent_id)?;
    Ok(state_dir.join("witness").join(format!("{agent_id}.json")))
}

fn read(path: PathBuf) -> Result<Option<Witnessed>, WitnessError> {
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(WitnessError::Io {
                op: "read",
                path,
                source,
            });
        }
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| WitnessError::Corrupt { path, source })
}

/// The witnessed checkpoint of `agent_id` under `key_id`, if any (a file of an earlier version,
/// keyed by agent id alone, counts when its checkpoint names `key_id`).
///
/// # Errors
///
/// [`WitnessError`] for unreadable or corrupt files.
pub fn load(
    state_dir: &Path,
    agent_id: &str,
    key_id: &KeyId,
) -> Result<Option<Witnessed>, WitnessError> {
    if let Some(w) = read(path_for(state_dir, agent_id, key_id)?)? {
        return Ok(Some(w));
    }
    let legacy = read(legacy_path(state_dir, agent_id)?)?;
    Ok(legacy
        .map(|mut w| {
            w.key_id = extend::line_key_id(&w.line).unwrap_or_default();
            w
        })
        .filter(|w| w.key_id == key_id.as_str()))
}

/// The other keys whose checkpoints this controller witnessed for an agent named `agent_id`
/// (another agent with the same id, or the agent's key changed), sorted.
///
/// # Errors
///
/// [`WitnessError`] when the directory cannot be listed.
pub fn other_keys(
    state_dir: &Path,
    agent_id: &str,
    key_id: &KeyId,
) -> Result<Vec<String>, WitnessError> {
    let dir = state_dir.join("witness").join(agent_id);
    check_agent_id(agent_id)?;
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(WitnessError::Io {
                op: "list",
                path: dir,
                source,
            });
        }
    };
    let mut keys: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .filter(|k| k.parse::<KeyId>().is_ok() && *k != key_id.as_str())
                .map(str::to_owned)
        })
        .collect();
    keys.sort();
    Ok(keys)
}

/// Stores `w` as the witnessed checkpoint of its agent and key (write-temp, fsync, rename).
/// Call it only for a checkpoint [`check_extends`] accepted.
///
/// # Errors
///
/// [`WitnessError`] when the file cannot be written.
pub fn store(state_dir: &Path, w: &Witnessed) -> Result<(), WitnessError> {
    let key_id: KeyId = w
        .key_id
        .parse()
        .map_err(|_| WitnessError::BadKeyId(w.key_id.clone()))?;
    let path = path_for(state_dir, &w.agent_id, &key_id)?;
    let io = |source| WitnessError::Io {
        op: "write",
        path: path.clone(),
        source,
    };
    let dir = path.parent().unwrap_or(state_dir);
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    let bytes = serde_json::to_vec_pretty(w).map_err(|e| io(std::io::Error::other(e)))?;
    tmp.write_all(&bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(&path).map_err(|e| io(e.error))?;
    // The rename is durable only once the directory is synced.
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io)?;
    Ok(())
}
