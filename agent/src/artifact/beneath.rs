//! Creating a release's files beneath its root directory's descriptor, one component at a
//! time, never through a symlink.
//!
//! The unpacker validates every entry before it writes, but a path such as `a/b/c` was then
//! resolved by the kernel from the root's *path* on every write: whoever could rename `a`
//! and put a symlink in its place between two writes (a process with the agent's uid) would
//! have had the next file written wherever the link pointed. Here each parent is opened
//! relative to the descriptor of the one above it with `O_DIRECTORY | O_NOFOLLOW`, and the
//! leaf is made with `mkdirat`/`openat(O_CREAT | O_EXCL | O_NOFOLLOW)`/`symlinkat`/`linkat`
//! relative to its parent's descriptor, so a swapped component fails the write (`ELOOP`,
//! `ENOTDIR`) instead of redirecting it.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Component, Path};

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fchmod, mkdirat};

/// A directory, held open, under which paths are resolved without following symlinks.
#[derive(Debug)]
pub struct Beneath {
    root: OwnedFd,
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// The named components of a relative path; anything else is refused (the unpacker has
/// normalised paths already; this is the last line, not the first).
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|c| match c {
            Component::Normal(name) => Ok(name),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", rel.display()),
            )),
        })
        .collect()
}

impl Beneath {
    /// Opens `root` (itself not a symlink).
    ///
    /// # Errors
    ///
    /// The OS error of opening it.
    pub fn open(root: &Path) -> io::Result<Beneath> {
        let root = openat(nix::fcntl::AT_FDCWD, root, dir_flags(), Mode::empty())?;
        Ok(Beneath { root })
    }

    /// The parent directory of `rel` (opened component by component) and `rel`'s last name.
    fn parent<'p>(&self, rel: &'p Path) -> io::Result<(OwnedFd, &'p OsStr)> {
        let names = components(rel)?;
        let Some((leaf, dirs)) = names.split_last() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty path"));
        };
        let mut dir = self.root.try_clone()?;
        for name in dirs {
            dir = openat(dir.as_fd(), *name, dir_flags(), Mode::empty())?;
        }
        Ok((dir, leaf))
    }

    /// Makes directory `rel` (its parents exist), mode 0755 whatever the umask.
    ///
    /// # Errors
    ///
    /// The OS error; `EEXIST` when the name exists in any form.
    pub fn make_dir(&self, rel: &Path) -> io::Result<()> {
        let (parent, leaf) = self.parent(rel)?;
        mkdirat(parent.as_fd(), leaf, Mode::from_bits_truncate(0o700))?;
        let dir = openat(parent.as_fd(), leaf, dir_flags(), Mode::empty())?;
        fchmod(dir.as_fd(), Mode::from_bits_truncate(0o755))?;
        Ok(())
    }

    /// Creates the new regular file `rel`, mode 0600, for writing.
    ///
    /// # Errors
    ///
    /// The OS error; `EEXIST` when the name exists in any form.
    pub fn create_file(&self, rel: &Path) -> io::Result<File> {
        let (parent, leaf) = self.parent(rel)?;
        let fd = openat(
            parent.as_fd(),
            leaf,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )?;
        Ok(File::from(fd))
    }

    /// Creates the symlink `rel` pointing at `target` (which is not resolved here).
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn symlink(&self, target: &OsStr, rel: &Path) -> io::Result<()> {
        let (parent, leaf) = self.parent(rel)?;
        nix::unistd::symlinkat(target, parent.as_fd(), leaf)?;
        Ok(())
    }

    /// Makes `rel` a hard link to the existing file `existing`, both beneath the root; a
    /// symlink at `existing` is linked as itself, never followed.
    ///
    /// # Errors
    ///
    /// The OS error.
    pub fn hard_link(&self, existing: &Path, rel: &Path) -> io::Result<()> {
        let (from_dir, from) = self.parent(existing)?;
        let (to_dir, to) = self.parent(rel)?;
        nix::unistd::linkat(from_dir.as_fd(), from, to_dir.as_fd(), to, AtFlags::empty())?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Security review F8: a directory of the release swapped for a symlink between two
    /// writes does not redirect the next write; it fails, and nothing lands outside.
    #[test]
    fn f8_a_directory_swapped_for_a_symlink_is_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("release");
        let outside = tmp.path().join("outside");
        fs::create_dir(&root).unwrap();
        fs::create_dir(&outside).unwrap();
        let b = Beneath::open(&root).unwrap();
        b.make_dir(Path::new("a")).unwrap();
        b.create_file(Path::new("a/one")).unwrap();
        // The swap: `a` becomes a link to a directory outside the release.
        fs::rename(root.join("a"), tmp.path().join("a-moved")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("a")).unwrap();
        for attempt in [
            b.create_file(Path::new("a/two")).map(drop),
            b.make_dir(Path::new("a/dir")),
            b.symlink(OsStr::new("x"), Path::new("a/link")),
            b.hard_link(Path::new("a-moved/one"), Path::new("a/hard")),
        ] {
            let err = attempt.unwrap_err();
            assert!(
                matches!(
                    err.raw_os_error(),
                    Some(nix::libc::ELOOP | nix::libc::ENOTDIR | nix::libc::ENOENT)
                ),
                "{err}"
            );
        }
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "a write escaped"
        );
        // A symlinked leaf is not opened through either.
        std::os::unix::fs::symlink(outside.join("target"), root.join("leaf")).unwrap();
        assert!(b.create_file(Path::new("leaf")).is_err());
        assert!(!outside.join("target").exists());
    }

    #[test]
    fn files_dirs_and_links_are_made_beneath_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let b = Beneath::open(tmp.path()).unwrap();
        b.make_dir(Path::new("bin")).unwrap();
        let mode = fs::metadata(tmp.path().join("bin"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
        use std::io::Write as _;
        b.create_file(Path::new("bin/app"))
            .unwrap()
            .write_all(b"x")
            .unwrap();
        assert!(
            b.create_file(Path::new("bin/app")).is_err(),
            "never over an existing name"
        );
        b.symlink(OsStr::new("app"), Path::new("bin/current"))
            .unwrap();
        b.hard_link(Path::new("bin/app"), Path::new("bin/same"))
            .unwrap();
        assert_eq!(fs::read(tmp.path().join("bin/same")).unwrap(), b"x");
        assert_eq!(
            fs::read_link(tmp.path().join("bin/current")).unwrap(),
            Path::new("app")
        );
        assert!(b.make_dir(Path::new("../escape")).is_err());
        assert!(b.create_file(Path::new("/etc/escape")).is_err());
    }
}
