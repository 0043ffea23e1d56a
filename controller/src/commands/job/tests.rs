use std::path::Path;
use std::time::{Duration, SystemTime};

use gantry_proto::keys::{self, PublicKey};
use gantry_proto::v1::{Action, health_check};

use super::spec::{ArtifactInfo, build_job, parse_probe};
use super::*;
use crate::cli::{JobSignArgs, JobSpecArgs};

fn spec() -> JobSpecArgs {
    JobSpecArgs {
        app: "web".into(),
        action: "deploy".into(),
        version: Some("1.2.3".into()),
        strategy: "hot".into(),
        instances: "2".into(),
        health: "http:/health".into(),
        health_interval: "500ms".into(),
        health_timeout: "2s".into(),
        healthy_threshold: "1".into(),
        unhealthy_threshold: "3".into(),
        health_deadline: "30s".into(),
        progress_deadline: "10m".into(),
        valid_for: "15m".into(),
        not_before: None,
        env: vec!["MODE=prod".into()],
        secret_env: Vec::new(),
        notes: None,
        evidence: Vec::new(),
        job_id: None,
        reason: "test".into(),
        rollout: Default::default(),
        command: vec!["bin/web".into(), "--flag".into()],
    }
}

fn artifact() -> ArtifactInfo {
    ArtifactInfo {
        path: "a.tgz".into(),
        sha256: "ab".repeat(32),
        size: 42,
    }
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

fn new_job_file(dir: &Path) -> (PathBuf, JobFile) {
    let job = build_job("agent-1", &spec(), Some(&artifact()), now()).unwrap();
    let file = JobFile::new(job);
    let path = dir.join("job.bin");
    file.write(&path).unwrap();
    (path, file)
}

#[test]
fn job_file_round_trips_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (path, file) = new_job_file(dir.path());
    let back = JobFile::read(&path).unwrap();
    assert_eq!(back.signed.job, file.signed.job);
    assert_eq!(back.job, file.job);
    assert_eq!(back.job.agent_id, "agent-1");
    assert_eq!(back.job.action, Action::Deploy as i32);
    assert_eq!(back.job.expires_at - back.job.not_before, 15 * 60);
    let r = back.job.release.unwrap();
    assert_eq!(
        (r.version.as_str(), r.instances, r.artifact_size),
        ("1.2.3", 2, 42)
    );
    assert_eq!(r.health.unwrap().interval_ms, 500);
    assert_eq!(r.env.get("MODE").map(String::as_str), Some("prod"));
    assert!(
        back.job.job_id.starts_with("web-1.2.3-1800000000000-"),
        "{}",
        back.job.job_id
    );
}

#[test]
fn sign_twice_with_two_keys_and_both_verify() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = new_job_file(dir.path());
    let (k1, _, pub1) = keys::write_keypair(&dir.path().join("k1")).unwrap();
    let (k2, _, _) = keys::write_keypair(&dir.path().join("k2")).unwrap();
    for k in [&k1, &k2] {
        let mut f = JobFile::read(&path).unwrap();
        f.sign(&path, k).unwrap();
        f.write(&path).unwrap();
    }
    let f = JobFile::read(&path).unwrap();
    let ids: Vec<&str> = f
        .signed
        .signatures
        .iter()
        .map(|s| s.key_id.as_str())
        .collect();
    assert_eq!(ids, vec![k1.key_id().as_str(), k2.key_id().as_str()]);
    let checks = check_signatures(
        &f.signed,
        &[PublicKey::read_pem_file(&pub1).unwrap(), k2.public_key()],
    );
    assert_eq!(checks, vec![SigCheck::Valid, SigCheck::Valid]);
}

#[test]
fn duplicate_signature_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut f) = new_job_file(dir.path());
    let (k1, _, _) = keys::write_keypair(&dir.path().join("k1")).unwrap();
    f.sign(&path, &k1).unwrap();
    let err = f.sign(&path, &k1).unwrap_err();
    assert!(matches!(err, JobError::AlreadySigned { .. }));
    assert!(err.to_string().contains(k1.key_id().as_str()), "{err}");
    assert_eq!(err.exit(), Exit::Usage);
    assert_eq!(f.signed.signatures.len(), 1);
}

