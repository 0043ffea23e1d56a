//! The service's own audit log: every control action (start, pause, resume, abort, takeover,
//! ring passed or failed, host failed), by which operator certificate or replica, in the
//! agent's format (docs/audit-log.md): append-only JSON Lines, each `prev` the SHA-256 of the
//! line before, checkpoints signed with the service's orchestrator key. So `gantry-agent audit
//! verify`, `docs/verify-audit.py` and [`gantry_proto::audit_chain`] check it unchanged.
//!
//! Files `<data_dir>/audit/audit-<first seq, 20 digits>.jsonl`, a new one started between
//! entries once the current one would pass [`AuditLog::rotate_at`]'s size (default
//! [`DEFAULT_MAX_FILE_BYTES`]), the chain continuing across them as the agent's does; every
//! entry is written and `fdatasync`ed before the action it records goes on. At open the chain
//! is verified across every file and resumed; a torn last line (a crash mid-write) is set aside
//! in `torn-<unix ms>.partial` and recorded as `audit.recovered`, as the agent does.
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

/// The first log file's name in `<data_dir>/audit/`.
pub const FILE_NAME: &str = "audit-00000000000000000001.jsonl";

/// The size past which a new file is started, unless configured: 64 MiB, as the agent's.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The name of the file whose first entry is `seq`.
fn file_name(seq: u64) -> String {
    format!("audit-{seq:020}.jsonl")
}

/// The log's files in `dir`, in seq order (their names' order).
fn log_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.len() == FILE_NAME.len()
                    && n.starts_with("audit-")
                    && n.ends_with(".jsonl")
                    && n[6..26].bytes().all(|b| b.is_ascii_digit())
            })
        })
        .collect();
    files.sort();
    Ok(files)
}

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
    /// The file appended to.
    path: PathBuf,
    seq: u64,
    prev: String,
    /// The newest checkpoint line written, with its seq.
    latest_checkpoint: Option<(u64, String)>,
}

/// The open log.
pub struct AuditLog {
    dir: PathBuf,
    key: SigningKey,
    max_file_bytes: u64,
    chain: Mutex<Chain>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (or creates) the log in `dir`, verifies it, and resumes its chain.
    ///
    /// # Errors
    /// [`AuditError`].
    pub fn open(dir: &Path, key: SigningKey) -> Result<Self, AuditError> {
        let dir_io = |source| AuditError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(dir_io)?;
        let mut files = log_files(dir).map_err(dir_io)?;
        if files.is_empty() {
            files.push(dir.join(FILE_NAME));
        }
        let mut verifier = ChainVerifier::new(Some(key.public_key()));
        let mut prev = GENESIS_PREV.to_owned();
        let mut latest_checkpoint = None;
        let last = files.len() - 1;
        let mut file = None;
        let mut moved_to = None;
        let mut torn_bytes = 0;
        for (n, path) in files.iter().enumerate() {
            let io = |source| AuditError::Io {
                path: path.clone(),
                source,
            };
            let mut f = OpenOptions::new()
                .create(n == last)
                .truncate(false)
                .read(true)
                .append(true)
                .open(path)
                .map_err(io)?;
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).map_err(io)?;
            let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            if bytes.len() > complete {
                if n != last {
                    return Err(AuditError::Broken {
                        path: path.clone(),
                        // Only the file being appended to can end in a torn line.
                        source: ChainError {
                            seq: verifier.next_seq(),
                            kind: gantry_proto::audit_chain::ChainErrorKind::NotJson,
                        },
                    });
                }
                let aside = dir.join(format!("torn-{}.partial", gantry_client::clock::now_ms()));
                std::fs::write(&aside, &bytes[complete..]).map_err(io)?;
                f.set_len(u64::try_from(complete).unwrap_or(0))
                    .map_err(io)?;
                f.sync_all().map_err(io)?;
                f.seek(SeekFrom::End(0)).map_err(io)?;
                torn_bytes = bytes.len() - complete;
                moved_to = Some(aside);
            }
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
                if is_checkpoint(line) {
                    latest_checkpoint = Some((
                        verifier.next_seq() - 1,
                        String::from_utf8_lossy(line).into_owned(),
                    ));
                }
            }
            if n == last {
                file = Some(f);
            }
        }
        let path = files[last].clone();
        let file = file.ok_or_else(|| AuditError::Io {
            path: path.clone(),
            source: std::io::Error::other("the last log file was not opened"),
        })?;
        let log = Self {
            dir: dir.to_owned(),
            key,
            max_file_bytes: DEFAULT_MAX_FILE_BYTES,
            chain: Mutex::new(Chain {
                file,
                path,
                seq: verifier.next_seq() - 1,
                prev,
                latest_checkpoint,
            }),
        };
        if let Some(aside) = moved_to {
            // The same fields as the agent's entry (docs/audit-log.md).
            let after_seq = log.chain.lock().map_or(0, |c| c.seq);
            log.append(
                "audit.recovered",
                &[
                    ("moved_to", Value::from(aside.display().to_string())),
                    ("bytes", Value::from(torn_bytes)),
                    ("after_seq", Value::from(after_seq)),
                ],
            )?;
        }
        Ok(log)
    }

    /// Starts a new file once the current one would pass `bytes` (at least one entry per
    /// file).
    #[must_use]
    pub fn rotate_at(mut self, bytes: u64) -> Self {
        self.max_file_bytes = bytes;
        self
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
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
                path: chain.path.clone(),
                source: std::io::Error::other(e),
            })?;
        }
        let hash = line_hash(&line);
        let text = String::from_utf8_lossy(&line).into_owned();
        line.push(b'\n');
        let len = chain
            .file
            .metadata()
            .map_err(|source| AuditError::Io {
                path: chain.path.clone(),
                source,
            })?
            .len();
        let len = if len > 0 && len + line.len() as u64 > self.max_file_bytes {
            self.start_file(chain, seq)?;
            0
        } else {
            len
        };
        let path = chain.path.clone();
        let io = |source| AuditError::Io { path, source };
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

