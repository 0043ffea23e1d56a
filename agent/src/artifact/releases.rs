//! The releases of one app: `<app_dir>/releases/<version>/` and the `current` symlink.
//!
//! `current` is a relative symlink (`releases/<version>`), switched atomically: a new link
//! `current.tmp-<random>` is created and renamed over `current`, then the app directory is
//! fsynced. The app and releases directories are 0755 so the app's unprivileged user can
//! reach its release.
//!
//! A crash (kill -9, power loss) can leave a partial unpack (`releases/.unpack-<name>-<random>/`)
//! or a temp link (`current.tmp-<random>`) behind; [`Releases::remove_leftovers`] removes those
//! at start-up.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::store::remove_prefixed;
use super::{ArtifactError, ArtifactStore, UnpackLimits, random_suffix, sync_dir, unpack_release};
use crate::job::{ReleaseSpec, Sha256Hex};

const RELEASES: &str = "releases";
const CURRENT: &str = "current";
/// The name prefix of a partial unpack in the releases directory (see `unpack_release`).
const UNPACK_PREFIX: &str = ".unpack-";
/// A release being deleted by [`Releases::prune`].
const PRUNE_PREFIX: &str = ".prune-";
/// The name prefix of the temp link made while switching `current`.
const CURRENT_TEMP_PREFIX: &str = "current.tmp-";
/// `<app_dir>/release-digests/<version>`: the digest of the artifact a release was unpacked
/// from (beside `releases/`, which holds nothing but releases).
const DIGESTS: &str = "release-digests";

/// The releases of one app, rooted at `<data_dir>/apps/<app>`.
#[derive(Debug, Clone)]
pub struct Releases {
    app_dir: PathBuf,
}

impl Releases {
    /// The releases under `app_dir` (nothing is touched until something is installed).
    pub fn new(app_dir: &Path) -> Self {
        Self {
            app_dir: app_dir.to_owned(),
        }
    }

    /// `<app_dir>/releases`.
    pub fn releases_dir(&self) -> PathBuf {
        self.app_dir.join(RELEASES)
    }

    /// Where `version` is (or would be) unpacked: `<app_dir>/releases/<version>`.
    pub fn dir_of(&self, version: &semver::Version) -> PathBuf {
        self.releases_dir().join(version.to_string())
    }

    /// Whether `version` is unpacked: its directory exists and is a real directory. A release
    /// directory only ever appears complete (unpacking renames it into place).
    pub fn is_on_disk(&self, version: &semver::Version) -> bool {
        fs::symlink_metadata(self.dir_of(version)).is_ok_and(|m| m.is_dir())
    }

