//! Opening the log directory: the files in order, the last good entry, and a torn tail set aside.
//!
//! A crash can leave the last write half done: bytes after the last `\n`, or a last line that is
//! not a valid entry. Those bytes are copied to `torn-<unix ms>.partial` (synced) before the log
//! file is cut back to its last good line (synced), so nothing is lost and nothing unchained
//! stays in the log. The writer then records `audit.recovered`.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use gantry_proto::audit_chain::{CHECKPOINT_EVENT, EntryHead, GENESIS_PREV, line_hash, parse_head};

use super::{AuditError, CheckpointLine};
use crate::state::sync_dir;

/// One log file: `audit-<first seq, 20 digits>.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogFile {
    /// The seq its name says its first entry has.
    pub(crate) first_seq: u64,
    /// Its path.
    pub(crate) path: PathBuf,
}

/// The name of the file whose first entry is `first_seq`.
pub(crate) fn file_name(first_seq: u64) -> String {
    format!("audit-{first_seq:020}.jsonl")
}

/// The first seq a log file name stands for, or `None` for other files.
pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("audit-")?.strip_suffix(".jsonl")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The log files of `dir`, in name (= seq) order.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<LogFile>, AuditError> {
    let err = |source| AuditError::ListDir {
        dir: dir.to_owned(),
        source,
    };
    let mut files = Vec::new();
    for dirent in fs::read_dir(dir).map_err(err)? {
        let dirent = dirent.map_err(err)?;
        let name = dirent.file_name();
        if let Some(first_seq) = name.to_str().and_then(parse_file_name) {
            files.push(LogFile {
                first_seq,
                path: dirent.path(),
            });
        }
    }
    files.sort_by_key(|f| f.first_seq);
    Ok(files)
}

/// Opens a log file for appending: O_APPEND | O_NOFOLLOW | O_CLOEXEC, mode 0600.
pub(crate) fn open_append(path: &Path, create_new: bool) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.append(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits());
    if create_new {
        o.create_new(true);
    }
    // std adds O_CLOEXEC to every open.
    o.open(path)
}

/// Opens a log file for reading, refusing a symlink.
pub(crate) fn open_read(path: &Path) -> Result<File, AuditError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(|source| AuditError::Open {
            path: path.to_owned(),
            source,
        })
}

/// Parses and checks a line's header: a JSON object with seq, ts, a 64-hex prev and event.
pub(crate) fn parse_header(line: &[u8]) -> Result<EntryHead, String> {
    parse_head(line).map_err(|kind| kind.to_string())
}

/// What the writer continues from.
#[derive(Debug)]
pub(crate) struct Opened {
    /// The last file, open for appending.
    pub(crate) file: File,
    /// Its path.
    pub(crate) path: PathBuf,
    /// Its length (all good lines).
    pub(crate) len: u64,
    /// The last good entry's seq (0 for an empty log).
    pub(crate) last_seq: u64,
    /// The last good entry's line hash ([`GENESIS_PREV`] for an empty log).
    pub(crate) prev: String,
    /// The latest checkpoint in the last file.
    pub(crate) latest: Option<CheckpointLine>,
    /// Whether the last entry is a checkpoint (nothing to seal).
    pub(crate) sealed: bool,
    /// A torn tail moved aside, for `audit.recovered`.
    pub(crate) recovered: Option<Recovered>,
}

/// A torn tail moved aside.
#[derive(Debug, Clone)]
pub(crate) struct Recovered {
    /// `<dir>/torn-<unix ms>.partial`.
    pub(crate) moved_to: PathBuf,
    /// Bytes moved.
    pub(crate) bytes: u64,
    /// The last good entry's seq.
    pub(crate) after_seq: u64,
}

/// Creates `dir` (0700) and its first file if needed, sets a torn tail aside, and finds where
/// the chain continues.
pub(crate) fn open_dir(dir: &Path) -> Result<Opened, AuditError> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AuditError::CreateDir {
            dir: dir.to_owned(),
            source,
        })?;
    let mut files = list_files(dir)?;
    let Some(last) = files.pop() else {
        let path = dir.join(file_name(1));
        let file = open_append(&path, true).map_err(|source| AuditError::Open {
            path: path.clone(),
            source,
        })?;
        sync_dir(dir).map_err(|source| AuditError::Open {
            path: path.clone(),
            source,
        })?;
        return Ok(Opened {
            file,
            path,
            len: 0,
            last_seq: 0,
            prev: GENESIS_PREV.to_owned(),
            latest: None,
            sealed: false,
            recovered: None,
        });
    };

    let scan = scan_file(&last.path)?;
    let mut recovered = None;
    if scan.good_len < scan.file_len {
        let after_seq = scan
            .last
            .as_ref()
            .map_or(last.first_seq.saturating_sub(1), |l| l.seq);
        let moved_to = set_aside(dir, &last.path, scan.good_len)?;
        recovered = Some(Recovered {
            moved_to,
            bytes: scan.file_len - scan.good_len,
            after_seq,
        });
    }
    let file = open_append(&last.path, false).map_err(|source| AuditError::Open {
        path: last.path.clone(),
        source,
    })?;

    let (last_seq, prev, sealed) = match &scan.last {
        Some(l) => (l.seq, l.hash.clone(), l.is_checkpoint),
        // The last file holds no entry: the chain continues from the file before it.
        None => match files.last() {
            Some(before) => {
                let l = last_of_earlier_file(&before.path)?;
                (l.seq, l.hash, l.is_checkpoint)
            }
            None => (0, GENESIS_PREV.to_owned(), false),
        },
    };
    if last_seq + 1 != last.first_seq && scan.last.is_none() {
        return Err(AuditError::Misnamed {
            file: last.path,
            expected: last.first_seq,
            found: last_seq + 1,
        });
    }
    Ok(Opened {
        file,
        path: last.path,
        len: scan.good_len,
        last_seq,
        prev,
        latest: scan.latest,
        sealed,
        recovered,
    })
}

