//! One artifact upload in progress: bytes appended to the digest's partial file
//! (`<dir>/partial/<hex>`), hashed as they arrive, fsynced every [`SYNC_EVERY`] bytes and when
//! the stream breaks, so that what `held` reports is on disk and a later upload can resume.
//!
//! Only [`Upload::finish`] with the declared size and digest renames the partial to its digest
//! in the objects directory. A refused upload (more bytes than declared, a failed write, a
//! digest mismatch) removes its partial: a corrupt partial can never become an artifact.

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use super::{ArtifactError, digest_hex, sync_dir};
use crate::job::Sha256Hex;

/// Bytes written between two fsyncs of a partial file: a crash loses at most this much of
/// what `held` would have said (an unsynced tail that did reach the disk is kept too; the
/// digest check at the end catches any damage).
pub const SYNC_EVERY: u64 = 8 * 1024 * 1024;

/// The digests with an upload in progress in one store; at most one upload per digest, so two
/// uploads never interleave their bytes in one partial file.
pub(super) type Active = Arc<Mutex<BTreeSet<Sha256Hex>>>;

/// A digest's place in [`Active`], given back when dropped.
#[derive(Debug)]
pub(super) struct Claim {
    active: Active,
    digest: Sha256Hex,
}

impl Claim {
    /// Claims `digest`, or `None` when an upload of it is already in progress.
    pub(super) fn take(active: &Active, digest: &Sha256Hex) -> Option<Self> {
        let mut set = active.lock().unwrap_or_else(PoisonError::into_inner);
        set.insert(digest.clone()).then(|| Self {
            active: Arc::clone(active),
            digest: digest.clone(),
        })
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.digest);
    }
}

/// What [`Upload::new`] needs; the store fills it in.
pub(super) struct Parts {
    pub(super) file: File,
    pub(super) partial: PathBuf,
    pub(super) dest: PathBuf,
    pub(super) objects: PathBuf,
    pub(super) expected: Sha256Hex,
    pub(super) size: u64,
    /// The bytes already in the partial file, and the hash state rebuilt from reading them.
    pub(super) held: u64,
    pub(super) hasher: ring::digest::Context,
    pub(super) claim: Claim,
}

/// An artifact upload in progress. Dropping it before [`Upload::finish`] keeps (and fsyncs)
/// the partial file for a resume, unless the upload was refused, which removes it.
pub struct Upload {
    /// `None` once finished (or being finished).
    file: Option<File>,
    /// The partial file; empty once renamed into place.
    partial: PathBuf,
    dest: PathBuf,
    objects: PathBuf,
    expected: Sha256Hex,
    size: u64,
    written: u64,
    resumed_from: u64,
    unsynced: u64,
    hasher: ring::digest::Context,
    /// Refused: no more writes, and the partial goes on drop.
    failed: bool,
    _claim: Claim,
}

impl Upload {
    pub(super) fn new(p: Parts) -> Self {
        Self {
            file: Some(p.file),
            partial: p.partial,
            dest: p.dest,
            objects: p.objects,
            expected: p.expected,
            size: p.size,
            written: p.held,
            resumed_from: p.held,
            unsynced: 0,
            hasher: p.hasher,
            failed: false,
            _claim: p.claim,
        }
    }

    /// The bytes the agent holds of this artifact so far (resumed bytes included).
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The byte this upload resumed at (0 for a fresh upload).
    pub fn resumed_from(&self) -> u64 {
        self.resumed_from
    }

    /// Appends `chunk`, hashing it.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Oversize`] as soon as the total would exceed the declared size (which
    /// the store already bounded by its maximum); nothing of that chunk is written and the
    /// upload is dead ([`ArtifactError::UploadFailed`] afterwards, and its partial is removed).
    /// [`ArtifactError::Io`] when writing fails.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ArtifactError> {
        if self.failed {
            return Err(ArtifactError::UploadFailed {
                digest: self.expected.clone(),
            });
        }
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        let total = match self.written.checked_add(len) {
            Some(total) if total <= self.size => total,
            _ => {
                self.failed = true;
                return Err(ArtifactError::Oversize {
                    digest: self.expected.clone(),
                    declared: self.size,
                });
            }
        };
        let Some(file) = self.file.as_mut() else {
            return Err(ArtifactError::UploadFailed {
                digest: self.expected.clone(),
            });
        };
        if let Err(source) = file.write_all(chunk) {
            self.failed = true;
            return Err(ArtifactError::Io {
                op: "write upload",
                path: self.partial.clone(),
                source,
            });
        }
        self.hasher.update(chunk);
        self.written = total;
        self.unsynced = self.unsynced.saturating_add(len);
        if self.unsynced >= SYNC_EVERY {
            self.unsynced = 0;
            file.sync_data().map_err(|source| ArtifactError::Io {
                op: "fsync upload",
                path: self.partial.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Checks the size and digest, fsyncs the file, renames it to its digest's path and fsyncs
    /// the directory. A short upload keeps its partial for a resume; a digest mismatch
    /// removes it.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::SizeMismatch`], [`ArtifactError::DigestMismatch`] (naming expected
    /// and actual digests), [`ArtifactError::UploadFailed`] after a refused write, or
    /// [`ArtifactError::Io`].
    pub fn finish(mut self) -> Result<(), ArtifactError> {
        if self.failed {
            return Err(ArtifactError::UploadFailed {
                digest: self.expected.clone(),
            });
        }
        if self.written != self.size {
            return Err(ArtifactError::SizeMismatch {
                digest: self.expected.clone(),
                expected: self.size,
                actual: self.written,
            });
        }
        let hasher = std::mem::replace(
            &mut self.hasher,
            ring::digest::Context::new(&ring::digest::SHA256),
        );
        let actual = digest_hex(hasher.finish()).map_err(|source| ArtifactError::Io {
            op: "hash upload",
            path: self.partial.clone(),
            source,
        })?;
        if actual != self.expected {
            self.failed = true;
            return Err(ArtifactError::DigestMismatch {
                expected: self.expected.clone(),
                actual,
            });
        }
        let Some(file) = self.file.take() else {
            return Err(ArtifactError::UploadFailed {
                digest: self.expected.clone(),
            });
        };
        file.sync_all().map_err(|source| ArtifactError::Io {
            op: "fsync upload",
            path: self.partial.clone(),
            source,
        })?;
        drop(file);
        fs::rename(&self.partial, &self.dest).map_err(|source| ArtifactError::Io {
            op: "rename upload into place at",
            path: self.dest.clone(),
            source,
        })?;
        // The partial name is gone: Drop must not touch anything now.
        self.partial = PathBuf::new();
        sync_dir(&self.objects).map_err(|source| ArtifactError::Io {
            op: "fsync",
            path: self.objects.clone(),
            source,
        })
    }
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("partial", &self.partial)
            .field("dest", &self.dest)
            .field("expected", &self.expected)
            .field("size", &self.size)
            .field("written", &self.written)
            .field("resumed_from", &self.resumed_from)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.partial.as_os_str().is_empty() {
            return;
        }
        if self.failed {
            // Best effort: a partial left behind is re-hashed on resume and verified at the
            // end, and collected after `limits.unused_artifact_ttl`.
            let _ = fs::remove_file(&self.partial);
            return;
        }
        // A clean break (stream ended, client gone): make what `held` will report durable.
        if let Some(file) = self.file.take()
            && let Err(e) = file.sync_data()
        {
            tracing::warn!(
                "cannot fsync the partial upload {} (a resume re-hashes it and the digest is checked at the end): {e}",
                self.partial.display()
            );
        }
    }
}