#[test]
fn show_prints_digest_key_ids_and_verdicts() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut f) = new_job_file(dir.path());
    let (k1, _, _) = keys::write_keypair(&dir.path().join("k1")).unwrap();
    let (k2, _, _) = keys::write_keypair(&dir.path().join("k2")).unwrap();
    let (other, _, _) = keys::write_keypair(&dir.path().join("k3")).unwrap();
    f.sign(&path, &k1).unwrap();
    f.sign(&path, &k2).unwrap();
    // A forged signature under k2's id.
    f.signed.signatures[1].sig = other.sign(b"something else").to_vec();
    let checks = check_signatures(&f.signed, &[k1.public_key(), k2.public_key()]);
    assert_eq!(checks, vec![SigCheck::Valid, SigCheck::Invalid]);
    let text = show_text(&f, &checks, &[], 1_800_000_000);
    assert!(text.contains(&f.digest()), "{text}");
    assert!(
        text.contains(&format!("key {}  valid", k1.key_id())),
        "{text}"
    );
    assert!(
        text.contains(&format!("key {}  INVALID", k2.key_id())),
        "{text}"
    );
    assert!(text.contains("expires in 15m"), "{text}");
    assert!(text.contains("2027-01-15T08:00:00Z"), "{text}");
    let json = show_json(&f, &checks, &[]);
    assert_eq!(json["digest"], f.digest());
    assert_eq!(json["signatures"][0]["key_id"], k1.key_id().as_str());
    assert_eq!(json["signatures"][1]["verified"], false);
    assert_eq!(json["release"]["health"]["probe"], "http:/health");
}

#[test]
fn bad_flags_are_usage_errors_naming_the_flag() {
    type Edit = Box<dyn Fn(&mut JobSpecArgs)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("--version", Box::new(|s| s.version = Some("1.2".into()))),
        ("--version", Box::new(|s| s.version = None)),
        ("--instances", Box::new(|s| s.instances = "0".into())),
        ("--instances", Box::new(|s| s.instances = "-1".into())),
        (
            "--healthy-threshold",
            Box::new(|s| s.healthy_threshold = "0".into()),
        ),
        ("--health", Box::new(|s| s.health = "ping".into())),
        (
            "--health-interval",
            Box::new(|s| s.health_interval = "fast".into()),
        ),
        ("--valid-for", Box::new(|s| s.valid_for = "0s".into())),
        (
            "--not-before",
            Box::new(|s| s.not_before = Some("tomorrow".into())),
        ),
        ("--strategy", Box::new(|s| s.strategy = "yolo".into())),
        ("--action", Box::new(|s| s.action = "explode".into())),
        ("--app", Box::new(|s| s.app = "../etc".into())),
        ("--job-id", Box::new(|s| s.job_id = Some("a/b".into()))),
        ("--env", Box::new(|s| s.env = vec!["NOEQUALS".into()])),
        ("--env", Box::new(|s| s.env = vec!["PORT=1".into()])),
        ("-- COMMAND", Box::new(|s| s.command.clear())),
    ];
    for (flag, edit) in cases {
        let mut s = spec();
        edit(&mut s);
        let err = JobError::from(build_job("agent-1", &s, Some(&artifact()), now()).unwrap_err());
        assert!(err.to_string().contains(flag), "{flag}: {err}");
        assert_eq!(err.exit(), Exit::Usage);
    }
    let err = build_job("agent-1", &spec(), None, now()).unwrap_err();
    assert_eq!(err.flag, "--artifact");
}

#[test]
fn action_jobs_carry_no_release_unless_rollback_target() {
    let mut s = spec();
    s.action = "rollback".into();
    s.command.clear();
    let job = build_job("agent-1", &s, None, now()).unwrap();
    assert_eq!(job.release.map(|r| r.version), Some("1.2.3".into()));
    s.action = "stop".into();
    s.version = None;
    assert!(
        build_job("agent-1", &s, None, now())
            .unwrap()
            .release
            .is_none()
    );
}

