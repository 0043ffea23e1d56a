//! The service's content-addressed artifact store: `<data_dir>/artifacts/<sha256>`, written
//! from an upload only after its digest and size match what the plan names, then handed to
//! each agent that lacks it before its dispatch.

use std::io::Write;
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

/// Why an artifact was not kept.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// The bytes are not what the plan names.
    #[error(
        "artifact is sha256:{found} ({found_size} bytes) but the plan names sha256:{expected} ({expected_size} bytes)"
    )]
    Mismatch {
        /// The digest received.
        found: String,
        /// Its size.
        found_size: u64,
        /// The plan's digest.
        expected: String,
        /// The plan's size.
        expected_size: u64,
    },
    /// The digest is not 64 lowercase hex digits.
    #[error("{0:?} is not a SHA-256 (64 lowercase hex digits)")]
    BadDigest(String),
    /// The store cannot be written.
    #[error("artifact store {}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The artifact store.
#[derive(Debug, Clone)]
pub struct ArtifactStore {
    dir: PathBuf,
}

fn is_digest(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// An artifact being received: hashed as it is written to a temp file beside the store.
pub struct Incoming {
    file: tempfile::NamedTempFile,
    hash: Context,
    size: u64,
    dir: PathBuf,
}

impl Incoming {
    /// Appends a chunk.
    ///
    /// # Errors
    /// [`ArtifactError::Io`].
    pub fn write(&mut self, chunk: &[u8]) -> Result<(), ArtifactError> {
        self.file
            .write_all(chunk)
            .map_err(|source| ArtifactError::Io {
                path: self.file.path().to_owned(),
                source,
            })?;
        self.hash.update(chunk);
        self.size += chunk.len() as u64;
        Ok(())
    }

    /// Keeps it under its digest if it is `sha256` of `size` bytes.
    ///
    /// # Errors
    /// [`ArtifactError::Mismatch`] (nothing is kept), [`ArtifactError::Io`].
    pub fn finish(self, sha256: &str, size: u64) -> Result<PathBuf, ArtifactError> {
        let found = hex::encode(self.hash.finish().as_ref());
        if found != sha256 || self.size != size {
            return Err(ArtifactError::Mismatch {
                found,
                found_size: self.size,
                expected: sha256.to_owned(),
                expected_size: size,
            });
        }
        let path = self.dir.join(&found);
        let io = |source| ArtifactError::Io {
            path: path.clone(),
            source,
        };
        self.file.as_file().sync_all().map_err(io)?;
        self.file.persist(&path).map_err(|e| io(e.error))?;
        Ok(path)
    }
}

impl ArtifactStore {
    /// The store in `dir` (created if missing).
    ///
    /// # Errors
    /// [`ArtifactError::Io`].
    pub fn open(dir: &Path) -> Result<Self, ArtifactError> {
        std::fs::create_dir_all(dir).map_err(|source| ArtifactError::Io {
            path: dir.to_owned(),
            source,
        })?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Where the artifact with this digest is (or would be) kept; `None` for a bad digest.
    pub fn path_of(&self, sha256: &str) -> Option<PathBuf> {
        is_digest(sha256).then(|| self.dir.join(sha256))
    }

    /// Whether it is kept.
    pub fn has(&self, sha256: &str) -> bool {
        self.path_of(sha256).is_some_and(|p| p.exists())
    }

    /// Starts receiving an artifact.
    ///
    /// # Errors
    /// [`ArtifactError::Io`].
    pub fn incoming(&self) -> Result<Incoming, ArtifactError> {
        let file =
            tempfile::NamedTempFile::new_in(&self.dir).map_err(|source| ArtifactError::Io {
                path: self.dir.clone(),
                source,
            })?;
        Ok(Incoming {
            file,
            hash: Context::new(&SHA256),
            size: 0,
            dir: self.dir.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_artifact_is_kept_under_its_digest_only_when_it_matches() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let data = b"artifact bytes";
        let sha = hex::encode(ring::digest::digest(&SHA256, data).as_ref());
        let mut inc = store.incoming().unwrap();
        inc.write(&data[..4]).unwrap();
        inc.write(&data[4..]).unwrap();
        let path = inc.finish(&sha, data.len() as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert!(store.has(&sha));
        let mut bad = store.incoming().unwrap();
        bad.write(b"other").unwrap();
        let e = bad.finish(&"0".repeat(64), 5).unwrap_err();
        assert!(
            e.to_string().contains("but the plan names sha256:0000"),
            "{e}"
        );
        assert!(!store.has(&"0".repeat(64)));
        assert_eq!(store.path_of("../etc/passwd"), None);
    }
}
