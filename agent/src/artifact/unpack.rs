//! Safe unpacking of a release `.tar.gz`.
//!
//! Rust tar crates have a history of extraction CVEs (symlink and hard-link escapes, PAX and
//! ustar headers disagreeing about a size), so this module reads entries with the `tar` crate
//! but never lets it write: every entry is validated here and written here.
//!
//! The rules, each refused with an [`UnpackError`] naming the entry:
//!
//! * the artifact must hash to the expected digest, checked before any entry is read;
//! * paths are relative, have no `..`, and do not normalise to nothing (a directory entry
//!   for the archive root itself, `./`, as `tar -C dir .` writes, is accepted and skipped);
//! * no entry path appears twice, and none passes through a symlink or a file written earlier:
//!   parent directories are created here as real directories, files are opened with
//!   `O_CREAT | O_EXCL | O_NOFOLLOW`, so nothing is ever written through a link;
//! * symlink targets are relative, of the form `../../a/b` (leading `..` only), and stay
//!   inside the release when resolved from the link's directory. With that form every link
//!   resolves inside the release whatever other links exist, so the order of entries cannot
//!   build an escape out of links that are each harmless;
//! * hard links may only name a regular file already unpacked from this archive;
//! * no devices, fifos, sparse or other special entries; no setuid, setgid or sticky bits;
//! * the PAX size, when present, equals the ustar header size;
//! * at most `max_entries` entries and `max_total_bytes` bytes actually written (the
//!   decompressed stream itself is capped too, so a compression bomb stops early).
//!
//! Files get mode 0755 if the owner-executable bit was set, else 0644; directories 0755.
//! Everything is written into `<parent>/.unpack-<name>-<random>` beside the destination, which
//! is renamed into place only after every entry passed and the filesystem was synced. On any
//! error the temp directory is removed: nothing remains.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use super::beneath::Beneath;
use super::{hash_reader, random_suffix, sync_dir};
use crate::job::Sha256Hex;

/// Bounds on what one release archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// The most bytes all regular files together may hold, counted as they are written.
    pub max_total_bytes: u64,
    /// The most entries the archive may have (every header the reader yields counts).
    pub max_entries: u64,
}

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

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> UnpackError + use<> {
    let path = path.to_owned();
    move |source| UnpackError::Io { op, path, source }
}

/// Unpacks the `.tar.gz` at `artifact` into the new directory `dest`.
///
/// The artifact is hashed first and refused on mismatch before any entry is read. Entries are
/// validated one by one (see the [module docs](self)) and written into a temp directory beside
/// `dest`, which is synced and renamed to `dest` only when every entry passed; on any error it
/// is removed and nothing remains.
///
/// # Errors
///
/// [`UnpackError`]: the variant names the rule and the offending entry.
pub fn unpack_release(
    artifact: &Path,
    expected: &Sha256Hex,
    dest: &Path,
    limits: &UnpackLimits,
) -> Result<(), UnpackError> {
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = dest.file_name().ok_or_else(|| UnpackError::Io {
        op: "unpack into",
        path: dest.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "destination has no file name"),
    })?;
    check_absent(dest)?;

    let mut file = File::open(artifact).map_err(io_err("open artifact", artifact))?;
    let actual = hash_reader(&mut file).map_err(io_err("read artifact", artifact))?;
    if actual != *expected {
        return Err(UnpackError::DigestMismatch {
            artifact: artifact.to_owned(),
            expected: expected.clone(),
            actual,
        });
    }
    file.seek(SeekFrom::Start(0))
        .map_err(io_err("rewind artifact", artifact))?;

    let suffix = random_suffix().ok_or_else(|| UnpackError::Io {
        op: "draw a random temp name in",
        path: parent.to_owned(),
        source: io::Error::other("system random source failed"),
    })?;
    let temp = parent.join(format!(".unpack-{}-{suffix}", name.to_string_lossy()));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&temp)
        .map_err(io_err("create", &temp))?;
    let guard = RemoveOnDrop(Some(temp.clone()));

    let beneath = Beneath::open(&temp).map_err(io_err("open", &temp))?;
    let mut unpacker = Unpacker {
        artifact,
        root: &temp,
        beneath: &beneath,
        limits,
        seen: BTreeMap::new(),
        entries: 0,
        written: 0,
        last: String::new(),
        buf: vec![0u8; 64 * 1024],
    };
    unpacker.run(file)?;

    let root = open_dir(&temp).map_err(io_err("open", &temp))?;
    root.set_permissions(Permissions::from_mode(0o755))
        .map_err(io_err("chmod", &temp))?;
    sync_filesystem(&root).map_err(io_err("sync", &temp))?;
    drop(root);
    check_absent(dest)?;
    fs::rename(&temp, dest).map_err(io_err("rename unpacked release to", dest))?;
    guard.disarm();
    sync_dir(parent).map_err(io_err("fsync", parent))
}

