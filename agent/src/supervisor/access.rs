//! Whether an instance's user can reach what it will be asked to run.
//!
//! Instances and the front door run as the app's user, not as the agent. A path the agent can
//! open may still be out of that user's reach: a home directory of mode 0700 above the data
//! dir or above the agent's own binary (a `cargo build` in a private clone) makes every start
//! fail with `EACCES`. This module answers from the file modes, the way the kernel decides
//! (owner bits for the owner, else group bits for a member, else the other bits), so that the
//! agent can say at start-up which directory blocks whom instead of letting a deploy time out.
//! POSIX ACLs are not consulted; a directory that grants search only through an ACL is
//! reported as blocking.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::RunAs;

/// Why a user cannot reach a path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AccessError {
    /// A directory on the way lacks search (`x`) permission for the user.
    #[error(
        "{user} cannot search {} (mode {mode:04o}, owner uid {owner}, group gid {group}): every \
         directory above {} must be searchable by that user",
        dir.display(),
        target.display()
    )]
    NotSearchable {
        /// The user.
        user: UserName,
        /// The directory that blocks.
        dir: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        owner: u32,
        /// Its group.
        group: u32,
        /// What the user must reach.
        target: PathBuf,
    },
    /// The file itself is not executable by the user.
    #[error("{user} cannot execute {} (mode {mode:04o}, owner uid {owner})", path.display())]
    NotExecutable {
        /// The user.
        user: UserName,
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        owner: u32,
    },
    /// A path on the way could not be inspected.
    #[error("cannot inspect {}", path.display())]
    Inspect {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// A user as error messages name it: `nobody (uid 65534)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserName {
    /// The login name, when known.
    pub name: Option<String>,
    /// The uid.
    pub uid: u32,
}

impl fmt::Display for UserName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name} (uid {})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

/// The identity the kernel checks a path against.
#[derive(Debug, Clone)]
pub struct Identity {
    /// How messages name it.
    pub user: UserName,
    gid: u32,
    groups: Vec<u32>,
}

impl Identity {
    /// The identity an app's processes run with, or `None` when they run as the agent itself
    /// (the agent reaching a path is then proof enough) or as root (which needs no search bits).
    pub fn of(run_as: &RunAs) -> Option<Identity> {
        match run_as {
            RunAs::User {
                name,
                uid,
                gid,
                groups,
                by: _,
            } if *uid != 0 => Some(Identity {
                user: UserName {
                    name: Some(name.clone()),
                    uid: *uid,
                },
                gid: *gid,
                groups: groups.clone(),
            }),
            RunAs::User { .. } | RunAs::CurrentUser { .. } => None,
        }
    }

    /// Which of a file's permission triplets apply to this identity, as a shift of its mode.
    fn shift(&self, owner: u32, group: u32) -> u32 {
        if owner == self.user.uid {
            6
        } else if group == self.gid || self.groups.contains(&group) {
            3
        } else {
            0
        }
    }

    fn may(&self, meta: &std::fs::Metadata, bit: u32) -> bool {
        (meta.mode() >> self.shift(meta.uid(), meta.gid())) & bit != 0
    }
}

const SEARCH: u32 = 0o1;

/// Checks that `who` can search every directory from `/` down to `path`'s parent, and `path`
/// itself too when it is a directory. A path that does not exist yet is checked as far as it
/// exists (the agent creates the rest with modes of its choosing).
///
/// # Errors
///
/// [`AccessError::NotSearchable`] naming the first directory that blocks, or
/// [`AccessError::Inspect`] when a component cannot be read.
pub fn check_reachable(who: &Identity, path: &Path) -> Result<(), AccessError> {
    let existing = deepest_existing(path)?;
    for dir in existing.ancestors().collect::<Vec<_>>().into_iter().rev() {
        let meta = metadata(dir)?;
        if meta.is_dir() && !who.may(&meta, SEARCH) {
            return Err(AccessError::NotSearchable {
                user: who.user.clone(),
                dir: dir.to_owned(),
                mode: meta.mode() & 0o7777,
                owner: meta.uid(),
                group: meta.gid(),
                target: path.to_owned(),
            });
        }
    }
    Ok(())
}

/// Checks that `who` can reach and execute the file at `path`.
///
/// # Errors
///
/// As [`check_reachable`] for the directories, and [`AccessError::NotExecutable`] when the
/// file lacks the execute bit for that user.
pub fn check_executable(who: &Identity, path: &Path) -> Result<(), AccessError> {
    let file = std::fs::canonicalize(path).map_err(|source| AccessError::Inspect {
        path: path.to_owned(),
        source,
    })?;
    if let Some(parent) = file.parent() {
        check_reachable(who, parent)?;
    }
    let meta = metadata(&file)?;
    if who.may(&meta, 0o1) {
        Ok(())
    } else {
        Err(AccessError::NotExecutable {
            user: who.user.clone(),
            path: file,
            mode: meta.mode() & 0o7777,
            owner: meta.uid(),
        })
    }
}

fn metadata(path: &Path) -> Result<std::fs::Metadata, AccessError> {
    std::fs::metadata(path).map_err(|source| AccessError::Inspect {
        path: path.to_owned(),
        source,
    })
}

/// `path` with symlinks resolved, cut back to the part that exists.
fn deepest_existing(path: &Path) -> Result<PathBuf, AccessError> {
    let mut probe = path;
    loop {
        match std::fs::canonicalize(probe) {
            Ok(found) => return Ok(found),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match probe.parent() {
                Some(parent) if parent != probe => probe = parent,
                _ => {
                    return Err(AccessError::Inspect {
                        path: path.to_owned(),
                        source: e,
                    });
                }
            },
            Err(source) => {
                return Err(AccessError::Inspect {
                    path: probe.to_owned(),
                    source,
                });
            }
        }
    }
}
