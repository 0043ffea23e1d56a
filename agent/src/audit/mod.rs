//! The audit log: append-only, hash-chained JSON Lines with signed checkpoints.
//!
//! # Design
//!
//! * One dedicated writer thread owns the open file (`writer.rs`). [`AuditLog::append`] hands it
//!   an [`Entry`] and waits; the thread drains everything queued, writes the whole batch with one
//!   `write`, makes it durable with ONE `fdatasync`, and only then answers every caller (group
//!   commit). An entry is thus on disk before the action it records is acknowledged or begun.
//! * Each line is `{"seq":N,"ts":..,"prev":..,"event":..,<fields>}`; `prev` is the SHA-256 of
//!   the previous line's exact bytes ([`gantry_proto::audit_chain::line_hash`]).
//! * Every `checkpoint_every` entries, every `checkpoint_interval`, on [`AuditLog::checkpoint`]
//!   and on [`AuditLog::close`], the writer appends a `checkpoint` entry signed with the agent's
//!   key over its own `prev` (`checkpoint.rs`).
//! * Files are `<dir>/audit-<first seq, 20 digits>.jsonl`; a file past `max_file_bytes` is
//!   followed by a new one named by its first seq, and the chain continues.
//! * At open, a torn last line (a crash mid-write) is moved to `<dir>/torn-<unix ms>.partial`
//!   and recorded as `audit.recovered`, never dropped or patched into the chain (`recover.rs`).
//! * Fail closed: when a write fails, the file is cut back to its last durable length,
//!   the whole batch gets [`AuditError::Unavailable`], and [`AuditLog::health`] reports why until
//!   a later write succeeds.
//! * A failed fdatasync is fatal (case H4): the kernel may have dropped the dirty pages and
//!   marked them clean, so no fdatasync is ever tried again on that file. The batch is cut back,
//!   every later append fails with [`AuditError::Unavailable`] naming the file and the errno, and
//!   [`AuditLog::failed_for_good`] resolves so the agent stops; at the next start the last file's
//!   chain is scanned again (`recover.rs`) before anything is appended.
//! * Held entries: [`AuditLog::append_held`] is for what records a step already taken (a
//!   rollback step, a job's final entry), which must not be lost when the disk is full. When the
//!   log cannot be written, such an entry is queued in memory (at most [`MAX_HELD`]); while any
//!   entry is held or the log is failed, the writer retries every [`PROBE_EVERY`]. The first
//!   successful batch starts with `audit.resumed` (the cause, since when, how many entries follow
//!   and how many were dropped because the queue was full), then the held entries in the order
//!   they were handed in, each with `held_at`, then the batch's own entries: the chain stays one
//!   gap-free sequence. So after space returns the agent accepts jobs again without any action.
//! * `reader.rs` holds what operators run: `audit verify`, `audit tail [-f]`.
//!
//! # Limitations
//!
//! * Readers (verify, tail, [`read_lines`]) see complete lines only: an incomplete last line is a
//!   write in progress or a torn tail the next open sets aside, not part of the chain.
//! * A crash after a torn tail was set aside but before `audit.recovered` is durable leaves the
//!   `torn-*.partial` file unrecorded (the chain itself stays intact).
//! * `tail -f` reads lines as soon as they are written, a moment before their fdatasync; a line
//!   whose write then fails is cut back from the file but may already have been printed.

mod checkpoint;
mod reader;
mod recover;
#[cfg(test)]
mod tests;
mod writer;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use gantry_proto::audit_chain::ChainError;
use gantry_proto::keys::SigningKey;
use serde_json::Value;
use tokio::sync::{broadcast, oneshot, watch};

pub use reader::{format_human, read_lines, scan, tail, verify_dir};

/// How many lines a slow [`AuditLog::subscribe`] receiver may fall behind before it lags.
const SUBSCRIBE_CAPACITY: usize = 1024;

/// Event names the writer alone may use.
const RESERVED_EVENTS: [&str; 2] = ["checkpoint", "audit.resumed"];

