//! Release gates end to end: `gantry gate evaluate` on real reports (pytest's JUnit XML,
//! coverage.py's LCOV and Cobertura, bandit's SARIF), then agents that enforce their
//! environment's rules: a production agent refuses a pre-release, a job missing a required
//! gate, a gate for another digest and a gate signed by a key without the `ci` role, each with
//! its own audited reason; it admits a job with passed evidence and notes; a demo agent admits
//! the pre-release.

use std::fs;
use std::path::{Path, PathBuf};

use gantry_policy::config::raw::RawEnvironment;
use gantry_policy::job::Sha256Hex;
use gantry_proto::attest::Envelope;
use gantry_proto::envelope::sign_job;
use gantry_proto::keys::{PublicKey, SigningKey};
use gantry_proto::v1::{Job, SignedJob};
use gantry_tests::reports::{Project, python_reports};
use gantry_tests::{Agent, Controller, KeyPair, Output, TestEnv, audit_events, make_artifact};
use prost::Message;

use crate::{assert_exit_3_naming, assert_serves, sign_job_file};

/// `gantry keygen --out <root>/keys/ci`.
fn ci_key(env: &TestEnv) -> KeyPair {
    let prefix = env.root.join("keys").join("ci");
    env.gantry(&["keygen", "--out", &prefix.to_string_lossy()])
        .unwrap()
        .assert_code(0);
    KeyPair {
        key: prefix.with_extension("key"),
        public: prefix.with_extension("pub"),
    }
}

/// A comparison of two benchmarks, the worse `regression` percent slower than its baseline.
fn bench_file(dir: &Path, regression: f64) -> PathBuf {
    let path = dir.join(format!("bench-{regression}.json"));
    let current = 1000.0 * (1.0 + regression / 100.0);
    fs::write(
        &path,
        format!(
            r#"{{"benchmarks":[{{"name":"parse","baseline":1000.0,"current":{current}}},
                {{"name":"render","baseline":500.0,"current":480.0}}]}}"#
        ),
    )
    .unwrap();
    path
}

/// `gantry gate evaluate --artifact A --key K --out OUT` plus `reports` flags.
fn evaluate(
    env: &TestEnv,
    artifact: &Path,
    key: &Path,
    out: &Path,
    reports: &[(&str, &Path)],
) -> Output {
    let artifact = artifact.to_string_lossy().into_owned();
    let key = key.to_string_lossy().into_owned();
    let out = out.to_string_lossy().into_owned();
    let paths: Vec<(String, String)> = reports
        .iter()
        .map(|(f, p)| ((*f).to_owned(), p.to_string_lossy().into_owned()))
        .collect();
    let mut args = vec![
        "gate",
        "evaluate",
        "--artifact",
        &artifact,
        "--key",
        &key,
        "--out",
        &out,
    ];
    for (f, p) in &paths {
        args.push(f);
        args.push(p);
    }
    env.gantry(&args).unwrap()
}

