//! The audit log's hash chain: line hashes, signed checkpoints and verification.
//!
//! Each audit line is one JSON object `{"seq":N,"ts":"…","prev":"…","event":"…",…}`. `prev` is
//! [`line_hash`] of the previous line's exact bytes (without its `\n`), and [`GENESIS_PREV`] for
//! seq 1. A checkpoint entry (`"event":"checkpoint"`) also carries `key_id` and `sig`: base64
//! Ed25519 over [`checkpoint_message`]`(prev)`, so it vouches for every entry before it.
//!
//! [`ChainVerifier`] checks lines in order, across rotated files, and stops at the first bad
//! one, reporting its seq ([`ChainError`]). [`check_witness`] checks that a log still contains
//! a checkpoint line that a controller saw earlier: this catches what a chain alone cannot, a
//! rewrite of the whole file with a recomputed chain and a cut below the witnessed seq.
//! docs/audit-log.md describes the format for independent verifiers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Map, Value};

use crate::envelope::pae;
use crate::keys::{KeyId, PublicKey, SigningKey, sha256_hex};

/// `prev` of the first entry (seq 1): 64 zeros.
pub const GENESIS_PREV: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// DSSE payload type of a checkpoint signature.
pub const CHECKPOINT_PAYLOAD_TYPE: &str = "application/vnd.gantry.audit-checkpoint.v1";

/// The `event` of a checkpoint entry.
pub const CHECKPOINT_EVENT: &str = "checkpoint";

/// Lowercase hex SHA-256 of one line's exact bytes (without the `\n`).
pub fn line_hash(line: &[u8]) -> String {
    sha256_hex(line)
}

/// The message a checkpoint signs: `pae(CHECKPOINT_PAYLOAD_TYPE, prev_hex)`.
pub fn checkpoint_message(prev_hex: &str) -> Vec<u8> {
    pae(CHECKPOINT_PAYLOAD_TYPE, prev_hex.as_bytes())
}

/// The `sig` of a checkpoint entry whose `prev` is `prev_hex`: standard padded base64.
pub fn sign_checkpoint(key: &SigningKey, prev_hex: &str) -> String {
    BASE64.encode(key.sign(&checkpoint_message(prev_hex)))
}

/// Checks a checkpoint's `sig` (base64) over `prev_hex` under `key`.
///
/// # Errors
/// [`ChainErrorKind::BadCheckpointSignature`] if it is not base64 or does not verify.
pub fn verify_checkpoint(
    key: &PublicKey,
    prev_hex: &str,
    sig_b64: &str,
) -> Result<(), ChainErrorKind> {
    let sig = BASE64
        .decode(sig_b64)
        .map_err(|_| ChainErrorKind::BadCheckpointSignature)?;
    key.verify(&checkpoint_message(prev_hex), &sig)
        .map_err(|_| ChainErrorKind::BadCheckpointSignature)
}

/// The fields every entry has, parsed from one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryHead {
    /// Position in the chain, from 1.
    pub seq: u64,
    /// RFC 3339 UTC timestamp, as written.
    pub ts: String,
    /// Hash of the previous line (64 lowercase hex).
    pub prev: String,
    /// `noun.verb` event name.
    pub event: String,
    /// The whole object, for the event's own fields.
    pub fields: Map<String, Value>,
}

/// Parses one line into its [`EntryHead`], checking that the four common fields are present
/// and well-formed (it checks nothing about the chain).
///
/// # Errors
/// [`ChainErrorKind::NotJson`], [`ChainErrorKind::MissingField`] or
/// [`ChainErrorKind::InvalidField`].
pub fn parse_head(line: &[u8]) -> Result<EntryHead, ChainErrorKind> {
    let fields: Map<String, Value> =
        serde_json::from_slice(line).map_err(|_| ChainErrorKind::NotJson)?;
    let seq = match fields.get("seq") {
        None => return Err(ChainErrorKind::MissingField("seq")),
        Some(v) => v.as_u64().ok_or(ChainErrorKind::InvalidField {
            field: "seq",
            reason: "is not a non-negative integer",
        })?,
    };
    let ts = string_field(&fields, "ts")?.to_owned();
    let prev = string_field(&fields, "prev")?.to_owned();
    if !is_hash_hex(&prev) {
        return Err(ChainErrorKind::InvalidField {
            field: "prev",
            reason: "is not 64 lowercase hex digits",
        });
    }
    let event = string_field(&fields, "event")?.to_owned();
    Ok(EntryHead {
        seq,
        ts,
        prev,
        event,
        fields,
    })
}