#[test]
fn probes_parse() {
    assert!(matches!(
        parse_probe("tcp"),
        Ok(health_check::Probe::Tcp(_))
    ));
    match parse_probe("http:/ready=204") {
        Ok(health_check::Probe::Http(h)) => {
            assert_eq!((h.path.as_str(), h.expect_status), ("/ready", 204))
        }
        other => panic!("{other:?}"),
    }
    match parse_probe("exec:bin/check --fast") {
        Ok(health_check::Probe::Exec(e)) => assert_eq!(e.command, vec!["bin/check", "--fast"]),
        other => panic!("{other:?}"),
    }
    assert!(parse_probe("http:health").is_err());
    assert!(parse_probe("exec:").is_err());
}

#[test]
fn garbage_job_file_is_a_decode_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk");
    std::fs::write(&path, b"\xff\xff\xff not protobuf").unwrap();
    let err = JobFile::read(&path).unwrap_err();
    assert!(
        err.to_string().contains("is not a gantry.v1.SignedJob"),
        "{err}"
    );
    assert_eq!(err.exit(), Exit::Usage);
}

proptest::proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = JobFile::decode(Path::new("x"), &bytes);
    }
}

// ---------------------------------------------------------------------------------------------
// approve, show --policy, secret env

const NOW: i64 = 1_800_000_060;

/// An agent config with a deployer key `ci`, an approver `rm` and an approver `old` that
/// expired at 2027-01-15T08:00:00Z; app `web` needs `approvals` approvals.
fn policy_file(dir: &Path, approvals: u32) -> PathBuf {
    use gantry_policy::config::raw::{RawApp, RawConfig};
    use gantry_policy::job::Action;

    let mut web = RawApp::new("nobody", "18000-18009").allow(Action::Deploy, &["deployer"]);
    web.max_instances = 4;
    web.approvals = approvals;
    let mut raw = RawConfig::new("agent-1")
        .client_name("controller")
        .key("ci", "ci.pub", &["deployer"])
        .key("rm", "rm.pub", &["approver"])
        .key("old", "old.pub", &["approver"])
        .app("web", web);
    raw.listen = Some("127.0.0.1:7443".to_owned());
    raw.key_mut("old").unwrap().not_after = Some("2027-01-15T08:00:00Z".to_owned());
    let path = dir.join("agent.toml");
    std::fs::write(&path, raw.to_toml().unwrap()).unwrap();
    path
}

#[test]
fn approve_adds_a_signature_and_refuses_a_second_by_the_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _) = new_job_file(dir.path());
    let (rm, rm_key, _) = keys::write_keypair(&dir.path().join("rm")).unwrap();
    let args = JobSignArgs {
        key: rm_key,
        job: path.clone(),
    };
    approve(&args).unwrap();
    let f = JobFile::read(&path).unwrap();
    assert_eq!(f.signed.signatures.len(), 1);
    assert_eq!(f.signed.signatures[0].key_id, rm.key_id().as_str());
    let text = approve_text(&f, rm.key_id().as_str());
    assert!(
        text.starts_with(&format!(
            "approved job {} with key {}\nthis is an approval",
            f.job.job_id,
            rm.key_id()
        )),
        "{text}"
    );
    assert!(text.ends_with("the job now has 1 signature\n"), "{text}");
    let err = approve(&args).unwrap_err();
    assert!(matches!(err, JobError::AlreadySigned { .. }), "{err}");
    assert_eq!(JobFile::read(&path).unwrap().signed.signatures.len(), 1);
}

fn lines_of(reqs: &[gantry_policy::admission::explain::Requirement]) -> Vec<(&str, bool)> {
    reqs.iter().map(|r| (r.name, r.met)).collect()
}

