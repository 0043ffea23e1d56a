//! The writer thread: group commit, rotation, checkpoints, fail closed.
//!
//! The thread owns the file. It blocks for one command, drains whatever else is queued, builds
//! all lines into one reused buffer, writes it, calls fdatasync ONCE, and only then answers every
//! caller. When the write fails it cuts the file back to its last durable length
//! (no torn line stays), answers the whole batch with [`AuditError::Unavailable`] and stays
//! failed; a later batch retries (at most every [`RETRY_AFTER`]) and clears the failure when its
//! write succeeds. When the sync fails, there is no retry: the log fails for good and the agent
//! stops (`file.rs`, case H4). The chain state (seq, prev) only moves on success, so it stays
//! correct.
//!
//! Held entries ([`Command::AppendHeld`]) that cannot be written wait in `held`; they are put at
//! the front of every batch (after an `audit.resumed` entry) until one succeeds, and only then
//! leave the queue. While failed, the thread also wakes every [`PROBE_EVERY`] to try on its own.
//!
//! Files: this one runs the thread and builds batches; `held` keeps what waits for the disk,
//! `lines` encodes entries into the batch, `file` is the disk side (the `OpenLog` seam that
//! holds the test faults, commit, rotation).

mod file;
mod held;
mod lines;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, mpsc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use gantry_proto::keys::SigningKey;
use tokio::sync::oneshot;

#[cfg(test)]
pub(crate) use self::file::Fault;
use self::file::OpenLog;
use self::held::Held;
use self::lines::LineMeta;
use super::checkpoint::Sealer;
use super::recover::{Opened, Recovered};
use super::{
    Appended, AuditError, AuditOptions, CheckpointLine, Command, Entry, HeldAppend, PROBE_EVERY,
    Shared, lock,
};

/// After a failure, the writer touches the disk again at most this often; appends in between
/// fail at once.
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// At most this many commands per batch, bounding the buffer.
const MAX_BATCH: usize = 4096;

/// Starts the writer thread; returns once `audit.recovered` (if any) is durable.
pub(crate) fn spawn(
    opts: AuditOptions,
    key: Arc<SigningKey>,
    opened: Opened,
    shared: Arc<Shared>,
    rx: mpsc::Receiver<Command>,
) -> Result<JoinHandle<()>, AuditError> {
    let recovered = opened.recovered.clone();
    let mut writer = Writer::new(opts, key, opened, shared);
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let handle = thread::Builder::new()
        .name("gantry-audit".to_owned())
        .spawn(move || {
            let started = writer.start(recovered);
            let ok = started.is_ok();
            let _ = ready_tx.send(started);
            if ok {
                writer.run(&rx);
            }
        })
        .map_err(|source| AuditError::Spawn { source })?;
    match ready_rx.recv() {
        Ok(Ok(())) => Ok(handle),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(AuditError::Closed)
        }
    }
}

/// An answer held back until the batch is durable.
enum Reply {
    Append(oneshot::Sender<Result<Appended, AuditError>>, Appended),
    Checkpoint(
        oneshot::Sender<Result<CheckpointLine, AuditError>>,
        CheckpointLine,
    ),
    Close(oneshot::Sender<Result<(), AuditError>>),
    /// A held-if-need-be entry in this batch: on failure it joins the held queue.
    Held(
        oneshot::Sender<Result<HeldAppend, AuditError>>,
        Appended,
        Entry,
    ),
}

impl Reply {
    fn ok(self) {
        let _ = match self {
            Reply::Append(tx, a) => tx.send(Ok(a)).map_err(drop),
            Reply::Checkpoint(tx, c) => tx.send(Ok(c)).map_err(drop),
            Reply::Close(tx) => tx.send(Ok(())).map_err(drop),
            Reply::Held(tx, a, _) => tx.send(Ok(HeldAppend::Written(a))).map_err(drop),
        };
    }

    fn err(self, cause: &str) {
        let e = || AuditError::Unavailable {
            cause: cause.to_owned(),
        };
        let _ = match self {
            Reply::Append(tx, _) => tx.send(Err(e())).map_err(drop),
            Reply::Checkpoint(tx, _) => tx.send(Err(e())).map_err(drop),
            Reply::Close(tx) => tx.send(Err(e())).map_err(drop),
            Reply::Held(tx, _, _) => tx.send(Err(e())).map_err(drop),
        };
    }
}

/// The chain as it stands (durable) or as a batch would leave it (working copy).
#[derive(Clone)]
struct Chain {
    /// The last entry's seq.
    seq: u64,
    /// The last entry's line hash.
    prev: String,
    /// Entries since the last checkpoint.
    since_checkpoint: u64,
    /// The last checkpoint written, if it changed.
    latest: Option<CheckpointLine>,
}

struct Failure {
    cause: String,
    at: Instant,
    /// The file could not be cut back (it may hold a torn line), or its fdatasync failed (it
    /// may have lost what it reported written): never write again.
    permanent: bool,
}

