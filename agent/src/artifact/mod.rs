//! Artifacts: the content-addressed store, safe unpacking of release tarballs, and the releases
//! of one app with their atomically switched `current` link.
//!
//! * [`store`]: `<data_dir>/artifacts/sha256/<hex>`; uploads are hashed as they stream in and
//!   only a complete file with the declared size and digest is renamed into place.
//! * `owners`: which client certificate uploaded each artifact, for its budget.
//! * [`upload`]: one upload in progress, in `<data_dir>/artifacts/partial/<hex>`, kept when it
//!   breaks off so that the next upload of that digest resumes where it stopped.
//! * [`unpack`]: `.tar.gz` → directory, validating every entry itself (never `tar`'s own
//!   `unpack`): no absolute paths, no `..`, no links out of the release, no devices, no
//!   setuid bits, bounded entries and bytes; all or nothing.
//! * [`releases`]: `<data_dir>/apps/<app>/releases/<version>/` and the `current` symlink.

mod beneath;
mod owners;
pub mod releases;
pub mod store;
pub mod unpack;
pub mod upload;

#[cfg(test)]
mod tests;

use std::io;
use std::path::PathBuf;

use crate::job::Sha256Hex;

pub use releases::Releases;
pub use store::{ArtifactStore, Uploader};
pub use unpack::{UnpackError, UnpackLimits, unpack_release};
pub use upload::Upload;

pub(crate) use crate::state::sync_dir;

