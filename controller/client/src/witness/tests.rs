//! The witness store (keyed by agent id and key) and the forward-only check, over chains built
//! and signed here.

use gantry_proto::audit_chain::{ChainErrorKind, GENESIS_PREV, line_hash, sign_checkpoint};
use gantry_proto::keys::SigningKey;

use super::*;

/// A log of `n` entries, a signed checkpoint every `every` entries (and at the end).
fn log(key: &SigningKey, n: u64, every: u64, tag: &str) -> Vec<String> {
    let mut prev = GENESIS_PREV.to_owned();
    let mut lines = Vec::new();
    for seq in 1..=n {
        let line = if seq % every == 0 || seq == n {
            format!(
                r#"{{"seq":{seq},"ts":"2025-01-01T00:00:00Z","prev":"{prev}","event":"checkpoint","key_id":"{}","sig":"{}"}}"#,
                key.key_id(),
                sign_checkpoint(key, &prev)
            )
        } else {
            format!(
                r#"{{"seq":{seq},"ts":"2025-01-01T00:00:00Z","prev":"{prev}","event":"job.step","tag":"{tag}"}}"#
            )
        };
        prev = line_hash(line.as_bytes());
        lines.push(line);
    }
    lines
}

fn witnessed(agent: &str, key: &SigningKey, lines: &[String], seq: u64) -> Witnessed {
    Witnessed {
        agent_id: agent.into(),
        key_id: key.key_id().to_string(),
        seq,
        line: lines[usize::try_from(seq - 1).unwrap()].clone(),
        received_ms: 1,
    }
}

fn from(lines: &[String], seq: u64) -> &[String] {
    &lines[usize::try_from(seq - 1).unwrap()..]
}

#[test]
fn the_store_keeps_one_witness_per_agent_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let (l1, l2) = (log(&k1, 6, 3, "one"), log(&k2, 9, 3, "two"));
    assert_eq!(load(dir.path(), "a1", &k1.key_id()).unwrap(), None);
    store(dir.path(), &witnessed("a1", &k1, &l1, 6)).unwrap();
    store(dir.path(), &witnessed("a1", &k2, &l2, 9)).unwrap();
    let w1 = load(dir.path(), "a1", &k1.key_id()).unwrap().unwrap();
    let w2 = load(dir.path(), "a1", &k2.key_id()).unwrap().unwrap();
    assert_eq!((w1.seq, w2.seq), (6, 9));
    assert!(
        dir.path()
            .join(format!("witness/a1/{}.json", k1.key_id()))
            .exists()
    );
    assert_eq!(
        other_keys(dir.path(), "a1", &k1.key_id()).unwrap(),
        vec![k2.key_id().to_string()]
    );
}

#[test]
fn a_file_of_an_earlier_version_counts_for_its_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let (k1, k2) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let l1 = log(&k1, 6, 3, "one");
    let mut old = witnessed("a1", &k1, &l1, 6);
    old.key_id = String::new();
    std::fs::create_dir_all(dir.path().join("witness")).unwrap();
    std::fs::write(
        dir.path().join("witness/a1.json"),
        serde_json::to_vec(&old).unwrap(),
    )
    .unwrap();
    let w = load(dir.path(), "a1", &k1.key_id()).unwrap().unwrap();
    assert_eq!((w.seq, w.key_id), (6, k1.key_id().to_string()));
    assert_eq!(load(dir.path(), "a1", &k2.key_id()).unwrap(), None);
}

#[test]
fn refuses_path_like_agent_ids() {
    let k = SigningKey::generate().unwrap().key_id();
    for bad in ["", "../x", "a/b", ".hidden"] {
        assert!(path_for(Path::new("/s"), bad, &k).is_err(), "{bad}");
    }
}

