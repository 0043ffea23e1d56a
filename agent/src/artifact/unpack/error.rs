//! [`UnpackError`]: why an archive was refused or could not be unpacked, naming the entry.

use std::io;
use std::path::{Path, PathBuf};

use crate::job::Sha256Hex;

/// Why a release archive was refused. Nothing of it remains on disk.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnpackError {
    /// The artifact does not hash to the expected digest; no entry was read.
    #[error("artifact {} has digest {actual}, expected {expected}", artifact.display())]
    DigestMismatch {
        /// The artifact file.
        artifact: PathBuf,
        /// The digest the release names.
        expected: Sha256Hex,
        /// The digest of the file.
        actual: Sha256Hex,
    },
    /// The destination already exists.
    #[error("cannot unpack into {}: it already exists", dest.display())]
    DestExists {
        /// The destination directory.
        dest: PathBuf,
    },
    /// An entry path is absolute.
    #[error("archive entry {path:?} has an absolute path")]
    AbsolutePath {
        /// The entry path as written in the archive.
        path: String,
    },
    /// An entry path has a `..` component.
    #[error("archive entry {path:?} has a '..' component")]
    ParentDir {
        /// The entry path as written in the archive.
        path: String,
    },
    /// A non-directory entry path normalises to nothing (empty, `.`, `./`).
    #[error("archive entry {path:?} has an empty path")]
    EmptyPath {
        /// The entry path as written in the archive.
        path: String,
    },
    /// Two entries have the same (normalised) path.
    #[error("archive entry {path:?} appears twice")]
    Duplicate {
        /// The entry path as written in the archive.
        path: String,
    },
    /// A symlink's target is empty or absolute, escapes the release once resolved from the
    /// link's directory, or has a `..` after a named component (which cannot be proven to
    /// stay inside whatever the named component turns out to be).
    #[error("archive entry {path:?} is a symlink to {target:?}, outside the release")]
    SymlinkEscape {
        /// The entry path as written in the archive.
        path: String,
        /// The link target as written in the archive.
        target: String,
    },
    /// An entry path passes through a symlink unpacked earlier.
    #[error("archive entry {path:?} would be written through the symlink {link:?}")]
    ThroughSymlink {
        /// The entry path as written in the archive.
        path: String,
        /// The symlink on its way (normalised path).
        link: String,
    },
    /// An entry path passes through a file unpacked earlier.
    #[error("archive entry {path:?} has the file {parent:?} as a parent directory")]
    NotADirectory {
        /// The entry path as written in the archive.
        path: String,
        /// The file on its way (normalised path).
        parent: String,
    },
    /// A hard link that does not name a regular file unpacked earlier from this archive.
    #[error(
        "archive entry {path:?} is a hard link to {target:?}, which is not a file unpacked \
         earlier from this release"
    )]
    HardLink {
        /// The entry path as written in the archive.
        path: String,
        /// The link target as written in the archive.
        target: String,
    },
    /// A device, fifo or other special file.
    #[error("archive entry {path:?} is a {kind}, which releases may not contain")]
    SpecialFile {
        /// The entry path as written in the archive.
        path: String,
        /// "character device", "block device" or "fifo".
        kind: &'static str,
    },
    /// An entry type this unpacker does not write (sparse, contiguous, unknown).
    #[error("archive entry {path:?} has unsupported type {kind}")]
    UnsupportedType {
        /// The entry path as written in the archive.
        path: String,
        /// The type, as the `tar` crate names it.
        kind: String,
    },
    /// Setuid, setgid or sticky bits.
    #[error("archive entry {path:?} has mode {mode:o}: setuid, setgid and sticky bits are refused")]
    SpecialBits {
        /// The entry path as written in the archive.
        path: String,
        /// The mode from the header.
        mode: u32,
    },
    /// The PAX size disagrees with the ustar header size (parsers would disagree on where the
    /// next entry starts).
    #[error("archive entry {path:?}: PAX size {pax} disagrees with the header size {header}")]
    SizeMismatch {
        /// The entry path as written in the archive.
        path: String,
        /// The ustar header size.
        header: u64,
        /// The PAX extended-header size.
        pax: u64,
    },
    /// A directory or link entry that carries data.
    #[error("archive entry {path:?} is not a regular file but carries {size} bytes of data")]
    UnexpectedData {
        /// The entry path as written in the archive.
        path: String,
        /// Its data size.
        size: u64,
    },
    /// More entries than allowed.
    #[error("archive has more than {limit} entries (refused at {path:?})")]
    TooManyEntries {
        /// The first entry over the limit.
        path: String,
        /// The limit.
        limit: u64,
    },
    /// More bytes than allowed.
    #[error("archive unpacks to more than {limit} bytes (refused at {path:?})")]
    TooLarge {
        /// The entry being written when the limit was hit; when the decompressed stream itself
        /// hit its cap (oversized headers), the last entry read ("" if none).
        path: String,
        /// The limit.
        limit: u64,
    },
    /// A file's data ended before its declared size.
    #[error("archive entry {path:?} is truncated: {actual} of {expected} bytes")]
    Truncated {
        /// The entry path as written in the archive.
        path: String,
        /// The declared size.
        expected: u64,
        /// The bytes present.
        actual: u64,
    },
    /// The gzip stream or tar structure is invalid.
    #[error("artifact {} is not a valid .tar.gz (after entry {after:?})", artifact.display())]
    Malformed {
        /// The artifact file.
        artifact: PathBuf,
        /// The last entry read before the problem ("" if none).
        after: String,
        /// The reader's error.
        #[source]
        source: io::Error,
    },
    /// A filesystem operation failed.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

pub(super) fn io_err(
    op: &'static str,
    path: &Path,
) -> impl FnOnce(io::Error) -> UnpackError + use<> {
    let path = path.to_owned();
    move |source| UnpackError::Io { op, path, source }
}