fn check_absent(dest: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(dest) {
        Ok(_) => Err(UnpackError::DestExists {
            dest: dest.to_owned(),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(UnpackError::Io {
            op: "inspect",
            path: dest.to_owned(),
            source,
        }),
    }
}

/// Makes every file and directory written under `dir` durable, in one call.
fn sync_filesystem(dir: &File) -> io::Result<()> {
    nix::unistd::syncfs(dir).map_err(io::Error::from)
}

fn open_dir(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
}

/// Removes the temp directory unless disarmed (also on panic).
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            // remove_dir_all does not follow symlinks.
            let _ = fs::remove_dir_all(path);
        }
    }
}

/// What a normalised path inside the release is, as written by this unpacker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Written {
    /// A directory; `explicit` when an entry named it (not only created as a parent).
    Dir { explicit: bool },
    /// A regular file (or a hard link to one).
    File,
    /// A symlink.
    Symlink,
}

/// The decompressed stream, capped so that headers and skipped data cannot grow without bound.
struct CappedReader<R> {
    inner: R,
    remaining: u64,
    hit: Rc<Cell<bool>>,
}

impl<R: Read> Read for CappedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            // Only an error if there is more to read.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => {
                    self.hit.set(true);
                    Err(io::Error::other(
                        "decompressed archive is over its size limit",
                    ))
                }
            };
        }
        let max = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

struct Unpacker<'a> {
    artifact: &'a Path,
    /// The temp directory's path, for messages only: every write goes through `beneath`.
    root: &'a Path,
    beneath: &'a Beneath,
    limits: &'a UnpackLimits,
    seen: BTreeMap<PathBuf, Written>,
    entries: u64,
    written: u64,
    /// The last entry path read, for errors that have no entry of their own.
    last: String,
    buf: Vec<u8>,
}

/// Header bytes allowed per entry on top of file data in the decompressed stream (ustar
/// header, PAX and GNU long-name records, padding).
const STREAM_SLACK_PER_ENTRY: u64 = 16 * 1024;