#[test]
fn gate_evaluate_on_real_reports_signs_only_when_every_gate_passes() {
    let env = TestEnv::new().unwrap();
    let ci = ci_key(&env);
    let artifact = make_artifact(&env, "1.0.0", "").unwrap();
    let good = python_reports(&env.root.join("py-healthy"), Project::Healthy).unwrap();
    let bench = bench_file(&env.root, 2.0);
    let out = env.root.join("gates.json");
    let run = evaluate(
        &env,
        &artifact,
        &ci.key,
        &out,
        &[
            ("--junit", &good.junit),
            ("--lcov", &good.lcov),
            ("--sarif", &good.sarif),
            ("--bench", &bench),
        ],
    );
    run.assert_code(0);
    for line in [
        "tests        pass_rate_percent 100  >= 100     passed",
        "tests        tests_run 3            >= 1       passed",
        "coverage     line_percent 100       >= 80      passed",
        "security     critical 0             <= 0       passed",
        "security     high 0                 <= 0       passed",
        "performance  regression_percent 2   < 5        passed",
        "all 4 gate(s) passed (tests, coverage, security, performance)",
    ] {
        assert!(run.stdout.contains(line), "no {line:?} in:\n{}", run.all());
    }
    // The evidence: a statement over the artifact's digest, signed by the ci key, every value.
    let envelope = Envelope::parse(&fs::read(&out).unwrap()).unwrap();
    let ci_pub = PublicKey::read_pem_file(&ci.public).unwrap();
    assert!(envelope.signed_by(&ci_pub));
    let statement = envelope.statement().unwrap();
    let digest = Sha256Hex::of(&fs::read(&artifact).unwrap()).to_string();
    assert_eq!(
        statement.subject_sha256().collect::<Vec<_>>(),
        [digest.as_str()]
    );
    let names: Vec<&str> = statement
        .predicate
        .gates
        .iter()
        .map(|g| g.name.as_str())
        .collect();
    assert_eq!(names, ["tests", "coverage", "security", "performance"]);
    assert_eq!(statement.predicate.gates[0].measured["tests_total"], 3.0);
    assert!(
        statement.predicate.gates[0]
            .source
            .starts_with("junit.xml (sha256:")
    );

    // Cobertura from the same run measures the same coverage.
    let cob = evaluate(
        &env,
        &artifact,
        &ci.key,
        &env.root.join("cob.json"),
        &[("--cobertura", &good.cobertura)],
    );
    cob.assert_code(0);
    assert!(
        cob.stdout
            .contains("coverage  line_percent 100  >= 80      passed"),
        "{}",
        cob.all()
    );

    // Each threshold failed in turn: exit 1, the value and the threshold named, nothing signed.
    let failing = python_reports(&env.root.join("py-failing"), Project::FailingTest).unwrap();
    let uncovered = python_reports(&env.root.join("py-uncovered"), Project::LowCoverage).unwrap();
    let insecure = python_reports(&env.root.join("py-insecure"), Project::ShellInjection).unwrap();
    let slow = bench_file(&env.root, 10.0);
    let cases: [(&str, &Path, &str); 4] = [
        (
            "--junit",
            &failing.junit,
            "gate tests failed: pass_rate_percent 66.67 (needs >= 100)",
        ),
        (
            "--lcov",
            &uncovered.lcov,
            "gate coverage failed: line_percent ",
        ),
        (
            "--sarif",
            &insecure.sarif,
            "gate security failed: high 1 (needs <= 0)",
        ),
        (
            "--bench",
            &slow,
            "gate performance failed: regression_percent 10 (needs < 5)",
        ),
    ];
    for (flag, report, says) in cases {
        let out = env.root.join(format!("refused{flag}.json"));
        let run = evaluate(&env, &artifact, &ci.key, &out, &[(flag, report)]);
        run.assert_code(1);
        assert!(
            run.stderr.contains(says),
            "{flag}: no {says:?} in:\n{}",
            run.all()
        );
        assert!(run.stderr.contains("nothing signed"), "{}", run.all());
        assert!(run.stdout.contains("FAILED"), "{}", run.all());
        assert!(!out.exists(), "{flag}: evidence written for a failed gate");
    }
    let low = evaluate(
        &env,
        &artifact,
        &ci.key,
        &env.root.join("x.json"),
        &[("--lcov", &uncovered.lcov)],
    );
    assert!(low.stderr.contains("(needs >= 80)"), "{}", low.all());
}

/// A production agent requiring `gates`, trusting `ci` with role `ci`; its artifact 1.0.0.
struct Production {
    env: TestEnv,
    agent: Agent,
    ctl: Controller,
    ci: KeyPair,
    artifact: PathBuf,
}

impl Production {
    fn start(environment: &str, gates: &[&str]) -> Production {
        let env = TestEnv::new().unwrap();
        let ci = ci_key(&env);
        let mut raw = env.raw_config().key("ci", "keys/ci.pub", &["ci"]);
        raw.environment = Some(environment.to_owned());
        if !gates.is_empty() {
            raw.environments.insert(
                environment.to_owned(),
                RawEnvironment {
                    require_gates: gates.iter().map(|g| (*g).to_owned()).collect(),
                    ..RawEnvironment::default()
                },
            );
        }
        env.write_raw_config(&raw).unwrap();
        let agent = Agent::start(&env).unwrap();
        let ctl = Controller::new(&env, &agent);
        let artifact = make_artifact(&env, "1.0.0", "").unwrap();
        Production {
            env,
            agent,
            ctl,
            ci,
            artifact,
        }
    }

    /// Healthy reports evaluated over `artifact` (digest) with `key`, written to `name`.
    fn evidence(&self, name: &str, artifact: &Path, key: &Path) -> PathBuf {
        let reports = python_reports(&self.env.root.join("py"), Project::Healthy).unwrap();
        let out = self.env.root.join(name);
        evaluate(
            &self.env,
            artifact,
            key,
            &out,
            &[
                ("--junit", &reports.junit),
                ("--lcov", &reports.lcov),
                ("--sarif", &reports.sarif),
            ],
        )
        .assert_code(0);
        out
    }

