//! When a new checkpoint may replace the witnessed one: it is a checkpoint entry signed by the
//! agent's key, and the agent's lines from the witnessed checkpoint up to it chain, starting
//! with exactly the witnessed line. Anything else is a [`WitnessAlarm`].

use gantry_proto::audit_chain::{
    self, CHECKPOINT_EVENT, ChainErrorKind, ChainVerifier, line_hash, parse_head,
};
use gantry_proto::keys::{KeyId, PublicKey};

use super::Witnessed;

/// Why a checkpoint was not taken as the new witness: the agent's log does not move forward
/// along the chain this controller witnessed (or the checkpoint is not the agent's). The old
/// witness is kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WitnessAlarm {
    /// The line is not a checkpoint entry at its seq.
    #[error("the checkpoint at seq {seq} is not a checkpoint entry: {kind}")]
    Malformed {
        /// The seq the agent gave.
        seq: u64,
        /// What is wrong with the line.
        kind: ChainErrorKind,
    },
    /// Signed by another key than the one the agent reports.
    #[error(
        "the checkpoint at seq {seq} is signed by key {found}, not by the agent's key {expected}"
    )]
    WrongKey {
        /// The checkpoint's seq.
        seq: u64,
        /// The key id the checkpoint names.
        found: String,
        /// The agent's key.
        expected: KeyId,
    },
    /// The signature does not verify.
    #[error("the checkpoint at seq {seq} does not verify under the agent's key {key_id}")]
    BadSignature {
        /// The checkpoint's seq.
        seq: u64,
        /// The agent's key.
        key_id: KeyId,
    },
    /// The new checkpoint is below the witnessed one.
    #[error(
        "the agent's newest checkpoint is at seq {new_seq}, below the one witnessed at seq \
         {witnessed_seq} (the log was cut or rewritten)"
    )]
    Behind {
        /// The witnessed seq.
        witnessed_seq: u64,
        /// The new checkpoint's seq.
        new_seq: u64,
    },
    /// The lines between the two do not chain.
    #[error(
        "the checkpoint at seq {new_seq} does not extend the one witnessed at seq \
         {witnessed_seq}: seq {at}: {kind}"
    )]
    DoesNotExtend {
        /// The witnessed seq.
        witnessed_seq: u64,
        /// The new checkpoint's seq.
        new_seq: u64,
        /// Where the chain breaks.
        at: u64,
        /// How.
        kind: ChainErrorKind,
    },
}

impl WitnessAlarm {
    /// The witnessed seq the alarm is about, if there is one.
    pub fn witnessed_seq(&self) -> Option<u64> {
        match self {
            WitnessAlarm::Malformed { .. }
            | WitnessAlarm::WrongKey { .. }
            | WitnessAlarm::BadSignature { .. } => None,
            WitnessAlarm::Behind { witnessed_seq, .. }
            | WitnessAlarm::DoesNotExtend { witnessed_seq, .. } => Some(*witnessed_seq),
        }
    }
}

/// The `key_id` a checkpoint line names, if it parses.
pub(super) fn line_key_id(line: &str) -> Option<String> {
    let head = parse_head(line.as_bytes()).ok()?;
    head.fields
        .get("key_id")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

/// Checks that `line` is a checkpoint entry at `seq`, signed by `key`.
///
/// # Errors
///
/// [`WitnessAlarm::Malformed`], [`WitnessAlarm::WrongKey`] or [`WitnessAlarm::BadSignature`].
pub fn check_checkpoint(seq: u64, line: &str, key: &PublicKey) -> Result<(), WitnessAlarm> {
    let malformed = |kind| WitnessAlarm::Malformed { seq, kind };
    let head = parse_head(line.as_bytes()).map_err(malformed)?;
    if head.seq != seq {
        return Err(malformed(ChainErrorKind::SeqOutOfOrder {
            expected: seq,
            found: head.seq,
        }));
    }
    if head.event != CHECKPOINT_EVENT {
        return Err(malformed(ChainErrorKind::InvalidField {
            field: "event",
            reason: "is not \"checkpoint\"",
        }));
    }
    let field = |name: &'static str| {
        head.fields
            .get(name)
            .and_then(|v| v.as_str())
            .ok_or(malformed(ChainErrorKind::MissingField(name)))
    };
    let expected = key.key_id();
    let found = field("key_id")?;
    if found != expected.as_str() {
        return Err(WitnessAlarm::WrongKey {
            seq,
            found: found.to_owned(),
            expected,
        });
    }
    audit_chain::verify_checkpoint(key, &head.prev, field("sig")?).map_err(|_| {
        WitnessAlarm::BadSignature {
            seq,
            key_id: expected,
        }
    })
}

/// Checks that the checkpoint `new_seq`/`new_line` extends `old`: `lines` are the agent's
/// lines from `old.seq` on (at least up to `new_seq`); the first must be exactly `old.line`,
/// each next one must chain to the one before (checkpoints between verifying under `key`), and
/// the one at `new_seq` must be exactly `new_line`. Run [`check_checkpoint`] on the new line
/// too.
///
/// # Errors
///
/// [`WitnessAlarm::Behind`] for a checkpoint below the witnessed one (or another line at the
/// same seq), [`WitnessAlarm::DoesNotExtend`] naming the seq where the chain breaks.
pub fn check_extends<L: AsRef<str>>(
    old: &Witnessed,
    new_seq: u64,
    new_line: &str,
    lines: &[L],
    key: &PublicKey,
) -> Result<(), WitnessAlarm> {
    let breaks = |at: u64, kind: ChainErrorKind| WitnessAlarm::DoesNotExtend {
        witnessed_seq: old.seq,
        new_seq,
        at,
        kind,
    };
    if new_seq < old.seq {
        return Err(WitnessAlarm::Behind {
            witnessed_seq: old.seq,
            new_seq,
        });
    }
    let mut lines = lines.iter().map(AsRef::as_ref);
    match lines.next() {
        Some(first) if first == old.line => {}
        Some(_) => return Err(breaks(old.seq, ChainErrorKind::WitnessMismatch)),
        None => {
            return Err(breaks(
                old.seq,
                ChainErrorKind::WitnessBeyondEnd {
                    last_seq: old.seq.saturating_sub(1),
                },
            ));
        }
    }
    if new_seq == old.seq {
        // The same checkpoint again (another job ended without a new one being written).
        return if new_line == old.line {
            Ok(())
        } else {
            Err(breaks(old.seq, ChainErrorKind::WitnessMismatch))
        };
    }
    let mut verifier = ChainVerifier::resume(Some(*key), old.seq, &line_hash(old.line.as_bytes()));
    for line in lines {
        let seq = verifier.next_seq();
        verifier
            .push_line(line.as_bytes())
            .map_err(|e| breaks(e.seq, e.kind))?;
        if seq == new_seq {
            return if line == new_line {
                Ok(())
            } else {
                Err(breaks(new_seq, ChainErrorKind::WitnessMismatch))
            };
        }
    }
    Err(breaks(
        new_seq,
        ChainErrorKind::WitnessBeyondEnd {
            last_seq: verifier.summary().last_seq,
        },
    ))
}
