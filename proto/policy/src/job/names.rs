//! The names and digests a job carries, each checked once: [`AppName`], [`JobId`],
//! [`Sha256Hex`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name taken from a job or the config is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} is empty")]
    Empty {
        /// What kind of name ("app name", "job id").
        kind: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{kind} {name:?} is longer than {max} bytes")]
    TooLong {
        /// What kind of name.
        kind: &'static str,
        /// The offending name.
        name: String,
        /// The limit.
        max: usize,
    },
    /// The name has a character outside the allowed set, or starts with one not allowed first.
    #[error("{kind} {name:?} may only contain {allowed}")]
    BadCharacter {
        /// What kind of name.
        kind: &'static str,
        /// The offending name.
        name: String,
        /// The allowed set, for the message.
        allowed: &'static str,
    },
}

fn check_name(
    kind: &'static str,
    name: &str,
    max: usize,
    allowed: &'static str,
    ok: impl Fn(char) -> bool,
) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if name.len() > max {
        return Err(NameError::TooLong {
            kind,
            name: name.to_owned(),
            max,
        });
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if !first_ok || !name.chars().all(ok) {
        return Err(NameError::BadCharacter {
            kind,
            name: name.to_owned(),
            allowed,
        });
    }
    Ok(())
}

/// An app name: `[a-z0-9][a-z0-9_-]{0,62}`, safe as a path component and a user-visible label.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AppName(String);

impl AppName {
    /// Validates an app name.
    ///
    /// # Errors
    ///
    /// [`NameError`] when it is empty, longer than 63 bytes, or has a character outside
    /// lowercase letters, digits, `-` and `_` (or does not start with a letter or digit).
    pub fn new(name: &str) -> Result<Self, NameError> {
        check_name(
            "app name",
            name,
            63,
            "lowercase letters, digits, '-' and '_', starting with a letter or digit",
            |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_',
        )?;
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AppName {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(&s)
    }
}

impl From<AppName> for String {
    fn from(n: AppName) -> String {
        n.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job id: 1–128 bytes of `[A-Za-z0-9._:-]`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct JobId(String);

impl JobId {
    /// Validates a job id.
    ///
    /// # Errors
    ///
    /// [`NameError`] when it is empty, longer than 128 bytes or has a character outside the set.
    pub fn new(id: &str) -> Result<Self, NameError> {
        check_name(
            "job id",
            id,
            128,
            "letters, digits, '.', '_', ':' and '-', starting with a letter or digit",
            |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'),
        )?;
        Ok(Self(id.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for JobId {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, NameError> {
        Self::new(&s)
    }
}

impl From<JobId> for String {
    fn from(n: JobId) -> String {
        n.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lowercase hex SHA-256 digest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256Hex(String);

/// A digest that is not 64 lowercase hex characters.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a SHA-256 digest (64 lowercase hex characters)")]
pub struct DigestError(pub String);

impl Sha256Hex {
    /// Validates a hex digest.
    ///
    /// # Errors
    ///
    /// [`DigestError`] unless it is exactly 64 lowercase hex characters.
    pub fn new(s: &str) -> Result<Self, DigestError> {
        if s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(s.to_owned()))
        } else {
            Err(DigestError(s.to_owned()))
        }
    }

    /// The digest of `data`.
    pub fn of(data: &[u8]) -> Self {
        Self(hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            data,
        )))
    }

    /// The digest as hex.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sha256Hex {
    type Error = DigestError;
    fn try_from(s: String) -> Result<Self, DigestError> {
        Self::new(&s)
    }
}

impl From<Sha256Hex> for String {
    fn from(d: Sha256Hex) -> String {
        d.0
    }
}

impl fmt::Display for Sha256Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