    /// A signed hot deploy of web `version` from `artifact`, with `extra` flags.
    fn job(&self, name: &str, version: &str, artifact: &Path, extra: &[&str]) -> PathBuf {
        let out = self.env.root.join(format!("{name}.job"));
        let (out_s, artifact) = (
            out.to_string_lossy().into_owned(),
            artifact.to_string_lossy().into_owned(),
        );
        let mut args = vec![
            "job",
            "create",
            "--out",
            &out_s,
            "--agent-id",
            &self.env.agent_id,
            "--app",
            "web",
            "--version",
            version,
            "--artifact",
            &artifact,
            "--health",
            "http:/health",
            "--health-deadline",
            "20s",
        ];
        args.extend(extra);
        args.extend(["--", "bin/gantry-sample-app"]);
        self.env.gantry(&args).unwrap().assert_code(0);
        sign_job_file(&self.env, &out, &self.env.keys.deployer);
        out
    }

    fn submit(&self, job: &Path, artifact: &Path) -> Output {
        self.ctl
            .run(&[
                "job",
                "submit",
                "--artifact",
                &artifact.to_string_lossy(),
                &job.to_string_lossy(),
            ])
            .unwrap()
    }

    /// Refused with exit 3 naming `words`, and a `job.rejected` entry with `reason`.
    #[track_caller]
    fn assert_refused(&self, out: &Output, reason: &str, words: &[&str]) {
        assert_exit_3_naming(out, words);
        let rejected = audit_events(&self.env, "job.rejected").unwrap();
        assert!(
            rejected
                .iter()
                .any(|e| e["reason"] == reason && words.iter().any(|w| e.to_string().contains(w))),
            "no job.rejected with reason {reason} naming {words:?}: {rejected:#?}"
        );
    }
}

