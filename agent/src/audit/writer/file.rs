//! The writer's side of the disk: the [`OpenLog`] seam every write, sync and cut-back goes
//! through (where tests inject failures), the batch commit and rotation.

#[cfg(test)]
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;

use super::Writer;
use crate::audit::recover;
use crate::state::sync_dir;

/// An injected I/O failure (tests only): the errno to fail with, at the given step.
#[cfg(test)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// The batch write fails before writing anything.
    Write(i32),
    /// The batch write writes half the batch, then fails.
    ShortWrite(i32),
    /// fdatasync fails.
    Sync(i32),
    /// Cutting the file back fails too.
    Truncate(i32),
}

/// The open log file. Every step of the write path that can fail goes through it, so the test
/// faults live here and nowhere in the writer's logic.
pub(super) struct OpenLog {
    file: File,
    /// Failures to inject, in order; each step fails only when the next one is its own.
    #[cfg(test)]
    faults: VecDeque<Fault>,
}

impl OpenLog {
    pub(super) fn new(file: File) -> Self {
        Self {
            file,
            #[cfg(test)]
            faults: VecDeque::new(),
        }
    }

    /// Switches to a new file (rotation); faults still queued apply to it.
    fn replace(&mut self, file: File) {
        self.file = file;
    }

    /// Queues failures for the next steps.
    #[cfg(test)]
    pub(super) fn inject(&mut self, faults: Vec<Fault>) {
        self.faults.extend(faults);
    }

    /// Pops the next fault when `pick` says it belongs to this step, giving its errno.
    #[cfg(test)]
    fn fault(&mut self, pick: impl Fn(Fault) -> Option<i32>) -> Option<i32> {
        let errno = pick(*self.faults.front()?)?;
        self.faults.pop_front();
        Some(errno)
    }

    /// Why the open file is no longer the log at `path`, if it is not: removed (nothing is at
    /// the path) or replaced (the path names another inode; an `mv` over it, or a delete and
    /// re-create).
    /// Writes to such a file would be durable on a file nobody will read, so the writer must
    /// fail closed instead (case H9).
    fn detached_from(&self, path: &Path) -> Option<String> {
        let open = match self.file.metadata() {
            Ok(m) => m,
            Err(e) => return Some(format!("cannot stat the open file: {e}")),
        };
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.dev() != open.dev() || now.ino() != open.ino() => {
                Some("was replaced by another file".to_owned())
            }
            Ok(_) => None,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Some("was removed".to_owned()),
            Err(e) => Some(format!("cannot be checked: {e}")),
        }
    }

    /// Writes the whole batch.
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        #[cfg(test)]
        if let Some(errno) = self.fault(|f| match f {
            Fault::Write(e) => Some(e),
            _ => None,
        }) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        #[cfg(test)]
        if let Some(errno) = self.fault(|f| match f {
            Fault::ShortWrite(e) => Some(e),
            _ => None,
        }) {
            self.file.write_all(&buf[..buf.len() / 2])?;
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.file.write_all(buf)
    }

    /// fdatasync.
    fn sync_data(&mut self) -> io::Result<()> {
        #[cfg(test)]
        if let Some(errno) = self.fault(|f| match f {
            Fault::Sync(e) => Some(e),
            _ => None,
        }) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.file.sync_data()
    }

    /// Truncates to `len`, the durable length, without syncing: after a failed fdatasync the
    /// file gets no second one.
    fn discard(&mut self, len: u64) -> io::Result<()> {
        #[cfg(test)]
        if let Some(errno) = self.fault(|f| match f {
            Fault::Truncate(e) => Some(e),
            _ => None,
        }) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.file.set_len(len)
    }

    /// Truncates to `len`, the durable length, then syncs as best it can.
    fn cut_back(&mut self, len: u64) -> io::Result<()> {
        #[cfg(test)]
        if let Some(errno) = self.fault(|f| match f {
            Fault::Truncate(e) => Some(e),
            _ => None,
        }) {
            return Err(io::Error::from_raw_os_error(errno));
        }
        self.file.set_len(len)?;
        // Best effort: if this fails too, a torn tail is set aside at the next open.
        let _ = self.file.sync_data();
        Ok(())
    }
}