/// The last entry of a file before the last one, which must end with a complete, valid line.
fn last_of_earlier_file(path: &Path) -> Result<LastLine, AuditError> {
    let scan = scan_file(path)?;
    match scan.last {
        Some(last) if scan.good_len == scan.file_len => Ok(last),
        _ => Err(AuditError::Corrupt {
            path: path.to_owned(),
            line: scan.lines + 1,
            reason: "a file before the last one must end with a complete entry".to_owned(),
        }),
    }
}

/// The last good line of a file.
#[derive(Debug)]
struct LastLine {
    seq: u64,
    hash: String,
    is_checkpoint: bool,
}

/// What a scan of one file found.
#[derive(Debug)]
struct Scan {
    file_len: u64,
    /// Length up to and including the last good line's `\n`.
    good_len: u64,
    /// Complete lines kept.
    lines: u64,
    last: Option<LastLine>,
    latest: Option<CheckpointLine>,
}

/// Reads a file line by line, checking each line's seq and prev against the line before it.
/// The tail after the last `\n`, and a last complete line that is not a valid entry following
/// its predecessor, are torn; any other bad line is corruption.
fn scan_file(path: &Path) -> Result<Scan, AuditError> {
    let read_err = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 16, open_read(path)?);
    let mut buf = Vec::with_capacity(1024);
    // The last good line's header.
    let mut good_hdr: Option<EntryHead> = None;
    // The last good line's hash, which the next line's prev must be.
    let mut good_hash = String::new();
    let mut good_len = 0u64;
    let mut good_lines = 0u64;
    let mut latest: Option<CheckpointLine> = None;
    // A bad complete line: torn only if nothing complete follows it.
    let mut bad: Option<(u64, String)> = None;
    let mut offset = 0u64;
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf).map_err(read_err)? as u64;
        if n == 0 || buf.last() != Some(&b'\n') {
            offset += n;
            break;
        }
        if let Some((line, reason)) = bad.take() {
            return Err(AuditError::Corrupt {
                path: path.to_owned(),
                line,
                reason,
            });
        }
        offset += n;
        let line = &buf[..buf.len() - 1];
        let checked = parse_header(line).and_then(|h| match &good_hdr {
            Some(p) if p.seq + 1 != h.seq => {
                Err(format!("seq {} does not follow seq {}", h.seq, p.seq))
            }
            _ => Ok(h),
        });
        // The chain, too (case H4: a line that survived a failed fdatasync while the one before
        // it did not shows here). A whole line that does not chain is never a torn write.
        if let (Ok(h), Some(p)) = (&checked, &good_hdr)
            && h.prev != good_hash
        {
            return Err(AuditError::Corrupt {
                path: path.to_owned(),
                line: good_lines + 1,
                reason: format!("seq {}: prev is not the hash of seq {}", h.seq, p.seq),
            });
        }
        match checked {
            Ok(h) => {
                good_hash = line_hash(line);
                if h.event == CHECKPOINT_EVENT {
                    let line = String::from_utf8_lossy(line).into_owned();
                    latest = Some(CheckpointLine { seq: h.seq, line });
                }
                good_hdr = Some(h);
                good_len = offset;
                good_lines += 1;
            }
            Err(reason) => bad = Some((good_lines + 1, reason)),
        }
    }
    let last = good_hdr.map(|h| LastLine {
        seq: h.seq,
        hash: good_hash,
        is_checkpoint: h.event == CHECKPOINT_EVENT,
    });
    Ok(Scan {
        file_len: offset,
        good_len,
        lines: good_lines,
        last,
        latest,
    })
}

/// Copies `[good_len..]` of `path` to a new `torn-<unix ms>.partial` (synced), then cuts the log
/// file back to `good_len` (synced).
fn set_aside(dir: &Path, path: &Path, good_len: u64) -> Result<PathBuf, AuditError> {
    let err = |source| AuditError::Recover {
        path: path.to_owned(),
        source,
    };
    let mut log = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)
        .map_err(err)?;
    log.seek(SeekFrom::Start(good_len)).map_err(err)?;
    let mut torn = Vec::new();
    log.read_to_end(&mut torn).map_err(err)?;

    let mut ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let (mut out, moved_to) = loop {
        let candidate = dir.join(format!("torn-{ms}.partial"));
        match open_append(&candidate, true) {
            Ok(f) => break (f, candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => ms += 1,
            Err(e) => return Err(err(e)),
        }
    };
    out.write_all(&torn).map_err(err)?;
    out.sync_all().map_err(err)?;
    sync_dir(dir).map_err(err)?;
    // Only now that the bytes are safe elsewhere is the log cut back.
    log.set_len(good_len).map_err(err)?;
    log.sync_all().map_err(err)?;
    Ok(moved_to)
}
