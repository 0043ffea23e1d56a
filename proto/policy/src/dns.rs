//! The one DNS-name rule: how agent ids and controller names are written in configs and
//! certificates.
//!
//! Names are compared byte for byte (a job's `agent_id` against the agent's, a certificate's
//! SAN against `tls.client_names`), so the rule admits exactly one spelling of a name:
//! lowercase. An uppercase name is refused, never folded: `gantry dev-pki` and the agent's
//! config check refuse the same names, so the CLI cannot issue a certificate the agent would
//! not accept.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest DNS name, in bytes (RFC 1035 presentation form, no trailing dot).
pub const MAX_LEN: usize = 253;
/// Longest label, in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// A DNS name as certificates carry it: dot-separated labels of lowercase letters, digits and
/// inner `-`, each 1–63 bytes, at most 253 bytes in all.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct DnsName(String);

/// Why a string is not a [`DnsName`]. The message reads after the config entry or flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DnsNameError {
    /// The name is empty.
    #[error("is empty")]
    Empty,
    /// The name is longer than [`MAX_LEN`].
    #[error("{name:?} is longer than {MAX_LEN} bytes")]
    TooLong {
        /// The name given.
        name: String,
    },
    /// A label is empty, too long, starts or ends with `-`, or has a character outside
    /// lowercase letters, digits and `-`.
    #[error(
        "{name:?} is not a DNS name (dot-separated labels of lowercase letters, digits and \
         inner '-', each 1-63 bytes)"
    )]
    BadLabel {
        /// The name given.
        name: String,
    },
}

impl DnsName {
    /// Validates a DNS name.
    ///
    /// # Errors
    ///
    /// [`DnsNameError`] saying what is wrong.
    pub fn new(name: &str) -> Result<Self, DnsNameError> {
        if name.is_empty() {
            return Err(DnsNameError::Empty);
        }
        if name.len() > MAX_LEN {
            return Err(DnsNameError::TooLong {
                name: name.to_owned(),
            });
        }
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        };
        if !name.split('.').all(label_ok) {
            return Err(DnsNameError::BadLabel {
                name: name.to_owned(),
            });
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DnsName {
    type Error = DnsNameError;
    fn try_from(s: String) -> Result<Self, DnsNameError> {
        Self::new(&s)
    }
}

impl From<DnsName> for String {
    fn from(n: DnsName) -> String {
        n.0
    }
}

impl fmt::Display for DnsName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn lowercase_labels_are_dns_names() {
        for good in [
            "agent-1",
            "a",
            "web-1.prod.example.com",
            "1x",
            &"a".repeat(63),
        ] {
            assert_eq!(
                DnsName::new(good).map(|n| n.to_string()),
                Ok(good.to_owned())
            );
        }
    }

    #[test]
    fn uppercase_and_other_spellings_are_refused() {
        for bad in [
            "Agent-1",
            "AGENT",
            "a..b",
            ".a",
            "a.",
            "-a",
            "a-",
            "a_b",
            "a b",
            "127.0.0.1:1",
            "*.example.com",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(DnsName::new(bad), Err(DnsNameError::BadLabel { .. })),
                "{bad:?} accepted"
            );
        }
        assert_eq!(DnsName::new(""), Err(DnsNameError::Empty));
        let long = ["a"; 128].join(".");
        assert!(matches!(
            DnsName::new(&long),
            Err(DnsNameError::TooLong { .. })
        ));
    }

    proptest! {
        #[test]
        fn accepted_names_are_their_own_lowercase(s in "[a-zA-Z0-9.-]{0,70}") {
            if let Ok(n) = DnsName::new(&s) {
                prop_assert_eq!(n.as_str(), s.to_ascii_lowercase());
            }
        }
    }
}
