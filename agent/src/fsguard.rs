//! Start-up checks of the files the agent trusts: its private keys, its config, its trust
//! anchors (the CA certificate and the trusted public keys), the directories holding them, and
//! its data directory.
//!
//! A key that others can read is a key others hold; a config, trust anchor or data directory
//! that others can write is a policy others set (a swapped CA or public key lets someone else
//! deploy). So the agent refuses to start (and `check-config` reports) when:
//!
//! * a private key (the TLS key, the audit signing key) grants the group or others any access;
//! * the config file, the CA certificate, a trusted public key, the data directory or a
//!   directory holding any of them is writable by the group or others (a writable directory
//!   lets its file be replaced);
//! * any of them is owned by a user other than the agent's own (or root, which the agent's user
//!   must trust anyway);
//! * any of them is a symlink (checked with `lstat`: a link could be repointed later).
//!
//! Each problem names the path, its mode in octal and its owner, and says how to fix it.
//! A path that does not exist yet is not a problem here: the data directory is created at
//! start, and a missing key or config is reported by the step that reads it.

use std::fmt;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::config::Config;

/// What a guarded path is, which decides the rules it must meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guarded {
    /// A private key: no group/other access at all.
    PrivateKey,
    /// The config file: no group/other write.
    Config,
    /// The data directory: no group/other write.
    DataDir,
    /// `tls.ca`, the CA that client certificates must chain to: no group/other write.
    CaCert,
    /// A trusted public key (`keys[].public_key`): no group/other write.
    TrustedKey,
    /// A directory that holds one of the above: no group/other write.
    Directory,
}

impl Guarded {
    /// How the path is named in messages.
    pub fn label(self) -> &'static str {
        match self {
            Guarded::PrivateKey => "private key",
            Guarded::Config => "config file",
            Guarded::DataDir => "data directory",
            Guarded::CaCert => "CA certificate",
            Guarded::TrustedKey => "trusted public key",
            Guarded::Directory => "directory",
        }
    }

    /// Permission bits that must not be set.
    fn forbidden_bits(self) -> u32 {
        match self {
            Guarded::PrivateKey => 0o077,
            Guarded::Config
            | Guarded::DataDir
            | Guarded::CaCert
            | Guarded::TrustedKey
            | Guarded::Directory => 0o022,
        }
    }

    /// The mode to suggest.
    fn fixed_mode(self) -> &'static str {
        match self {
            Guarded::PrivateKey | Guarded::Config => "600",
            Guarded::DataDir => "711",
            Guarded::CaCert | Guarded::TrustedKey => "644",
            Guarded::Directory => "755",
        }
    }

    /// A directory (the rest are regular files).
    fn is_dir(self) -> bool {
        match self {
            Guarded::DataDir | Guarded::Directory => true,
            Guarded::PrivateKey | Guarded::Config | Guarded::CaCert | Guarded::TrustedKey => false,
        }
    }
}

/// What is wrong with a guarded path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issue {
    /// The permission bits grant the group or others what they must not have.
    Mode,
    /// Owned by another user than the agent's (or root).
    Owner {
        /// The agent's effective uid.
        agent_uid: u32,
    },
    /// A symlink (to `target`).
    Symlink {
        /// Where it points.
        target: PathBuf,
    },
    /// A data directory that is not a directory, or a key/config that is not a regular file.
    WrongType,
}

/// One refused path, with everything the operator needs to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The path as the config names it.
    pub path: PathBuf,
    /// What it is.
    pub what: Guarded,
    /// Its permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Its owner's uid.
    pub uid: u32,
    /// What is wrong.
    pub issue: Issue,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.path.display();
        let what = self.what.label();
        let mode = self.mode;
        let owner = user_name(self.uid);
        match &self.issue {
            Issue::Mode => {
                let bad = mode & self.what.forbidden_bits();
                let who = match (self.what, bad & 0o070 != 0, bad & 0o007 != 0) {
                    (Guarded::PrivateKey, true, true) => "accessible to its group and others",
                    (Guarded::PrivateKey, true, false) => "accessible to its group",
                    (Guarded::PrivateKey, _, _) => "accessible to others",
                    (_, true, true) => "writable by its group and others",
                    (_, true, false) => "writable by its group",
                    (_, _, _) => "writable by others",
                };
                if self.what == Guarded::Directory && mode & 0o002 != 0 {
                    // A shared directory such as /tmp: chmod is not the fix, moving out is.
                    return write!(
                        f,
                        "{what} {path}, which holds a file the agent trusts, is {who} (mode {mode:04o}, owner {owner}): anyone may replace what it holds; move the agent's keys, config and trust anchors to a directory only the agent's user or root can write"
                    );
                }
                write!(
                    f,
                    "{what} {path} is {who} (mode {mode:04o}, owner {owner}): run `chmod {} {path}`",
                    self.what.fixed_mode()
                )
            }
            Issue::Owner { agent_uid } => write!(
                f,
                "{what} {path} is owned by {owner}, not by the agent's user {} or root (mode {mode:04o}): run `chown {} {path}`",
                user_name(*agent_uid),
                chown_name(*agent_uid),
            ),
            Issue::Symlink { target } => write!(
                f,
                "{what} {path} is a symlink to {} (mode {mode:04o}, owner {owner}); a link can be repointed: name the real path in the config",
                target.display()
            ),
            Issue::WrongType => write!(
                f,
                "{what} {path} is not a {} (mode {mode:04o}, owner {owner})",
                if self.what.is_dir() {
                    "directory"
                } else {
                    "regular file"
                }
            ),
        }
    }
}

