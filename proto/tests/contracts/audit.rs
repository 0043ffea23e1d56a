//! The audit chain against the good log and one fixture per kind of tampering.

use gantry_proto::audit_chain::{
    ChainError, ChainErrorKind, ChainVerifier, GENESIS_PREV, VerifySummary, check_witness,
    checkpoint_message, line_hash, sign_checkpoint, verify_lines,
};
use gantry_proto::envelope::pae;
use gantry_proto::keys::PublicKey;
use proptest::prelude::*;

use crate::fixtures::{chain, data_dir, good_specs, read_log_dir, read_text, signing_key, spec};

fn agent_key() -> PublicKey {
    PublicKey::from_spki_pem(&read_text("audit-signing-key/agent.pub")).unwrap()
}

fn log(case: &str) -> Vec<Vec<u8>> {
    read_log_dir(&data_dir().join(case))
}

fn verify_case(case: &str) -> Result<VerifySummary, ChainError> {
    verify_lines(log(case), Some(&agent_key()))
}

fn witness_of(case: &str) -> (u64, String) {
    let w: serde_json::Value =
        serde_json::from_str(&read_text(&format!("{case}/witness.json"))).unwrap();
    (
        w["seq"].as_u64().unwrap(),
        w["line"].as_str().unwrap().to_owned(),
    )
}

#[test]
fn good_log_verifies_across_rotated_files() {
    let summary = verify_case("audit-good").unwrap();
    let lines = log("audit-good");
    assert_eq!(
        summary,
        VerifySummary {
            entries: 11,
            last_seq: 11,
            last_hash: line_hash(lines.last().unwrap()),
            checkpoints: 3,
            last_checkpoint_seq: Some(11),
            unsealed_after_checkpoint: 0,
        }
    );
    // Without a key the structure is still checked.
    assert_eq!(verify_lines(&lines, None).unwrap(), summary);
    // The witness of its latest checkpoint holds, as does any earlier one.
    let last = String::from_utf8(lines[10].clone()).unwrap();
    check_witness(&lines, 11, &last).unwrap();
    let (seq, line) = witness_of("rechained-rewrite");
    check_witness(&lines, seq, &line).unwrap();
}

#[test]
fn checkpoint_signature_is_over_pae_of_prev() {
    let key = signing_key("audit-signing-key/agent.key");
    let prev = line_hash(b"x");
    assert_eq!(
        checkpoint_message(&prev),
        pae(
            "application/vnd.gantry.audit-checkpoint.v1",
            prev.as_bytes()
        )
    );
    let sig = sign_checkpoint(&key, &prev);
    let raw = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &sig).unwrap();
    key.public_key()
        .verify(&checkpoint_message(&prev), &raw)
        .unwrap();
}

#[test]
fn edited_entry_is_named() {
    let err = verify_case("edited-entry").unwrap_err();
    assert_eq!(err.seq, 3);
    assert!(matches!(
        err.kind,
        ChainErrorKind::PrevMismatch { recorded_by: 4, .. }
    ));
    assert!(
        err.to_string().starts_with(
            "seq 3: entry 3 was altered: its hash does not match the prev recorded by entry 4"
        ),
        "{err}"
    );
}

#[test]
fn deleted_entry_is_named() {
    let err = verify_case("deleted-entry").unwrap_err();
    assert_eq!(
        err,
        ChainError {
            seq: 4,
            kind: ChainErrorKind::SeqOutOfOrder {
                expected: 4,
                found: 5
            }
        }
    );
    assert_eq!(
        err.to_string(),
        "seq 4: expected seq 4 here, found seq 5 (an entry was deleted, inserted or moved)"
    );
}

#[test]
fn reordered_entries_are_named() {
    let err = verify_case("reordered-entries").unwrap_err();
    assert_eq!(err.seq, 4);
    assert!(matches!(
        err.kind,
        ChainErrorKind::SeqOutOfOrder {
            expected: 4,
            found: 5
        }
    ));
}