#[test]
fn a_production_agent_refuses_what_its_environment_forbids_and_admits_passed_evidence() {
    let p = Production::start("production", &["tests", "coverage", "security"]);
    let good = p.evidence("gates.json", &p.artifact, &p.ci.key);

    // A release candidate, even with its gates passed.
    let rc = make_artifact(&p.env, "1.1.0-rc.1", "").unwrap();
    let rc_gates = p.evidence("rc-gates.json", &rc, &p.ci.key);
    let job = p.job(
        "rc",
        "1.1.0-rc.1",
        &rc,
        &["--evidence", &rc_gates.to_string_lossy()],
    );
    p.assert_refused(
        &p.submit(&job, &rc),
        "prerelease_refused",
        &["version 1.1.0-rc.1 is a pre-release, refused in environment production"],
    );

    // No evidence at all.
    let job = p.job("bare", "1.0.0", &p.artifact, &[]);
    p.assert_refused(
        &p.submit(&job, &p.artifact),
        "gate_missing",
        &["requires gate tests"],
    );

    // Evidence by a key without the ci role (the deployer's).
    let by_deployer = p.evidence("by-deployer.json", &p.artifact, &p.env.keys.deployer.key);
    let job = p.job(
        "deployer-gates",
        "1.0.0",
        &p.artifact,
        &["--evidence", &by_deployer.to_string_lossy()],
    );
    p.assert_refused(
        &p.submit(&job, &p.artifact),
        "gate_signer_role",
        &["not signed by a valid key with role ci: key deployer holds deployer"],
    );

    // Evidence for another artifact: `job create` refuses to carry it ...
    let create = p
        .env
        .gantry(&[
            "job",
            "create",
            "--out",
            &p.env.root.join("x.job").to_string_lossy(),
            "--agent-id",
            &p.env.agent_id,
            "--app",
            "web",
            "--version",
            "1.0.0",
            "--artifact",
            &p.artifact.to_string_lossy(),
            "--evidence",
            &rc_gates.to_string_lossy(),
            "--",
            "bin/x",
        ])
        .unwrap();
    create.assert_code(2);
    assert!(
        create.stderr.contains("it is evidence for artifact"),
        "{}",
        create.all()
    );
    // ... and a job signed with it all the same is refused by the agent.
    let job = p.job("other-digest", "1.0.0", &p.artifact, &[]);
    let mut signed = SignedJob::decode(fs::read(&job).unwrap().as_slice()).unwrap();
    let mut decoded = Job::decode(signed.job.as_slice()).unwrap();
    if let Some(r) = decoded.release.as_mut() {
        r.evidence.push(fs::read(&rc_gates).unwrap());
    }
    signed.job = decoded.encode_to_vec();
    let deployer = SigningKey::read_pem_file(&p.env.keys.deployer.key).unwrap();
    signed.signatures = vec![sign_job(&deployer, &signed.job)];
    fs::write(&job, signed.encode_to_vec()).unwrap();
    p.assert_refused(
        &p.submit(&job, &p.artifact),
        "gate_digest_mismatch",
        &["evidence 0 is for artifact"],
    );

    // Passed evidence by the ci key, with release notes: admitted, the notes' digest audited.
    let notes = p.env.root.join("NOTES.md");
    fs::write(
        &notes,
        "# Release v1.0.0\n\n## New Features\n- greets you\n",
    )
    .unwrap();
    let job = p.job(
        "gated",
        "1.0.0",
        &p.artifact,
        &[
            "--evidence",
            &good.to_string_lossy(),
            "--notes",
            &notes.to_string_lossy(),
        ],
    );
    // A stakeholder's sign-off after exploring the demo: an approval with a comment.
    let approve = p
        .env
        .gantry(&[
            "job",
            "approve",
            "--key",
            &p.env.keys.approver.key.to_string_lossy(),
            "--comment",
            "explored the demo; ok to ship",
            &job.to_string_lossy(),
        ])
        .unwrap();
    approve.assert_code(0);
    p.submit(&job, &p.artifact).assert_code(0);
    assert_serves(&p.env, "1.0.0", 1);
    let accepted = audit_events(&p.env, "job.accepted").unwrap();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    assert_eq!(
        accepted[0]["notes_sha256"],
        Sha256Hex::of(&fs::read(&notes).unwrap()).to_string()
    );
    assert_eq!(
        accepted[0]["evidence_sha256"],
        serde_json::json!([Sha256Hex::of(&fs::read(&good).unwrap()).to_string()])
    );
    let rejected: Vec<String> = audit_events(&p.env, "job.rejected")
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        rejected,
        [
            "prerelease_refused",
            "gate_missing",
            "gate_signer_role",
            "gate_digest_mismatch"
        ]
    );

    // `status` shows the notes of the release that runs.
    let status = p.ctl.run(&["status"]).unwrap();
    status.assert_code(0);
    assert!(
        status.stdout.contains("  notes\n    | # Release v1.0.0\n"),
        "{}",
        status.all()
    );

    // `job show` prints the notes and each gate with its values.
    let show = p
        .env
        .gantry(&[
            "job",
            "show",
            "--pubkey",
            &p.ci.public.to_string_lossy(),
            &job.to_string_lossy(),
        ])
        .unwrap();
    show.assert_code(0);
    for line in [
        "  | ## New Features",
        "  | - greets you",
        "(valid)",
        "tests        passed  pass_rate_percent 100 (needs >= 100)",
    ] {
        assert!(
            show.stdout.contains(line),
            "no {line:?} in:\n{}",
            show.all()
        );
    }

    // The release from signed data only: signers, the approval and its comment, notes, gates,
    // and where it ran, from the agent's verified audit log.
    let digest = Sha256Hex::of(&fs::read(&p.artifact).unwrap()).to_string();
    let show = p
        .ctl
        .run(&[
            "release",
            "show",
            &digest,
            "--job",
            &job.to_string_lossy(),
            "--policy",
            &p.env.config.to_string_lossy(),
            "--agent-pubkey",
            &p.env.keys.agent.public.to_string_lossy(),
        ])
        .unwrap();
    show.assert_code(0);
    for line in [
        &format!("release sha256:{digest}\n"),
        "  signed by  deployer (deployer); approver (approver)\n",
        "  approval   approver (approver): \"explored the demo; ok to ship\"\n",
        "  | - greets you\n",
        "  coverage     passed  line_percent 100 (needs >= 80)",
        "signed by key ",
        "chain and checkpoints verified with the agent's key)\n",
        " deploy 1.0.0  succeeded at ",
    ] {
        assert!(
            show.stdout.contains(line),
            "no {line:?} in:\n{}",
            show.all()
        );
    }

    // The policy the agent enforces, as an operator reads it.
    let policy = p
        .env
        .agent_cmd(&["policy", "--config", &p.env.config.to_string_lossy()])
        .unwrap();
    policy.assert_code(0);
    assert!(
        policy
            .stdout
            .contains("    required gates  tests, coverage, security (passed"),
        "{}",
        policy.all()
    );
    drop(p.agent);
}

#[test]
fn a_demo_agent_admits_a_release_candidate() {
    let p = Production::start("demo", &[]);
    let rc = make_artifact(&p.env, "1.1.0-rc.1", "").unwrap();
    let job = p.job("rc", "1.1.0-rc.1", &rc, &[]);
    p.submit(&job, &rc).assert_code(0);
    assert_serves(&p.env, "1.1.0-rc.1", 1);
}
