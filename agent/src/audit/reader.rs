//! Reading the log: lines from a seq on, `audit verify`, and `audit tail [-f]`.
//!
//! Readers see complete lines only: bytes after the last `\n` of the last file are a write in
//! progress (or, after a crash, a torn tail the agent sets aside at its next start) and are not
//! part of the chain yet.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use gantry_proto::audit_chain::{ChainVerifier, VerifySummary};
use gantry_proto::keys::PublicKey;
use serde::Deserialize;

use super::AuditError;
use super::recover::{LogFile, list_files, open_read};

/// How often `tail -f` looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// Calls `f(line_number, line)` for every complete line of `path` (without `\n`); returns the
/// number of bytes those lines take and the length of an incomplete tail.
fn for_each_line(
    path: &Path,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
) -> Result<(u64, u64), AuditError> {
    let mut reader = BufReader::with_capacity(1 << 16, open_read(path)?);
    let mut buf = Vec::with_capacity(1024);
    let (mut consumed, mut number) = (0u64, 0u64);
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .map_err(|source| AuditError::Read {
                path: path.to_owned(),
                source,
            })?;
        if n == 0 {
            return Ok((consumed, 0));
        }
        if buf.last() != Some(&b'\n') {
            return Ok((consumed, n as u64));
        }
        consumed += n as u64;
        number += 1;
        f(number, &buf[..n - 1])?;
    }
}

#[derive(Deserialize)]
struct SeqOnly {
    seq: u64,
}

fn seq_of(path: &Path, number: u64, line: &[u8]) -> Result<u64, AuditError> {
    serde_json::from_slice::<SeqOnly>(line)
        .map(|s| s.seq)
        .map_err(|e| AuditError::Corrupt {
            path: path.to_owned(),
            line: number,
            reason: format!("no seq: {e}"),
        })
}

/// The files that may hold entries at or after `from_seq` (skipping files wholly before it).
fn files_from(dir: &Path, from_seq: u64) -> Result<Vec<LogFile>, AuditError> {
    let files = list_files(dir)?;
    let skip = files
        .windows(2)
        .take_while(|w| w[1].first_seq <= from_seq)
        .count();
    Ok(files.into_iter().skip(skip).collect())
}

/// Every complete line with `seq >= from_seq`, across rotated files, as `(seq, line)`.
///
/// # Errors
///
/// Listing or reading errors naming the path; [`AuditError::Corrupt`] for a line without a seq.
pub fn read_lines(dir: &Path, from_seq: u64) -> Result<Vec<(u64, String)>, AuditError> {
    let mut out = Vec::new();
    scan(dir, from_seq, |seq, line| {
        out.push((seq, String::from_utf8_lossy(line).into_owned()));
        Ok(())
    })?;
    Ok(out)
}