/// A guarded path could not be inspected, or is unsafe to use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FsGuardError {
    /// `lstat` failed for a reason other than "not found".
    #[error("cannot inspect {} {}", what.label(), path.display())]
    Stat {
        /// The path.
        path: PathBuf,
        /// What it is.
        what: Guarded,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// One or more paths are unsafe; one line each.
    #[error("refusing to start: {}", render(.0))]
    Unsafe(Vec<Problem>),
}

fn render(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => many.iter().map(|p| format!("\n  {p}")).collect::<String>(),
    }
}

/// The paths the agent trusts, as its config names them, then the directories that hold them
/// (each once).
pub fn guarded_paths(config: &Config) -> Vec<(PathBuf, Guarded)> {
    let mut paths = vec![
        (config.path.clone(), Guarded::Config),
        (config.tls.key.clone(), Guarded::PrivateKey),
        (config.audit.signing_key.clone(), Guarded::PrivateKey),
        (config.tls.ca.clone(), Guarded::CaCert),
        (config.data_dir.clone(), Guarded::DataDir),
    ];
    paths.extend(
        config
            .policy
            .keys
            .iter()
            .map(|k| (k.file.clone(), Guarded::TrustedKey)),
    );
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (path, _) in &paths {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dirs.iter().any(|d| d == dir)
        {
            dirs.push(dir.to_owned());
        }
    }
    paths.extend(dirs.into_iter().map(|d| (d, Guarded::Directory)));
    paths
}

/// Every problem of the config's guarded paths, checked for the current effective uid.
///
/// # Errors
///
/// [`FsGuardError::Stat`] when a path cannot be inspected.
pub fn problems(config: &Config) -> Result<Vec<Problem>, FsGuardError> {
    let uid = nix::unistd::geteuid().as_raw();
    let mut out = Vec::new();
    for (path, what) in guarded_paths(config) {
        out.extend(inspect(&path, what, uid)?);
    }
    Ok(out)
}

/// Refuses to go on when any guarded path of `config` is unsafe (the daemon's first step after
/// the config is loaded).
///
/// # Errors
///
/// [`FsGuardError::Unsafe`] listing every problem, [`FsGuardError::Stat`] when a path cannot be
/// inspected.
pub fn check(config: &Config) -> Result<(), FsGuardError> {
    let found = problems(config)?;
    if found.is_empty() {
        Ok(())
    } else {
        Err(FsGuardError::Unsafe(found))
    }
}

/// The problems of one path for an agent running as `agent_uid`; a missing path has none.
///
/// # Errors
///
/// [`FsGuardError::Stat`] when `lstat` fails other than with "not found".
pub fn inspect(path: &Path, what: Guarded, agent_uid: u32) -> Result<Vec<Problem>, FsGuardError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(FsGuardError::Stat {
                path: path.to_owned(),
                what,
                source,
            });
        }
    };
    let mode = meta.mode() & 0o7777;
    let uid = meta.uid();
    let problem = |issue| Problem {
        path: path.to_owned(),
        what,
        mode,
        uid,
        issue,
    };
    let file_type = meta.file_type();
    if file_type.is_symlink() {
        let target = std::fs::read_link(path).unwrap_or_default();
        return Ok(vec![problem(Issue::Symlink { target })]);
    }
    let right_type = if what.is_dir() {
        file_type.is_dir()
    } else {
        file_type.is_file()
    };
    if !right_type {
        return Ok(vec![problem(Issue::WrongType)]);
    }
    let mut out = Vec::new();
    if uid != agent_uid && uid != 0 {
        out.push(problem(Issue::Owner { agent_uid }));
    }
    if mode & what.forbidden_bits() != 0 {
        out.push(problem(Issue::Mode));
    }
    Ok(out)
}

/// The user's name, or the uid when it has no passwd entry (for a `chown` command line).
fn chown_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

/// `name (uid N)`, or `uid N` when the user has no passwd entry.
fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(user)) => format!("{} (uid {uid})", user.name),
        _ => format!("uid {uid}"),
    }
}

#[cfg(test)]
mod tests;
