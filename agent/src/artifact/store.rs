//! The content-addressed artifact store: `<dir>/sha256/<hex>`, and the partial files of
//! interrupted uploads, `<dir>/partial/<hex>`.
//!
//! An upload streams into its digest's partial file (mode 0600, see [`super::upload`]),
//! hashed as it goes. Bytes beyond the declared size or the store's maximum are refused at
//! once. Only a complete upload with the right size and digest is renamed to its digest. An
//! upload that breaks off keeps its partial file, and a later upload of the same digest
//! resumes at the byte the agent holds ([`ArtifactStore::held`]) after re-hashing what is
//! there; a partial nobody resumes is collected after `limits.unused_artifact_ttl`. Temp files
//! of the older naming (`.upload-<random>`) are removed at start-up
//! ([`ArtifactStore::remove_leftovers`]).
//!
//! Room: the store as a whole holds at most its quota and leaves the audit log's free space;
//! the uploads of one client certificate (`<dir>/owners`, see `owners`) hold at most
//! its budget in artifacts no kept release uses, so one certificate cannot take it all.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::owners::Owners;
use super::upload::{Active, Claim, Parts};
use super::{ArtifactError, Upload, sync_dir};
use crate::job::Sha256Hex;

/// The name prefix of an upload's temp file in the objects directory (the naming before
/// partial files were kept for a resume).
const UPLOAD_PREFIX: &str = ".upload-";

/// The client certificate an upload comes from, and the artifacts the kept releases use.
#[derive(Debug, Clone, Copy)]
pub struct Uploader<'a> {
    /// Lowercase hex SHA-256 of the certificate.
    pub fingerprint: &'a str,
    /// Digests a kept release of some app uses: they count against no certificate.
    pub kept: &'a BTreeSet<Sha256Hex>,
}

/// The agent's artifact store, rooted at `<data_dir>/artifacts`.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    /// `<dir>/sha256`.
    objects: PathBuf,
    /// `<dir>/partial`: one file per digest whose upload broke off.
    partials: PathBuf,
    max_bytes: u64,
    /// Most bytes the store may hold (`limits.max_store_bytes`).
    quota: u64,
    /// Free bytes an upload must leave on the filesystem (`audit.min_free_bytes`).
    min_free: u64,
    /// Who uploaded what.
    owners: Owners,
    /// Most bytes one client certificate's uploads may hold while no kept release uses them
    /// (`limits.max_unused_bytes_per_client`).
    client_budget: u64,
    /// Digests being uploaded now.
    active: Active,
}