fn string_field<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
) -> Result<&'a str, ChainErrorKind> {
    match fields.get(name) {
        None => Err(ChainErrorKind::MissingField(name)),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ChainErrorKind::InvalidField {
            field: name,
            reason: "is not a string",
        }),
    }
}

fn is_hash_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The first problem found in a chain, and the seq it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("seq {seq}: {kind}")]
pub struct ChainError {
    /// The seq of the bad entry. For a gap or reorder (and a line that is not JSON) it is the
    /// seq expected at that position; for a `prev` mismatch detected at entry k+1 it is k.
    pub seq: u64,
    /// What is wrong.
    pub kind: ChainErrorKind,
}

/// What is wrong with an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChainErrorKind {
    /// The line is not a JSON object (a torn or corrupted line).
    #[error("the line is not a JSON object (torn or corrupted)")]
    NotJson,
    /// A required field is missing.
    #[error("missing field {0:?}")]
    MissingField(&'static str),
    /// A field has the wrong type or form.
    #[error("field {field:?} {reason}")]
    InvalidField {
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The entry at this position has another seq: an entry was deleted, inserted or moved.
    #[error(
        "expected seq {expected} here, found seq {found} (an entry was deleted, inserted or moved)"
    )]
    SeqOutOfOrder {
        /// The seq this position must have.
        expected: u64,
        /// The seq the line carries.
        found: u64,
    },
    /// The first entry's `prev` is not [`GENESIS_PREV`].
    #[error("the first entry's prev must be 64 zeros, found {found}")]
    GenesisPrev {
        /// The recorded `prev`.
        found: String,
    },
    /// Entry `recorded_by - 1` does not hash to the `prev` recorded by entry `recorded_by`.
    #[error(
        "entry {} was altered: its hash does not match the prev recorded by entry {recorded_by} \
         (hash {computed}, recorded {recorded})",
        recorded_by - 1
    )]
    PrevMismatch {
        /// The entry whose `prev` does not match.
        recorded_by: u64,
        /// SHA-256 of the previous line as found.
        computed: String,
        /// The `prev` recorded by entry `recorded_by`.
        recorded: String,
    },
    /// A checkpoint's signature does not verify (or is not base64).
    #[error("checkpoint signature does not verify under the agent's key")]
    BadCheckpointSignature,
    /// A checkpoint names a key other than the expected one.
    #[error("checkpoint signed by key {key_id}, which is not the agent's key")]
    UnknownCheckpointKey {
        /// The key id the checkpoint names.
        key_id: String,
    },
    /// The log's line at the witnessed seq is not the line the witness holds.
    #[error(
        "the entry differs from the checkpoint the controller witnessed \
         (the log was rewritten from here or before)"
    )]
    WitnessMismatch,
    /// The log ends before the witnessed seq.
    #[error("the log ends at seq {last_seq}, before this witnessed checkpoint (the log was cut)")]
    WitnessBeyondEnd {
        /// The last seq the log holds (0 for an empty log).
        last_seq: u64,
    },
}

/// What a verified chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    /// Entries verified.
    pub entries: u64,
    /// Seq of the last entry (0 for an empty log).
    pub last_seq: u64,
    /// Hash of the last line ([`GENESIS_PREV`] for an empty log): the next entry's `prev`.
    pub last_hash: String,
    /// Checkpoint entries seen.
    pub checkpoints: u64,
    /// Seq of the last checkpoint, if any.
    pub last_checkpoint_seq: Option<u64>,
    /// Entries after the last checkpoint (all entries when there is none): a cut among these
    /// is invisible to the chain and its signatures.
    pub unsealed_after_checkpoint: u64,
}

/// Streaming verifier over raw lines (without `\n`), in order, across rotated files.
///
/// After the first error it stays failed and returns that error again.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    pubkey: Option<(PublicKey, KeyId)>,
    entries: u64,
    last_seq: u64,
    last_hash: String,
    checkpoints: u64,
    last_checkpoint_seq: Option<u64>,
    unsealed: u64,
    failed: Option<ChainError>,
}

