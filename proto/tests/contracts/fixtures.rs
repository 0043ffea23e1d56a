//! Builds every derived fixture under `tests/data/` from the committed keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use gantry_proto::audit_chain::{GENESIS_PREV, line_hash, sign_checkpoint};
use gantry_proto::envelope::{JOB_PAYLOAD_TYPE, job_digest, pae, sign_job, sign_payload};
use gantry_proto::keys::SigningKey;
use gantry_proto::v1;
use prost::Message as _;

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

pub fn read(rel: &str) -> Vec<u8> {
    let path = data_dir().join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

pub fn read_text(rel: &str) -> String {
    String::from_utf8(read(rel)).unwrap()
}

pub fn signing_key(rel: &str) -> SigningKey {
    SigningKey::from_pkcs8_pem(&read_text(rel)).unwrap()
}

/// The job of the test vector.
pub fn vector_job() -> v1::Job {
    v1::Job {
        job_id: "job-0001".into(),
        agent_id: "agent-1".into(),
        app: "web".into(),
        action: v1::Action::Deploy as i32,
        issued_at: 1_735_786_800,
        not_before: 1_735_786_800,
        expires_at: 1_735_787_400,
        release: Some(v1::Release {
            version: "1.2.0".into(),
            artifact_sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
                .into(),
            artifact_size: 4096,
            strategy: v1::Strategy::Rolling as i32,
            instances: 2,
            command: vec!["bin/web".into(), "--quiet".into()],
            health: Some(v1::HealthCheck {
                probe: Some(v1::health_check::Probe::Http(v1::HttpProbe {
                    path: "/health".into(),
                    expect_status: 200,
                })),
                interval_ms: 500,
                timeout_ms: 1000,
                healthy_threshold: 2,
                unhealthy_threshold: 3,
                deadline_ms: 30_000,
            }),
            env: BTreeMap::from([("RUST_LOG".to_owned(), "info".to_owned())])
                .into_iter()
                .collect(),
            progress_deadline_secs: 600,
            secret_env: Vec::new(),
            rollout: None,
            // Empty, so the vector's bytes are those of a job from before they existed.
            evidence: Vec::new(),
            notes: String::new(),
        }),
        reason: "test vector".into(),
        restore_flags: false,
    }
}

fn flip_bit(bytes: &[u8], index: usize) -> Vec<u8> {
    let mut out = bytes.to_vec();
    out[index / 8] ^= 1 << (index % 8);
    out
}

/// One audit entry before chaining; for a checkpoint `extra` is ignored (key id and
/// signature are computed).
#[derive(Clone)]
pub struct Spec {
    pub event: &'static str,
    pub extra: String,
}

pub fn spec(event: &'static str, extra: &str) -> Spec {
    Spec {
        event,
        extra: extra.to_owned(),
    }
}

/// The entries of the good log: two jobs and an agent stop, three checkpoints.
pub fn good_specs(signer: &str) -> Vec<Spec> {
    let cfg = "7d865e959b2466918c9863afca942d0fb89d7c9ac0c99bafc3749504ded97730";
    vec![
        spec(
            "agent.started",
            &format!(r#","agent_id":"agent-1","version":"0.1.0","config_digest":"{cfg}""#),
        ),
        spec(
            "job.received",
            r#","job_id":"job-0001","peer_fingerprint":"5f0c0ab2e7c1f0b9d1c2e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e","bytes":311"#,
        ),
        spec(
            "job.accepted",
            &format!(
                r#","job_id":"job-0001","job_digest":"0b5c6a1e8f2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7","signers":["{signer}"],"app":"web","action":"deploy","version":"1.2.0","strategy":"rolling""#
            ),
        ),
        spec(
            "job.step",
            r#","job_id":"job-0001","step":"instance.started","message":"instance 0 of web 1.2.0 started on port 18000""#,
        ),
        spec(
            "job.succeeded",
            r#","job_id":"job-0001","app":"web","version":"1.2.0""#,
        ),
        spec("checkpoint", ""),
        spec(
            "job.received",
            r#","job_id":"job-0002","peer_fingerprint":"5f0c0ab2e7c1f0b9d1c2e3f4a5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e","bytes":298"#,
        ),
        spec(
            "job.rejected",
            r#","job_id":"job-0002","reason":"expired: expires_at 1735780000 is before now 1735786860","key_ids":[]"#,
        ),
        spec("checkpoint", ""),
        spec(
            "agent.stopped",
            &format!(r#","agent_id":"agent-1","config_digest":"{cfg}""#),
        ),
        spec("checkpoint", ""),
    ]
}

/// Chains the specs from seq 1, signing checkpoints with `key`.
pub fn chain(specs: &[Spec], key: &SigningKey) -> Vec<String> {
    let mut prev = GENESIS_PREV.to_owned();
    let mut lines = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let seq = i + 1;
        let extra = if s.event == "checkpoint" {
            format!(
                r#","key_id":"{}","sig":"{}""#,
                key.key_id(),
                sign_checkpoint(key, &prev)
            )
        } else {
            s.extra.clone()
        };
        let line = format!(
            r#"{{"seq":{seq},"ts":"2025-01-02T03:{:02}:{:02}Z","prev":"{prev}","event":"{}"{extra}}}"#,
            seq / 60,
            seq % 60,
            s.event
        );
        prev = line_hash(line.as_bytes());
        lines.push(line);
    }
    lines
}

/// Relative path and contents of some files.
type Files = Vec<(String, Vec<u8>)>;

/// Writes lines as rotated files: entries 1..=6 in the first file, the rest in the second.
/// `tail` is appended to the last file as is (a torn line has no newline).
fn log_files(dir: &str, lines: &[String], torn_tail: Option<&str>) -> Files {
    let split = lines.len().min(6);
    let mut first = String::new();
    for l in &lines[..split] {
        first.push_str(l);
        first.push('\n');
    }
    let mut files = vec![(format!("{dir}/audit-00000000000000000001.jsonl"), first)];
    if lines.len() > split || torn_tail.is_some() {
        let mut second = String::new();
        for l in &lines[split..] {
            second.push_str(l);
            second.push('\n');
        }
        second.push_str(torn_tail.unwrap_or(""));
        files.push((format!("{dir}/audit-{:020}.jsonl", split + 1), second));
    }
    files
        .into_iter()
        .map(|(p, s)| (p, s.into_bytes()))
        .collect()
}

fn witness(lines: &[String], seq: usize) -> Vec<u8> {
    let w = serde_json::json!({ "seq": seq, "line": lines[seq - 1] });
    format!("{w}\n").into_bytes()
}

/// Every derived fixture: relative path → bytes.
pub fn generate() -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut put = |path: &str, bytes: Vec<u8>| {
        out.insert(path.to_owned(), bytes);
    };

    // Signed-job envelope.
    let key = signing_key("job-vector/key.pem");
    let other = signing_key("wrong-key/key.pem");
    let job = vector_job().encode_to_vec();
    let sig = sign_job(&key, &job).sig;
    put("job-vector/job.bin", job.clone());
    put("job-vector/pae.bin", pae(JOB_PAYLOAD_TYPE, &job));
    put(
        "job-vector/sig.hex",
        format!("{}\n", hex::encode(&sig)).into_bytes(),
    );
    put(
        "job-vector/key_id.txt",
        format!("{}\n", key.key_id()).into_bytes(),
    );
    put(
        "job-vector/job_digest.txt",
        format!("{}\n", job_digest(&job)).into_bytes(),
    );
    put(
        "flipped-sig-bit/sig.hex",
        format!("{}\n", hex::encode(flip_bit(&sig, 77))).into_bytes(),
    );
    put("flipped-payload-bit/job.bin", flip_bit(&job, 8 * 20 + 3));
    let other_type = sign_payload(&key, "application/vnd.gantry.audit-checkpoint.v1", &job);
    put(
        "wrong-payload-type/sig.hex",
        format!("{}\n", hex::encode(other_type)).into_bytes(),
    );
    put(
        "wrong-key/sig.hex",
        format!("{}\n", hex::encode(sign_job(&other, &job).sig)).into_bytes(),
    );

    // Audit logs.
    let agent = signing_key("audit-signing-key/agent.key");
    let specs = good_specs(key.key_id().as_str());
    let good = chain(&specs, &agent);
    let mut edited_specs = specs.clone();
    edited_specs[2].extra = edited_specs[2]
        .extra
        .replace(r#""app":"web""#, r#""app":"api""#);

    let mut logs: Vec<(&str, Files)> = Vec::new();
    logs.push(("audit-good", log_files("audit-good", &good, None)));

    let edited: Vec<String> = good
        .iter()
        .map(|l| l.replace(r#""app":"web","action""#, r#""app":"api","action""#))
        .collect();
    assert_ne!(edited, good);
    logs.push(("edited-entry", log_files("edited-entry", &edited, None)));

    let mut deleted = good.clone();
    deleted.remove(3);
    logs.push(("deleted-entry", log_files("deleted-entry", &deleted, None)));

    let mut reordered = good.clone();
    reordered.swap(3, 4);
    logs.push((
        "reordered-entries",
        log_files("reordered-entries", &reordered, None),
    ));

    let mut truncated = good.clone();
    let last = truncated.pop().unwrap();
    let torn = &last[..last.len() / 2];
    logs.push((
        "truncated-mid-line",
        log_files("truncated-mid-line", &truncated, Some(torn)),
    ));

    // An edit re-chained by someone without the agent's key: the chain is consistent again,
    // but the old checkpoint signatures no longer match their prev.
    let mut forged = chain(&edited_specs, &agent);
    for (i, line) in forged.iter_mut().enumerate() {
        if specs[i].event == "checkpoint" {
            let old_sig = good[i].rsplit_once(r#""sig":""#).unwrap().1;
            let new_sig = line.rsplit_once(r#""sig":""#).unwrap().1;
            *line = line.replace(new_sig, old_sig);
        }
    }
    let forged = rechain_prevs(&forged);
    logs.push((
        "forged-checkpoint-sig",
        log_files("forged-checkpoint-sig", &forged, None),
    ));

    let by_other = chain(&specs, &other);
    logs.push((
        "checkpoint-by-other-key",
        log_files("checkpoint-by-other-key", &by_other, None),
    ));

    // The host's key was used to rewrite everything: only the witness can tell.
    let rewritten = chain(&edited_specs, &agent);
    logs.push((
        "rechained-rewrite",
        log_files("rechained-rewrite", &rewritten, None),
    ));
    put("rechained-rewrite/witness.json", witness(&good, 9));

    let cut: Vec<String> = good[..8].to_vec();
    logs.push((
        "cut-below-witness",
        log_files("cut-below-witness", &cut, None),
    ));
    put("cut-below-witness/witness.json", witness(&good, 9));

    for (_, files) in logs {
        for (path, bytes) in files {
            put(&path, bytes);
        }
    }
    out
}

/// Recomputes every `prev` (keeping each line otherwise as is).
fn rechain_prevs(lines: &[String]) -> Vec<String> {
    let mut prev = GENESIS_PREV.to_owned();
    let mut out = Vec::new();
    for line in lines {
        let start = line.find(r#""prev":""#).unwrap() + 8;
        let mut fixed = line.clone();
        fixed.replace_range(start..start + 64, &prev);
        prev = line_hash(fixed.as_bytes());
        out.push(fixed);
    }
    out
}

/// The lines of a log directory: `audit-*.jsonl` in name order, split on `\n`; a last piece
/// without a newline (a torn line) is kept as a line.
pub fn read_log_dir(dir: &Path) -> Vec<Vec<u8>> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("audit-") && name.ends_with(".jsonl")
        })
        .collect();
    names.sort();
    let mut lines = Vec::new();
    for name in names {
        let bytes = std::fs::read(&name).unwrap();
        let mut pieces: Vec<&[u8]> = bytes.split(|&b| b == b'\n').collect();
        if pieces.last().is_some_and(|p| p.is_empty()) {
            pieces.pop();
        }
        lines.extend(pieces.into_iter().map(<[u8]>::to_vec));
    }
    lines
}

#[test]
fn fixtures_are_current() {
    let mut stale = Vec::new();
    for (path, bytes) in generate() {
        if std::fs::read(data_dir().join(&path)).ok().as_deref() != Some(&bytes[..]) {
            stale.push(path);
        }
    }
    assert!(
        stale.is_empty(),
        "fixtures differ from what the code generates: {stale:?}; regenerate with \
         `cargo test -p gantry-proto --test contracts -- --ignored regenerate_fixtures`"
    );
}

#[test]
#[ignore = "writes tests/data; run by hand after a deliberate change"]
fn regenerate_fixtures() {
    for (path, bytes) in generate() {
        let path = data_dir().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
}
