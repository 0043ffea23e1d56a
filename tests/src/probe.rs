//! Observing the system the way a user would: polling with a deadline, HTTP requests to
//! deployed instances, the audit log's entries, and free ports.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::ops::RangeInclusive;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::env::TestEnv;

/// Polls `cond` every 50 ms until it returns true, failing with `what` after `deadline`.
///
/// # Errors
///
/// When the deadline passes first.
pub fn wait_until(
    deadline: Duration,
    what: &str,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let end = Instant::now() + deadline;
    loop {
        if cond() {
            return Ok(());
        }
        if Instant::now() >= end {
            bail!("timed out after {deadline:?} waiting until {what}");
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// `GET path` on `127.0.0.1:port`; returns the status code and the body.
///
/// # Errors
///
/// When the connection fails, times out (2 s) or the answer is not HTTP.
pub fn http_get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("cannot connect to {addr}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .with_context(|| format!("cannot read the answer of {addr}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("answer has no header end")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// The body of `GET /` when it answers 200, else `None`.
pub fn banner(port: u16) -> Option<String> {
    match http_get(port, "/") {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// Every entry of the agent's audit log, in file order (files `audit-*.jsonl` sorted by name).
///
/// # Errors
///
/// When a file cannot be read or a complete line is not JSON. An unterminated last line (a
/// torn write) is skipped.
pub fn audit_lines(env: &TestEnv) -> anyhow::Result<Vec<serde_json::Value>> {
    audit_lines_in(&env.data_dir.join("audit"))
}

/// [`audit_lines`] for any audit directory.
///
/// # Errors
///
/// As [`audit_lines`].
pub fn audit_lines_in(dir: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for file in audit_files(dir)? {
        let text =
            fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
        let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
        for (i, line) in complete.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
            out.push(serde_json::from_str(line).with_context(|| {
                format!("{} line {} is not JSON: {line}", file.display(), i + 1)
            })?);
        }
    }
    Ok(out)
}

/// The `audit-*.jsonl` files of `dir`, sorted (their names carry the first seq, zero-padded).
///
/// # Errors
///
/// When `dir` cannot be listed.
pub fn audit_files(dir: &Path) -> anyhow::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// The audit entries whose `event` is `event`.
///
/// # Errors
///
/// As [`audit_lines`].
pub fn audit_events(env: &TestEnv, event: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(audit_lines(env)?
        .into_iter()
        .filter(|e| e["event"] == event)
        .collect())
}

/// Seconds since the Unix epoch, now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `secs` (Unix, UTC) as RFC 3339 `YYYY-MM-DDTHH:MM:SSZ`, for `--not-before`.
pub fn rfc3339(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Ranges handed out in this process, so parallel tests never share one.
static TAKEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// `count` consecutive ports on 127.0.0.1 that bind now and were not handed out before.
///
/// Searched below the kernel's ephemeral range (32768+), where the agents' own `:0`
/// listeners land, starting at an offset derived from the pid so that concurrent test
/// processes start apart.
///
/// # Errors
///
/// When no such range is found.
pub fn free_port_range(count: u16) -> anyhow::Result<RangeInclusive<u16>> {
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000;
    let span = HIGH - LOW;
    let seed = u16::try_from(std::process::id() % u32::from(span)).unwrap_or(0);
    let mut taken = TAKEN.lock().unwrap_or_else(PoisonError::into_inner);
    let mut offset = seed;
    for _ in 0..(span / count) {
        let start = LOW + offset;
        let end = start + count - 1;
        offset = (offset + count) % (span - count);
        if (start..=end).any(|p| taken.contains(&p)) {
            continue;
        }
        let bound: Vec<_> = (start..=end)
            .map_while(|p| TcpListener::bind((Ipv4Addr::LOCALHOST, p)).ok())
            .collect();
        if bound.len() == usize::from(count) {
            taken.extend(start..=end);
            return Ok(start..=end);
        }
    }
    bail!("no {count} consecutive free ports between {LOW} and {HIGH}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(951_827_696), "2000-02-29T12:34:56Z");
    }

    #[test]
    fn port_ranges_do_not_overlap() {
        let a = free_port_range(4).expect("range a");
        let b = free_port_range(4).expect("range b");
        assert!(
            a.end() < b.start() || b.end() < a.start(),
            "{a:?} overlaps {b:?}"
        );
    }

    #[test]
    fn wait_until_reports_what_it_waited_for() {
        let err = wait_until(Duration::from_millis(60), "pigs fly", || false).unwrap_err();
        assert!(err.to_string().contains("pigs fly"), "{err}");
        let mut n = 0;
        wait_until(Duration::from_secs(5), "n reaches 3", || {
            n += 1;
            n >= 3
        })
        .expect("reached");
    }
}