impl ChainVerifier {
    /// A verifier for a log from seq 1. With `None`, checkpoints must still be well-formed but
    /// their signatures are not checked.
    pub fn new(pubkey: Option<PublicKey>) -> Self {
        Self::resume(pubkey, 0, GENESIS_PREV)
    }

    /// A verifier that continues after an already verified prefix ending at `last_seq` with
    /// line hash `last_hash` (for a writer reopening its log, or verifying a tail).
    pub fn resume(pubkey: Option<PublicKey>, last_seq: u64, last_hash: &str) -> Self {
        ChainVerifier {
            pubkey: pubkey.map(|k| (k, k.key_id())),
            entries: 0,
            last_seq,
            last_hash: last_hash.to_owned(),
            checkpoints: 0,
            last_checkpoint_seq: None,
            unsealed: 0,
            failed: None,
        }
    }

    /// The seq the next line must carry.
    pub fn next_seq(&self) -> u64 {
        self.last_seq.saturating_add(1)
    }

    /// Checks one more line (its exact bytes, without `\n`).
    ///
    /// # Errors
    /// The first problem found, naming its seq; every later call returns it again.
    pub fn push_line(&mut self, line: &[u8]) -> Result<(), ChainError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.check(line) {
            Ok(is_checkpoint) => {
                self.entries += 1;
                self.last_seq = self.next_seq();
                self.last_hash = line_hash(line);
                if is_checkpoint {
                    self.checkpoints += 1;
                    self.last_checkpoint_seq = Some(self.last_seq);
                    self.unsealed = 0;
                } else {
                    self.unsealed += 1;
                }
                Ok(())
            }
            Err(e) => {
                self.failed = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Checks `line` as the next entry; `Ok(true)` for a checkpoint.
    fn check(&self, line: &[u8]) -> Result<bool, ChainError> {
        let expected = self.next_seq();
        let at = |seq: u64| move |kind| ChainError { seq, kind };
        let head = parse_head(line).map_err(at(expected))?;
        if head.seq != expected {
            return Err(at(expected)(ChainErrorKind::SeqOutOfOrder {
                expected,
                found: head.seq,
            }));
        }
        if head.prev != self.last_hash {
            return Err(if self.last_seq == 0 {
                at(expected)(ChainErrorKind::GenesisPrev { found: head.prev })
            } else {
                at(self.last_seq)(ChainErrorKind::PrevMismatch {
                    recorded_by: expected,
                    computed: self.last_hash.clone(),
                    recorded: head.prev,
                })
            });
        }
        if head.event != CHECKPOINT_EVENT {
            return Ok(false);
        }
        let key_id = string_field(&head.fields, "key_id").map_err(at(expected))?;
        if key_id.parse::<KeyId>().is_err() {
            return Err(at(expected)(ChainErrorKind::InvalidField {
                field: "key_id",
                reason: "is not 64 lowercase hex digits",
            }));
        }
        let sig = string_field(&head.fields, "sig").map_err(at(expected))?;
        match &self.pubkey {
            None => {
                let well_formed = BASE64.decode(sig).is_ok_and(|raw| raw.len() == 64);
                if !well_formed {
                    return Err(at(expected)(ChainErrorKind::InvalidField {
                        field: "sig",
                        reason: "is not base64 of a 64-byte Ed25519 signature",
                    }));
                }
            }
            Some((key, id)) => {
                if key_id != id.as_str() {
                    return Err(at(expected)(ChainErrorKind::UnknownCheckpointKey {
                        key_id: key_id.to_owned(),
                    }));
                }
                verify_checkpoint(key, &head.prev, sig).map_err(at(expected))?;
            }
        }
        Ok(true)
    }

    /// What has been verified so far.
    pub fn summary(&self) -> VerifySummary {
        VerifySummary {
            entries: self.entries,
            last_seq: self.last_seq,
            last_hash: self.last_hash.clone(),
            checkpoints: self.checkpoints,
            last_checkpoint_seq: self.last_checkpoint_seq,
            unsealed_after_checkpoint: self.unsealed,
        }
    }

    /// What was verified (up to the last good line if an error occurred).
    pub fn finish(self) -> VerifySummary {
        self.summary()
    }
}

/// Verifies a whole log from seq 1: lines in order (across rotated files), without `\n`.
///
/// # Errors
/// The first bad entry's seq and why.
pub fn verify_lines<I, L>(lines: I, pubkey: Option<&PublicKey>) -> Result<VerifySummary, ChainError>
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    let mut verifier = ChainVerifier::new(pubkey.copied());
    for line in lines {
        verifier.push_line(line.as_ref())?;
    }
    Ok(verifier.finish())
}

/// The witness check: does this log (lines from seq 1) verify up to `witnessed_seq` and hold,
/// at that seq, exactly `witnessed_line`? Lines after it are not read. Signatures are not
/// checked here: run [`verify_lines`] with the agent's key for that.
///
/// # Errors
/// The first bad entry up to the witnessed seq; [`ChainErrorKind::WitnessMismatch`] at
/// `witnessed_seq` when the line there differs (a rewritten log, even with a recomputed chain);
/// [`ChainErrorKind::WitnessBeyondEnd`] at `witnessed_seq` when the log ends before it.
pub fn check_witness<I, L>(
    lines: I,
    witnessed_seq: u64,
    witnessed_line: &str,
) -> Result<(), ChainError>
where
    I: IntoIterator<Item = L>,
    L: AsRef<[u8]>,
{
    if witnessed_seq == 0 {
        return Ok(());
    }
    let mut verifier = ChainVerifier::new(None);
    for line in lines {
        let line = line.as_ref();
        let seq = verifier.next_seq();
        if seq == witnessed_seq && line != witnessed_line.as_bytes() {
            return Err(ChainError {
                seq,
                kind: ChainErrorKind::WitnessMismatch,
            });
        }
        verifier.push_line(line)?;
        if seq == witnessed_seq {
            return Ok(());
        }
    }
    Err(ChainError {
        seq: witnessed_seq,
        kind: ChainErrorKind::WitnessBeyondEnd {
            last_seq: verifier.summary().last_seq,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_hash_is_sha256_hex_of_the_bytes() {
        assert_eq!(
            line_hash(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(GENESIS_PREV.len(), 64);
    }

    #[test]
    fn checkpoint_message_is_pae_of_the_hex() {
        let msg = checkpoint_message(GENESIS_PREV);
        let head = b"DSSEv1 42 application/vnd.gantry.audit-checkpoint.v1 64 ";
        assert_eq!(&msg[..head.len()], head);
        assert_eq!(&msg[head.len()..], GENESIS_PREV.as_bytes());
    }

    #[test]
    fn signed_checkpoint_verifies_and_names_the_seq_when_forged() {
        let key = SigningKey::generate().unwrap();
        let first = format!(
            r#"{{"seq":1,"ts":"2026-01-01T00:00:00Z","prev":"{GENESIS_PREV}","event":"agent.started"}}"#
        );
        let prev = line_hash(first.as_bytes());
        let checkpoint = |sig: &str| {
            format!(
                r#"{{"seq":2,"ts":"2026-01-01T00:00:01Z","prev":"{prev}","event":"checkpoint","key_id":"{}","sig":"{sig}"}}"#,
                key.key_id()
            )
        };
        let good = checkpoint(&sign_checkpoint(&key, &prev));
        let summary = verify_lines([&first, &good], Some(&key.public_key())).unwrap();
        assert_eq!(summary.last_checkpoint_seq, Some(2));
        let forged = checkpoint(&sign_checkpoint(&key, GENESIS_PREV));
        let err = verify_lines([&first, &forged], Some(&key.public_key())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "seq 2: checkpoint signature does not verify under the agent's key"
        );
    }

    #[test]
    fn parse_head_reads_the_common_fields() {
        let line =
            format!(r#"{{"event":"job.step","prev":"{GENESIS_PREV}","ts":"t","seq":7,"x":1}}"#);
        let head = parse_head(line.as_bytes()).unwrap();
        assert_eq!(
            (head.seq, head.event.as_str(), head.ts.as_str()),
            (7, "job.step", "t")
        );
        assert_eq!(head.fields["x"], 1);
        assert_eq!(parse_head(b"{").unwrap_err(), ChainErrorKind::NotJson);
    }
}