impl Writer {
    /// Writes the batch and syncs once. Err carries the cause and whether the failure is
    /// permanent (the file could not be cut back, or its fdatasync failed).
    pub(super) fn commit(&mut self) -> Result<(), (String, bool)> {
        if self.len > 0 && self.len >= self.opts.max_file_bytes {
            self.rotate().map_err(|e| (e, false))?;
        }
        // Permanent: lines written from here on would land in a file the log no longer has,
        // and a chain that skips them would not verify. Only an operator can restore the file.
        if let Some(why) = self.file.detached_from(&self.path) {
            return Err((
                format!(
                    "the audit log file {} {why} while the agent was running; restore it (or move the log aside) and restart the agent",
                    self.path.display()
                ),
                true,
            ));
        }
        if let Err(e) = self.file.write_all(&self.buf) {
            return Err(self.cut_back(format!("cannot write {}: {e}", self.path.display())));
        }
        let started = std::time::Instant::now();
        if let Err(e) = self.file.sync_data() {
            return Err((self.sync_failed(&e), true));
        }
        crate::metrics::global().audit_committed(self.lines.len() as u64, started.elapsed());
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// fdatasync failed (case H4). The kernel may have dropped the batch's dirty pages and
    /// marked them clean ("fsyncgate"), so a later fdatasync on this file could succeed without
    /// them ever reaching the disk: there is no retry. The batch is cut back without a sync (the
    /// file then shows only what was durable), and the log fails for good and says so to
    /// [`crate::audit::AuditLog::failed_for_good`]: the agent stops, and its next start scans
    /// and checks the chain of the last file again before anything is appended.
    fn sync_failed(&mut self, e: &io::Error) -> String {
        let errno = e.raw_os_error().map_or_else(
            || e.to_string(),
            |n| format!("{}", nix::errno::Errno::from_raw(n)),
        );
        let mut cause = format!(
            "cannot sync {}: {errno}; the kernel may have dropped the unsynced data, so the agent writes nothing more to this file and stops (restart it: the log's tail is checked again at start)",
            self.path.display()
        );
        if let Err(t) = self.file.discard(self.len) {
            cause = format!("{cause}; cannot cut it back to {} bytes: {t}", self.len);
        }
        self.shared.fatal.send_replace(Some(cause.clone()));
        cause
    }

    /// Cuts the file back to its durable length so no torn line stays.
    fn cut_back(&mut self, cause: String) -> (String, bool) {
        match self.file.cut_back(self.len) {
            Ok(()) => (cause, false),
            Err(e) => (
                format!("{cause}; cannot cut it back to {} bytes: {e}", self.len),
                true,
            ),
        }
    }

    /// Starts a new file named by the batch's first seq.
    fn rotate(&mut self) -> Result<(), String> {
        let dir = self.opts.dir.clone();
        let path = dir.join(recover::file_name(self.chain.seq + 1));
        let err = |e: io::Error| format!("cannot create {}: {e}", path.display());
        let file = match recover::open_append(&path, true) {
            Ok(f) => f,
            // Left by an earlier attempt that failed after creating it.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let f = recover::open_append(&path, false).map_err(err)?;
                if f.metadata().map_err(err)?.len() != 0 {
                    return Err(format!(
                        "cannot rotate to {}: it exists and is not empty",
                        path.display()
                    ));
                }
                f
            }
            Err(e) => return Err(err(e)),
        };
        sync_dir(&dir).map_err(err)?;
        self.file.replace(file);
        self.path = path;
        self.len = 0;
        Ok(())
    }
}
