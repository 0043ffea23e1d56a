//! The controller as a witness: the newest signed audit checkpoint received from each agent,
//! kept in `$GANTRY_STATE_DIR/witness/<agent_id>.json` (default `$XDG_STATE_HOME/gantry`, then
//! `~/.local/state/gantry`). `audit verify` fails when the agent's log no longer extends it.

use std::io::Write;
use std::path::{Path, PathBuf};

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
    /// The file could not be read or written.
    #[error("cannot {op} witness file {}", path.display())]
    Io {
        /// "read" or "write".
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

/// The witness file of `agent_id` under `state_dir`.
///
/// # Errors
///
/// [`WitnessError::BadAgentId`] for ids that are not a safe file name.
pub fn path_for(state_dir: &Path, agent_id: &str) -> Result<PathBuf, WitnessError> {
    let ok = !agent_id.is_empty()
        && agent_id.len() <= 253
        && !agent_id.starts_with('.')
        && agent_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !ok {
        return Err(WitnessError::BadAgentId(agent_id.to_owned()));
    }
    Ok(state_dir.join("witness").join(format!("{agent_id}.json")))
}

/// The witnessed checkpoint of `agent_id`, if any.
///
/// # Errors
///
/// [`WitnessError`] for unreadable or corrupt files.
pub fn load(state_dir: &Path, agent_id: &str) -> Result<Option<Witnessed>, WitnessError> {
    let path = path_for(state_dir, agent_id)?;
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

/// Keeps `seq`/`line` as the witnessed checkpoint of `agent_id` if it is newer than the stored
/// one. Returns whether it was stored.
///
/// # Errors
///
/// [`WitnessError`] when the file cannot be read or written.
pub fn record(
    state_dir: &Path,
    agent_id: &str,
    seq: u64,
    line: &str,
    now_ms: i64,
) -> Result<bool, WitnessError> {
    if load(state_dir, agent_id)?.is_some_and(|old| old.seq >= seq) {
        return Ok(false);
    }
    let path = path_for(state_dir, agent_id)?;
    let w = Witnessed {
        agent_id: agent_id.to_owned(),
        seq,
        line: line.to_owned(),
        received_ms: now_ms,
    };
    let io = |source| WitnessError::Io {
        op: "write",
        path: path.clone(),
        source,
    };
    let dir = path.parent().unwrap_or(state_dir);
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    let bytes = serde_json::to_vec_pretty(&w).map_err(|e| io(std::io::Error::other(e)))?;
    tmp.write_all(&bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(&path).map_err(|e| io(e.error))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), "a1").unwrap(), None);
        assert!(record(dir.path(), "a1", 5, "five", 1).unwrap());
        assert!(!record(dir.path(), "a1", 3, "three", 2).unwrap());
        assert!(record(dir.path(), "a1", 9, "nine", 3).unwrap());
        let w = load(dir.path(), "a1").unwrap().unwrap();
        assert_eq!((w.seq, w.line.as_str()), (9, "nine"));
        assert!(dir.path().join("witness/a1.json").exists());
    }

    #[test]
    fn refuses_path_like_agent_ids() {
        for bad in ["", "../x", "a/b", ".hidden"] {
            assert!(path_for(Path::new("/s"), bad).is_err(), "{bad}");
        }
    }
}
