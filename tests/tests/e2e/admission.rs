//! Every admission rejection: exit code 3, the cause on stderr, a `job.rejected` audit entry
//! naming it, and nothing run or unpacked.

use std::fs;
use std::path::{Path, PathBuf};

use gantry_proto::envelope::sign_job;
use gantry_proto::keys::SigningKey;
use gantry_proto::v1::{Job, SignedJob};
use gantry_tests::grpc::submit_raw;
use gantry_tests::{
    Agent, Controller, KeyPair, Options, Output, TestEnv, audit_events, banner, make_artifact,
    rfc3339, unix_now,
};
use prost::Message;

use crate::{assert_exit_3_naming, assert_serves, mentions, sign_job_file};

/// One agent waiting for jobs, and what `data/apps` looked like before any was sent.
struct Case {
    env: TestEnv,
    agent: Agent,
    ctl: Controller,
    artifact: PathBuf,
    before: Vec<(PathBuf, u64, bool)>,
}

impl Case {
    fn new() -> Case {
        Case::with_options(Options::default())
    }

    fn with_options(options: Options) -> Case {
        let env = TestEnv::with_options(options).unwrap();
        let agent = Agent::start(&env).unwrap();
        let ctl = Controller::new(&env, &agent);
        let artifact = make_artifact(&env, "1.0.0", "").unwrap();
        let before = env.apps_snapshot();
        Case {
            env,
            agent,
            ctl,
            artifact,
            before,
        }
    }

    /// `gantry job create` for a hot deploy of web 1.0.0 on one instance; `set` replaces
    /// default flags, `extra` adds flags.
    fn create(&self, name: &str, set: &[(&str, &str)], extra: &[&str]) -> PathBuf {
        let out = self.env.root.join(format!("{name}.job"));
        let artifact = self.artifact.to_string_lossy().into_owned();
        let mut flags = vec![
            ("--agent-id", self.env.agent_id.as_str()),
            ("--app", "web"),
            ("--version", "1.0.0"),
            ("--artifact", artifact.as_str()),
            ("--instances", "1"),
            ("--health", "http:/health"),
            ("--health-deadline", "20s"),
        ];
        for (flag, value) in set {
            match flags.iter_mut().find(|(f, _)| f == flag) {
                Some(slot) => slot.1 = value,
                None => flags.push((flag, value)),
            }
        }
        let out_s = out.to_string_lossy().into_owned();
        let mut args = vec!["job", "create", "--out", out_s.as_str()];
        args.extend(flags.iter().flat_map(|(f, v)| [*f, *v]));
        args.extend(extra);
        args.extend(["--", "bin/gantry-sample-app"]);
        self.env.gantry(&args).unwrap().assert_code(0);
        out
    }

    fn sign(&self, job: &Path, key: &KeyPair) {
        sign_job_file(&self.env, job, key);
    }

    fn create_signed(&self, name: &str, set: &[(&str, &str)], extra: &[&str]) -> PathBuf {
        let job = self.create(name, set, extra);
        self.sign(&job, &self.env.keys.deployer);
        job
    }

    fn submit(&self, job: &Path) -> Output {
        let artifact = self.artifact.to_string_lossy().into_owned();
        self.ctl
            .run(&[
                "job",
                "submit",
                "--artifact",
                &artifact,
                &job.to_string_lossy(),
            ])
            .unwrap()
    }

    /// The submission was refused for a reason `words` describe, on stderr and in the audit
    /// log, and nothing ran.
    #[track_caller]
    fn assert_rejected(&self, out: &Output, reason: &str, words: &[&str]) {
        assert_exit_3_naming(out, words);
        let rejected = audit_events(&self.env, "job.rejected").unwrap();
        assert!(
            rejected
                .iter()
                .any(|e| e["reason"] == reason && mentions(&rejection_text(e), words)),
            "no job.rejected entry with reason {reason} naming any of {words:?}: {rejected:#?}"
        );
        let accepted = audit_events(&self.env, "job.accepted").unwrap();
        assert!(
            accepted.is_empty(),
            "a rejected job was accepted: {accepted:?}"
        );
        assert_eq!(self.env.apps_snapshot(), self.before, "data/apps changed");
        assert_eq!(banner(self.env.port(0)), None, "an instance answers");
    }
}

