//! Tampering with copies of an audit log, the way an intruder or a crash would.

use std::fs;
use std::path::Path;

use anyhow::{Context, bail};

use crate::probe::audit_files;

/// One way to damage an audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tamper {
    /// Change the `event` value of the entry with this seq (still valid JSON).
    EditField(u64),
    /// Delete the entry with this seq.
    DeleteLine(u64),
    /// Swap the entry with this seq and the next one.
    SwapWithNext(u64),
    /// Cut the last line in half, dropping its newline (a torn write).
    TruncateMidLine,
}

/// Copies every file of the audit dir `src` into `dst` (created), applies `tamper`, and returns
/// the seq a verifier must name: the altered entry, the expected seq at a gap or reorder, or
/// the torn one.
///
/// # Errors
///
/// When the files cannot be copied, or the log has no entry to tamper with.
pub fn tampered_copy(src: &Path, dst: &Path, tamper: Tamper) -> anyhow::Result<u64> {
    fs::create_dir_all(dst)?;
    for entry in fs::read_dir(src)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            fs::copy(entry.path(), dst.join(entry.file_name()))?;
        }
    }
    let files = audit_files(dst)?;
    let target = match tamper {
        Tamper::TruncateMidLine => files.last().cloned().context("no audit file")?,
        Tamper::EditField(k) | Tamper::DeleteLine(k) | Tamper::SwapWithNext(k) => files
            .iter()
            .find(|f| read_lines(f).is_ok_and(|ls| ls.iter().any(|l| seq_of(l) == Some(k))))
            .cloned()
            .with_context(|| format!("no entry with seq {k} in {}", dst.display()))?,
    };
    let mut lines = read_lines(&target)?;
    let index = |k: u64| {
        lines
            .iter()
            .position(|l| seq_of(l) == Some(k))
            .with_context(|| format!("no entry with seq {k}"))
    };
    let named = match tamper {
        Tamper::EditField(k) => {
            let i = index(k)?;
            let value: serde_json::Value = serde_json::from_str(&lines[i])?;
            let event = value["event"].as_str().context("entry has no event")?;
            let quoted = format!("\"{event}\"");
            if !lines[i].contains(&quoted) {
                bail!("cannot find {quoted} in {}", lines[i]);
            }
            lines[i] = lines[i].replacen(&quoted, &format!("\"{event}.tampered\""), 1);
            k
        }
        Tamper::DeleteLine(k) => {
            lines.remove(index(k)?);
            k
        }
        Tamper::SwapWithNext(k) => {
            let i = index(k)?;
            if i + 1 >= lines.len() {
                bail!("seq {k} is the last entry of its file");
            }
            lines.swap(i, i + 1);
            k
        }
        Tamper::TruncateMidLine => {
            let last = lines.pop().context("empty audit file")?;
            let seq = seq_of(&last).context("last line has no seq")?;
            let mut text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
            text.push_str(&last[..last.len() / 2]);
            fs::write(&target, text)?;
            return Ok(seq);
        }
    };
    fs::write(
        &target,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )?;
    Ok(named)
}

fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text.lines().map(str::to_owned).collect())
}

fn seq_of(line: &str) -> Option<u64> {
    serde_json::from_str::<serde_json::Value>(line).ok()?["seq"].as_u64()
}

#[cfg(test)]
mod tests {
    use gantry_proto::audit_chain::{GENESIS_PREV, line_hash, verify_lines};

    use super::*;

    /// A valid 8-entry chain in `dir/audit-…1.jsonl`.
    fn chain(dir: &Path) {
        let mut prev = GENESIS_PREV.to_owned();
        let mut text = String::new();
        for seq in 1..=8 {
            let line = format!(
                r#"{{"seq":{seq},"ts":"2025-01-01T00:00:0{seq}Z","prev":"{prev}","event":"job.step","n":{seq}}}"#
            );
            prev = line_hash(line.as_bytes());
            text.push_str(&line);
            text.push('\n');
        }
        fs::write(dir.join("audit-00000000000000000001.jsonl"), text).expect("write chain");
    }

    fn verify(dir: &Path) -> Result<(), u64> {
        let file = &audit_files(dir).expect("files")[0];
        let bytes = fs::read(file).expect("read");
        let lines: Vec<&[u8]> = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        verify_lines(lines, None).map(|_| ()).map_err(|e| e.seq)
    }

    #[test]
    fn each_tamper_is_found_at_the_seq_it_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir_all(&src).expect("mkdir");
        chain(&src);
        assert_eq!(verify(&src), Ok(()));
        for (i, t) in [
            Tamper::EditField(3),
            Tamper::DeleteLine(3),
            Tamper::SwapWithNext(3),
            Tamper::TruncateMidLine,
        ]
        .into_iter()
        .enumerate()
        {
            let dst = tmp.path().join(format!("t{i}"));
            let named = tampered_copy(&src, &dst, t).expect("tamper");
            assert_eq!(verify(&dst), Err(named), "{t:?}");
        }
    }
}