struct Writer {
    opts: AuditOptions,
    sealer: Sealer,
    shared: Arc<Shared>,
    file: OpenLog,
    path: PathBuf,
    /// Durable length of `file`.
    len: u64,
    chain: Chain,
    buf: Vec<u8>,
    lines: Vec<LineMeta>,
    replies: Vec<Reply>,
    failed: Option<Failure>,
    held: Held,
}

impl Writer {
    fn new(opts: AuditOptions, key: Arc<SigningKey>, opened: Opened, shared: Arc<Shared>) -> Self {
        let since_checkpoint = u64::from(!opened.sealed && opened.last_seq > 0);
        Writer {
            opts,
            sealer: Sealer::new(key),
            shared,
            file: OpenLog::new(opened.file),
            path: opened.path,
            len: opened.len,
            chain: Chain {
                seq: opened.last_seq,
                prev: opened.prev,
                since_checkpoint,
                latest: None,
            },
            buf: Vec::with_capacity(64 * 1024),
            lines: Vec::with_capacity(256),
            replies: Vec::with_capacity(256),
            failed: None,
            held: Held::default(),
        }
    }

    /// Records a torn tail set aside at open, before anything else is written.
    fn start(&mut self, recovered: Option<Recovered>) -> Result<(), AuditError> {
        let Some(r) = recovered else { return Ok(()) };
        let entry = Entry::new("audit.recovered")
            .with("moved_to", r.moved_to.display().to_string())
            .with("bytes", r.bytes)
            .with("after_seq", r.after_seq);
        let (tx, mut rx) = oneshot::channel();
        self.process(&mut vec![Command::Append(entry, tx)], false);
        match rx.try_recv() {
            Ok(result) => result.map(drop),
            Err(_) => Err(AuditError::Closed),
        }
    }

    fn run(&mut self, rx: &mpsc::Receiver<Command>) {
        let interval = self.opts.checkpoint_interval;
        // Zero, or so long that the deadline overflows, means no timer.
        let mut next_seal = if interval.is_zero() {
            None
        } else {
            Instant::now().checked_add(interval)
        };
        let mut cmds = Vec::with_capacity(256);
        loop {
            // While failed (not for good), retry on our own: held entries get written and
            // health() clears as soon as the disk has space again.
            let probe_at = self
                .failed
                .as_ref()
                .filter(|f| !f.permanent)
                .and_then(|f| f.at.checked_add(PROBE_EVERY));
            if let Some(at) = probe_at
                && Instant::now() >= at
            {
                self.process(&mut Vec::new(), false);
                continue;
            }
            let wake = match (next_seal, probe_at) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let first = match wake {
                Some(at) => {
                    let now = Instant::now();
                    if next_seal.is_some_and(|s| now >= s) {
                        next_seal = now.checked_add(interval);
                        self.seal_periodically();
                        continue;
                    }
                    if now >= at {
                        continue;
                    }
                    match rx.recv_timeout(at - now) {
                        Ok(cmd) => cmd,
                        Err(mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(cmd) => cmd,
                    Err(_) => break,
                },
            };
            cmds.push(first);
            while cmds.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(cmd) => cmds.push(cmd),
                    Err(_) => break,
                }
            }
            if self.process(&mut cmds, false) {
                return;
            }
        }
        // Every handle is gone without close(): seal what was written, as close() would.
        self.seal_periodically();
    }

    /// The timer's checkpoint: only when something was appended since the last one.
    fn seal_periodically(&mut self) {
        if self.failed.is_none() && self.chain.since_checkpoint > 0 {
            self.process(&mut Vec::new(), true);
        }
    }

    /// Handles one batch; returns whether the writer must stop (close).
    fn process(&mut self, cmds: &mut Vec<Command>, seal: bool) -> bool {
        self.buf.clear();
        self.lines.clear();
        self.replies.clear();
        let mut work = self.chain.clone();
        work.latest = None;
        let fail_fast = self
            .failed
            .as_ref()
            .is_some_and(|f| f.permanent || f.at.elapsed() < RETRY_AFTER);
        // A retry after a failure: the batch starts with `audit.resumed` and the held entries.
        let recovering = self.failed.is_some() && !fail_fast;
        if recovering {
            self.push_resumed(&mut work);
        }
        let closing = self.take(cmds, &mut work, fail_fast);
        if (closing || seal) && !fail_fast && work.since_checkpoint > 0 {
            self.push_checkpoint(&mut work);
        }
        if fail_fast {
            let cause = self
                .failed
                .as_ref()
                .map_or_else(String::new, |f| f.cause.clone());
            for reply in self.replies.drain(..) {
                reply.err(&cause);
            }
        } else {
            let committed = if self.lines.is_empty() {
                Ok(())
            } else {
                self.commit()
            };
            match committed {
                Ok(()) => self.committed(work, recovering),
                Err((cause, permanent)) => self.failed_closed(cause, permanent),
            }
        }
        if closing && !self.held.queue.is_empty() {
            tracing::error!(
                held = self.held.queue.len(),
                "the audit log closes while entries are held in memory: they are lost"
            );
        }
        closing
    }