#[test]
fn show_policy_says_what_is_met_and_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let (path, mut f) = new_job_file(dir.path());
    let (ci, _, _) = keys::write_keypair(&dir.path().join("ci")).unwrap();
    let (rm, _, _) = keys::write_keypair(&dir.path().join("rm")).unwrap();
    let (old, _, _) = keys::write_keypair(&dir.path().join("old")).unwrap();
    let policy = policy_file(dir.path(), 1);
    // No TLS files exist: only the keys and apps are read.
    let cfg = gantry_policy::config::Config::load_policy_only(&policy).unwrap();

    // Deployer only: the approval is missing.
    f.sign(&path, &ci).unwrap();
    let reqs = evaluate(&f, &cfg, NOW);
    assert_eq!(
        lines_of(&reqs),
        [
            ("signatures", true),
            ("key validity", true),
            ("target", true),
            ("window", true),
            ("app", true),
            ("role", true),
            ("approvals", false),
            ("instances", true),
            ("strategy", true),
        ]
    );
    let text = policy_text(&policy, &cfg, &reqs);
    assert!(
        text.contains(
            "  MISSING  approvals     0 of 1 needed (distinct approver keys besides the deployer's)"
        ),
        "{text}"
    );
    assert!(
        text.contains("  met      role          deploy on web by ci"),
        "{text}"
    );
    assert!(
        text.ends_with("verdict    1 requirement(s) missing: the agent would reject this job\n"),
        "{text}"
    );

    // An expired approver does not count, and is named.
    let mut g = f.clone();
    g.sign(&path, &old).unwrap();
    let reqs = evaluate(&g, &cfg, NOW);
    let kv = reqs.iter().find(|r| r.name == "key validity").unwrap();
    assert!(!kv.met);
    assert!(
        kv.detail.starts_with("key old (")
            && kv.detail.ends_with("expired at 2027-01-15T08:00:00Z"),
        "{}",
        kv.detail
    );
    assert!(!reqs.iter().find(|r| r.name == "approvals").unwrap().met);

    // With a valid approval, everything is met.
    f.sign(&path, &rm).unwrap();
    let reqs = evaluate(&f, &cfg, NOW);
    assert!(reqs.iter().all(|r| r.met), "{reqs:?}");
    let text = policy_text(&policy, &cfg, &reqs);
    assert!(
        text.contains("verdict    the agent's policy admits this job"),
        "{text}"
    );
    let json = policy_json(&policy, &cfg, &reqs);
    assert_eq!(json["admissible"], true);
    assert_eq!(json["requirements"][0]["name"], "signatures");

    // Another agent, and an expired job.
    let reqs = evaluate(&f, &cfg, NOW + 3600);
    let window = reqs.iter().find(|r| r.name == "window").unwrap();
    assert!(
        !window.met && window.detail.starts_with("job expired at"),
        "{window:?}"
    );
    let mut other = f.clone();
    other.job.agent_id = "agent-2".into();
    let mut job = other.job.clone();
    job.agent_id = "agent-2".into();
    let mut w = JobFile::new(job);
    w.sign(&path, &ci).unwrap();
    let reqs = evaluate(&w, &cfg, NOW);
    let t = reqs.iter().find(|r| r.name == "target").unwrap();
    assert!(!t.met, "{t:?}");
    assert!(t.detail.contains("\"agent-2\""), "{t:?}");

    // An untrusted signer only.
    let stranger = gantry_proto::keys::SigningKey::generate().unwrap();
    let mut s = JobFile::new(f.job.clone());
    s.sign(&path, &stranger).unwrap();
    let reqs = evaluate(&s, &cfg, NOW);
    assert_eq!(reqs[0].name, "signatures");
    assert!(!reqs[0].met);
    assert!(
        reqs[0].detail.contains("no signature is by a trusted key"),
        "{:?}",
        reqs[0]
    );
}

