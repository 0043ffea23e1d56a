//! Secret environment values: never written in clear outside the app's state file.
//!
//! A job marks env keys as secret (`Release.secret_env`). Where the agent records a job's
//! environment (the `job.accepted` audit entry), [`audit_env`] replaces each secret value by
//! `hmac-sha256:<hex>`, keyed by 32 random bytes in `<data_dir>/secrets.key` (mode 0600,
//! created on first use). The same value under the same key gives the same hash, so an auditor
//! holding a candidate value and the key can check it, and a changed secret shows as a changed
//! hash; without the key the hash reveals nothing about the value. `ReleaseSpec`'s `Debug`
//! prints env names only. The app's state file (`apps/<app>/state.json`, mode 0600) does hold
//! the values: the agent needs them to restart instances.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use serde_json::{Map, Value};

use crate::job::ReleaseSpec;
use crate::state::{StateError, write_atomic};

/// The key file's name under the data directory.
pub const SECRETS_KEY_FILE: &str = "secrets.key";

/// Length of the HMAC key in bytes.
pub const KEY_LEN: usize = 32;

/// Why the secrets key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The key file could not be read or inspected.
    #[error("cannot read secrets key {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The key file is not 32 bytes.
    #[error("secrets key {} is {len} bytes, expected {KEY_LEN}", path.display())]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
    /// The key file is a symlink or not a regular file, or readable by others.
    #[error(
        "secrets key {} is unsafe: {why} (expected a regular file, mode 0600)",
        path.display()
    )]
    Unsafe {
        /// The file.
        path: PathBuf,
        /// What is wrong (mode, file type).
        why: String,
    },
    /// No random bytes for a new key.
    #[error("cannot generate a secrets key: the system random source failed")]
    Random,
    /// Writing a new key failed.
    #[error("cannot create the secrets key")]
    Write(#[source] StateError),
}

/// The HMAC key for secret values. Its `Debug` does not show it.
#[derive(Clone)]
pub struct SecretsKey([u8; KEY_LEN]);

impl std::fmt::Debug for SecretsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretsKey(<redacted>)")
    }
}

impl SecretsKey {
    /// Loads `<data_dir>/secrets.key`, creating it (32 random bytes, mode 0600, written
    /// atomically) when absent.
    ///
    /// # Errors
    ///
    /// [`SecretsError`]: unreadable, wrong length, a symlink, readable or writable by group
    /// or others, or it cannot be created.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, SecretsError> {
        let path = data_dir.join(SECRETS_KEY_FILE);
        match fs::symlink_metadata(&path) {
            Ok(meta) => {
                if !meta.file_type().is_file() {
                    return Err(SecretsError::Unsafe {
                        path,
                        why: "not a regular file (a symlink?)".to_owned(),
                    });
                }
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(SecretsError::Unsafe {
                        path,
                        why: format!("mode {mode:04o} gives group or others access"),
                    });
                }
                let bytes = fs::read(&path).map_err(|source| SecretsError::Read {
                    path: path.clone(),
                    source,
                })?;
                let key: [u8; KEY_LEN] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| SecretsError::BadLength {
                            path: path.clone(),
                            len: bytes.len(),
                        })?;
                Ok(Self(key))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut key = [0u8; KEY_LEN];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| SecretsError::Random)?;
                write_atomic(&path, &key).map_err(SecretsError::Write)?;
                Ok(Self(key))
            }
            Err(source) => Err(SecretsError::Read { path, source }),
        }
    }

    /// The raw key, for [`audit_env`].
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// `hmac-sha256:<lowercase hex>` of `value` under `key`.
pub fn hash_value(key: &[u8], value: &str) -> String {
    let k = hmac::Key::new(hmac::HMAC_SHA256, key);
    format!(
        "hmac-sha256:{}",
        hex::encode(hmac::sign(&k, value.as_bytes()))
    )
}

/// The release's env for the audit log: every key, with the values of `spec.secret_env`
/// replaced by [`hash_value`] under `key`. Never contains a secret value.
pub fn audit_env(spec: &ReleaseSpec, key: &[u8]) -> Map<String, Value> {
    spec.env
        .iter()
        .map(|(k, v)| {
            let shown = if spec.secret_env.contains(k) {
                hash_value(key, v)
            } else {
                v.clone()
            };
            (k.clone(), Value::String(shown))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    use super::*;
    use crate::job::{HealthSpec, Probe, Sha256Hex, StrategyKind};

    const SECRET: &str = "hunter2-db-password";

    fn spec() -> ReleaseSpec {
        ReleaseSpec {
            version: semver::Version::new(1, 0, 0),
            artifact_sha256: Sha256Hex::of(b"x"),
            artifact_size: 1,
            strategy: StrategyKind::Hot,
            instances: 1,
            command: vec!["bin/server".to_owned()],
            health: HealthSpec {
                probe: Probe::Tcp,
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(1),
                healthy_threshold: 1,
                unhealthy_threshold: 1,
                deadline: Duration::from_secs(1),
            },
            env: BTreeMap::from([
                ("DB_PASSWORD".to_owned(), SECRET.to_owned()),
                ("MODE".to_owned(), "prod".to_owned()),
            ]),
            secret_env: BTreeSet::from(["DB_PASSWORD".to_owned()]),
            progress_deadline: Duration::from_secs(60),
            rollout: Default::default(),
            evidence: Vec::new(),
            notes: String::new(),
        }
    }

    #[test]
    fn the_audit_env_never_contains_a_secret_value() {
        let key = [7u8; KEY_LEN];
        let env = audit_env(&spec(), &key);
        let text = serde_json::to_string(&env).unwrap();
        assert!(!text.contains(SECRET), "{text}");
        assert_eq!(env["MODE"], "prod");
        let hashed = env["DB_PASSWORD"].as_str().unwrap();
        assert!(hashed.starts_with("hmac-sha256:"), "{hashed}");
        assert_eq!(hashed.len(), "hmac-sha256:".len() + 64);
        // Keyed: the same value under another key hashes differently; same key, same hash.
        assert_eq!(hashed, hash_value(&key, SECRET));
        assert_ne!(hashed, hash_value(&[8u8; KEY_LEN], SECRET));
    }

    #[test]
    fn debug_of_a_release_shows_no_env_values() {
        let shown = format!("{:?}", spec());
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains("prod"), "{shown}");
        assert!(shown.contains("DB_PASSWORD"), "{shown}");
        assert_eq!(
            format!("{:?}", SecretsKey([1; KEY_LEN])),
            "SecretsKey(<redacted>)"
        );
    }

    #[test]
    fn the_key_is_created_once_with_mode_0600_and_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = SecretsKey::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(SECRETS_KEY_FILE);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.len(), KEY_LEN as u64);
        let b = SecretsKey::load_or_create(dir.path()).unwrap();
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_ne!(a.as_bytes(), &[0u8; KEY_LEN]);
    }

    #[test]
    fn an_unsafe_or_short_key_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(SECRETS_KEY_FILE);
        fs::write(&path, [1u8; KEY_LEN]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = SecretsKey::load_or_create(dir.path()).unwrap_err();
        assert!(
            e.to_string()
                .contains("mode 0644 gives group or others access"),
            "{e}"
        );
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        fs::write(&path, [1u8; 5]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = SecretsKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("is 5 bytes, expected 32"), "{e}");
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/etc/hostname", &path).unwrap();
        let e = SecretsKey::load_or_create(dir.path()).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
    }
}