#[test]
fn truncated_mid_line_is_named() {
    let err = verify_case("truncated-mid-line").unwrap_err();
    assert_eq!(
        err,
        ChainError {
            seq: 11,
            kind: ChainErrorKind::NotJson
        }
    );
}

#[test]
fn forged_checkpoint_signature_is_named() {
    // The edit was re-chained by someone without the key: the chain holds, the first
    // checkpoint after the edit does not.
    let err = verify_case("forged-checkpoint-sig").unwrap_err();
    assert_eq!(
        err,
        ChainError {
            seq: 6,
            kind: ChainErrorKind::BadCheckpointSignature
        }
    );
    assert!(verify_lines(log("forged-checkpoint-sig"), None).is_ok());
}

#[test]
fn checkpoint_by_another_key_is_named() {
    let other = signing_key("wrong-key/key.pem");
    let err = verify_case("checkpoint-by-other-key").unwrap_err();
    assert_eq!(err.seq, 6);
    assert_eq!(
        err.kind,
        ChainErrorKind::UnknownCheckpointKey {
            key_id: other.key_id().to_string()
        }
    );
    // Under the other key's own public key it verifies.
    verify_lines(log("checkpoint-by-other-key"), Some(&other.public_key())).unwrap();
}

#[test]
fn rechained_rewrite_passes_the_chain_but_not_the_witness() {
    let lines = log("rechained-rewrite");
    // Re-signed with the (stolen) agent key: the chain alone cannot tell.
    verify_lines(&lines, Some(&agent_key())).unwrap();
    let (seq, line) = witness_of("rechained-rewrite");
    let err = check_witness(&lines, seq, &line).unwrap_err();
    assert_eq!(
        err,
        ChainError {
            seq: 9,
            kind: ChainErrorKind::WitnessMismatch
        }
    );
}

#[test]
fn cut_below_witness_is_named() {
    let lines = log("cut-below-witness");
    let summary = verify_lines(&lines, Some(&agent_key())).unwrap();
    // The chain cannot see a cut at a line boundary; it only reports what is unsealed.
    assert_eq!(summary.last_seq, 8);
    assert_eq!(summary.last_checkpoint_seq, Some(6));
    assert_eq!(summary.unsealed_after_checkpoint, 2);
    let (seq, line) = witness_of("cut-below-witness");
    let err = check_witness(&lines, seq, &line).unwrap_err();
    assert_eq!(
        err,
        ChainError {
            seq: 9,
            kind: ChainErrorKind::WitnessBeyondEnd { last_seq: 8 }
        }
    );
    assert_eq!(
        err.to_string(),
        "seq 9: the log ends at seq 8, before this witnessed checkpoint (the log was cut)"
    );
}