/// At most this many entries are held in memory while the log cannot be written; beyond it
/// [`AuditLog::append_held`] fails and the loss is counted in `audit.resumed`.
pub const MAX_HELD: usize = 4096;

/// While failed (and not permanently), the writer retries this often on its own, so a log whose
/// disk has space again recovers without waiting for new work.
pub const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Field names of the line header, which an entry's fields may not reuse.
const HEADER_FIELDS: [&str; 4] = ["seq", "ts", "prev", "event"];

/// Where the log lives and how it is sealed and rotated (the config's `[audit]` table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// The log directory, `<data_dir>/audit`; created with mode 0700.
    pub dir: PathBuf,
    /// A checkpoint after this many entries; 0 disables the count trigger.
    pub checkpoint_every: u64,
    /// A checkpoint this often when something was appended since the last; zero disables it.
    pub checkpoint_interval: Duration,
    /// A file at or past this size is followed by a new file.
    pub max_file_bytes: u64,
    /// [`AuditLog::health`] fails when the log's filesystem has less free space than this.
    pub min_free_bytes: u64,
}

/// One audit entry before it is written: an event name (`noun.verb`) and its fields, which are
/// written in the order they were added.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    event: String,
    fields: Vec<(String, Value)>,
}

impl Entry {
    /// A new entry for `event`, e.g. `Entry::new("job.accepted")`.
    pub fn new(event: impl Into<String>) -> Self {
        Self {
            event: event.into(),
            fields: Vec::new(),
        }
    }

    /// Adds the field `key`; a second value for the same key replaces the first in place.
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        let key = key.into();
        let value = value.into();
        match self.fields.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.fields.push((key, value)),
        }
        self
    }

    /// The event name.
    pub fn event(&self) -> &str {
        &self.event
    }

    /// The fields, in the order they will be written.
    pub fn fields(&self) -> &[(String, Value)] {
        &self.fields
    }

    /// Refuses entries that would make an ambiguous or forged line.
    fn validate(&self) -> Result<(), AuditError> {
        let invalid = |reason: String| AuditError::InvalidEntry {
            event: self.event.clone(),
            reason,
        };
        if self.event.is_empty() {
            return Err(invalid("the event name is empty".to_owned()));
        }
        if RESERVED_EVENTS.contains(&self.event.as_str()) {
            return Err(invalid(
                "this event is written by the audit log itself".to_owned(),
            ));
        }
        if let Some((key, _)) = self
            .fields
            .iter()
            .find(|(k, _)| HEADER_FIELDS.contains(&k.as_str()))
        {
            return Err(invalid(format!(
                "field `{key}` is part of every line's header"
            )));
        }
        Ok(())
    }
}

/// A durable entry: its sequence number and the hash of its line (the next entry's `prev`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// The entry's `seq`.
    pub seq: u64,
    /// Lowercase hex SHA-256 of the entry's line bytes.
    pub hash: String,
}

/// What became of an entry handed to [`AuditLog::append_held`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeldAppend {
    /// It is on disk.
    Written(Appended),
    /// The log cannot be written now: the entry is queued in memory and will be written, in
    /// order, by the first batch that succeeds.
    Held {
        /// Entries now held, this one included.
        queued: usize,
        /// Why the log cannot be written.
        cause: String,
    },
}

/// A durable checkpoint entry: its `seq` and its exact line (without `\n`), which a witness keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointLine {
    /// The checkpoint's `seq`.
    pub seq: u64,
    /// The exact line bytes.
    pub line: String,
}

/// A torn tail found at open and set aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Where the torn bytes now are (`<dir>/torn-<unix ms>.partial`).
    pub moved_to: PathBuf,
    /// How many bytes were moved.
    pub bytes: u64,
}

