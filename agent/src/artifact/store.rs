//! The content-addressed artifact store: `<dir>/sha256/<hex>`.
//!
//! An upload streams into `<dir>/sha256/.upload-<random>` (mode 0600), hashed as it goes. Bytes
//! beyond the declared size or the store's maximum are refused at once. Only [`Upload::finish`]
//! with the right size and digest fsyncs the file, renames it to its digest and fsyncs the
//! directory; an upload dropped before that removes its temp file. A crash (kill -9, power
//! loss) can still leave a temp file behind; [`ArtifactStore::remove_leftovers`] removes those
//! at start-up.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{ArtifactError, digest_hex, random_suffix, sync_dir};
use crate::job::Sha256Hex;

/// The name prefix of an upload's temp file in the objects directory.
const UPLOAD_PREFIX: &str = ".upload-";

/// The agent's artifact store, rooted at `<data_dir>/artifacts`.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    /// `<dir>/sha256`.
    objects: PathBuf,
    max_bytes: u64,
    /// Most bytes the store may hold (`limits.max_store_bytes`).
    quota: u64,
    /// Free bytes an upload must leave on the filesystem (`audit.min_free_bytes`).
    min_free: u64,
}

impl ArtifactStore {
    /// Opens the store at `dir` (normally `<data_dir>/artifacts`), creating `dir/sha256`
    /// (mode 0700) if needed. Artifacts larger than `max_bytes` are refused.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Io`] naming the directory when it cannot be created.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, ArtifactError> {
        let objects = dir.join("sha256");
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&objects)
            .map_err(|source| ArtifactError::Io {
                op: "create artifact directory",
                path: objects.clone(),
                source,
            })?;
        Ok(Self {
            objects,
            max_bytes,
            quota: u64::MAX,
            min_free: 0,
        })
    }

    /// Sets the store's quota (`limits.max_store_bytes`) and the free space an upload must
    /// leave on the filesystem (`audit.min_free_bytes`), so that no client certificate alone
    /// can fill the disk the audit log needs.
    #[must_use]
    pub fn with_quota(mut self, quota: u64, min_free: u64) -> Self {
        self.quota = quota;
        self.min_free = min_free;
        self
    }

    /// Bytes in the objects directory: stored artifacts and uploads in progress.
    fn used(&self) -> Result<u64, ArtifactError> {
        let io = |source| ArtifactError::Io {
            op: "list the artifact store",
            path: self.objects.clone(),
            source,
        };
        let mut used = 0u64;
        for entry in fs::read_dir(&self.objects).map_err(io)? {
            let meta = entry.map_err(io)?.metadata().map_err(io)?;
            if meta.is_file() {
                used = used.saturating_add(meta.len());
            }
        }
        Ok(used)
    }

    /// Deletes stored artifacts that no digest in `keep` names and that were stored longer
    /// than `ttl` before `now` (an upload waits that long for the job that deploys it).
    /// Uploads in progress are never touched. Returns what it removed, with sizes.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Io`] naming the directory or the file; files removed before the
    /// error stay removed.
    pub fn collect(
        &self,
        keep: &std::collections::BTreeSet<Sha256Hex>,
        ttl: std::time::Duration,
        now: std::time::SystemTime,
    ) -> Result<Vec<(Sha256Hex, u64)>, ArtifactError> {
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| ArtifactError::Io { op, path, source }
        };
        let mut removed = Vec::new();
        for entry in
            fs::read_dir(&self.objects).map_err(io("list the artifact store", &self.objects))?
        {
            let entry = entry.map_err(io("list the artifact store", &self.objects))?;
            let Ok(digest) = Sha256Hex::new(&entry.file_name().to_string_lossy()) else {
                continue; // temp files and anything else that is not an artifact
            };
            let path = entry.path();
            let meta = fs::symlink_metadata(&path).map_err(io("stat artifact", &path))?;
            let stored = meta.modified().map_err(io("stat artifact", &path))?;
            let old = now.duration_since(stored).is_ok_and(|age| age > ttl);
            if meta.is_file() && old && !keep.contains(&digest) {
                fs::remove_file(&path).map_err(io("remove unused artifact", &path))?;
                removed.push((digest, meta.len()));
            }
        }
        if !removed.is_empty() {
            sync_dir(&self.objects).map_err(io("sync the artifact store", &self.objects))?;
        }
        Ok(removed)
    }

    /// Where the artifact with `digest` lives (whether or not it is there).
    pub fn path_of(&self, digest: &Sha256Hex) -> PathBuf {
        self.objects.join(digest.as_str())
    }

    /// Whether the store holds the artifact: a regular file (not a symlink) of exactly `size`
    /// bytes at its digest's path. Its content was verified when it was stored and is verified
    /// again before every unpack.
    pub fn contains(&self, digest: &Sha256Hex, size: u64) -> bool {
        fs::symlink_metadata(self.path_of(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// The largest artifact this store accepts, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Removes every temp file an interrupted upload left in the objects directory (names
    /// starting with `.upload-`): a file or symlink is removed itself (a link is never
    /// followed), a directory of that name with everything in it. Returns the paths removed.
    ///
    /// Only for start-up: an upload in progress has such a temp file too.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Io`] naming the directory that cannot be listed or the entry that
    /// cannot be removed; entries removed before the error stay removed.
    pub fn remove_leftovers(&self) -> Result<Vec<PathBuf>, ArtifactError> {
        remove_prefixed(&self.objects, UPLOAD_PREFIX)
    }

    /// Starts an upload of `size` bytes that must hash to `expected`.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::TooLarge`] when `size` is over the store's maximum;
    /// [`ArtifactError::Io`] when the temp file cannot be created.
    pub fn begin_upload(&self, expected: &Sha256Hex, size: u64) -> Result<Upload, ArtifactError> {
        if size > self.max_bytes {
            return Err(ArtifactError::TooLarge {
                digest: expected.clone(),
                size,
                max: self.max_bytes,
            });
        }
        let used = self.used()?;
        if used.saturating_add(size) > self.quota {
            return Err(ArtifactError::StoreFull {
                digest: expected.clone(),
                size,
                used,
                quota: self.quota,
            });
        }
        if self.min_free > 0 {
            let st = nix::sys::statvfs::statvfs(&self.objects).map_err(|e| ArtifactError::Io {
                op: "check free space for",
                path: self.objects.clone(),
                source: io::Error::from(e),
            })?;
            #[allow(clippy::unnecessary_cast)] // the field types differ between targets
            let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
            let left = free.saturating_sub(size);
            if left < self.min_free {
                return Err(ArtifactError::DiskLow {
                    digest: expected.clone(),
                    size,
                    left,
                    min_free: self.min_free,
                });
            }
        }
        let suffix = random_suffix().ok_or_else(|| ArtifactError::Random {
            path: self.objects.clone(),
        })?;
        let temp = self.objects.join(format!("{UPLOAD_PREFIX}{suffix}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&temp)
            .map_err(|source| ArtifactError::Io {
                op: "create upload file",
                path: temp.clone(),
                source,
            })?;
        Ok(Upload {
            file: Some(file),
            temp,
            dest: self.path_of(expected),
            dir: self.objects.clone(),
            expected: expected.clone(),
            size,
            written: 0,
            hasher: ring::digest::Context::new(&ring::digest::SHA256),
            failed: false,
        })
    }
}

/// An artifact upload in progress. Dropping it before [`Upload::finish`] succeeds removes the
/// temp file.
pub struct Upload {
    /// `None` once finished (or being finished).
    file: Option<File>,
    temp: PathBuf,
    dest: PathBuf,
    dir: PathBuf,
    expected: Sha256Hex,
    size: u64,
    written: u64,
    hasher: ring::digest::Context,
    failed: bool,
}

impl Upload {
    /// The bytes received so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `chunk`, hashing it.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Oversize`] as soon as the total would exceed the declared size (which
    /// the store already bounded by its maximum); nothing of that chunk is written and the
    /// upload is dead ([`ArtifactError::UploadFailed`] afterwards). [`ArtifactError::Io`] when
    /// writing fails.
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ArtifactError> {
        if self.failed {
            return Err(ArtifactError::UploadFailed {
                digest: self.expected.clone(),
            });
        }
        let len = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
        let total = self.written.saturating_add(len);
        if total > self.size {
            self.failed = true;
            return Err(ArtifactError::Oversize {
                digest: self.expected.clone(),
                declared: self.size,
            });
        }
        let Some(file) = self.file.as_mut() else {
            return Err(ArtifactError::UploadFailed {
                digest: self.expected.clone(),
            });
        };
        if let Err(source) = file.write_all(chunk) {
            self.failed = true;
            return Err(ArtifactError::Io {
                op: "write upload",
                path: self.temp.clone(),
                source,
            });
        }
        self.hasher.update(chunk);
        self.written = total;
        Ok(())
    }

    /// Checks the size and digest, fsyncs the file, renames it to its digest's path and fsyncs
    /// the directory. On any error the temp file is removed.
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
            path: self.temp.clone(),
            source,
        })?;
        if actual != self.expected {
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
            path: self.temp.clone(),
            source,
        })?;
        drop(file);
        fs::rename(&self.temp, &self.dest).map_err(|source| ArtifactError::Io {
            op: "rename upload into place at",
            path: self.dest.clone(),
            source,
        })?;
        // The temp name is gone: Drop must not remove anything now.
        self.failed = true;
        self.temp = PathBuf::new();
        sync_dir(&self.dir).map_err(|source| ArtifactError::Io {
            op: "fsync",
            path: self.dir.clone(),
            source,
        })
    }
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("temp", &self.temp)
            .field("dest", &self.dest)
            .field("expected", &self.expected)
            .field("size", &self.size)
            .field("written", &self.written)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if !self.temp.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Removes every entry of `dir` whose name starts with `prefix` (see [`remove_entry`]). A
/// missing `dir` holds nothing. Returns the paths removed, in directory order.
pub(super) fn remove_prefixed(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>, ArtifactError> {
    let read = match fs::read_dir(dir) {
        Ok(read) => read,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(ArtifactError::Io {
                op: "list",
                path: dir.to_owned(),
                source,
            });
        }
    };
    let mut removed = Vec::new();
    for item in read {
        let item = item.map_err(|source| ArtifactError::Io {
            op: "list",
            path: dir.to_owned(),
            source,
        })?;
        if !item.file_name().as_bytes().starts_with(prefix.as_bytes()) {
            continue;
        }
        let path = item.path();
        if remove_entry(&path)? {
            removed.push(path);
        }
    }
    Ok(removed)
}

/// Removes `path` without following it: a directory (a real one, not a link to one) with
/// everything in it, anything else (file, symlink, ...) itself. Returns whether it removed
/// something (`false` when the path was already gone).
fn remove_entry(path: &Path) -> Result<bool, ArtifactError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(source) => {
            return Err(ArtifactError::Io {
                op: "inspect",
                path: path.to_owned(),
                source,
            });
        }
    };
    let result = if meta.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ArtifactError::Io {
            op: "remove leftover",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Logs the outcome of a start-up `remove_leftovers` call: one `info` line naming what was
/// removed (nothing when nothing was), or a `warn` line on an error. `from` says what left the
/// files ("an interrupted upload", ...).
///
/// An error is only logged, never returned: removing leftovers is hygiene (disk space), not
/// safety, so it must not stop the agent from starting.
pub(crate) fn log_leftover_removal<E: std::error::Error + Send + Sync + 'static>(
    from: &str,
    result: Result<Vec<PathBuf>, E>,
) {
    match result {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => {
            let paths: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
            tracing::info!(
                "removed {} leftover temporary file(s) from {from}: {}",
                removed.len(),
                paths.join(", ")
            );
        }
        Err(e) => tracing::warn!(
            "cannot remove leftover temporary files from {from} (start-up continues): {}",
            crate::error::reason(&e)
        ),
    }
}