impl ArtifactStore {
    /// Opens the store at `dir` (normally `<data_dir>/artifacts`), creating `dir/sha256` and
    /// `dir/partial` (mode 0700) if needed. Artifacts larger than `max_bytes` are refused.
    /// Partial files already there are kept: they are what a resume continues.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Io`] naming the directory when it cannot be created.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self, ArtifactError> {
        let objects = dir.join("sha256");
        let partials = dir.join("partial");
        for path in [&objects, &partials] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(path)
                .map_err(|source| ArtifactError::Io {
                    op: "create artifact directory",
                    path: path.clone(),
                    source,
                })?;
        }
        Ok(Self {
            objects,
            partials,
            max_bytes,
            quota: u64::MAX,
            min_free: 0,
            owners: Owners::open(dir.join("owners"))?,
            client_budget: u64::MAX,
            active: Active::default(),
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

    /// Sets how many bytes the uploads of one client certificate may hold in the store while no
    /// kept release uses them (`limits.max_unused_bytes_per_client`; see
    /// [`ArtifactStore::begin_upload_by`]).
    #[must_use]
    pub fn with_client_budget(mut self, budget: u64) -> Self {
        self.client_budget = budget;
        self
    }

    /// Bytes in the objects and partial directories: stored artifacts, uploads in progress
    /// and partial uploads waiting for a resume.
    fn used(&self) -> Result<u64, ArtifactError> {
        let mut used = 0u64;
        for dir in [&self.objects, &self.partials] {
            let io = |source| ArtifactError::Io {
                op: "list the artifact store",
                path: dir.clone(),
                source,
            };
            for entry in fs::read_dir(dir).map_err(io)? {
                let meta = entry.map_err(io)?.metadata().map_err(io)?;
                if meta.is_file() {
                    used = used.saturating_add(meta.len());
                }
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
        keep: &BTreeSet<Sha256Hex>,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<(Sha256Hex, u64)>, ArtifactError> {
        let removed = self.collect_in(&self.objects, ttl, now, |digest| {
            (!keep.contains(digest)).then_some(())
        })?;
        self.prune_owners()?;
        Ok(removed)
    }

    /// Removes the uploader records of digests with neither an artifact nor a partial upload
    /// in the store, and no upload in progress.
    fn prune_owners(&self) -> Result<usize, ArtifactError> {
        self.owners.prune(|digest| {
            // Held while it looks, so an upload starting now keeps its record.
            Claim::take(&self.active, digest).is_some()
                && fs::symlink_metadata(self.path_of(digest)).is_err()
                && fs::symlink_metadata(self.partial_of(digest)).is_err()
        })
    }

    /// Deletes partial uploads last written longer than `ttl` before `now` and not being
    /// resumed now. Returns the digests removed, with the bytes each held.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Io`] naming the directory or the file; files removed before the
    /// error stay removed.
    pub fn collect_partials(
        &self,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<Vec<(Sha256Hex, u64)>, ArtifactError> {
        // An upload in progress keeps its file; the claim held while a partial is removed
        // keeps an upload from opening it meanwhile (it is refused as busy, and retried).
        let removed = self.collect_in(&self.partials, ttl, now, |digest| {
            Claim::take(&self.active, digest)
        })?;
        self.prune_owners()?;
        Ok(removed)
    }

    /// Removes the regular files of `dir` named by a digest and older than `ttl`, for which
    /// `removable` gives a guard (held while the file is removed).
    fn collect_in<G>(
        &self,
        dir: &Path,
        ttl: Duration,
        now: SystemTime,
        removable: impl Fn(&Sha256Hex) -> Option<G>,
    ) -> Result<Vec<(Sha256Hex, u64)>, ArtifactError> {
        let io = |op, path: &Path| {
            let path = path.to_owned();
            move |source| ArtifactError::Io { op, path, source }
        };
        let mut removed = Vec::new();
        for entry in fs::read_dir(dir).map_err(io("list the artifact store", dir))? {
            let entry = entry.map_err(io("list the artifact store", dir))?;
            let Ok(digest) = Sha256Hex::new(&entry.file_name().to_string_lossy()) else {
                continue; // temp files and anything else that is not named by a digest
            };
            // Under the guard, so what is looked at is what is removed.
            let Some(_guard) = removable(&digest) else {
                continue;
            };
            let path = entry.path();
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                // An upload of it completed since the listing (its partial was renamed).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(io("stat artifact", &path)(source)),
            };
            let stored = meta.modified().map_err(io("stat artifact", &path))?;
            let old = now.duration_since(stored).is_ok_and(|age| age > ttl);
            if meta.is_file() && old {
                fs::remove_file(&path).map_err(io("remove unused artifact", &path))?;
                removed.push((digest, meta.len()));
            }
        }
        if !removed.is_empty() {
            sync_dir(dir).map_err(io("sync the artifact store", dir))?;
        }
        Ok(removed)
    }

    /// Where the artifact with `digest` lives (whether or not it is there).
    pub fn path_of(&self, digest: &Sha256Hex) -> PathBuf {
        self.objects.join(digest.as_str())
    }

    /// Where the partial upload of `digest` lives (whether or not it is there).
    pub fn partial_of(&self, digest: &Sha256Hex) -> PathBuf {
        self.partials.join(digest.as_str())
    }

    /// Whether the store holds the artifact: a regular file (not a symlink) of exactly `size`
    /// bytes at its digest's path. Its content was verified when it was stored and is verified
    /// again before every unpack.
    pub fn contains(&self, digest: &Sha256Hex, size: u64) -> bool {
        fs::symlink_metadata(self.path_of(digest)).is_ok_and(|m| m.is_file() && m.len() == size)
    }

    /// The bytes of an interrupted upload of `digest` the store holds, which an upload with
    /// that offset resumes from: the length of its partial file (a regular file, never a
    /// link), 0 when there is none.
    pub fn held(&self, digest: &Sha256Hex) -> u64 {
        fs::symlink_metadata(self.partial_of(digest))
            .map_or(0, |m| if m.is_file() { m.len() } else { 0 })
    }

    /// The largest artifact this store accepts, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// Removes every temp file of the older upload naming (`.upload-` in the objects or
    /// partial directory): a file or symlink is removed itself (a link is never followed), a
    /// directory of that name with everything in it. Partial files named by a digest are
    /// kept for a resume. Returns the paths removed.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Io`] naming the directory that cannot be listed or the entry that
    /// cannot be removed; entries removed before the error stay removed.
    pub fn remove_leftovers(&self) -> Result<Vec<PathBuf>, ArtifactError> {
        let mut removed = remove_prefixed(&self.objects, UPLOAD_PREFIX)?;
        removed.extend(remove_prefixed(&self.partials, UPLOAD_PREFIX)?);
        Ok(removed)
    }

    /// Starts a fresh upload of `size` bytes that must hash to `expected` (any partial of it
    /// is discarded).
    ///
    /// # Errors
    ///
    /// As [`ArtifactStore::begin_upload_at`].
    pub fn begin_upload(&self, expected: &Sha256Hex, size: u64) -> Result<Upload, ArtifactError> {
        self.begin_upload_at(expected, size, 0)
    }

    /// Starts an upload of `size` bytes that must hash to `expected`, whose stream begins at
    /// byte `offset`: 0 starts afresh (discarding any partial), anything else must be exactly
    /// what [`ArtifactStore::held`] says, and the held bytes are read back and hashed before
    /// the upload continues (no hash state is trusted across a break).
    ///
    /// # Errors
    ///
    /// [`ArtifactError::TooLarge`] when `size` is over the store's maximum;
    /// [`ArtifactError::ResumePastEnd`] when `offset` is past `size`;
    /// [`ArtifactError::UploadBusy`] when an upload of `expected` is in progress;
    /// [`ArtifactError::ResumeMismatch`] when `offset` is not the held byte count;
    /// [`ArtifactError::StoreFull`] / [`ArtifactError::DiskLow`] when the rest would not fit;
    /// [`ArtifactError::Io`] when the partial file cannot be opened or read.
    pub fn begin_upload_at(
        &self,
        expected: &Sha256Hex,
        size: u64,
        offset: u64,
    ) -> Result<Upload, ArtifactError> {
        self.begin(expected, size, offset, None)
    }

    /// As [`ArtifactStore::begin_upload_at`], for the client certificate `by`: refused when the
    /// artifacts its uploads hold that no release in `by.kept` uses (partial uploads included,
    /// this one's held bytes not counted twice) and this upload's size would pass the client
    /// budget; otherwise `by` is recorded as the uploader before anything is written.
    ///
    /// # Errors
    ///
    /// As [`ArtifactStore::begin_upload_at`]; [`ArtifactError::ClientBudget`] naming the
    /// certificate, what it holds and the budget.
    pub fn begin_upload_by(
        &self,
        expected: &Sha256Hex,
        size: u64,
        offset: u64,
        by: &Uploader<'_>,
    ) -> Result<Upload, ArtifactError> {
        self.begin(expected, size, offset, Some(by))
    }

    fn begin(
        &self,
        expected: &Sha256Hex,
        size: u64,
        offset: u64,
        by: Option<&Uploader<'_>>,
    ) -> Result<Upload, ArtifactError> {
        if size > self.max_bytes {
            return Err(ArtifactError::TooLarge {
                digest: expected.clone(),
                size,
                max: self.max_bytes,
            });
        }
        if offset > size {
            return Err(ArtifactError::ResumePastEnd {
                digest: expected.clone(),
                offset,
                size,
            });
        }
        let claim =
            Claim::take(&self.active, expected).ok_or_else(|| ArtifactError::UploadBusy {
                digest: expected.clone(),
            })?;
        // The claim keeps every other upload of this digest away from the partial file from
        // here on, so what `held` says now is what is opened below.
        let held = self.held(expected);
        if offset != 0 && offset != held {
            return Err(ArtifactError::ResumeMismatch {
                digest: expected.clone(),
                offset,
                held,
            });
        }
        self.check_room(expected, size, held, offset)?;
        if let Some(by) = by {
            self.check_budget(expected, size, by)?;
            self.owners.record(expected, by.fingerprint)?;
        }
        let partial = self.partial_of(expected);
        let io = |op| {
            let path = partial.clone();
            move |source| ArtifactError::Io { op, path, source }
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(&partial)
            .map_err(io("open upload file"))?;
        let meta = file.metadata().map_err(io("inspect upload file"))?;
        if offset != 0 && meta.len() != offset {
            return Err(ArtifactError::ResumeMismatch {
                digest: expected.clone(),
                offset,
                held: meta.len(),
            });
        }
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        if offset == 0 {
            file.set_len(0).map_err(io("truncate upload file"))?;
        } else {
            hash_prefix(&mut file, offset, &mut hasher).map_err(io("re-hash upload file"))?;
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(io("seek upload file"))?;
        Ok(Upload::new(Parts {
            file,
            partial,
            dest: self.path_of(expected),
            objects: self.objects.clone(),
            expected: expected.clone(),
            size,
            held: offset,
            hasher,
            claim,
        }))
    }

    /// Refuses an upload that would take the bytes `by` holds in the store, in artifacts no
    /// kept release uses, past the client budget.
    fn check_budget(
        &self,
        expected: &Sha256Hex,
        size: u64,
        by: &Uploader<'_>,
    ) -> Result<(), ArtifactError> {
        let held = self
            .owners
            .uploaded_by(by.fingerprint)?
            .iter()
            .filter(|d| *d != expected && !by.kept.contains(*d))
            .map(|d| self.bytes_of(d))
            .fold(0u64, u64::saturating_add);
        if held.saturating_add(size) > self.client_budget {
            return Err(ArtifactError::ClientBudget {
                digest: expected.clone(),
                size,
                fingerprint: by.fingerprint.to_owned(),
                held,
                budget: self.client_budget,
            });
        }
        Ok(())
    }

    /// The bytes the store holds of `digest`: the artifact, or else its partial upload.
    fn bytes_of(&self, digest: &Sha256Hex) -> u64 {
        match fs::symlink_metadata(self.path_of(digest)) {
            Ok(m) if m.is_file() => m.len(),
            _ => self.held(digest),
        }
    }

    /// Refuses an upload whose remaining bytes would take the store past its quota or the
    /// filesystem under its free-space floor. `held` bytes of it are on disk already (counted
    /// in the store's use); `offset` of them are kept.
    fn check_room(
        &self,
        expected: &Sha256Hex,
        size: u64,
        held: u64,
        offset: u64,
    ) -> Result<(), ArtifactError> {
        let used = self.used()?;
        let others = used.saturating_sub(held);
        if others.saturating_add(size) > self.quota {
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
            let left = free.saturating_sub(size.saturating_sub(offset));
            if left < self.min_free {
                return Err(ArtifactError::DiskLow {
                    digest: expected.clone(),
                    size,
                    left,
                    min_free: self.min_free,
                });
            }
        }
        Ok(())
    }
}

/// Feeds the first `len` bytes of `file` to `hasher`; fails if the file is shorter.
fn hash_prefix(file: &mut File, len: u64, hasher: &mut ring::digest::Context) -> io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = Read::by_ref(file).take(len);
    let mut buf = vec![0u8; 256 * 1024];
    let mut read = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                hasher.update(&buf[..n]);
                read = read.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if read == len {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("the partial file ended after {read} of {len} held bytes"),
        ))
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

/// Logs the outcome of a `collect_partials` call: one `info` line naming the partial uploads
/// removed (nothing when none was), or a `warn` line on an error (hygiene, never fatal).
pub(crate) fn log_partial_collection(result: Result<Vec<(Sha256Hex, u64)>, ArtifactError>) {
    match result {
        Ok(removed) if removed.is_empty() => {}
        Ok(removed) => {
            let bytes: u64 = removed.iter().map(|(_, size)| size).sum();
            let digests: Vec<String> = removed.iter().map(|(d, _)| d.to_string()).collect();
            tracing::info!(
                "removed {} partial upload(s) nobody resumed within limits.unused_artifact_ttl, \
                 {bytes} bytes: {}",
                digests.len(),
                digests.join(", ")
            );
        }
        Err(e) => tracing::warn!(
            "cannot collect partial uploads: {}",
            crate::error::reason(&e)
        ),
    }
}