/// The audit log could not be opened, written, read or verified.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The log directory could not be created.
    #[error("cannot create audit directory {}", dir.display())]
    CreateDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The directory holds no log file: the wrong directory, or an agent that never ran. A
    /// verifier must not call that a clean log.
    #[error(
        "no audit log in {}: it holds no audit-<seq>.jsonl file (the agent writes its log to <data_dir>/audit; `--config` finds it)",
        dir.display()
    )]
    NoLog {
        /// The directory.
        dir: PathBuf,
    },
    /// The log directory could not be listed.
    #[error("cannot list audit directory {}", dir.display())]
    ListDir {
        /// The directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A log file could not be opened or created.
    #[error("cannot open audit file {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A log file could not be read.
    #[error("cannot read audit file {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Setting a torn tail aside (copy, sync, truncate) failed.
    #[error("cannot set aside the torn tail of audit file {}", path.display())]
    Recover {
        /// The log file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A line other than a torn last one is not a valid entry; an operator must look.
    #[error("audit file {} line {line} is not a valid entry: {reason} (run `gantry-agent audit verify`)", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The log cannot be written: the agent fails closed until a write succeeds again.
    #[error("audit log unavailable: {cause}")]
    Unavailable {
        /// What failed, naming the file and the error.
        cause: String,
    },
    /// The log's filesystem is nearly full: the agent refuses jobs before writes start failing.
    #[error(
        "audit log unavailable: only {free} bytes free on the filesystem of {} (minimum {min})",
        dir.display()
    )]
    LowSpace {
        /// The log directory.
        dir: PathBuf,
        /// Bytes available to the agent.
        free: u64,
        /// The configured minimum.
        min: u64,
    },
    /// Free space on the log's filesystem could not be read.
    #[error("cannot read free space of {}", dir.display())]
    StatFs {
        /// The log directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The entry was refused before it was written.
    #[error("audit entry {event:?} refused: {reason}")]
    InvalidEntry {
        /// The entry's event name.
        event: String,
        /// Why.
        reason: String,
    },
    /// The log cannot be written and the in-memory queue of held entries is full: this entry is
    /// lost (the count is recorded in `audit.resumed` once the log is writable again).
    #[error("audit log unavailable: {cause}; {held} entries already held, this one is dropped")]
    HeldFull {
        /// Why the log cannot be written.
        cause: String,
        /// How many entries are held.
        held: usize,
    },
    /// The log was closed (or its writer thread is gone).
    #[error("audit log is closed")]
    Closed,
    /// The writer thread could not be started.
    #[error("cannot start the audit writer thread")]
    Spawn {
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The hash chain or a checkpoint does not verify.
    #[error("audit file {} does not verify", file.display())]
    Chain {
        /// The file holding the first bad entry.
        file: PathBuf,
        /// The first bad seq and why.
        #[source]
        source: ChainError,
    },
    /// The last file ends with bytes that are not a whole line: a crash mid-write (the agent
    /// sets such a tail aside at start) or a cut through an entry.
    #[error(
        "seq {seq}: the log ends with {bytes} bytes of an incomplete line in {} (a crash mid-write or a cut; if the agent is writing right now, verify again)",
        file.display()
    )]
    TornTail {
        /// The last file.
        file: PathBuf,
        /// The seq the incomplete line would have.
        seq: u64,
        /// Its length.
        bytes: u64,
    },
    /// A file's first entry does not have the seq its name says.
    #[error("audit file {} should start at seq {expected} but starts at seq {found}", file.display())]
    Misnamed {
        /// The file.
        file: PathBuf,
        /// The seq in its name.
        expected: u64,
        /// The seq of its first entry.
        found: u64,
    },
    /// Writing to the operator's output failed.
    #[error("cannot write audit output")]
    Output {
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A request to the writer thread.
pub(crate) enum Command {
    /// Write this entry.
    Append(Entry, oneshot::Sender<Result<Appended, AuditError>>),
    /// Write this entry, or hold it in memory while the log cannot be written.
    AppendHeld(Entry, oneshot::Sender<Result<HeldAppend, AuditError>>),
    /// Write a checkpoint unless the last entry is one.
    Checkpoint(oneshot::Sender<Result<CheckpointLine, AuditError>>),
    /// Seal with a final checkpoint and stop.
    Close(oneshot::Sender<Result<(), AuditError>>),
    /// Fail the next I/O operations as told (tests only).
    #[cfg(test)]
    Inject(Vec<writer::Fault>),
}

/// What the writer thread shares with every handle.
pub(crate) struct Shared {
    /// `Some(cause)` while failed closed.
    pub(crate) failed: Mutex<Option<String>>,
    /// The latest durable checkpoint.
    pub(crate) latest: Mutex<Option<CheckpointLine>>,
    /// How many times the writer called fdatasync.
    pub(crate) syncs: AtomicU64,
    /// How many entries are held in memory.
    pub(crate) held: AtomicUsize,
    /// Every durable line, for `audit tail -f` over gRPC.
    pub(crate) lines: broadcast::Sender<Arc<(u64, String)>>,
    /// `Some(cause)` once an fdatasync failed: the log is failed for good and the agent must
    /// stop (case H4).
    pub(crate) fatal: watch::Sender<Option<String>>,
}

struct Inner {
    tx: mpsc::Sender<Command>,
    shared: Arc<Shared>,
    dir: PathBuf,
    min_free_bytes: u64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// The agent's audit log; cheap to clone (all clones share one writer thread).
#[derive(Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl AuditLog {
    /// Opens (creating) the log, detects and sets aside a torn last line (recording
    /// `audit.recovered`), continues seq/prev from the last good entry, starts the writer thread
    /// and the periodic checkpoint timer.
    ///
    /// # Errors
    ///
    /// Directory or file errors naming the path; [`AuditError::Corrupt`] when the end of the log
    /// is damaged beyond a torn last line; [`AuditError::Unavailable`] when `audit.recovered`
    /// cannot be written.
    pub fn open(
        opts: AuditOptions,
        key: Arc<SigningKey>,
    ) -> Result<(AuditLog, Option<Recovery>), AuditError> {
        let opened = recover::open_dir(&opts.dir)?;
        let recovery = opened.recovered.as_ref().map(|r| Recovery {
            moved_to: r.moved_to.clone(),
            bytes: r.bytes,
        });
        let (lines, _) = broadcast::channel(SUBSCRIBE_CAPACITY);
        let shared = Arc::new(Shared {
            failed: Mutex::new(None),
            latest: Mutex::new(opened.latest.clone()),
            syncs: AtomicU64::new(0),
            held: AtomicUsize::new(0),
            lines,
            fatal: watch::Sender::new(None),
        });
        let (tx, rx) = mpsc::channel();
        let dir = opts.dir.clone();
        let min_free_bytes = opts.min_free_bytes;
        let thread = writer::spawn(opts, key, opened, Arc::clone(&shared), rx)?;
        let log = AuditLog {
            inner: Arc::new(Inner {
                tx,
                shared,
                dir,
                min_free_bytes,
                thread: Mutex::new(Some(thread)),
            }),
        };
        Ok((log, recovery))
    }

    /// Appends `entry`; when this returns `Ok` the entry is on disk (fdatasync'd).
    ///
    /// # Errors
    ///
    /// [`AuditError::Unavailable`] when the log failed closed, [`AuditError::InvalidEntry`] for
    /// a reserved event or field name, [`AuditError::Closed`] after [`AuditLog::close`].
    pub async fn append(&self, entry: Entry) -> Result<Appended, AuditError> {
        entry.validate()?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::Append(entry, reply))?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Appends an entry that records something already done (a rollback step, a job's final
    /// entry): like [`AuditLog::append`] while the log is writable; while it is not, the entry is
    /// held in memory and written, in order and chained, by the first batch that succeeds
    /// (see the module docs). Never use it for an entry that must be durable before an action.
    ///
    /// # Errors
    ///
    /// [`AuditError::HeldFull`] when [`MAX_HELD`] entries are already held (this one is lost and
    /// counted), [`AuditError::Unavailable`] when the log failed for good (its file could not be
    /// cut back), [`AuditError::InvalidEntry`], [`AuditError::Closed`].
    pub async fn append_held(&self, entry: Entry) -> Result<HeldAppend, AuditError> {
        entry.validate()?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::AppendHeld(entry, reply))?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// Resolves, with the cause, once the log has failed for good because an fdatasync failed:
    /// nothing more is written to it (a retry could report durable what the kernel dropped), and
    /// the agent stops as on SIGTERM and exits non-zero; the next start checks the tail again.
    pub async fn failed_for_good(&self) -> String {
        let mut rx = self.inner.shared.fatal.subscribe();
        let cause = match rx.wait_for(Option::is_some).await {
            Ok(cause) => cause.clone(),
            // The sender lives as long as `self`: never reached.
            Err(_) => None,
        };
        match cause {
            Some(cause) => cause,
            None => std::future::pending().await,
        }
    }

    /// The cause, when the log has failed for good (see [`AuditLog::failed_for_good`]).
    pub fn fatal(&self) -> Option<String> {
        self.inner.shared.fatal.borrow().clone()
    }

    /// How many entries are held in memory, waiting for the log to be writable.
    pub fn held(&self) -> usize {
        self.inner.shared.held.load(Ordering::Relaxed)
    }

    /// Seals everything appended so far with a signed checkpoint and returns it; when the last
    /// entry already is a checkpoint, returns that one.
    ///
    /// # Errors
    ///
    /// As [`AuditLog::append`].
    pub async fn checkpoint(&self) -> Result<CheckpointLine, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Checkpoint(reply))?;
        rx.await.map_err(|_| AuditError::Closed)?
    }

    /// The latest durable checkpoint, if any (job results carry it to the controller, the
    /// witness).
    pub fn latest_checkpoint(&self) -> Option<CheckpointLine> {
        lock(&self.inner.shared.latest).clone()
    }

    /// Whether the agent may accept work that must be audited.
    ///
    /// # Errors
    ///
    /// [`AuditError::Unavailable`] while failed closed, [`AuditError::LowSpace`] when the log's
    /// filesystem has less than `min_free_bytes` free, [`AuditError::StatFs`] when that cannot be
    /// read.
    pub fn health(&self) -> Result<(), AuditError> {
        if let Some(cause) = lock(&self.inner.shared.failed).clone() {
            return Err(AuditError::Unavailable { cause });
        }
        let free = free_bytes(&self.inner.dir)?;
        if free < self.inner.min_free_bytes {
            return Err(AuditError::LowSpace {
                dir: self.inner.dir.clone(),
                free,
                min: self.inner.min_free_bytes,
            });
        }
        Ok(())
    }

    /// Every line made durable from now on, as `(seq, line)`; a receiver that falls more than
    /// 1024 lines behind gets `RecvError::Lagged` and should re-read with [`read_lines`].
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<(u64, String)>> {
        self.inner.shared.lines.subscribe()
    }

    /// How many times the writer has called fdatasync (group commit makes this far smaller than
    /// the number of entries under concurrency).
    pub fn syncs(&self) -> u64 {
        self.inner.shared.syncs.load(Ordering::Relaxed)
    }

    /// The log directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Appends a final checkpoint (when anything was appended since the last) and stops the
    /// writer thread; later appends through other clones fail with [`AuditError::Closed`].
    ///
    /// # Errors
    ///
    /// As [`AuditLog::append`], when the final checkpoint cannot be written.
    pub async fn close(self) -> Result<(), AuditError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Close(reply))?;
        let result = rx.await.map_err(|_| AuditError::Closed)?;
        // The thread has answered and is leaving its loop: joining takes no time.
        if let Some(thread) = lock(&self.inner.thread).take() {
            let _ = thread.join();
        }
        result
    }

    /// Makes the next writer I/O operations fail (tests only).
    #[cfg(test)]
    pub(crate) fn inject(&self, faults: Vec<writer::Fault>) {
        let _ = self.inner.tx.send(Command::Inject(faults));
    }

    fn send(&self, cmd: Command) -> Result<(), AuditError> {
        self.inner.tx.send(cmd).map_err(|_| AuditError::Closed)
    }
}

/// Bytes available to unprivileged writers on the filesystem holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64, AuditError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|source| AuditError::StatFs {
        dir: dir.to_owned(),
        source,
    })?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Locks a mutex, carrying on past a poisoned one: the data are plain values, always consistent.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