/// The `reason` (a code such as `not_yet_valid`, also read with spaces) and `detail` of a
/// `job.rejected` entry; the whole entry when it has neither.
fn rejection_text(e: &serde_json::Value) -> String {
    let field = |k: &str| {
        e.get(k)
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (reason, detail) = (field("reason"), field("detail"));
    if reason.is_empty() && detail.is_empty() {
        return e.to_string();
    }
    format!("{reason} {} {detail}", reason.replace(['_', '-', '.'], " "))
}

fn edit_signed_job(path: &Path, edit: impl FnOnce(&mut SignedJob)) {
    let mut signed = SignedJob::decode(fs::read(path).unwrap().as_slice()).unwrap();
    edit(&mut signed);
    fs::write(path, signed.encode_to_vec()).unwrap();
}

#[test]
fn bad_signature_is_rejected() {
    let case = Case::new();
    let job = case.create_signed("flipped", &[], &[]);
    edit_signed_job(&job, |s| s.signatures[0].sig[10] ^= 0x01);
    case.assert_rejected(&case.submit(&job), "bad_signature", &["signature"]);
}

#[test]
fn unknown_key_is_rejected() {
    let case = Case::new();
    let job = case.create("attacker", &[], &[]);
    case.sign(&job, &case.env.keys.attacker);
    case.assert_rejected(
        &case.submit(&job),
        "unknown_key",
        &[
            "unknown key",
            "untrusted",
            "not trusted",
            "unknown signer",
            "trusted key",
            "unknown",
        ],
    );
}

#[test]
fn signer_without_the_role_is_rejected() {
    let case = Case::new();
    let job = case.create("viewer", &[], &[]);
    case.sign(&job, &case.env.keys.viewer);
    case.assert_rejected(
        &case.submit(&job),
        "missing_role",
        &["role", "not allowed", "permission", "may not"],
    );
}

#[test]
fn job_for_another_agent_is_rejected() {
    let case = Case::new();
    let job = case.create_signed("other-agent", &[("--agent-id", "agent-2")], &[]);
    case.assert_rejected(&case.submit(&job), "wrong_agent", &["agent"]);
}

#[test]
fn expired_job_is_rejected() {
    let case = Case::new();
    let past = rfc3339(unix_now() - 600);
    let job = case.create_signed(
        "expired",
        &[("--not-before", &past), ("--valid-for", "1m")],
        &[],
    );
    case.assert_rejected(&case.submit(&job), "expired", &["expired"]);
}

#[test]
fn job_not_yet_valid_is_rejected() {
    let case = Case::new();
    let later = rfc3339(unix_now() + 3600);
    let job = case.create_signed("early", &[("--not-before", &later)], &[]);
    case.assert_rejected(
        &case.submit(&job),
        "not_yet_valid",
        &[
            "not yet valid",
            "not valid before",
            "not before",
            "not_before",
            "too early",
            "future",
        ],
    );
}

#[test]
fn validity_window_over_the_maximum_is_rejected() {
    let case = Case::new();
    let job = case.create_signed("long", &[("--valid-for", "2h")], &[]);
    case.assert_rejected(
        &case.submit(&job),
        "window_too_long",
        &[
            "validity",
            "window",
            "longer than",
            "max_validity",
            "maximum",
        ],
    );
}

#[test]
fn bytes_changed_after_signing_are_rejected() {
    let case = Case::new();
    let job = case.create_signed("changed", &[], &[]);
    edit_signed_job(&job, |s| {
        let mut decoded = Job::decode(s.job.as_slice()).unwrap();
        decoded.reason = "changed after signing".to_owned();
        s.job = decoded.encode_to_vec();
    });
    case.assert_rejected(&case.submit(&job), "bad_signature", &["signature"]);
}

#[test]
fn malformed_job_is_rejected_even_when_signed() {
    let case = Case::new();
    // Field 1 (job_id) claims 127 bytes but the message ends after 9: not a Job.
    let garbage = b"\x0a\x7fnot a job".to_vec();
    let key = SigningKey::read_pem_file(&case.env.keys.deployer.key).unwrap();
    let signed = SignedJob {
        signatures: vec![sign_job(&key, &garbage)],
        job: garbage,
        comments: Vec::new(),
    };
    let job = case.env.root.join("garbage.job");
    fs::write(&job, signed.encode_to_vec()).unwrap();
    let words = ["malformed", "decode", "protobuf", "invalid job"];
    // The CLI checks the file before sending it ...
    let out = case
        .ctl
        .run(&["job", "submit", &job.to_string_lossy()])
        .unwrap();
    assert!(
        out.code == 2 || out.code == 3,
        "a malformed job was submitted:\n{}",
        out.all()
    );
    assert!(
        mentions(&out.stderr, &words),
        "stderr does not say why:\n{}",
        out.all()
    );
    // ... so send it raw: the agent must refuse it on its own.
    let refused = submit_raw(&case.env, &case.agent, signed)
        .unwrap()
        .unwrap_err();
    assert!(
        mentions(refused.message(), &words),
        "agent's refusal: {refused:?}"
    );
    let rejected = audit_events(&case.env, "job.rejected").unwrap();
    assert!(
        rejected
            .iter()
            .any(|e| e["reason"] == "malformed" && mentions(&rejection_text(e), &words)),
        "no job.rejected entry for the malformed job: {rejected:#?}"
    );
    assert!(audit_events(&case.env, "job.accepted").unwrap().is_empty());
    assert_eq!(case.env.apps_snapshot(), case.before, "data/apps changed");
}

#[test]
fn oversize_job_is_rejected() {
    let case = Case::with_options(Options {
        max_job_bytes: 2048,
        ..Options::default()
    });
    let big = format!("BIG={}", "x".repeat(4000));
    let job = case.create_signed("big", &[], &["--env", &big]);
    case.assert_rejected(
        &case.submit(&job),
        "too_large",
        &[
            "too large",
            "too big",
            "exceeds",
            "max_job_bytes",
            "size",
            "limit",
        ],
    );
}

#[test]
fn unconfigured_app_is_rejected() {
    let case = Case::new();
    let job = case.create_signed("other-app", &[("--app", "other")], &[]);
    case.assert_rejected(
        &case.submit(&job),
        "app_not_configured",
        &[
            "not configured",
            "unknown app",
            "no app",
            "unconfigured",
            "no such app",
        ],
    );
}

#[test]
fn identical_resubmission_is_idempotent_and_a_reused_job_id_is_rejected() {
    let case = Case::new();
    let job = case.create_signed("first", &[("--job-id", "fixed-1")], &[]);
    case.submit(&job).assert_code(0);
    assert_serves(&case.env, "1.0.0", 1);

    let again = case.submit(&job);
    again.assert_code(0);
    let of_job = |event: &str| {
        audit_events(&case.env, event)
            .unwrap()
            .into_iter()
            .filter(|e| e["job_id"] == "fixed-1")
            .count()
    };
    assert_eq!(
        of_job("job.accepted"),
        1,
        "the identical job was accepted twice"
    );
    assert_eq!(of_job("job.succeeded"), 1, "the identical job ran twice");

    let other = case.create_signed(
        "second",
        &[("--job-id", "fixed-1"), ("--reason", "other")],
        &[],
    );
    let out = case.submit(&other);
    out.assert_code(3);
    let words = ["replay", "already", "duplicate", "reused", "job id"];
    assert!(
        mentions(&out.stderr, &words),
        "stderr does not name the replay:\n{}",
        out.all()
    );
    let rejected = audit_events(&case.env, "job.rejected").unwrap();
    assert!(
        rejected.iter().any(|e| e["reason"] == "replayed"),
        "no job.rejected for the replay: {rejected:#?}"
    );
    assert_eq!(of_job("job.accepted"), 1);
    assert_serves(&case.env, "1.0.0", 1);
}