#[test]
fn a_checkpoint_must_be_the_agents_and_verify() {
    let (k1, k2) = (
        SigningKey::generate().unwrap(),
        SigningKey::generate().unwrap(),
    );
    let l1 = log(&k1, 6, 3, "one");
    check_checkpoint(6, &l1[5], &k1.public_key()).unwrap();
    assert!(matches!(
        check_checkpoint(6, &l1[5], &k2.public_key()),
        Err(WitnessAlarm::WrongKey { seq: 6, .. })
    ));
    assert!(matches!(
        check_checkpoint(5, &l1[4], &k1.public_key()),
        Err(WitnessAlarm::Malformed { seq: 5, .. })
    ));
    assert!(matches!(
        check_checkpoint(7, &l1[5], &k1.public_key()),
        Err(WitnessAlarm::Malformed { seq: 7, .. })
    ));
    let forged = l1[5].replacen("\"sig\":\"", "\"sig\":\"AAAA", 1);
    assert!(matches!(
        check_checkpoint(6, &forged, &k1.public_key()),
        Err(WitnessAlarm::BadSignature { seq: 6, .. })
    ));
}

#[test]
fn the_witness_moves_forward_along_one_chain() {
    let k = SigningKey::generate().unwrap();
    let lines = log(&k, 12, 3, "real");
    let old = witnessed("a1", &k, &lines, 6);
    let key = k.public_key();
    check_extends(&old, 12, &lines[11], from(&lines, 6), &key).unwrap();
    check_extends(&old, 9, &lines[8], from(&lines, 6), &key).unwrap();
    // The same checkpoint again.
    check_extends(&old, 6, &lines[5], from(&lines, 6), &key).unwrap();
}

/// Issue 16 G10: a log rewritten (re-chained, re-signed) and padded past the witnessed seq,
/// then a new checkpoint on top of it, does not replace the witness.
#[test]
fn g10_a_rewrite_padded_past_the_witnessed_seq_does_not_extend_it() {
    let k = SigningKey::generate().unwrap();
    let key = k.public_key();
    let real = log(&k, 6, 3, "real");
    let old = witnessed("a1", &k, &real, 6);
    let forged = log(&k, 12, 3, "forged");
    let alarm = check_extends(&old, 12, &forged[11], from(&forged, 6), &key).unwrap_err();
    assert_eq!(
        alarm,
        WitnessAlarm::DoesNotExtend {
            witnessed_seq: 6,
            new_seq: 12,
            at: 6,
            kind: ChainErrorKind::WitnessMismatch,
        }
    );
    assert_eq!(alarm.witnessed_seq(), Some(6));
    assert!(alarm.to_string().contains("witnessed at seq 6"), "{alarm}");
}

#[test]
fn a_break_between_the_two_checkpoints_is_named() {
    let k = SigningKey::generate().unwrap();
    let key = k.public_key();
    let lines = log(&k, 12, 3, "real");
    let old = witnessed("a1", &k, &lines, 6);
    let mut edited = lines.clone();
    edited[7] = edited[7].replacen("real", "edit", 1);
    let alarm = check_extends(&old, 12, &edited[11], from(&edited, 6), &key).unwrap_err();
    assert!(
        matches!(alarm, WitnessAlarm::DoesNotExtend { at: 8, .. }),
        "{alarm:?}"
    );
    // Lines that stop short of the new checkpoint.
    let alarm = check_extends(&old, 12, &lines[11], &lines[5..9], &key).unwrap_err();
    assert!(
        matches!(
            alarm,
            WitnessAlarm::DoesNotExtend {
                at: 12,
                kind: ChainErrorKind::WitnessBeyondEnd { last_seq: 9 },
                ..
            }
        ),
        "{alarm:?}"
    );
    // A new checkpoint line other than the one the lines hold.
    let other = log(&k, 12, 3, "other");
    assert!(check_extends(&old, 12, &other[11], from(&lines, 6), &key).is_err());
}

#[test]
fn a_checkpoint_below_the_witnessed_one_is_an_alarm() {
    let k = SigningKey::generate().unwrap();
    let lines = log(&k, 12, 3, "real");
    let old = witnessed("a1", &k, &lines, 9);
    assert_eq!(
        check_extends(&old, 6, &lines[5], from(&lines, 6), &k.public_key()).unwrap_err(),
        WitnessAlarm::Behind {
            witnessed_seq: 9,
            new_seq: 6
        }
    );
}