    /// Every release on disk, sorted by SemVer precedence. Names that are not canonical SemVer
    /// (temp directories, stray files) are ignored.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Io`] when the releases directory exists but cannot be read.
    pub fn on_disk(&self) -> Result<Vec<semver::Version>, ArtifactError> {
        let dir = self.releases_dir();
        let read = match fs::read_dir(&dir) {
            Ok(read) => read,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(ArtifactError::Io {
                    op: "list",
                    path: dir,
                    source,
                });
            }
        };
        let mut versions = Vec::new();
        for item in read {
            let item = item.map_err(|source| ArtifactError::Io {
                op: "list",
                path: dir.clone(),
                source,
            })?;
            let name = item.file_name();
            let Some(name) = name.to_str() else { continue };
            let Ok(version) = semver::Version::parse(name) else {
                continue;
            };
            if version.to_string() != name {
                continue;
            }
            if item.file_type().is_ok_and(|t| t.is_dir()) {
                versions.push(version);
            }
        }
        versions.sort();
        Ok(versions)
    }

    /// `<app_dir>/release-digests/<version>`.
    fn digest_record(&self, version: &semver::Version) -> PathBuf {
        self.app_dir.join(DIGESTS).join(version.to_string())
    }

    /// The digest of the artifact `version` was unpacked from, as recorded at unpack time;
    /// `None` when there is no record (a release unpacked before records existed).
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Io`] when the record exists but cannot be read or parsed.
    pub fn recorded_digest(
        &self,
        version: &semver::Version,
    ) -> Result<Option<Sha256Hex>, ArtifactError> {
        let path = self.digest_record(version);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(ArtifactError::Io {
                    op: "read",
                    path,
                    source,
                });
            }
        };
        Sha256Hex::new(text.trim())
            .map(Some)
            .map_err(|e| ArtifactError::Io {
                op: "parse",
                path,
                source: io::Error::new(io::ErrorKind::InvalidData, e),
            })
    }

    /// Unpacks the release's artifact from `store` into `releases/<version>/` and records its
    /// digest beside it. A release already on disk is reused only when it was unpacked from
    /// the same artifact: a version names one artifact (a different digest is refused), and a
    /// release without a record is unpacked anew unless it is current. Returns the release
    /// directory.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::DigestConflict`] / [`ArtifactError::DigestUnknown`] for a version on
    /// disk from another (or an unrecorded) artifact, [`ArtifactError::Missing`] when the
    /// store lacks the artifact, [`ArtifactError::Unpack`] when the archive is refused
    /// (nothing is left behind), [`ArtifactError::Io`].
    pub fn install(
        &self,
        store: &ArtifactStore,
        spec: &ReleaseSpec,
        limits: &UnpackLimits,
    ) -> Result<PathBuf, ArtifactError> {
        let dest = self.dir_of(&spec.version);
        if self.is_on_disk(&spec.version) {
            match self.recorded_digest(&spec.version)? {
                Some(d) if d == spec.artifact_sha256 => return Ok(dest),
                Some(on_disk) => {
                    return Err(ArtifactError::DigestConflict {
                        version: spec.version.clone(),
                        on_disk,
                        wanted: spec.artifact_sha256.clone(),
                    });
                }
                None if self.current().as_ref() == Some(&spec.version) => {
                    return Err(ArtifactError::DigestUnknown {
                        version: spec.version.clone(),
                        wanted: spec.artifact_sha256.clone(),
                    });
                }
                None => self.remove_release(&spec.version)?,
            }
        }
        if !store.contains(&spec.artifact_sha256, spec.artifact_size) {
            return Err(ArtifactError::Missing {
                digest: spec.artifact_sha256.clone(),
                size: spec.artifact_size,
            });
        }
        self.prepare_dirs()?;
        unpack_release(
            &store.path_of(&spec.artifact_sha256),
            &spec.artifact_sha256,
            &dest,
            limits,
        )
        .map_err(|source| ArtifactError::Unpack {
            version: spec.version.clone(),
            source,
        })?;
        // After the rename into place: a crash in between leaves a release without a record,
        // which the next install of that version unpacks anew (or refuses, when current).
        let record = self.digest_record(&spec.version);
        let digests = self.app_dir.join(DIGESTS);
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&digests)
            .map_err(|source| ArtifactError::Io {
                op: "create",
                path: digests,
                source,
            })?;
        crate::state::write_atomic(&record, spec.artifact_sha256.as_str().as_bytes()).map_err(
            |e| ArtifactError::Io {
                op: "record the digest of",
                path: record,
                source: io::Error::other(e),
            },
        )?;
        Ok(dest)
    }

    /// Deletes one release directory (moved aside first, so a crash leaves a `.prune-` name
    /// that start-up removes) and its digest record.
    fn remove_release(&self, version: &semver::Version) -> Result<(), ArtifactError> {
        let dir = self.dir_of(version);
        let suffix = random_suffix().ok_or_else(|| ArtifactError::Random {
            path: self.releases_dir(),
        })?;
        let doomed = self
            .releases_dir()
            .join(format!("{PRUNE_PREFIX}{version}-{suffix}"));
        fs::rename(&dir, &doomed).map_err(|source| ArtifactError::Io {
            op: "move aside for deletion",
            path: dir.clone(),
            source,
        })?;
        fs::remove_dir_all(&doomed).map_err(|source| ArtifactError::Io {
            op: "delete",
            path: doomed.clone(),
            source,
        })?;
        let record = self.digest_record(version);
        match fs::remove_file(&record) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(ArtifactError::Io {
                op: "delete",
                path: record,
                source,
            }),
        }
    }

    /// Creates the app and releases directories if needed, both 0755 (traversable by the
    /// app's user).
    fn prepare_dirs(&self) -> Result<(), ArtifactError> {
        let releases = self.releases_dir();
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(&releases)
            .map_err(|source| ArtifactError::Io {
                op: "create",
                path: releases.clone(),
                source,
            })?;
        for dir in [&self.app_dir, &releases] {
            fs::set_permissions(dir, Permissions::from_mode(0o755)).map_err(|source| {
                ArtifactError::Io {
                    op: "chmod 0755",
                    path: dir.clone(),
                    source,
                }
            })?;
        }
        Ok(())
    }

    /// Points `current` at `releases/<version>` atomically (new link, rename over the old one,
    /// fsync the app directory).
    ///
    /// # Errors
    ///
    /// [`ArtifactError::NotOnDisk`] when the release is not unpacked; [`ArtifactError::Io`].
    pub fn activate(&self, version: &semver::Version) -> Result<(), ArtifactError> {
        if !self.is_on_disk(version) {
            return Err(ArtifactError::NotOnDisk {
                version: version.clone(),
                path: self.dir_of(version),
            });
        }
        let suffix = random_suffix().ok_or_else(|| ArtifactError::Random {
            path: self.app_dir.clone(),
        })?;
        let temp = self.app_dir.join(format!("{CURRENT_TEMP_PREFIX}{suffix}"));
        let target = Path::new(RELEASES).join(version.to_string());
        std::os::unix::fs::symlink(&target, &temp).map_err(|source| ArtifactError::Io {
            op: "create symlink",
            path: temp.clone(),
            source,
        })?;
        let current = self.app_dir.join(CURRENT);
        if let Err(source) = fs::rename(&temp, &current) {
            let _ = fs::remove_file(&temp);
            return Err(ArtifactError::Io {
                op: "switch",
                path: current,
                source,
            });
        }
        sync_dir(&self.app_dir).map_err(|source| ArtifactError::Io {
            op: "fsync",
            path: self.app_dir.clone(),
            source,
        })
    }

    /// Removes what an interrupted unpack, prune or `current` switch left behind: every
    /// `releases/.unpack-*` and `releases/.prune-*` (a directory with everything in it; a
    /// symlink of that name is removed itself, never followed) and every
    /// `<app_dir>/current.tmp-*`. Release
    /// directories, `current` and anything else are left alone; a missing app or releases
    /// directory holds nothing. Returns the paths removed.
    ///
    /// Only for start-up: an install or activation in progress has such temp names too.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Io`] naming the directory that cannot be listed or the entry that
    /// cannot be removed; entries removed before the error stay removed.
    pub fn remove_leftovers(&self) -> Result<Vec<PathBuf>, ArtifactError> {
        let mut removed = remove_prefixed(&self.releases_dir(), UNPACK_PREFIX)?;
        removed.extend(remove_prefixed(&self.releases_dir(), PRUNE_PREFIX)?);
        removed.extend(remove_prefixed(&self.app_dir, CURRENT_TEMP_PREFIX)?);
        Ok(removed)
    }

    /// The release `current` points at, if it is a link of the form `releases/<version>`.
    pub fn current(&self) -> Option<semver::Version> {
        let target = fs::read_link(self.app_dir.join(CURRENT)).ok()?;
        let mut parts = target.components();
        let first = parts.next()?;
        let second = parts.next()?;
        if parts.next().is_some() || first.as_os_str() != RELEASES {
            return None;
        }
        let name = second.as_os_str().to_str()?;
        let version = semver::Version::parse(name).ok()?;
        (version.to_string() == name).then_some(version)
    }

    /// Deletes the oldest releases (by SemVer precedence) until at most `keep` remain, never one
    /// in `protect` nor the one `current` points at (so more than `keep` may remain). Returns
    /// the versions deleted, oldest first.
    ///
    /// Each release is first renamed to `releases/.prune-<version>-<random>` and then removed,
    /// so a crash mid-delete never leaves a partial directory under a version name.
    ///
    /// # Errors
    ///
    /// [`ArtifactError::Io`] naming the release directory; releases deleted before the error
    /// stay deleted.
    pub fn prune(
        &self,
        keep: usize,
        protect: &[semver::Version],
    ) -> Result<Vec<semver::Version>, ArtifactError> {
        let on_disk = self.on_disk()?;
        let mut excess = on_disk.len().saturating_sub(keep);
        let current = self.current();
        let mut removed = Vec::new();
        for version in on_disk {
            if excess == 0 {
                break;
            }
            if protect.contains(&version) || current.as_ref() == Some(&version) {
                continue;
            }
            self.remove_release(&version)?;
            removed.push(version);
            excess -= 1;
        }
        if !removed.is_empty() {
            let dir = self.releases_dir();
            sync_dir(&dir).map_err(|source| ArtifactError::Io {
                op: "fsync",
                path: dir,
                source,
            })?;
        }
        Ok(removed)
    }
}