/// An artifact store or release operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// A filesystem operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done ("create", "write", "rename" ...).
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The declared artifact size is over the configured maximum.
    #[error("artifact {digest} declares {size} bytes, over the limit of {max} bytes")]
    TooLarge {
        /// The artifact's expected digest.
        digest: Sha256Hex,
        /// The declared size.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// More bytes arrived than the upload declared.
    #[error("upload of artifact {digest} sent more than the declared {declared} bytes")]
    Oversize {
        /// The artifact's expected digest.
        digest: Sha256Hex,
        /// The declared size.
        declared: u64,
    },
    /// The upload ended with a different number of bytes than it declared.
    #[error("upload of artifact {digest} ended after {actual} bytes, {expected} were declared")]
    SizeMismatch {
        /// The artifact's expected digest.
        digest: Sha256Hex,
        /// The declared size.
        expected: u64,
        /// The bytes received.
        actual: u64,
    },
    /// The uploaded bytes do not hash to the expected digest.
    #[error("uploaded artifact has digest {actual}, expected {expected}")]
    DigestMismatch {
        /// The digest the upload declared.
        expected: Sha256Hex,
        /// The digest of the bytes received.
        actual: Sha256Hex,
    },
    /// The upload was already refused (oversize); it cannot continue or finish.
    #[error("upload of artifact {digest} was already refused")]
    UploadFailed {
        /// The artifact's expected digest.
        digest: Sha256Hex,
    },
    /// A release needs an artifact the store does not hold (with that size).
    #[error("artifact {digest} ({size} bytes) is not in the store; upload it first")]
    Missing {
        /// The artifact's digest.
        digest: Sha256Hex,
        /// Its expected size.
        size: u64,
    },
    /// Unpacking a release failed; nothing was installed.
    #[error("cannot install release {version}")]
    Unpack {
        /// The release version.
        version: semver::Version,
        /// Why.
        #[source]
        source: UnpackError,
    },
    /// The version is already on disk, unpacked from another artifact: a version names one
    /// artifact, so what serves always matches the signed digest.
    #[error(
        "release {version} is already on disk, unpacked from artifact {on_disk}; this job names \
         artifact {wanted}: a version is one artifact, so deploy this one under a new version"
    )]
    DigestConflict {
        /// The release version.
        version: semver::Version,
        /// The digest it was unpacked from.
        on_disk: Sha256Hex,
        /// The digest the job names.
        wanted: Sha256Hex,
    },
    /// The version is on disk and serving, but nothing records which artifact it came from (an
    /// agent before this record existed unpacked it).
    #[error(
        "release {version} is on disk and current, but no record says which artifact it was \
         unpacked from; deploy artifact {wanted} under a new version"
    )]
    DigestUnknown {
        /// The release version.
        version: semver::Version,
        /// The digest the job names.
        wanted: Sha256Hex,
    },
    /// The release is not unpacked on disk.
    #[error("release {version} is not on disk at {}", path.display())]
    NotOnDisk {
        /// The release version.
        version: semver::Version,
        /// Where it would be.
        path: PathBuf,
    },
    /// The system random source failed.
    #[error("cannot draw a random temp name for {}", path.display())]
    Random {
        /// The directory the temp name was for.
        path: PathBuf,
    },
    /// The upload would take the store past `limits.max_store_bytes`.
    #[error(
        "artifact {digest} ({size} bytes) would take the store past its quota: {used} of {quota} bytes are in use (limits.max_store_bytes); unused artifacts are collected after each successful job"
    )]
    StoreFull {
        /// The artifact's expected digest.
        digest: Sha256Hex,
        /// The declared size.
        size: u64,
        /// Bytes the store holds now, uploads in progress included.
        used: u64,
        /// The quota.
        quota: u64,
    },
    /// The upload would take what one client certificate's uploads hold past
    /// `limits.max_unused_bytes_per_client` (case J9).
    #[error(
        "artifact {digest} ({size} bytes) would take the uploads of client certificate {fingerprint} past their budget: they hold {held} of {budget} bytes in artifacts no kept release uses (limits.max_unused_bytes_per_client); deploy those, or wait until they are collected (after a successful deploy, once older than limits.unused_artifact_ttl)"
    )]
    ClientBudget {
        /// The artifact's expected digest.
        digest: Sha256Hex,
        /// The declared size.
        size: u64,
        /// The certificate's fingerprint.
        fingerprint: String,
        /// Bytes its uploads hold in artifacts no kept release uses, this one's not counted.
        held: u64,
        /// The budget.
        budget: u64,
    },
    /// An upload asks to resume past the end it declares.
    #[error(
        "upload of sha256:{digest} resumes at byte {offset}, past its declared size of {size} bytes"
    )]
    ResumePastEnd {
        /// The artifact's expected digest.
        digest: Sha256Hex,
        /// The byte the stream starts at.
        offset: u64,
        /// The declared size.
        size: u64,
    },
    /// An upload asks to resume at another byte than the agent holds.
    #[error(
        "upload of sha256:{digest} resumes at byte {offset} but the agent holds {held}; resume at \
         byte {held} or start again at byte 0"
    )]
    ResumeMismatch {
        /// The artifact's expected digest.
        digest: Sha256Hex,
        /// The byte the stream starts at.
        offset: u64,
        /// The bytes of it the agent holds.
        held: u64,
    },
    /// Another upload of the same digest is in progress.
    #[error("an upload of sha256:{digest} is already in progress")]
    UploadBusy {
        /// The artifact's digest.
        digest: Sha256Hex,
    },
    /// The upload would leave less free space than the audit log needs.
    #[error(
        "artifact {digest} ({size} bytes) would leave {left} bytes free on the data filesystem, under the {min_free} bytes kept free for the audit log (audit.min_free_bytes)"
    )]
    DiskLow {
        /// The artifact's expected digest.
        digest: Sha256Hex,
        /// The declared size.
        size: u64,
        /// What would be left free.
        left: u64,
        /// The floor.
        min_free: u64,
    },
}

/// Sixteen random hex characters for temp names, from the system's CSPRNG.
pub(crate) fn random_suffix() -> Option<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 8];
    ring::rand::SystemRandom::new().fill(&mut bytes).ok()?;
    Some(hex::encode(bytes))
}

/// Hex SHA-256 of everything `reader` yields.
pub(crate) fn hash_reader(mut reader: impl io::Read) -> io::Result<Sha256Hex> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => ctx.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    digest_hex(ctx.finish())
}

/// A finished ring digest as a [`Sha256Hex`].
pub(crate) fn digest_hex(d: ring::digest::Digest) -> io::Result<Sha256Hex> {
    // 32 bytes always hex-encode to 64 lowercase hex characters; the error is unreachable.
    Sha256Hex::new(&hex::encode(d.as_ref())).map_err(io::Error::other)
}
