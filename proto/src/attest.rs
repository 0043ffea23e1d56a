//! Release evidence: in-toto Statements (v1) of quality gates in DSSE envelopes.
//!
//! `gantry gate evaluate` measures a build's reports against thresholds and, only when every
//! gate passes, signs a [`Statement`] whose subject is the artifact's SHA-256 and whose
//! predicate ([`GateResults`], type [`GATE_PREDICATE_TYPE`]) lists every gate with its
//! measured value and threshold. The statement travels as a DSSE [`Envelope`] (the JSON
//! form of the DSSE spec): Ed25519 over [`pae`]`(`[`INTOTO_PAYLOAD_TYPE`]`, payload)`, where
//! `payload` is the statement's exact JSON bytes, never a re-serialisation.
//!
//! The predicate is shaped after SLSA's verification summary (`verifier.id`, `timeVerified`,
//! `policy.digest`, `verificationResult`), with the per-gate values the summary has no room
//! for, and an expiry, so that a host can refuse stale evidence.
//!
//! Also here: approval comments ([`sign_comment`]), what an approver wrote, bound to one job
//! and one key.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::envelope::{pae, sign_payload};
use crate::keys::{PublicKey, SigningKey};

/// DSSE payload type of an in-toto statement.
pub const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// `_type` of an in-toto Statement v1.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";

/// `predicateType` of Gantry's quality-gate results.
pub const GATE_PREDICATE_TYPE: &str = "https://gantry.example.invalid/gate-results/v1";

/// DSSE payload type of an approval comment ([`sign_comment`]).
pub const COMMENT_PAYLOAD_TYPE: &str = "application/vnd.gantry.approval-comment.v1";

/// Signs `comment` on the job whose bytes hash to `job_sha256` (lowercase hex).
pub fn sign_comment(
    key: &SigningKey,
    job_sha256: &str,
    comment: &str,
) -> crate::v1::ApprovalComment {
    let body = format!("{job_sha256}\n{comment}");
    crate::v1::ApprovalComment {
        key_id: key.key_id().to_string(),
        comment: comment.to_owned(),
        sig: sign_payload(key, COMMENT_PAYLOAD_TYPE, body.as_bytes()).to_vec(),
    }
}

/// Whether `c` is signed by `key` for the job whose bytes hash to `job_sha256`.
pub fn comment_signed_by(
    c: &crate::v1::ApprovalComment,
    job_sha256: &str,
    key: &PublicKey,
) -> bool {
    let body = format!("{job_sha256}\n{}", c.comment);
    key.verify(&pae(COMMENT_PAYLOAD_TYPE, body.as_bytes()), &c.sig)
        .is_ok()
}

/// Largest envelope a host parses (bytes of JSON).
pub const MAX_ENVELOPE_BYTES: usize = 16 * 1024;

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Lowercase hex SHA-256 of the raw Ed25519 public key: a hint, never trusted.
    #[serde(default)]
    pub keyid: String,
    /// Base64 Ed25519 signature over `PAE(payloadType, payload)`.
    pub sig: String,
}

/// A DSSE envelope in its JSON form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the payload's exact bytes.
    pub payload: String,
    /// The payload's type; [`INTOTO_PAYLOAD_TYPE`] for evidence.
    pub payload_type: String,
    /// The signatures.
    pub signatures: Vec<EnvelopeSignature>,
}

/// The artifact a statement is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subject {
    /// A name for people (the artifact's file name).
    pub name: String,
    /// Algorithm to lowercase hex digest; Gantry reads `sha256`.
    pub digest: std::collections::BTreeMap<String, String>,
}

/// An in-toto Statement v1 carrying [`GateResults`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Statement {
    /// [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub type_: String,
    /// What the statement is about.
    pub subject: Vec<Subject>,
    /// [`GATE_PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// The gates.
    pub predicate: GateResults,
}

/// `PASSED` or `FAILED`, as in-toto and SLSA write results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    /// The measured value meets the threshold.
    Passed,
    /// It does not.
    Failed,
}

/// Who measured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verifier {
    /// E.g. `gantry gate evaluate 0.1.0`.
    pub id: String,
}

/// The thresholds the gates were measured against, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRef {
    /// The thresholds file, or `builtin:cd-model` for the defaults.
    pub uri: String,
    /// `sha256` of the thresholds' canonical JSON.
    pub digest: std::collections::BTreeMap<String, String>,
}

