//! How `job show` (and `release show`) present a release's notes and gate evidence: every
//! gate with its values and thresholds, who signed it and when, and the notes themselves.

use std::fmt::Write as _;

use gantry_policy::job::Sha256Hex;
use gantry_proto::attest::{Envelope, Verdict};
use gantry_proto::keys::PublicKey;
use serde_json::{Value, json};

use crate::flags;

/// One evidence envelope as shown: what it says and who signed it (verified or not).
#[derive(Debug, Clone)]
pub struct EvidenceView {
    /// SHA-256 of the envelope's bytes.
    pub digest: String,
    /// The key ids the envelope's signatures claim, each with whether a given key verified it.
    pub signers: Vec<(String, Option<bool>)>,
    /// The statement, when it decodes.
    pub statement: Result<gantry_proto::attest::Statement, String>,
}

/// Decodes each envelope and checks its signatures against `keys`.
pub fn evidence_views(evidence: &[Vec<u8>], keys: &[PublicKey]) -> Vec<EvidenceView> {
    evidence
        .iter()
        .map(|bytes| {
            let env = Envelope::parse(bytes);
            let signers = match &env {
                Ok(e) => e
                    .signatures
                    .iter()
                    .map(|s| {
                        let by = keys.iter().find(|k| k.key_id().as_str() == s.keyid);
                        (s.keyid.clone(), by.map(|k| e.signed_by(k)))
                    })
                    .collect(),
                Err(_) => Vec::new(),
            };
            EvidenceView {
                digest: Sha256Hex::of(bytes).to_string(),
                signers,
                statement: env
                    .and_then(|e| e.statement())
                    .map_err(|e| gantry_policy::error_chain(&e)),
            }
        })
        .collect()
}

fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Passed => "passed",
        Verdict::Failed => "FAILED",
    }
}

/// The text lines: notes (indented), then each envelope and its gates.
pub fn text(notes: &str, views: &[EvidenceView]) -> String {
    let mut out = String::new();
    if !notes.is_empty() {
        let _ = writeln!(out, "notes      sha256:{}", Sha256Hex::of(notes.as_bytes()));
        for line in notes.lines() {
            let _ = writeln!(out, "  | {line}");
        }
    }
    for (i, v) in views.iter().enumerate() {
        let signers: Vec<String> = v
            .signers
            .iter()
            .map(|(id, ok)| match ok {
                Some(true) => format!("key {id} (valid)"),
                Some(false) => format!("key {id} (INVALID)"),
                None => format!("key {id} (not checked)"),
            })
            .collect();
        let _ = writeln!(
            out,
            "evidence   [{i}] sha256:{} signed by {}",
            v.digest,
            if signers.is_empty() {
                "nobody".to_owned()
            } else {
                signers.join(", ")
            }
        );
        match &v.statement {
            Ok(st) => {
                let p = &st.predicate;
                let _ = writeln!(
                    out,
                    "  measured {} by {}, valid until {}, for sha256:{}",
                    p.time_verified,
                    p.verifier.id,
                    flags::format_unix(p.expires_at),
                    st.subject_sha256().collect::<Vec<_>>().join(", ")
                );
                for g in &p.gates {
                    let _ = writeln!(
                        out,
                        "  {:<12} {:<7} {}",
                        g.name,
                        verdict(g.result),
                        gantry_policy::admission::gates::describe(g)
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(out, "  not usable: {e}");
            }
        }
    }
    out
}

/// The JSON of the same.
pub fn json(notes: &str, views: &[EvidenceView]) -> (Value, Value) {
    let notes = if notes.is_empty() {
        Value::Null
    } else {
        json!({ "sha256": Sha256Hex::of(notes.as_bytes()), "text": notes })
    };
    let evidence = views
        .iter()
        .map(|v| {
            json!({
                "sha256": v.digest,
                "signers": v.signers.iter().map(|(id, ok)| json!({"key_id": id, "verified": ok})).collect::<Vec<_>>(),
                "statement": match &v.statement {
                    Ok(st) => serde_json::to_value(st).unwrap_or(Value::Null),
                    Err(e) => json!({ "error": e }),
                },
            })
        })
        .collect();
    (notes, Value::Array(evidence))
}
