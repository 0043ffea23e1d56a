//! One agent per data dir: an exclusive `flock(2)` on `<data_dir>/agent.lock`, held for the
//! agent's whole life.
//!
//! Two agents on one data dir would interleave audit entries into one chain, race on state
//! files and each adopt the other's instances. The second one therefore exits before it writes
//! anything else, naming the pid that holds the lock. The lock is tied to the open file, so it
//! goes away with the process however it ends (`kill -9` included); the file is opened
//! close-on-exec, so instances and front doors, which outlive the agent, never hold it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The lock file's name inside the data dir.
pub const LOCK_FILE: &str = "agent.lock";

/// Why the data dir could not be locked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    #[error(
        "another agent ({holder}) is running on the data directory {}: one agent per data dir",
        dir.display()
    )]
    Held {
        /// The data dir.
        dir: PathBuf,
        /// Who holds it, as its lock file says ("pid 1234"), or "pid unknown".
        holder: String,
    },
    /// The lock file could not be opened or written.
    #[error("cannot use the lock file {}", path.display())]
    File {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// `flock` failed other than with "held".
    #[error("cannot lock {}", path.display())]
    Flock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: nix::Error,
    },
}

/// The held lock; dropping it releases the data dir.
#[derive(Debug)]
pub struct DataDirLock {
    _lock: Flock<File>,
}

/// Takes the data dir's lock, or says who holds it. Writes this process's pid into the file.
///
/// # Errors
///
/// [`LockError::Held`] when another agent runs on `data_dir`; the other variants when the file
/// cannot be used.
pub fn acquire(data_dir: &Path) -> Result<DataDirLock, LockError> {
    let path = data_dir.join(LOCK_FILE);
    let file_err = |source| LockError::File {
        path: path.clone(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(&path)
        .map_err(file_err)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let holder = match file.read_to_string(&mut text) {
                Ok(_) if !text.trim().is_empty() => format!("pid {}", text.trim()),
                _ => "pid unknown".to_owned(),
            };
            return Err(LockError::Held {
                dir: data_dir.to_owned(),
                holder,
            });
        }
        Err((_, source)) => {
            return Err(LockError::Flock {
                path: path.clone(),
                source,
            });
        }
    };
    lock.set_len(0).map_err(file_err)?;
    lock.rewind().map_err(file_err)?;
    writeln!(lock, "{}", std::process::id()).map_err(file_err)?;
    Ok(DataDirLock { _lock: lock })
}