/// One gate's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GateResult {
    /// `tests`, `coverage`, `security` or `performance`.
    pub name: String,
    /// Whether it passed.
    pub result: Verdict,
    /// The measured values, by name (`pass_rate_percent`, `line_percent`, ...).
    pub measured: std::collections::BTreeMap<String, f64>,
    /// The thresholds, by the same names (`pass_rate_percent >= 100`).
    pub thresholds: std::collections::BTreeMap<String, String>,
    /// The report the values came from (file name and its SHA-256).
    pub source: String,
}

/// The predicate: every gate measured, with values and thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GateResults {
    /// Who measured.
    pub verifier: Verifier,
    /// RFC 3339 UTC.
    pub time_verified: String,
    /// Unix seconds: hosts refuse the evidence from then on.
    pub expires_at: i64,
    /// The thresholds.
    pub policy: PolicyRef,
    /// `PASSED` when every gate passed (the only kind `gate evaluate` signs).
    pub verification_result: Verdict,
    /// Every gate.
    pub gates: Vec<GateResult>,
}

/// Why an envelope or its statement is not usable evidence.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// Larger than [`MAX_ENVELOPE_BYTES`].
    #[error("envelope is {size} bytes, more than {MAX_ENVELOPE_BYTES}")]
    TooLarge {
        /// Its size.
        size: usize,
    },
    /// Not DSSE JSON, or the payload is not base64.
    #[error("not a DSSE envelope: {0}")]
    Envelope(String),
    /// The payload type is not [`INTOTO_PAYLOAD_TYPE`].
    #[error("payload type {0:?} is not {INTOTO_PAYLOAD_TYPE}")]
    PayloadType(String),
    /// The payload is not a Gantry gate statement.
    #[error("payload is not an in-toto gate statement: {0}")]
    Statement(String),
    /// Serialising a statement failed (not expected for these types).
    #[error("cannot serialise the statement")]
    Serialise(#[source] serde_json::Error),
}

impl Envelope {
    /// Signs `statement` with `key`: the payload is the statement's JSON bytes.
    ///
    /// # Errors
    ///
    /// [`AttestError::Serialise`].
    pub fn sign(statement: &Statement, key: &SigningKey) -> Result<Envelope, AttestError> {
        let payload = serde_json::to_vec(statement).map_err(AttestError::Serialise)?;
        let sig = sign_payload(key, INTOTO_PAYLOAD_TYPE, &payload);
        Ok(Envelope {
            payload: B64.encode(&payload),
            payload_type: INTOTO_PAYLOAD_TYPE.to_owned(),
            signatures: vec![EnvelopeSignature {
                keyid: key.key_id().to_string(),
                sig: B64.encode(sig),
            }],
        })
    }

    /// Parses an envelope from its JSON bytes, at most [`MAX_ENVELOPE_BYTES`].
    ///
    /// # Errors
    ///
    /// [`AttestError::TooLarge`], [`AttestError::Envelope`].
    pub fn parse(bytes: &[u8]) -> Result<Envelope, AttestError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(AttestError::TooLarge { size: bytes.len() });
        }
        serde_json::from_slice(bytes).map_err(|e| AttestError::Envelope(e.to_string()))
    }

    /// The envelope's JSON bytes.
    ///
    /// # Errors
    ///
    /// [`AttestError::Serialise`].
    pub fn to_json(&self) -> Result<Vec<u8>, AttestError> {
        serde_json::to_vec_pretty(self).map_err(AttestError::Serialise)
    }

    /// The payload's exact bytes.
    ///
    /// # Errors
    ///
    /// [`AttestError::Envelope`] when it is not base64.
    pub fn payload_bytes(&self) -> Result<Vec<u8>, AttestError> {
        B64.decode(&self.payload)
            .map_err(|e| AttestError::Envelope(format!("payload: {e}")))
    }

    /// Whether one of the signatures verifies under `key` over the exact payload bytes.
    pub fn signed_by(&self, key: &PublicKey) -> bool {
        let Ok(payload) = self.payload_bytes() else {
            return false;
        };
        let message = pae(&self.payload_type, &payload);
        self.signatures.iter().any(|s| {
            B64.decode(&s.sig)
                .is_ok_and(|sig| key.verify(&message, &sig).is_ok())
        })
    }

    /// The statement in the payload, decoded from the signed bytes.
    ///
    /// # Errors
    ///
    /// [`AttestError::PayloadType`], [`AttestError::Envelope`], [`AttestError::Statement`]
    /// (wrong `_type` or `predicateType` included).
    pub fn statement(&self) -> Result<Statement, AttestError> {
        if self.payload_type != INTOTO_PAYLOAD_TYPE {
            return Err(AttestError::PayloadType(self.payload_type.clone()));
        }
        let payload = self.payload_bytes()?;
        let st: Statement =
            serde_json::from_slice(&payload).map_err(|e| AttestError::Statement(e.to_string()))?;
        if st.type_ != STATEMENT_TYPE {
            return Err(AttestError::Statement(format!(
                "_type {:?} is not {STATEMENT_TYPE}",
                st.type_
            )));
        }
        if st.predicate_type != GATE_PREDICATE_TYPE {
            return Err(AttestError::Statement(format!(
                "predicateType {:?} is not {GATE_PREDICATE_TYPE}",
                st.predicate_type
            )));
        }
        Ok(st)
    }
}