#[test]
fn first_entry_must_start_the_chain() {
    let key = signing_key("audit-signing-key/agent.key");
    let lines = chain(&[spec("agent.started", "")], &key);
    let bad_prev = lines[0].replace(GENESIS_PREV, &line_hash(b"other"));
    let err = verify_lines([bad_prev], None).unwrap_err();
    assert_eq!(err.seq, 1);
    assert!(matches!(err.kind, ChainErrorKind::GenesisPrev { .. }));
    let err = verify_lines([lines[0].replace(r#""seq":1"#, r#""seq":0"#)], None).unwrap_err();
    assert_eq!(
        err.kind,
        ChainErrorKind::SeqOutOfOrder {
            expected: 1,
            found: 0
        }
    );
}

#[test]
fn required_fields_are_checked() {
    let p = GENESIS_PREV;
    let cases = [
        (
            format!(r#"{{"ts":"t","prev":"{p}","event":"e"}}"#),
            ChainErrorKind::MissingField("seq"),
        ),
        (
            format!(r#"{{"seq":1,"prev":"{p}","event":"e"}}"#),
            ChainErrorKind::MissingField("ts"),
        ),
        (
            r#"{"seq":1,"ts":"t","event":"e"}"#.to_owned(),
            ChainErrorKind::MissingField("prev"),
        ),
        (
            format!(r#"{{"seq":1,"ts":"t","prev":"{p}"}}"#),
            ChainErrorKind::MissingField("event"),
        ),
        (
            format!(r#"{{"seq":"1","ts":"t","prev":"{p}","event":"e"}}"#),
            ChainErrorKind::InvalidField {
                field: "seq",
                reason: "is not a non-negative integer",
            },
        ),
        (
            format!(
                r#"{{"seq":1,"ts":"t","prev":"{}","event":"e"}}"#,
                p.to_uppercase().replace('0', "A")
            ),
            ChainErrorKind::InvalidField {
                field: "prev",
                reason: "is not 64 lowercase hex digits",
            },
        ),
        (
            format!(r#"{{"seq":1,"ts":"t","prev":"{p}","event":"checkpoint","sig":"AA=="}}"#),
            ChainErrorKind::MissingField("key_id"),
        ),
        ("[1,2]".to_owned(), ChainErrorKind::NotJson),
        (String::new(), ChainErrorKind::NotJson),
    ];
    for (line, kind) in cases {
        let err = verify_lines([&line], None).unwrap_err();
        assert_eq!(err, ChainError { seq: 1, kind }, "{line}");
    }
}

#[test]
fn unsealed_entries_are_counted() {
    let key = signing_key("audit-signing-key/agent.key");
    let mut specs = good_specs("k");
    specs.truncate(8);
    let lines = chain(&specs, &key);
    let summary = verify_lines(&lines, Some(&key.public_key())).unwrap();
    assert_eq!(summary.checkpoints, 1);
    assert_eq!(summary.unsealed_after_checkpoint, 2);
    let none = verify_lines(&lines[..5], None).unwrap();
    assert_eq!(none.last_checkpoint_seq, None);
    assert_eq!(none.unsealed_after_checkpoint, 5);
    let empty = verify_lines(Vec::<Vec<u8>>::new(), None).unwrap();
    assert_eq!((empty.entries, empty.last_hash.as_str()), (0, GENESIS_PREV));
}

#[test]
fn verifier_resumes_and_stays_failed() {
    let lines = log("audit-good");
    let head = verify_lines(&lines[..7], None).unwrap();
    let mut tail = ChainVerifier::resume(Some(agent_key()), head.last_seq, &head.last_hash);
    for line in &lines[7..] {
        tail.push_line(line).unwrap();
    }
    assert_eq!(tail.finish().last_seq, 11);

    let mut v = ChainVerifier::new(None);
    let first = v.push_line(b"garbage").unwrap_err();
    assert_eq!(v.push_line(&lines[0]).unwrap_err(), first);
    assert_eq!(v.finish().entries, 0);
}

#[test]
fn witness_of_nothing_and_witness_with_broken_prefix() {
    let lines = log("edited-entry");
    let (seq, line) = witness_of("rechained-rewrite");
    // The chain breaks before the witnessed seq: that is reported first.
    assert_eq!(check_witness(&lines, seq, &line).unwrap_err().seq, 3);
    check_witness(Vec::<Vec<u8>>::new(), 0, "").unwrap();
    assert_eq!(
        check_witness(Vec::<Vec<u8>>::new(), 1, "x")
            .unwrap_err()
            .kind,
        ChainErrorKind::WitnessBeyondEnd { last_seq: 0 }
    );
}

proptest! {
    #[test]
    fn verifier_never_panics_on_arbitrary_lines(
        lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..120), 0..6)
    ) {
        let _ = verify_lines(&lines, Some(&agent_key()));
        let _ = check_witness(&lines, 3, "x");
    }

    #[test]
    fn verifier_never_panics_on_json_like_lines(
        lines in proptest::collection::vec(
            r#"\{("(seq|ts|prev|event|key_id|sig)":(-?[0-9]{1,22}|"[0-9a-f=A-Z+/]{0,70}"|null|\[\]|1\.5),?){0,6}\}"#,
            0..6)
    ) {
        let _ = verify_lines(&lines, Some(&agent_key()));
    }

    #[test]
    fn any_byte_change_before_the_last_line_is_detected(
        line_index in 0usize..10, pos in any::<usize>(), byte in any::<u8>()
    ) {
        let mut lines = log("audit-good");
        let line = &mut lines[line_index];
        let pos = pos % line.len();
        prop_assume!(line[pos] != byte);
        line[pos] = byte;
        let err = verify_lines(&lines, Some(&agent_key())).unwrap_err();
        prop_assert!(err.seq <= line_index as u64 + 1, "{}", err);
    }
}

/// The lines of one log file of `case`.
fn file_lines(case: &str, name: &str) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(data_dir().join(case).join(name)).unwrap();
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

/// Security review G4: an entry inserted into the log is caught, whether the inserter chains
/// it to the entry before it (the next entry's seq no longer follows) or re-chains and
/// renumbers everything after it (the next checkpoint's signature no longer verifies).
#[test]
fn g4_an_inserted_forged_entry_is_named() {
    let good = log("audit-good");
    let forged = |seq: usize, prev: &str| {
        format!(
            r#"{{"seq":{seq},"ts":"2026-01-01T00:00:00Z","prev":"{prev}","event":"job.accepted","job_id":"forged"}}"#
        )
        .into_bytes()
    };
    // Chained to entry 3, left in place before the real entry 4.
    let mut inserted = good.clone();
    inserted.insert(3, forged(4, &line_hash(&good[2])));
    let err = verify_lines(&inserted, Some(&agent_key())).unwrap_err();
    assert_eq!(
        err,
        ChainError {
            seq: 5,
            kind: ChainErrorKind::SeqOutOfOrder {
                expected: 5,
                found: 4
            }
        }
    );
    // Fully re-chained and renumbered after the insertion: the chain holds, the first
    // checkpoint after it does not (it signed the old prev).
    let mut rechained: Vec<Vec<u8>> = good[..3].to_vec();
    rechained.push(forged(4, &line_hash(&good[2])));
    for line in &good[3..] {
        let mut v: serde_json::Value = serde_json::from_slice(line).unwrap();
        let seq = rechained.len() as u64 + 1;
        v["seq"] = seq.into();
        v["prev"] = line_hash(rechained.last().unwrap()).into();
        rechained.push(serde_json::to_vec(&v).unwrap());
    }
    let err = verify_lines(&rechained, Some(&agent_key())).unwrap_err();
    let first_checkpoint_after = rechained
        .iter()
        .enumerate()
        .skip(4)
        .find(|(_, l)| String::from_utf8_lossy(l).contains(r#""event":"checkpoint""#))
        .map(|(i, _)| i as u64 + 1)
        .unwrap();
    assert_eq!(err.seq, first_checkpoint_after, "{err}");
}

/// Security review G8: rotated files deleted or read out of order are caught at the seam.
#[test]
fn g8_a_deleted_or_reordered_rotated_file_is_named() {
    let mut names: Vec<String> = std::fs::read_dir(data_dir().join("audit-good"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("audit-") && n.ends_with(".jsonl"))
        .collect();
    names.sort();
    assert!(names.len() >= 2, "the good log must be rotated: {names:?}");
    let files: Vec<Vec<Vec<u8>>> = names.iter().map(|n| file_lines("audit-good", n)).collect();
    // The first file deleted: the log starts past seq 1.
    let without_first: Vec<Vec<u8>> = files[1..].concat();
    let err = verify_lines(&without_first, Some(&agent_key())).unwrap_err();
    assert_eq!(err.seq, 1, "{err}");
    // A middle (or the second) file deleted: a gap at the seam.
    let mut kept = files.clone();
    kept.remove(1);
    if kept.len() >= 2 {
        let err = verify_lines(kept.concat(), Some(&agent_key())).unwrap_err();
        let seam = files[0].len() as u64 + 1;
        assert_eq!(err.seq, seam, "{err}");
    }
    // Two files swapped.
    let mut swapped = files.clone();
    swapped.swap(0, 1);
    let err = verify_lines(swapped.concat(), Some(&agent_key())).unwrap_err();
    assert_eq!(err.seq, 1, "{err}");
}