impl AuditLog {
    /// Starts the file whose first entry is `seq`, and makes its name durable.
    fn start_file(&self, chain: &mut Chain, seq: u64) -> Result<(), AuditError> {
        let path = self.dir.join(file_name(seq));
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .create_new(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|source| AuditError::Io {
                path: self.dir.clone(),
                source,
            })?;
        chain.file = file;
        chain.path = path;
        Ok(())
    }
}

/// Whether `line` is a checkpoint entry.
fn is_checkpoint(line: &[u8]) -> bool {
    serde_json::from_slice::<Map<String, Value>>(line)
        .ok()
        .and_then(|m| {
            m.get("event")
                .and_then(Value::as_str)
                .map(|e| e == CHECKPOINT_EVENT)
        })
        .unwrap_or(false)
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
    let mut lines = Vec::new();
    for path in log_files(dir)? {
        let text = std::fs::read_to_string(path)?;
        lines.extend(text.lines().map(str::to_owned));
    }
    Ok(lines)
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
    fn files_rotate_between_entries_named_by_first_seq_and_the_chain_continues_across_them() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let pem = key.to_pkcs8_pem();
        let public = key.public_key();
        let log = AuditLog::open(dir.path(), key).unwrap().rotate_at(300);
        for i in 0..6 {
            log.append(
                "host.dispatched",
                &[("agent_id", format!("web-{i}").into())],
            )
            .unwrap();
        }
        drop(log);
        let names: Vec<String> = log_files(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names.len() >= 3, "{names:?}");
        assert_eq!(names[0], FILE_NAME);
        for name in &names {
            let text = std::fs::read_to_string(dir.path().join(name)).unwrap();
            let first: serde_json::Value =
                serde_json::from_str(text.lines().next().unwrap()).unwrap();
            assert_eq!(*name, file_name(first["seq"].as_u64().unwrap()));
            assert!(
                text.len() <= 300 || text.lines().count() == 1,
                "{name}: {text}"
            );
            assert!(text.ends_with('\n'));
        }
        // Reopened: the chain goes on in the last file, and verifies across all of them.
        let key = SigningKey::from_pkcs8_pem(&pem).unwrap();
        let log = AuditLog::open(dir.path(), key).unwrap().rotate_at(300);
        assert_eq!(log.append("ring.passed", &[]).unwrap(), 7);
        let lines = read_lines(dir.path()).unwrap();
        assert_eq!(lines.len(), 7);
        let summary = verify_lines(lines.iter().map(String::as_bytes), Some(&public)).unwrap();
        assert_eq!(summary.entries, 7);
        for (i, l) in lines.iter().enumerate() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["seq"], i + 1);
        }
    }

    #[test]
    fn a_torn_line_in_a_file_other_than_the_last_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::generate().unwrap();
        let pem = key.to_pkcs8_pem();
        let log = AuditLog::open(dir.path(), key).unwrap().rotate_at(200);
        for _ in 0..4 {
            log.append("host.dispatched", &[]).unwrap();
        }
        drop(log);
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE_NAME))
            .unwrap();
        f.write_all(br#"{"seq":9"#).unwrap();
        let err = AuditLog::open(dir.path(), SigningKey::from_pkcs8_pem(&pem).unwrap())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(FILE_NAME) && err.contains("does not verify"),
            "{err}"
        );
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