    /// Turns each command into lines of the batch and a reply to send once it is durable (or
    /// at once, when failing fast); returns whether one was a close.
    fn take(&mut self, cmds: &mut Vec<Command>, work: &mut Chain, fail_fast: bool) -> bool {
        let mut closing = false;
        let cause_now = self
            .failed
            .as_ref()
            .map_or_else(String::new, |f| f.cause.clone());
        let permanent = self.failed.as_ref().is_some_and(|f| f.permanent);
        for cmd in cmds.drain(..) {
            match cmd {
                Command::AppendHeld(entry, tx) => {
                    if fail_fast && permanent {
                        let _ = tx.send(Err(AuditError::Unavailable {
                            cause: cause_now.clone(),
                        }));
                    } else if fail_fast {
                        self.hold(entry, SystemTime::now(), tx, &cause_now);
                    } else {
                        let hash = self.push_line(work, &entry);
                        let appended = Appended {
                            seq: work.seq,
                            hash,
                        };
                        self.replies.push(Reply::Held(tx, appended, entry));
                        let every = self.opts.checkpoint_every;
                        if every > 0 && work.since_checkpoint >= every {
                            self.push_checkpoint(work);
                        }
                    }
                }
                Command::Append(entry, tx) => {
                    if fail_fast {
                        self.replies.push(Reply::Append(
                            tx,
                            Appended {
                                seq: 0,
                                hash: String::new(),
                            },
                        ));
                        continue;
                    }
                    let hash = self.push_line(work, &entry);
                    self.replies.push(Reply::Append(
                        tx,
                        Appended {
                            seq: work.seq,
                            hash,
                        },
                    ));
                    let every = self.opts.checkpoint_every;
                    if every > 0 && work.since_checkpoint >= every {
                        self.push_checkpoint(work);
                    }
                }
                Command::Checkpoint(tx) => {
                    if fail_fast {
                        self.replies.push(Reply::Checkpoint(
                            tx,
                            CheckpointLine {
                                seq: 0,
                                line: String::new(),
                            },
                        ));
                        continue;
                    }
                    let existing = match (&work.latest, work.since_checkpoint) {
                        (Some(l), 0) => Some(l.clone()),
                        (None, 0) => lock(&self.shared.latest).clone(),
                        _ => None,
                    };
                    let line = match existing {
                        Some(l) => l,
                        None => self.push_checkpoint(work),
                    };
                    self.replies.push(Reply::Checkpoint(tx, line));
                }
                Command::Close(tx) => {
                    closing = true;
                    self.replies.push(Reply::Close(tx));
                }
                #[cfg(test)]
                Command::Inject(faults) => self.file.inject(faults),
            }
        }
        closing
    }

    /// The batch is durable: clear a failure, advance the chain, publish, answer everyone.
    fn committed(&mut self, mut work: Chain, recovering: bool) {
        if let Some(f) = self.failed.take() {
            tracing::warn!(
                cause = %f.cause,
                held = self.held.queue.len(),
                "audit log writable again; held entries written"
            );
            *lock(&self.shared.failed) = None;
        }
        if recovering {
            self.held = Held::default();
            self.shared.held.store(0, Ordering::Relaxed);
        }
        self.len += self.buf.len() as u64;
        if let Some(latest) = work.latest.take() {
            *lock(&self.shared.latest) = Some(latest);
        }
        self.chain = work;
        self.publish();
        for reply in self.replies.drain(..) {
            reply.ok();
        }
    }

    /// The batch could not be made durable: fail closed, hold what may wait, refuse the rest.
    fn failed_closed(&mut self, cause: String, permanent: bool) {
        if self.failed.as_ref().is_some_and(|f| f.cause == cause) {
            tracing::debug!(%cause, "audit log still unavailable");
        } else {
            tracing::error!(%cause, "audit log failed closed");
        }
        *lock(&self.shared.failed) = Some(cause.clone());
        self.held.failed_since.get_or_insert_with(SystemTime::now);
        let replies: Vec<Reply> = self.replies.drain(..).collect();
        for reply in replies {
            match reply {
                Reply::Held(tx, _, entry) if !permanent => {
                    self.hold(entry, SystemTime::now(), tx, &cause);
                }
                other => other.err(&cause),
            }
        }
        self.failed = Some(Failure {
            cause,
            at: Instant::now(),
            permanent,
        });
    }

    /// Sends every line of the durable batch to subscribers.
    fn publish(&self) {
        if self.shared.lines.receiver_count() == 0 {
            return;
        }
        for l in &self.lines {
            let line = String::from_utf8_lossy(&self.buf[l.start..l.end]).into_owned();
            let _ = self.shared.lines.send(Arc::new((l.seq, line)));
        }
    }
}