impl Unpacker<'_> {
    fn run(&mut self, file: File) -> Result<(), UnpackError> {
        let hit = Rc::new(Cell::new(false));
        let cap = self.limits.max_total_bytes.saturating_add(
            self.limits
                .max_entries
                .saturating_add(2)
                .saturating_mul(STREAM_SLACK_PER_ENTRY),
        );
        let reader = CappedReader {
            inner: flate2::read::GzDecoder::new(BufReader::new(file)),
            remaining: cap,
            hit: hit.clone(),
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(|e| self.read_error(&hit, e))?;
        for entry in entries {
            let mut entry = entry.map_err(|e| self.read_error(&hit, e))?;
            let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            self.last.clone_from(&shown);
            self.entries += 1;
            if self.entries > self.limits.max_entries {
                return Err(UnpackError::TooManyEntries {
                    path: shown,
                    limit: self.limits.max_entries,
                });
            }
            self.entry(&mut entry, &shown).map_err(|e| match e {
                // A read error inside an entry's data caused by the stream cap.
                UnpackError::Malformed { .. } if hit.get() => self.too_large(),
                e => e,
            })?;
        }
        Ok(())
    }

    fn too_large(&self) -> UnpackError {
        UnpackError::TooLarge {
            path: self.last.clone(),
            limit: self.limits.max_total_bytes,
        }
    }

    fn read_error(&self, hit: &Cell<bool>, source: io::Error) -> UnpackError {
        if hit.get() {
            return self.too_large();
        }
        UnpackError::Malformed {
            artifact: self.artifact.to_owned(),
            after: self.last.clone(),
            source,
        }
    }

    fn malformed(&self, source: io::Error) -> UnpackError {
        UnpackError::Malformed {
            artifact: self.artifact.to_owned(),
            after: self.last.clone(),
            source,
        }
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let path = || shown.to_owned();
        let kind = entry.header().entry_type();
        // Archive-wide metadata (`git archive` writes one with the commit id): nothing to write.
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        let header_size = entry.header().entry_size().map_err(|e| self.malformed(e))?;
        if header_size != entry.size() {
            return Err(UnpackError::SizeMismatch {
                path: path(),
                header: header_size,
                pax: entry.size(),
            });
        }
        let rel = normalise(&entry.path_bytes(), shown)?;

        enum Kind {
            File,
            Dir,
            Symlink,
            HardLink,
        }
        let what = match kind {
            tar::EntryType::Regular => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::HardLink,
            tar::EntryType::Char => {
                return Err(UnpackError::SpecialFile {
                    path: path(),
                    kind: "character device",
                });
            }
            tar::EntryType::Block => {
                return Err(UnpackError::SpecialFile {
                    path: path(),
                    kind: "block device",
                });
            }
            tar::EntryType::Fifo => {
                return Err(UnpackError::SpecialFile {
                    path: path(),
                    kind: "fifo",
                });
            }
            other => {
                return Err(UnpackError::UnsupportedType {
                    path: path(),
                    kind: format!("{other:?}"),
                });
            }
        };
        let mode = entry.header().mode().map_err(|e| self.malformed(e))?;
        if mode & 0o7000 != 0 {
            return Err(UnpackError::SpecialBits { path: path(), mode });
        }
        if !matches!(what, Kind::File) && entry.size() != 0 {
            return Err(UnpackError::UnexpectedData {
                path: path(),
                size: entry.size(),
            });
        }
        if rel.as_os_str().is_empty() {
            // `./`: the release root itself, which this unpacker creates.
            return match what {
                Kind::Dir => Ok(()),
                _ => Err(UnpackError::EmptyPath { path: path() }),
            };
        }

        self.make_parents(&rel, shown)?;
        match self.seen.get(&rel) {
            Some(Written::Dir { explicit: false }) if matches!(what, Kind::Dir) => {
                self.seen.insert(rel, Written::Dir { explicit: true });
                return Ok(());
            }
            Some(_) => return Err(UnpackError::Duplicate { path: path() }),
            None => {}
        }
        let full = self.root.join(&rel);
        match what {
            Kind::Dir => {
                self.beneath
                    .make_dir(&rel)
                    .map_err(io_err("create directory", &full))?;
                self.seen.insert(rel, Written::Dir { explicit: true });
            }
            Kind::File => {
                self.write_file(entry, &rel, &full, mode, shown)?;
                self.seen.insert(rel, Written::File);
            }
            Kind::Symlink => {
                let target = entry.link_name_bytes().unwrap_or(Cow::Borrowed(&[]));
                check_symlink(&rel, &target, shown)?;
                self.beneath
                    .symlink(OsStr::from_bytes(&target), &rel)
                    .map_err(io_err("create symlink", &full))?;
                self.seen.insert(rel, Written::Symlink);
            }
            Kind::HardLink => {
                let target = entry.link_name_bytes().unwrap_or(Cow::Borrowed(&[]));
                let refuse = || UnpackError::HardLink {
                    path: path(),
                    target: String::from_utf8_lossy(&target).into_owned(),
                };
                let target_rel = normalise(&target, shown).map_err(|_| refuse())?;
                if self.seen.get(&target_rel) != Some(&Written::File) {
                    return Err(refuse());
                }
                // linkat(2) without AT_SYMLINK_FOLLOW; the target is a regular file this
                // unpacker wrote, reached through directories it made.
                self.beneath
                    .hard_link(&target_rel, &rel)
                    .map_err(io_err("create hard link", &full))?;
                self.seen.insert(rel, Written::File);
            }
        }
        Ok(())
    }

    /// Creates the missing parents of `rel` as real directories; refuses a parent that is a
    /// symlink or file written earlier.
    fn make_parents(&mut self, rel: &Path, shown: &str) -> Result<(), UnpackError> {
        let mut prefix = PathBuf::new();
        let mut components = rel.components().peekable();
        while let Some(c) = components.next() {
            if components.peek().is_none() {
                break;
            }
            prefix.push(c);
            match self.seen.get(&prefix) {
                Some(Written::Dir { .. }) => {}
                Some(Written::Symlink) => {
                    return Err(UnpackError::ThroughSymlink {
                        path: shown.to_owned(),
                        link: prefix.to_string_lossy().into_owned(),
                    });
                }
                Some(Written::File) => {
                    return Err(UnpackError::NotADirectory {
                        path: shown.to_owned(),
                        parent: prefix.to_string_lossy().into_owned(),
                    });
                }
                None => {
                    self.beneath
                        .make_dir(&prefix)
                        .map_err(io_err("create directory", &self.root.join(&prefix)))?;
                    self.seen
                        .insert(prefix.clone(), Written::Dir { explicit: false });
                }
            }
        }
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        full: &Path,
        mode: u32,
        shown: &str,
    ) -> Result<(), UnpackError> {
        let mut file = self
            .beneath
            .create_file(rel)
            .map_err(io_err("create", full))?;
        let expected = entry.size();
        let mut copied: u64 = 0;
        loop {
            let n = match entry.read(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.malformed(e)),
            };
            if n == 0 {
                break;
            }
            let n64 = n as u64;
            if self.written.saturating_add(n64) > self.limits.max_total_bytes {
                return Err(UnpackError::TooLarge {
                    path: shown.to_owned(),
                    limit: self.limits.max_total_bytes,
                });
            }
            file.write_all(&self.buf[..n])
                .map_err(io_err("write", full))?;
            self.written += n64;
            copied += n64;
        }
        if copied != expected {
            return Err(UnpackError::Truncated {
                path: shown.to_owned(),
                expected,
                actual: copied,
            });
        }
        let perm = if mode & 0o100 != 0 { 0o755 } else { 0o644 };
        file.set_permissions(Permissions::from_mode(perm))
            .map_err(io_err("chmod", full))?;
        Ok(())
    }
}

