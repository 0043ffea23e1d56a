//! One archive entry at a time: its path, type, mode, size and link target checked, then
//! written beneath the temp directory with no way to follow a link.

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs::{File, Permissions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use super::error::{UnpackError, io_err};
use crate::artifact::beneath::Beneath;

/// Bounds on what one release archive may unpack to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// The most bytes all regular files together may hold, counted as they are written.
    pub max_total_bytes: u64,
    /// The most entries the archive may have (every header the reader yields counts).
    pub max_entries: u64,
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

/// The state of one unpack: what was written so far, and the counts held against the limits.
pub(super) struct Unpacker<'a> {
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

impl<'a> Unpacker<'a> {
    /// An unpacker writing into `root` (a new, empty directory, opened as `beneath`) under
    /// `limits`.
    pub(super) fn new(
        artifact: &'a Path,
        root: &'a Path,
        beneath: &'a Beneath,
        limits: &'a UnpackLimits,
    ) -> Self {
        Self {
            artifact,
            root,
            beneath,
            limits,
            seen: BTreeMap::new(),
            entries: 0,
            written: 0,
            last: String::new(),
            buf: vec![0u8; 64 * 1024],
        }
    }

    /// Reads, checks and writes every entry of the gzip stream `file`.
    pub(super) fn run(&mut self, file: File) -> Result<(), UnpackError> {
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
