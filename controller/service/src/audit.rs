//! The service's own audit log: every control action (start, pause, resume, abort, takeover,
//! ring passed or failed, host failed), by which operator certificate or replica, in the
//! agent's format (docs/audit-log.md): append-only JSON Lines, each `prev` the SHA-256 of the
//! line before, checkpoints signed with the service's orchestrator key. So `gantry-agent audit
//! verify`, `docs/verify-audit.py` and [`gantry_proto::audit_chain`] check it unchanged.
//!
//! One file, `<data_dir>/audit/audit-00000000000000000001.jsonl`; every entry is written and
//! `fdatasync`ed before the action it records goes on. At open the chain is verified and
//! resumed; a torn last line (a crash mid-write) is set aside in `torn-<unix ms>.partial` and
//! recorded as `audit.recovered`, as the agent does.
//!
//! Each replica keeps its own log in its own data dir (replicas on one PostgreSQL do not share
//! a file).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use gantry_proto::audit_chain::{
    CHECKPOINT_EVENT, ChainError, ChainVerifier, GENESIS_PREV, line_hash, sign_checkpoint,
};
use gantry_proto::keys::SigningKey;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

/// The log file's name in `<data_dir>/audit/`.
pub const FILE_NAME: &str = "audit-00000000000000000001.jsonl";

/// Why the audit log cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file cannot be read, written or synced.
    #[error("service audit log {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The existing log does not verify: the service refuses to append to a broken chain.
    #[error("service audit log {} does not verify: {source}", path.display())]
    Broken {
        /// The file.
        path: PathBuf,
        /// The first bad entry.
        #[source]
        source: ChainError,
    },
}

struct Chain {
    file: File,
    seq: u64,
    prev: String,
    /// The newest checkpoint line written, with its seq.
    latest_checkpoint: Option<(u64, String)>,
}

/// The open log.
pub struct AuditLog {
    path: PathBuf,
    key: SigningKey,
    chain: Mutex<Chain>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, verifies it, and resumes its chain.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn open(dir: &Path, key: SigningKey) -> Result<Self, AuditError> {
        let path = dir.join(FILE_NAME);
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io)?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let torn = bytes.len() > complete;
        let mut moved_to = None;
        if torn {
            let aside = dir.join(format!("torn-{}.partial", gantry_client::clock::now_ms()));
            std::fs::write(&aside, &bytes[complete..]).map_err(io)?;
            file.set_len(u64::try_from(complete).unwrap_or(0))
                .map_err(io)?;
            file.sync_all().map_err(io)?;
            file.seek(SeekFrom::End(0)).map_err(io)?;
            moved_to = Some(aside);
        }
        let mut verifier = ChainVerifier::new(Some(key.public_key()));
        let mut prev = GENESIS_PREV.to_owned();
        let mut latest_checkpoint = None;
        for line in bytes[..complete]
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
        {
            verifier
                .push_line(line)
                .map_err(|source| AuditError::Broken {
                    path: path.clone(),
                    source,
                })?;
            prev = line_hash(line);
            if serde_json::from_slice::<Map<String, Value>>(line)
                .ok()
                .and_then(|m| {
                    m.get("event")
                        .and_then(Value::as_str)
                        .map(|e| e == CHECKPOINT_EVENT)
                })
                .unwrap_or(false)
            {
                latest_checkpoint = Some((
                    verifier.next_seq() - 1,
                    String::from_utf8_lossy(line).into_owned(),
                ));
            }
        }
        let log = Self {
            key,
            chain: Mutex::new(Chain {
                file,
                seq: verifier.next_seq() - 1,
                prev,
                latest_checkpoint,
            }),
            path: path.clone(),
        };
        if let Some(aside) = moved_to {
            // The same fields as the agent's entry (docs/audit-log.md).
            let after_seq = log.chain.lock().map_or(0, |c| c.seq);
            log.append(
                "audit.recovered",
                &[
                    ("moved_to", Value::from(aside.display().to_string())),
                    ("bytes", Value::from(bytes.len() - complete)),
                    ("after_seq", Value::from(after_seq)),
                ],
            )?;
        }
        Ok(log)
    }

    /// The log file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry and makes it durable before returning its seq.
    ///
    /// # Errors
    /// [`AuditError::Io`]: the caller must not go on with the action it records.
    pub fn append(&self, event: &str, fields: &[(&str, Value)]) -> Result<u64, AuditError> {
        let mut chain = self
            .chain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.write(&mut chain, event, fields)
    }

    /// Appends a checkpoint signed with the service's key; returns its seq and line.
    ///
    /// # Errors
    /// [`AuditError::Io`].
    pub fn checkpoint(&self) -> Result<(u64, String), AuditError> {
        let mut chain = self
            .chain
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let sig = sign_checkpoint(&self.key, &chain.prev);
        let fields = [
            ("key_id", Value::String(self.key.key_id().to_string())),
            ("sig", Value::String(sig)),
        ];
        let seq = self.write(&mut chain, CHECKPOINT_EVENT, &fields)?;
        let line = chain
            .latest_checkpoint
            .as_ref()
            .map(|c| c.1.clone())
            .unwrap_or_default();
        Ok((seq, line))
    }

    fn write(
        &self,
        chain: &mut Chain,
        event: &str,
        fields: &[(&str, Value)],
    ) -> Result<u64, AuditError> {
        let seq = chain.seq + 1;
        let mut line = Vec::with_capacity(256);
        {
            let mut ser = serde_json::Serializer::new(&mut line);
            let map = (|| {
                let mut map = ser.serialize_map(None)?;
                map.serialize_entry("seq", &seq)?;
                map.serialize_entry("ts", &Ts(SystemTime::now()))?;
                map.serialize_entry("prev", &chain.prev)?;
                map.serialize_entry("event", event)?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            })();
            map.map_err(|e| AuditError::Io {
                path: self.path.clone(),
                source: std::io::Error::other(e),
            })?;
        }
        let hash = line_hash(&line);
        let text = String::from_utf8_lossy(&line).into_owned();
        line.push(b'\n');
        let io = |source| AuditError::Io {
            path: self.path.clone(),
            source,
        };
        let len = chain.file.metadata().map_err(io)?.len();
        if let Err(e) = chain
            .file
            .write_all(&line)
            .and_then(|()| chain.file.sync_data())
        {
            // Cut back to the last durable entry so the chain stays whole; if even that fails
            // the next open sets the torn bytes aside.
            if let Err(cut) = chain.file.set_len(len) {
                tracing::error!(error = %cut, "cannot cut the audit log back after a failed write");
            }
            return Err(io(e));
        }
        chain.seq = seq;
        chain.prev = hash;
        if event == CHECKPOINT_EVENT {
            chain.latest_checkpoint = Some((seq, text));
        }
        Ok(seq)
    }
}