/// The entry path as a relative path of named components (`.` dropped); empty for the root.
fn normalise(raw: &[u8], shown: &str) -> Result<PathBuf, UnpackError> {
    let mut rel = PathBuf::new();
    for c in Path::new(OsStr::from_bytes(raw)).components() {
        match c {
            Component::Prefix(_) | Component::RootDir => {
                return Err(UnpackError::AbsolutePath {
                    path: shown.to_owned(),
                });
            }
            Component::ParentDir => {
                return Err(UnpackError::ParentDir {
                    path: shown.to_owned(),
                });
            }
            Component::CurDir => {}
            Component::Normal(name) => rel.push(name),
        }
    }
    Ok(rel)
}

/// A symlink at `rel` with `target` must be relative, `..`s only before named components, and
/// not climb above the release root from the link's directory.
fn check_symlink(rel: &Path, target: &[u8], shown: &str) -> Result<(), UnpackError> {
    let refuse = || UnpackError::SymlinkEscape {
        path: shown.to_owned(),
        target: String::from_utf8_lossy(target).into_owned(),
    };
    if target.is_empty() {
        return Err(refuse());
    }
    // Directories between the release root and the link.
    let depth = rel.components().count().saturating_sub(1);
    let mut ups = 0usize;
    let mut named = false;
    for c in Path::new(OsStr::from_bytes(target)).components() {
        match c {
            Component::Prefix(_) | Component::RootDir => return Err(refuse()),
            Component::CurDir => {}
            Component::ParentDir if named => return Err(refuse()),
            Component::ParentDir => ups += 1,
            Component::Normal(_) => named = true,
        }
    }
    if ups > depth {
        return Err(refuse());
    }
    Ok(())
}
