//! Who uploaded what: `<dir>/owners/<hex>` holds the fingerprint of the client certificate
//! whose upload stored (or is storing) the artifact with that digest.
//!
//! It is what bounds one certificate's share of the store (case J9,
//! `limits.max_unused_bytes_per_client`): the bytes of the artifacts a certificate uploaded
//! that no kept release uses, partial uploads included. A record is written before the first
//! byte of an upload, so a restart forgets nobody's share, and it goes once neither the
//! artifact nor a partial upload of it is left.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::ArtifactError;
use crate::job::Sha256Hex;

/// A fingerprint is 64 hex characters; anything longer in a record is not one.
const MAX_RECORD_BYTES: u64 = 128;

/// The records of `<dir>/owners`.
#[derive(Debug, Clone)]
pub(super) struct Owners {
    dir: PathBuf,
}

impl Owners {
    /// Opens `dir`, creating it (mode 0700) if needed.
    pub(super) fn open(dir: PathBuf) -> Result<Self, ArtifactError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|source| ArtifactError::Io {
                op: "create artifact directory",
                path: dir.clone(),
                source,
            })?;
        Ok(Self { dir })
    }

    fn path_of(&self, digest: &Sha256Hex) -> PathBuf {
        self.dir.join(digest.as_str())
    }

    /// Records `fingerprint` as the uploader of `digest` (durably: written, synced, renamed).
    pub(super) fn record(
        &self,
        digest: &Sha256Hex,
        fingerprint: &str,
    ) -> Result<(), ArtifactError> {
        let path = self.path_of(digest);
        crate::state::write_atomic(&path, format!("{fingerprint}\n").as_bytes()).map_err(|e| {
            ArtifactError::Io {
                op: "record the uploader of",
                path,
                source: io::Error::other(e),
            }
        })
    }

    /// The digests whose record names `fingerprint`.
    pub(super) fn uploaded_by(&self, fingerprint: &str) -> Result<Vec<Sha256Hex>, ArtifactError> {
        let mut digests = Vec::new();
        for (digest, path) in self.records()? {
            if read_record(&path)?.as_deref() == Some(fingerprint) {
                digests.push(digest);
            }
        }
        Ok(digests)
    }

    /// Removes the records of the digests `gone` says nothing is left of; returns how many.
    pub(super) fn prune(&self, gone: impl Fn(&Sha256Hex) -> bool) -> Result<usize, ArtifactError> {
        let mut removed = 0;
        for (digest, path) in self.records()? {
            if !gone(&digest) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(ArtifactError::Io {
                        op: "remove the uploader record",
                        path,
                        source,
                    });
                }
            }
        }
        Ok(removed)
    }

    /// Every record named by a digest, with its path.
    fn records(&self) -> Result<Vec<(Sha256Hex, PathBuf)>, ArtifactError> {
        let io = |source| ArtifactError::Io {
            op: "list the uploader records in",
            path: self.dir.clone(),
            source,
        };
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            // Temp files of a record being written, and anything else, are not records.
            if let Ok(digest) = Sha256Hex::new(&entry.file_name().to_string_lossy()) {
                records.push((digest, entry.path()));
            }
        }
        Ok(records)
    }
}

/// The fingerprint a record holds; `None` when it went meanwhile.
fn read_record(path: &Path) -> Result<Option<String>, ArtifactError> {
    let err = |source| ArtifactError::Io {
        op: "read the uploader record",
        path: path.to_owned(),
        source,
    };
    let file = match File::options()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e)),
    };
    let mut text = String::new();
    file.take(MAX_RECORD_BYTES)
        .read_to_string(&mut text)
        .map_err(err)?;
    Ok(Some(text.trim_end().to_owned()))
}