/// Calls `f(seq, line)` for every complete line with `seq >= from_seq`, across rotated files,
/// one at a time (the log is never held in memory whole).
///
/// # Errors
///
/// Listing or reading errors naming the path; [`AuditError::Corrupt`] for a line without a
/// seq; whatever `f` returns.
pub fn scan(
    dir: &Path,
    from_seq: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<(), AuditError>,
) -> Result<(), AuditError> {
    for file in files_from(dir, from_seq)? {
        for_each_line(&file.path, |number, line| {
            let seq = seq_of(&file.path, number, line)?;
            if seq >= from_seq {
                f(seq, line)?;
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// Verifies the whole log in `dir`: the hash chain from seq 1 across every file, each file's
/// name against its first seq, and, with `pubkey`, every checkpoint's signature.
///
/// # Errors
///
/// [`AuditError::Chain`] naming the file, the first bad seq and why; [`AuditError::Misnamed`];
/// [`AuditError::Corrupt`] for a file other than the last that ends mid-line;
/// [`AuditError::TornTail`] when the last one does; read errors.
pub fn verify_dir(dir: &Path, pubkey: Option<&PublicKey>) -> Result<VerifySummary, AuditError> {
    let files = list_files(dir)?;
    if files.is_empty() {
        return Err(AuditError::NoLog {
            dir: dir.to_owned(),
        });
    }
    let mut verifier = ChainVerifier::new(pubkey.copied());
    let count = files.len();
    for (i, file) in files.iter().enumerate() {
        let (_, incomplete) = for_each_line(&file.path, |number, line| {
            if number == 1
                && let Ok(found) = seq_of(&file.path, number, line)
                && found != file.first_seq
            {
                return Err(AuditError::Misnamed {
                    file: file.path.clone(),
                    expected: file.first_seq,
                    found,
                });
            }
            verifier
                .push_line(line)
                .map_err(|source| AuditError::Chain {
                    file: file.path.clone(),
                    source,
                })
        })?;
        if incomplete > 0 && i + 1 == count {
            return Err(AuditError::TornTail {
                file: file.path.clone(),
                seq: verifier.next_seq(),
                bytes: incomplete,
            });
        }
        if incomplete > 0 && i + 1 < count {
            return Err(AuditError::Corrupt {
                path: file.path.clone(),
                line: 0,
                reason: format!(
                    "ends with {incomplete} bytes of an incomplete line but is not the last file"
                ),
            });
        }
    }
    Ok(verifier.finish())
}

/// One line for people (`ts  #seq  event  key=value ...`), as `gantry audit tail` prints
/// it too: the format lives in `gantry-proto`.
pub use gantry_proto::audit_line::format_human;

/// Prints the last `last_n` lines of the log (across files), then with `follow` keeps printing
/// new lines, following rotation, until the process is killed. `json` prints the raw lines,
/// otherwise [`format_human`].
///
/// # Errors
///
/// Listing or reading errors naming the path; [`AuditError::Output`] when `out` fails (a closed
/// pipe, say).
pub fn tail(
    dir: &Path,
    last_n: usize,
    follow: bool,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), AuditError> {
    tail_until(dir, last_n, follow, json, out, FOLLOW_POLL, &|| false)
}

/// [`tail`] that stops following once `stop()` is true (checked at every poll).
pub(crate) fn tail_until(
    dir: &Path,
    last_n: usize,
    follow: bool,
    json: bool,
    out: &mut dyn Write,
    poll: Duration,
    stop: &dyn Fn() -> bool,
) -> Result<(), AuditError> {
    let files = list_files(dir)?;
    if files.is_empty() {
        return Err(AuditError::NoLog {
            dir: dir.to_owned(),
        });
    }
    // The last `last_n` complete lines, reading files from the newest back.
    let mut shown: VecDeque<String> = VecDeque::with_capacity(last_n.min(4096));
    for file in files.iter().rev() {
        if shown.len() >= last_n {
            break;
        }
        let mut lines = Vec::new();
        for_each_line(&file.path, |_, line| {
            lines.push(String::from_utf8_lossy(line).into_owned());
            Ok(())
        })?;
        for line in lines.into_iter().rev() {
            if shown.len() >= last_n {
                break;
            }
            shown.push_front(line);
        }
    }
    for line in &shown {
        emit(out, line, json)?;
    }
    out.flush()
        .map_err(|source| AuditError::Output { source })?;
    if !follow {
        return Ok(());
    }

    let mut current: Option<(PathBuf, u64)> = match files.last() {
        Some(f) => {
            let (consumed, _) = for_each_line(&f.path, |_, _| Ok(()))?;
            Some((f.path.clone(), consumed))
        }
        None => None,
    };
    let mut pending = Vec::new();
    while !stop() {
        thread::sleep(poll);
        let files = list_files(dir)?;
        let Some((path, offset)) = current.as_mut() else {
            current = files.first().map(|f| (f.path.clone(), 0));
            continue;
        };
        // Read what the current file has; if a newer file exists, the current one is complete
        // (the writer syncs a file before starting the next), so read it to the end and move on.
        let newer = files
            .iter()
            .position(|f| f.path == *path)
            .and_then(|i| files.get(i + 1));
        read_new(path, offset, &mut pending, out, json)?;
        if let Some(next) = newer {
            *path = next.path.clone();
            *offset = 0;
            pending.clear();
            read_new(path, offset, &mut pending, out, json)?;
        }
        out.flush()
            .map_err(|source| AuditError::Output { source })?;
    }
    Ok(())
}

/// Prints the complete lines written to `path` after `offset`, keeping an incomplete tail in
/// `pending` for the next poll.
fn read_new(
    path: &Path,
    offset: &mut u64,
    pending: &mut Vec<u8>,
    out: &mut dyn Write,
    json: bool,
) -> Result<(), AuditError> {
    let read_err = |source| AuditError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file: File = open_read(path)?;
    let len = file.metadata().map_err(read_err)?.len();
    if len < *offset {
        // Cut back (a failed write undone, or a torn tail set aside): read on from the new end.
        *offset = len;
        pending.clear();
        return Ok(());
    }
    file.seek(SeekFrom::Start(*offset)).map_err(read_err)?;
    let before = pending.len();
    let n = file
        .take(len - *offset)
        .read_to_end(pending)
        .map_err(read_err)?;
    *offset += n as u64;
    if pending.len() == before {
        return Ok(());
    }
    let complete = pending
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    for line in pending[..complete]
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
    {
        emit(out, &String::from_utf8_lossy(line), json)?;
    }
    pending.drain(..complete);
    Ok(())
}

fn emit(out: &mut dyn Write, line: &str, json: bool) -> Result<(), AuditError> {
    let r = if json {
        writeln!(out, "{line}")
    } else {
        writeln!(out, "{}", format_human(line))
    };
    r.map_err(|source| AuditError::Output { source })
}