/// RFC 3339 UTC with milliseconds, as the agent writes it.
struct Ts(SystemTime);

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_rfc3339_millis(self.0))
    }
}

/// Reads the log's lines (without `\n`), for `fleet audit tail` and tests.
///
/// # Errors
/// The read error.
pub fn read_lines(dir: &Path) -> std::io::Result<Vec<String>> {
    let text = std::fs::read_to_string(dir.join(FILE_NAME))?;
    Ok(text.lines().map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::audit_chain::verify_lines;

    #[test]
    fn entries_chain_in_the_agents_format_and_survive_a_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let pem = key.to_pkcs8_pem();
        let log = AuditLog::open(dir.path(), key).unwrap();
        log.append(
            "rollout.started",
            &[("rollout", "p1".into()), ("by", "ops-1".into())],
        )
        .unwrap();
        let (seq, line) = log.checkpoint().unwrap();
        assert_eq!(seq, 2);
        assert!(line.contains("\"event\":\"checkpoint\""), "{line}");
        drop(log);
        // A crash mid-write leaves half a line.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        f.write_all(br#"{"seq":3,"ts":"2026"#).unwrap();
        let key = SigningKey::from_pkcs8_pem(&pem).unwrap();
        let public = key.public_key();
        let log = AuditLog::open(dir.path(), key).unwrap();
        assert_eq!(log.append("ring.passed", &[("ring", 0.into())]).unwrap(), 4);
        let lines = read_lines(dir.path()).unwrap();
        let recovered: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        assert_eq!(recovered["event"], "audit.recovered", "{}", lines[2]);
        assert_eq!(recovered["bytes"], 19);
        assert_eq!(recovered["after_seq"], 2);
        assert!(recovered["moved_to"].as_str().unwrap().contains("torn-"));
        assert!(lines[0].starts_with(r#"{"seq":1,"ts":""#), "{}", lines[0]);
        let summary = verify_lines(lines.iter().map(String::as_bytes), Some(&public)).unwrap();
        assert_eq!(summary.entries, 4);
        assert!(std::fs::read_dir(dir.path()).unwrap().any(|e| {
            e.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("torn-")
        }));
    }

    #[test]
    fn a_tampered_log_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let pem = key.to_pkcs8_pem();
        let log = AuditLog::open(dir.path(), key).unwrap();
        log.append("rollout.started", &[("by", "ops-1".into())])
            .unwrap();
        log.append("rollout.paused", &[("by", "ops-1".into())])
            .unwrap();
        drop(log);
        let path = dir.path().join(FILE_NAME);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("ops-1", "ops-2");
        std::fs::write(&path, text).unwrap();
        let e = AuditLog::open(dir.path(), SigningKey::from_pkcs8_pem(&pem).unwrap()).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
    }
}