#[test]
fn secret_env_values_are_shown_as_secret() {
    let mut s = spec();
    s.secret_env = vec!["DB_PASSWORD=hunter2".into()];
    let job = build_job("agent-1", &s, Some(&artifact()), now()).unwrap();
    let r = job.release.as_ref().unwrap();
    assert_eq!(
        r.env.get("DB_PASSWORD").map(String::as_str),
        Some("hunter2")
    );
    assert_eq!(r.secret_env, ["DB_PASSWORD"]);
    let f = JobFile::new(job);
    let text = show_text(&f, &[], &[], 1_800_000_000);
    assert!(text.contains("env        DB_PASSWORD=<secret>\n"), "{text}");
    assert!(text.contains("env        MODE=prod\n"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    let json = show_json(&f, &[], &[]);
    assert_eq!(json["release"]["env"]["DB_PASSWORD"], "<secret>");
    assert_eq!(json["release"]["secret_env"][0], "DB_PASSWORD");
    assert!(!json.to_string().contains("hunter2"));

    // A key given as both --env and --secret-env, or one the agent sets, is refused.
    for bad in ["MODE=x", "GANTRY_APP=x", "novalue"] {
        let mut s = spec();
        s.secret_env = vec![bad.into()];
        let err = build_job("agent-1", &s, Some(&artifact()), now()).unwrap_err();
        assert_eq!(err.flag, "--secret-env", "{bad}");
        assert!(!err.to_string().contains("=x"), "{err}");
    }
}

#[test]
fn rollout_flags_reach_the_release_and_job_show() {
    let mut s = spec();
    s.strategy = "canary".into();
    s.rollout.steps = vec!["10:30s".into(), "50:promote".into(), "100:1s".into()];
    s.rollout.max_memory = Some("256MiB".into());
    let job = build_job("agent-1", &s, Some(&artifact()), now()).unwrap();
    let r = job.release.as_ref().unwrap().rollout.as_ref().unwrap();
    assert_eq!(r.steps.len(), 3);
    assert_eq!(r.analysis.as_ref().unwrap().max_memory_bytes, 256 << 20);
    assert_eq!(r.canary_instances, 0, "not given: the agent's default");

    let f = JobFile::new(job);
    let text = show_text(&f, &[], &[], 1_800_000_000);
    assert!(
        text.contains(
            "strategy   canary\n\
             rollout    canary instances    default (1)\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("\n           step 2              50% until gantry promote\n"),
        "{text}"
    );
    assert!(
        text.contains("\n           max memory          256 MiB (268435456 bytes)\n"),
        "{text}"
    );
    let json = show_json(&f, &[], &[]);
    assert_eq!(
        json["release"]["rollout"]["steps"][1]["until_promote"],
        true
    );
    assert_eq!(
        json["release"]["rollout"]["analysis"]["max_memory_bytes"],
        256u64 << 20
    );

    // No rollout flags: no rollout on the wire, defaults shown for a rolling deploy.
    let mut s = spec();
    s.strategy = "rolling".into();
    let f = JobFile::new(build_job("agent-1", &s, Some(&artifact()), now()).unwrap());
    assert_eq!(f.job.release.as_ref().unwrap().rollout, None);
    let text = show_text(&f, &[], &[], 1_800_000_000);
    assert!(
        text.contains("rollout    batch             default (1)\n"),
        "{text}"
    );
    assert_eq!(
        show_json(&f, &[], &[])["release"]["rollout"],
        serde_json::Value::Null
    );
    // A hot deploy shows no rollout.
    let f = JobFile::new(build_job("agent-1", &spec(), Some(&artifact()), now()).unwrap());
    assert!(!show_text(&f, &[], &[], 1_800_000_000).contains("rollout"));
}

#[test]
fn rollout_flags_that_do_not_fit_are_usage_errors() {
    let mut s = spec();
    s.strategy = "rolling".into();
    s.rollout.steps = vec!["10:1s".into()];
    let e = JobError::from(build_job("agent-1", &s, Some(&artifact()), now()).unwrap_err());
    assert_eq!(e.exit(), Exit::Usage);
    assert_eq!(
        e.to_string(),
        "invalid --step: is a canary flag and does not fit --strategy rolling"
    );
    // The default strategy is hot.
    let mut s = spec();
    s.rollout.batch = Some("25%".into());
    let e = build_job("agent-1", &s, Some(&artifact()), now()).unwrap_err();
    assert_eq!(e.flag, "--batch");
    // Not a deploy.
    let mut s = spec();
    s.action = "rollback".into();
    s.version = None;
    s.command.clear();
    s.rollout.manual_promote = true;
    let e = build_job("agent-1", &s, None, now()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid --manual-promote: is only for deploy, not rollback"
    );
}