impl Statement {
    /// The SHA-256 digests of its subjects.
    pub fn subject_sha256(&self) -> impl Iterator<Item = &str> {
        self.subject
            .iter()
            .filter_map(|s| s.digest.get("sha256").map(String::as_str))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn statement() -> Statement {
        Statement {
            type_: STATEMENT_TYPE.to_owned(),
            subject: vec![Subject {
                name: "app.tar.gz".to_owned(),
                digest: BTreeMap::from([("sha256".to_owned(), "ab".repeat(32))]),
            }],
            predicate_type: GATE_PREDICATE_TYPE.to_owned(),
            predicate: GateResults {
                verifier: Verifier {
                    id: "test".to_owned(),
                },
                time_verified: "2026-01-01T00:00:00Z".to_owned(),
                expires_at: 2_000_000_000,
                policy: PolicyRef {
                    uri: "builtin:cd-model".to_owned(),
                    digest: BTreeMap::new(),
                },
                verification_result: Verdict::Passed,
                gates: vec![GateResult {
                    name: "tests".to_owned(),
                    result: Verdict::Passed,
                    measured: BTreeMap::from([("pass_rate_percent".to_owned(), 100.0)]),
                    thresholds: BTreeMap::from([(
                        "pass_rate_percent".to_owned(),
                        ">= 100".to_owned(),
                    )]),
                    source: "junit.xml".to_owned(),
                }],
            },
        }
    }

    #[test]
    fn a_signed_envelope_verifies_and_round_trips() {
        let key = SigningKey::generate().unwrap();
        let env = Envelope::sign(&statement(), &key).unwrap();
        let back = Envelope::parse(&env.to_json().unwrap()).unwrap();
        assert!(back.signed_by(&key.public_key()));
        assert_eq!(back.statement().unwrap(), statement());
        let other = SigningKey::generate().unwrap();
        assert!(!back.signed_by(&other.public_key()));
    }

    #[test]
    fn a_changed_payload_no_longer_verifies() {
        let key = SigningKey::generate().unwrap();
        let mut env = Envelope::sign(&statement(), &key).unwrap();
        let mut st = statement();
        st.subject[0]
            .digest
            .insert("sha256".to_owned(), "cd".repeat(32));
        env.payload = B64.encode(serde_json::to_vec(&st).unwrap());
        assert!(!env.signed_by(&key.public_key()));
    }

    #[test]
    fn a_comment_is_bound_to_its_job_and_key() {
        let key = SigningKey::generate().unwrap();
        let job = "ab".repeat(32);
        let c = sign_comment(&key, &job, "explored the demo: ok");
        assert!(comment_signed_by(&c, &job, &key.public_key()));
        assert!(!comment_signed_by(&c, &"cd".repeat(32), &key.public_key()));
        let mut edited = c.clone();
        edited.comment = "explored the demo: fine".to_owned();
        assert!(!comment_signed_by(&edited, &job, &key.public_key()));
        let other = SigningKey::generate().unwrap();
        assert!(!comment_signed_by(&c, &job, &other.public_key()));
    }

    #[test]
    fn another_predicate_type_is_refused() {
        let key = SigningKey::generate().unwrap();
        let mut st = statement();
        st.predicate_type = "https://slsa.dev/provenance/v1".to_owned();
        let env = Envelope::sign(&st, &key).unwrap();
        assert!(matches!(env.statement(), Err(AttestError::Statement(_))));
    }
}
