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
//!
//! Files: this one holds the walk from artifact to release (hash, temp directory, rename);
//! `entries` validates and writes each entry; `error` is [`UnpackError`].

mod entries;
mod error;

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub use self::entries::UnpackLimits;
use self::entries::Unpacker;
pub use self::error::UnpackError;
use self::error::io_err;
use crate::artifact::beneath::Beneath;
use crate::artifact::{hash_reader, random_suffix, sync_dir};
use crate::job::Sha256Hex;

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
    Unpacker::new(artifact, &temp, &beneath, limits).run(file)?;

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
