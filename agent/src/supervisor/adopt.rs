//! `/proc/<pid>/stat`: process identity (pid plus start time) for adoption and monitoring.

use std::fs;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use super::SupervisorError;

/// How often a process that is not our child is checked for exit.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// The fields of `/proc/<pid>/stat` the supervisor uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcStat {
    /// Field 3: `R`, `S`, `Z`, ...
    pub(super) state: char,
    /// Field 5: process group id.
    pub(super) pgrp: i32,
    /// Field 22: start time in clock ticks after boot.
    pub(super) start_time: u64,
}

impl ProcStat {
    /// A zombie (or dead) process has exited; only its parent has not reaped it yet.
    pub(super) fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Parses the text of `/proc/<pid>/stat`. `comm` (field 2) may hold spaces and parentheses,
/// so the fields are read after the last `)`.
pub(super) fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    // After ')': field 3 (state) is index 0, so field N is index N - 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut state = fields.first()?.chars();
    let state_char = state.next()?;
    if state.next().is_some() {
        return None;
    }
    Some(ProcStat {
        state: state_char,
        pgrp: fields.get(5 - 3)?.parse().ok()?,
        start_time: fields.get(22 - 3)?.parse().ok()?,
    })
}

/// Reads `/proc/<pid>/stat`; `Ok(None)` when no such process exists.
pub(super) fn read_stat(pid: u32) -> Result<Option<ProcStat>, SupervisorError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    match fs::read_to_string(&path) {
        Ok(text) => parse_stat(&text)
            .map(Some)
            .ok_or_else(|| SupervisorError::ProcStat {
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, "unexpected format"),
            }),
        // ESRCH: the process went away between open and read.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(3) => Ok(None),
        Err(source) => Err(SupervisorError::ProcStat { path, source }),
    }
}

/// Is the process `pid` that started at `start_time` still alive (and not a zombie)?
/// A different start time means the pid was reused: the original is gone.
pub(super) fn is_alive(pid: u32, start_time: u64) -> bool {
    match read_stat(pid) {
        Ok(Some(stat)) => stat.start_time == start_time && !stat.is_dead(),
        Ok(None) => false,
        // Unreadable /proc: assume alive rather than restart a second copy.
        Err(_) => true,
    }
}

/// Does any live (non-zombie) process belong to process group `pgid`?
pub(super) fn group_alive(pgid: i32) -> bool {
    let Ok(entries) = fs::read_dir("/proc") else {
        return true;
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return false;
        };
        matches!(read_stat(pid), Ok(Some(s)) if s.pgrp == pgid && !s.is_dead())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_with_spaces_and_parens_is_skipped() {
        let text = "4242 (we (ird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000 10 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                state: 'S',
                pgrp: 4242,
                start_time: 987654
            })
        );
    }

    #[test]
    fn truncated_stat_is_rejected() {
        assert_eq!(parse_stat("1 (init) S 0 1"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_process_is_alive_and_wrong_start_time_is_not() {
        let me = std::process::id();
        let stat = read_stat(me).unwrap().unwrap();
        assert!(is_alive(me, stat.start_time));
        assert!(!is_alive(me, stat.start_time + 1));
        assert_eq!(read_stat(u32::MAX - 1).unwrap(), None);
    }
}
