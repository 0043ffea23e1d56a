//! Attacks against the real binaries, one test per attack, each named after it: what the
//! attacker sends or changes, the exit code and message that name the cause, the audit entry,
//! and that nothing ran and no state changed.
//!
//! Jobs the `gantry` CLI refuses to build (hostile app names, unknown action values, exact
//! sizes, an empty target) are encoded here and sent with [`submit_raw`], signed by a trusted
//! key: the agent must refuse them on its own.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_policy::config::raw::RawConfig;
use gantry_proto::audit_chain::{GENESIS_PREV, line_hash};
use gantry_proto::envelope::sign_job;
use gantry_proto::keys::SigningKey;
use gantry_proto::v1::agent_client::AgentClient;
use gantry_proto::v1::{Job, JobEvent, SignedJob};
use gantry_tests::grpc::{connect_as, submit_raw, upload_raw};
use gantry_tests::probe::audit_files;
use gantry_tests::process::recorded_instance_pids;
use gantry_tests::{
    Agent, Controller, KeyPair, Options, Output, TestEnv, audit_events, banner, make_artifact,
    wait_until,
};
use prost::Message;

use crate::{
    assert_exit_3_naming, assert_serves, deploy, mentions, names_seq, releases, sign_job_file,
};

/// One agent waiting for jobs on `web`, the sample app's 1.0.0 artifact, and every agent this
/// test started before (dropping an [`Agent`] kills every process under the test dir, so
/// replaced ones are kept until the end).
struct Rig {
    env: TestEnv,
    agent: Agent,
    ctl: Controller,
    artifact: PathBuf,
    retired: Vec<Agent>,
}

impl Rig {
    fn new() -> Rig {
        Rig::with_options(Options::default(), |_| {})
    }

    /// An agent on `options`, its `agent.toml` changed by `edit` first.
    fn with_options(options: Options, edit: impl FnOnce(&mut RawConfig)) -> Rig {
        let env = TestEnv::with_options(options).unwrap();
        let mut raw = env.raw_config();
        edit(&mut raw);
        env.write_raw_config(&raw).unwrap();
        let agent = Agent::start(&env).unwrap();
        let ctl = Controller::new(&env, &agent);
        let artifact = make_artifact(&env, "1.0.0", "").unwrap();
        Rig {
            env,
            agent,
            ctl,
            artifact,
            retired: Vec::new(),
        }
    }

    /// Stops the agent with SIGTERM and starts it again on the same data dir.
    fn restart(&mut self) {
        self.agent.terminate().unwrap();
        self.start_again();
    }

    /// Starts a new agent after the current one stopped; the old handle is kept.
    fn start_again(&mut self) {
        let agent = Agent::start(&self.env).unwrap();
        self.ctl = Controller::new(&self.env, &agent);
        let old = std::mem::replace(&mut self.agent, agent);
        self.retired.push(old);
    }

    /// `gantry job create` for a hot deploy of web 1.0.0 on one instance, plus `extra` flags.
    fn create(&self, name: &str, extra: &[&str]) -> PathBuf {
        let out = self.env.root.join(format!("{name}.job"));
        let mut args = vec![
            "job".to_owned(),
            "create".to_owned(),
            "--out".to_owned(),
            out.to_string_lossy().into_owned(),
            "--agent-id".to_owned(),
            self.env.agent_id.clone(),
            "--app".to_owned(),
            "web".to_owned(),
            "--version".to_owned(),
            "1.0.0".to_owned(),
            "--artifact".to_owned(),
            self.artifact.to_string_lossy().into_owned(),
            "--instances".to_owned(),
            "1".to_owned(),
            "--health".to_owned(),
            "http:/health".to_owned(),
            "--health-interval".to_owned(),
            "200ms".to_owned(),
            "--health-deadline".to_owned(),
            "20s".to_owned(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.extend(["--".to_owned(), "bin/gantry-sample-app".to_owned()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.env.gantry(&args).unwrap().assert_code(0);
        out
    }

    fn sign(&self, job: &Path, key: &KeyPair) {
        sign_job_file(&self.env, job, key);
    }

    /// `gantry job approve --key <key> <job>`; it must succeed.
    fn approve(&self, job: &Path, key: &KeyPair) {
        let key = self.key(key);
        self.env
            .gantry(&["job", "approve", "--key", &key, &job.to_string_lossy()])
            .unwrap()
            .assert_code(0);
    }

    fn create_signed(&self, name: &str, extra: &[&str]) -> PathBuf {
        let job = self.create(name, extra);
        self.sign(&job, &self.env.keys.deployer);
        job
    }

    /// `gantry job submit --artifact ... JOB`.
    fn submit(&self, job: &Path) -> Output {
        submit_with(&self.ctl, &self.artifact, job)
    }

    /// The decoded `Job` that `gantry job create` writes for `name`, for raw edits.
    fn raw_job(&self, name: &str, extra: &[&str]) -> Job {
        let path = self.create(name, extra);
        let signed = SignedJob::decode(fs::read(path).unwrap().as_slice()).unwrap();
        Job::decode(signed.job.as_slice()).unwrap()
    }

    /// Sends `bytes` signed by `keys` straight to the agent.
    fn submit_bytes(
        &self,
        bytes: Vec<u8>,
        keys: &[&KeyPair],
    ) -> Result<Vec<JobEvent>, tonic::Status> {
        let signatures = keys
            .iter()
            .map(|k| sign_job(&SigningKey::read_pem_file(&k.key).unwrap(), &bytes))
            .collect();
        let signed = SignedJob {
            job: bytes,
            signatures,
            comments: Vec::new(),
        };
        submit_raw(&self.env, &self.agent, signed).unwrap()
    }

    /// How many `event` entries name `job_id`.
    fn count(&self, event: &str, job_id: &str) -> usize {
        audit_events(&self.env, event)
            .unwrap()
            .iter()
            .filter(|e| e["job_id"] == job_id)
            .count()
    }

    /// Some `job.rejected` entry has `reason` and names one of `words` in its detail.
    #[track_caller]
    fn assert_rejection_logged(&self, reason: &str, words: &[&str]) {
        let rejected = audit_events(&self.env, "job.rejected").unwrap();
        assert!(
            rejected.iter().any(|e| e["reason"] == reason
                && mentions(e["detail"].as_str().unwrap_or_default(), words)),
            "no job.rejected entry with reason {reason} naming any of {words:?}: {rejected:#?}"
        );
    }

    /// The CLI exited 3 naming the cause, and the audit log says why.
    #[track_caller]
    fn assert_rejected(&self, out: &Output, reason: &str, words: &[&str]) {
        assert_exit_3_naming(out, words);
        self.assert_rejection_logged(reason, words);
    }

    /// The agent refused a raw submission naming the cause, and the audit log says why.
    #[track_caller]
    fn assert_refused(
        &self,
        got: Result<Vec<JobEvent>, tonic::Status>,
        code: tonic::Code,
        reason: &str,
        words: &[&str],
    ) {
        let status = match got {
            Ok(events) => panic!("the agent took the job, expected {reason}: {events:#?}"),
            Err(status) => status,
        };
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            mentions(status.message(), words),
            "the refusal names none of {words:?}: {status:?}"
        );
        self.assert_rejection_logged(reason, words);
    }

    /// No job was accepted, nothing is installed, and no instance answers.
    #[track_caller]
    fn assert_nothing_ran(&self, before: &[(PathBuf, u64, bool)]) {
        let accepted = audit_events(&self.env, "job.accepted").unwrap();
        assert!(accepted.is_empty(), "a job was accepted: {accepted:#?}");
        assert_eq!(self.env.apps_snapshot(), before, "data/apps changed");
        assert_eq!(banner(self.env.port(0)), None, "an instance answers");
    }

    fn key(&self, which: &KeyPair) -> String {
        which.key.to_string_lossy().into_owned()
    }
}

fn submit_with(ctl: &Controller, artifact: &Path, job: &Path) -> Output {
    ctl.run(&[
        "job",
        "submit",
        "--artifact",
        &artifact.to_string_lossy(),
        &job.to_string_lossy(),
    ])
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The controller as witness.

/// The file where the controller keeps the checkpoint of the agent of `env`, keyed by agent id
/// and the agent's checkpoint key.
fn witness_file(env: &TestEnv) -> PathBuf {
    let key = gantry_proto::keys::PublicKey::read_pem_file(&env.keys.agent.public).unwrap();
    env.state_dir
        .join("witness")
        .join(&env.agent_id)
        .join(format!("{}.json", key.key_id()))
}

/// The seq of the checkpoint the controller keeps for the agent of `env`.
fn witnessed_seq(env: &TestEnv) -> u64 {
    let path = witness_file(env);
    let text = fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("no witness file {}: {e}", path.display()));
    let w: serde_json::Value = serde_json::from_str(&text).unwrap();
    w["seq"].as_u64().unwrap()
}

/// A deploy whose result the controller witnessed, then the agent stopped. Returns the rig and
/// the witnessed seq.
fn witnessed_deploy() -> (Rig, u64) {
    let mut rig = Rig::new();
    deploy(&rig.ctl, &rig.env, "1.0.0", &rig.artifact, 1, "20s").assert_code(0);
    let seq = witnessed_seq(&rig.env);
    let out = rig.ctl.run(&["audit", "verify"]).unwrap();
    out.assert_code(0);
    assert!(
        mentions(
            &out.stdout,
            &[&format!("seq {seq} this controller witnessed")]
        ),
        "verify does not mention the witnessed checkpoint:\n{}",
        out.all()
    );
    rig.agent.terminate().unwrap();
    (rig, seq)
}

/// The single audit file of `env` and its lines.
fn audit_file(env: &TestEnv) -> (PathBuf, Vec<String>) {
    let files = audit_files(&env.data_dir.join("audit")).unwrap();
    assert_eq!(files.len(), 1, "expected one audit file: {files:?}");
    let text = fs::read_to_string(&files[0]).unwrap();
    let lines = text.lines().map(str::to_owned).collect();
    (files[0].clone(), lines)
}

fn write_lines(path: &Path, lines: &[String]) {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fs::write(path, text).unwrap();
}

/// `lines` renumbered from seq 1 with every `prev` recomputed: a chain that verifies on its
/// own, as an intruder without the agent's key can make it.
fn rechain(lines: &[String]) -> Vec<String> {
    let mut prev = GENESIS_PREV.to_owned();
    let mut out = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let old_seq = v["seq"].as_u64().unwrap();
        let old_prev = v["prev"].as_str().unwrap();
        let new = line
            .replacen(
                &format!("{{\"seq\":{old_seq},"),
                &format!("{{\"seq\":{},", i + 1),
                1,
            )
            .replacen(
                &format!("\"prev\":\"{old_prev}\""),
                &format!("\"prev\":\"{prev}\""),
                1,
            );
        let check: serde_json::Value = serde_json::from_str(&new).unwrap();
        assert_eq!(check["seq"].as_u64(), Some(i as u64 + 1), "{new}");
        assert_eq!(check["prev"].as_str(), Some(prev.as_str()), "{new}");
        prev = line_hash(new.as_bytes());
        out.push(new);
    }
    out
}

/// `gantry-agent audit verify` on the local files with the agent's public key.
fn local_verify(env: &TestEnv) -> Output {
    let audit = env.data_dir.join("audit").to_string_lossy().into_owned();
    let pubkey = env.keys.agent.public.to_string_lossy().into_owned();
    env.agent_cmd(&["audit", "verify", "--dir", &audit, "--pubkey", &pubkey])
        .unwrap()
}

/// `gantry audit verify` exits 1 naming the witnessed seq.
#[track_caller]
fn assert_witness_fails(rig: &Rig, seq: u64) {
    let out = rig.ctl.run(&["audit", "verify"]).unwrap();
    assert_eq!(
        out.code,
        1,
        "the controller accepted a log that no longer extends its witnessed checkpoint\n{}",
        out.all()
    );
    assert!(
        names_seq(&out.all(), seq),
        "the failure does not name the witnessed seq {seq}:\n{}",
        out.all()
    );
    assert!(
        mentions(&out.all(), &["witness"]),
        "the failure does not say the witness caught it:\n{}",
        out.all()
    );
}

#[test]
fn witness_detects_a_rechained_rewrite() {
    let (mut rig, seq) = witnessed_deploy();
    let (file, lines) = audit_file(&rig.env);
    // Edit the accepted job's version, drop every checkpoint (their signatures would give the
    // edit away and cannot be made without the agent's key) and recompute the chain.
    let mut edited = 0;
    let forged: Vec<String> = lines
        .iter()
        .filter(|l| !l.contains("\"event\":\"checkpoint\""))
        .map(|l| {
            if l.contains("\"event\":\"job.accepted\"") && l.contains("\"1.0.0\"") {
                edited += 1;
                l.replacen("\"1.0.0\"", "\"0.0.1-forged\"", 1)
            } else {
                l.clone()
            }
        })
        .collect();
    assert_eq!(edited, 1, "no job.accepted entry to edit in {lines:#?}");
    assert!(forged.len() < lines.len(), "no checkpoint to drop");
    write_lines(&file, &rechain(&forged));

    rig.start_again();
    // On its own the log looks fine: the chain holds and the agent signs new checkpoints on
    // top of it. Only what the controller witnessed shows the history was rewritten.
    local_verify(&rig.env).assert_code(0);
    assert_witness_fails(&rig, seq);
}

#[test]
fn witness_detects_a_cut_below_the_witnessed_checkpoint() {
    let (mut rig, seq) = witnessed_deploy();
    let (file, lines) = audit_file(&rig.env);
    assert!(seq > 3, "witnessed seq {seq} is too low to cut below");
    // Whole lines: keep the entries before seq - 2, as if the rest had never been written.
    let kept: Vec<String> = lines[..usize::try_from(seq - 3).unwrap()].to_vec();
    write_lines(&file, &kept);

    rig.start_again();
    // The agent's own check passes: a cut at a line boundary leaves a valid chain.
    local_verify(&rig.env).assert_code(0);
    assert_witness_fails(&rig, seq);
}

/// Issue 16 G10: the log is rewritten (re-chained, its checkpoints dropped) and padded past
/// the witnessed seq, then another job runs, so the agent signs a new checkpoint above the
/// witnessed one on top of the forgery. The controller fetches the lines between the two,
/// finds they do not start with what it witnessed, raises the alarm (exit 1, its message naming
/// the witnessed seq) and keeps the old witness, so `audit verify` still fails.
#[test]
fn g10_a_rewrite_padded_past_the_witnessed_seq_then_another_job_is_caught() {
    let (mut rig, seq) = witnessed_deploy();
    let witness_before = fs::read_to_string(witness_file(&rig.env)).unwrap();
    let (file, lines) = audit_file(&rig.env);
    let mut forged: Vec<String> = lines
        .iter()
        .filter(|l| !l.contains("\"event\":\"checkpoint\""))
        .cloned()
        .collect();
    let filler = forged
        .iter()
        .find(|l| l.contains("\"event\":\"job.step\""))
        .cloned()
        .unwrap();
    while forged.len() as u64 <= seq + 5 {
        forged.push(filler.clone());
    }
    write_lines(&file, &rechain(&forged));
    rig.start_again();
    local_verify(&rig.env).assert_code(0);

    let v2 = make_artifact(&rig.env, "1.1.0", "").unwrap();
    let out = deploy(&rig.ctl, &rig.env, "1.1.0", &v2, 1, "20s");
    assert_eq!(
        out.code,
        1,
        "a checkpoint on top of a rewritten log was taken as witness\n{}",
        out.all()
    );
    assert!(
        mentions(&out.stderr, &["WITNESS ALARM"])
            && mentions(&out.stderr, &["does not extend"])
            && names_seq(&out.stderr, seq),
        "the alarm does not say what it found:\n{}",
        out.all()
    );
    let alarm = out
        .json_lines()
        .into_iter()
        .find(|v| v["type"] == "witness_alarm")
        .unwrap_or_else(|| panic!("no witness_alarm object on stdout:\n{}", out.all()));
    assert_eq!(alarm["witnessed_seq"].as_u64(), Some(seq), "{alarm}");
    assert_eq!(alarm["exit_code"].as_u64(), Some(1), "{alarm}");
    assert_eq!(
        fs::read_to_string(witness_file(&rig.env)).unwrap(),
        witness_before,
        "the old witness was not kept"
    );
    assert_witness_fails(&rig, seq);
}

/// Issue 10 item 8: two agents named alike (every quickstart agent) sign with different keys;
/// the witness of one is not compared with the other's log, and `audit verify` says which
/// witness it compared.
#[test]
fn a_witness_is_keyed_by_agent_id_and_key_so_a_namesake_is_no_tamper_alarm() {
    let (first, _seq) = witnessed_deploy();
    let second = Rig::new();
    assert_eq!(first.env.agent_id, second.env.agent_id);
    // The same controller: the second agent's controller state is the first one's.
    let _ = fs::remove_dir_all(&second.env.state_dir);
    copy_dir(&first.env.state_dir, &second.env.state_dir);
    let out = second.ctl.run(&["audit", "verify"]).unwrap();
    out.assert_code(0);
    assert!(
        mentions(&out.all(), &["none kept for this agent under key"])
            && mentions(&out.all(), &["other keys"]),
        "{}",
        out.all()
    );
    deploy(
        &second.ctl,
        &second.env,
        "1.0.0",
        &second.artifact,
        1,
        "20s",
    )
    .assert_code(0);
    let out = second.ctl.run(&["audit", "verify"]).unwrap();
    out.assert_code(0);
    let key = gantry_proto::keys::PublicKey::read_pem_file(&second.env.keys.agent.public)
        .unwrap()
        .key_id();
    assert!(
        mentions(&out.stdout, &[&format!("agent {}", second.env.agent_id)])
            && mentions(&out.stdout, &[&format!("key {}", &key.as_str()[..12])]),
        "verify does not say which witness it compared:\n{}",
        out.all()
    );
    // The first agent's witness is still its own.
    assert!(witness_file(&first.env).exists());
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).unwrap();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Replay.

#[test]
fn replay_after_restart() {
    let mut rig = Rig::new();
    let job = rig.create_signed("replay", &["--job-id", "replay-1"]);
    rig.submit(&job).assert_code(0);
    assert_serves(&rig.env, "1.0.0", 1);
    let pids = recorded_instance_pids(&rig.env.data_dir);
    assert!(!pids.is_empty());

    rig.restart();
    let again = rig.submit(&job);
    again.assert_code(0);
    assert_eq!(rig.count("job.accepted", "replay-1"), 1, "accepted twice");
    assert_eq!(rig.count("job.succeeded", "replay-1"), 1, "ran twice");
    assert_eq!(
        recorded_instance_pids(&rig.env.data_dir),
        pids,
        "instances were replaced by the replay"
    );
    assert_serves(&rig.env, "1.0.0", 1);
}

/// B7: a deleted replay store is rebuilt at start from the audit log's `job.accepted`
/// entries, so a captured job inside its window is not admitted (and run) twice.
#[test]
fn b7_deleted_replay_store_does_not_readmit_a_captured_job() {
    let mut rig = Rig::new();
    let job = rig.create_signed("captured", &["--job-id", "captured-1"]);
    rig.submit(&job).assert_code(0);
    assert_serves(&rig.env, "1.0.0", 1);
    let pids = recorded_instance_pids(&rig.env.data_dir);
    assert!(!pids.is_empty());

    rig.agent.terminate().unwrap();
    let jobs = rig.env.data_dir.join("jobs");
    std::fs::remove_dir_all(&jobs).unwrap();
    rig.start_again();
    assert!(
        jobs.join("captured-1.json").is_file(),
        "the record was not rebuilt"
    );
    let rebuilt = audit_events(&rig.env, "replay_store.rebuilt").unwrap();
    assert_eq!(rebuilt.len(), 1, "{rebuilt:?}");
    assert_eq!(rebuilt[0]["job_ids"], serde_json::json!(["captured-1"]));

    let again = rig.submit(&job);
    again.assert_code(0);
    assert_eq!(rig.count("job.accepted", "captured-1"), 1, "accepted twice");
    assert_eq!(rig.count("job.succeeded", "captured-1"), 1, "ran twice");
    assert_eq!(
        recorded_instance_pids(&rig.env.data_dir),
        pids,
        "instances were replaced by the replay"
    );
    assert_serves(&rig.env, "1.0.0", 1);
}

#[test]
fn same_job_id_with_other_bytes() {
    let rig = Rig::new();
    let first = rig.create_signed("first", &["--job-id", "fixed-1"]);
    rig.submit(&first).assert_code(0);
    let pids = recorded_instance_pids(&rig.env.data_dir);

    let other = rig.create_signed("other", &["--job-id", "fixed-1", "--reason", "other"]);
    let out = rig.submit(&other);
    rig.assert_rejected(
        &out,
        "replayed",
        &["already used", "replay", "different job"],
    );
    assert_eq!(rig.count("job.accepted", "fixed-1"), 1);
    assert_eq!(rig.count("job.succeeded", "fixed-1"), 1);
    assert_eq!(recorded_instance_pids(&rig.env.data_dir), pids);
}

#[test]
fn two_connections_submit_the_same_job_at_once() {
    let rig = Rig::new();
    let job = rig.create_signed("twice", &["--job-id", "twice-1"]);
    let (a, b) = std::thread::scope(|s| {
        let one = s.spawn(|| submit_with(&rig.ctl, &rig.artifact, &job));
        let two = s.spawn(|| submit_with(&rig.ctl, &rig.artifact, &job));
        (one.join().unwrap(), two.join().unwrap())
    });
    // One ran it, the other re-attached to the same job: both report its success.
    a.assert_code(0);
    b.assert_code(0);
    assert_eq!(rig.count("job.accepted", "twice-1"), 1, "accepted twice");
    assert_eq!(rig.count("job.succeeded", "twice-1"), 1, "ran twice");
    assert_eq!(recorded_instance_pids(&rig.env.data_dir).len(), 1);
    assert_serves(&rig.env, "1.0.0", 1);
}

// ---------------------------------------------------------------------------------------------
// Versions.

#[test]
fn downgrade_is_refused_without_rollback() {
    let rig = Rig::new();
    let v2 = make_artifact(&rig.env, "2.0.0", "").unwrap();
    deploy(&rig.ctl, &rig.env, "1.0.0", &rig.artifact, 1, "20s").assert_code(0);
    deploy(&rig.ctl, &rig.env, "2.0.0", &v2, 1, "20s").assert_code(0);
    assert_serves(&rig.env, "2.0.0", 1);
    let before = (
        releases(&rig.env),
        recorded_instance_pids(&rig.env.data_dir),
    );

    let out = deploy(&rig.ctl, &rig.env, "1.0.0", &rig.artifact, 1, "20s");
    rig.assert_rejected(&out, "downgrade", &["downgrade", "lower"]);
    assert_eq!(audit_events(&rig.env, "job.accepted").unwrap().len(), 2);
    assert_eq!(
        (
            releases(&rig.env),
            recorded_instance_pids(&rig.env.data_dir)
        ),
        before,
        "the refused downgrade changed the releases or the instances"
    );
    assert_serves(&rig.env, "2.0.0", 1);

    // The same version is reachable the sanctioned way: a rollback to a release on disk.
    let key = rig.key(&rig.env.keys.deployer);
    let back = rig
        .ctl
        .run(&[
            "rollback", "--key", &key, "--app", "web", "--to", "1.0.0", "--json",
        ])
        .unwrap();
    back.assert_code(0);
    assert_serves(&rig.env, "1.0.0", 1);
}

#[test]
fn rollback_to_a_release_not_on_disk_is_refused() {
    let rig = Rig::new();
    deploy(&rig.ctl, &rig.env, "1.0.0", &rig.artifact, 1, "20s").assert_code(0);
    let before = (
        releases(&rig.env),
        recorded_instance_pids(&rig.env.data_dir),
    );
    let key = rig.key(&rig.env.keys.deployer);
    let out = rig
        .ctl
        .run(&["rollback", "--key", &key, "--app", "web", "--to", "0.9.0"])
        .unwrap();
    rig.assert_rejected(&out, "rollback_target_missing", &["not on disk", "0.9.0"]);
    assert_eq!(audit_events(&rig.env, "job.accepted").unwrap().len(), 1);
    assert_eq!(
        (
            releases(&rig.env),
            recorded_instance_pids(&rig.env.data_dir)
        ),
        before
    );
    assert_serves(&rig.env, "1.0.0", 1);
}

// ---------------------------------------------------------------------------------------------
// Hostile fields, signed by a trusted key.

#[test]
fn app_names_with_path_tricks() {
    let rig = Rig::new();
    let before = rig.env.apps_snapshot();
    let base = rig.raw_job("base", &[]);
    for (i, name) in ["../x", "..", "a/b", "/etc", "-x", "a\0b"]
        .into_iter()
        .enumerate()
    {
        // The CLI refuses to write such a job ...
        if !name.contains('\0') {
            let out = rig.env.root.join(format!("trick-{i}.job"));
            let cli = rig
                .env
                .gantry(&[
                    "job",
                    "create",
                    "--out",
                    &out.to_string_lossy(),
                    "--agent-id",
                    &rig.env.agent_id,
                    "--app",
                    name,
                    "--version",
                    "1.0.0",
                    "--",
                    "bin/gantry-sample-app",
                ])
                .unwrap();
            assert_eq!(cli.code, 2, "job create took app {name:?}\n{}", cli.all());
            assert!(mentions(&cli.stderr, &["app"]), "{}", cli.all());
        }
        // ... so send it raw: the agent refuses it by itself.
        let mut job = base.clone();
        job.job_id = format!("trick-{i}");
        job.app = name.to_owned();
        let got = rig.submit_bytes(job.encode_to_vec(), &[&rig.env.keys.deployer]);
        rig.assert_refused(got, tonic::Code::InvalidArgument, "invalid_job", &["app"]);
    }
    rig.assert_nothing_ran(&before);
    assert!(
        !rig.env.data_dir.join("x").exists() && !rig.env.root.join("x").exists(),
        "something was created outside data/apps"
    );
}

#[test]
fn unknown_action_value() {
    let rig = Rig::new();
    let before = rig.env.apps_snapshot();
    let mut job = rig.raw_job("action", &[]);
    job.action = 99;
    let got = rig.submit_bytes(job.encode_to_vec(), &[&rig.env.keys.deployer]);
    rig.assert_refused(
        got,
        tonic::Code::InvalidArgument,
        "invalid_job",
        &["unknown action value 99"],
    );
    rig.assert_nothing_ran(&before);
}

#[test]
fn empty_target() {
    let rig = Rig::new();
    let before = rig.env.apps_snapshot();
    let mut job = rig.raw_job("empty-target", &[]);
    job.agent_id = String::new();
    let got = rig.submit_bytes(job.encode_to_vec(), &[&rig.env.keys.deployer]);
    rig.assert_refused(
        got,
        tonic::Code::PermissionDenied,
        "wrong_agent",
        &["agent-1", "for agent"],
    );
    rig.assert_nothing_ran(&before);
}

/// `job` with its `reason` padded so that it encodes to exactly `size` bytes.
fn job_of_size(job: &Job, size: usize) -> Vec<u8> {
    let mut padded = job.clone();
    for pad in 0..size {
        padded.reason = "p".repeat(pad);
        let len = padded.encoded_len();
        if len == size {
            return padded.encode_to_vec();
        }
        if len > size {
            break;
        }
    }
    panic!(
        "no padding of reason encodes job {} to {size} bytes",
        job.job_id
    );
}

#[test]
fn message_at_limit_minus_1_limit_and_limit_plus_1() {
    const LIMIT: usize = 4096;
    let rig = Rig::with_options(
        Options {
            max_job_bytes: LIMIT,
            ..Options::default()
        },
        |_| {},
    );
    let base = rig.raw_job("sized", &[]);
    let data = fs::read(&rig.artifact).unwrap();
    let release = base.release.clone().unwrap();
    upload_raw(
        &rig.env,
        &rig.agent,
        &release.artifact_sha256,
        release.artifact_size,
        &data,
    )
    .unwrap()
    .unwrap();

    for (size, id) in [(LIMIT - 1, "size-below"), (LIMIT, "size-at")] {
        let mut job = base.clone();
        job.job_id = id.to_owned();
        let bytes = job_of_size(&job, size);
        assert_eq!(bytes.len(), size);
        let got = rig.submit_bytes(bytes, &[&rig.env.keys.deployer]);
        assert!(
            got.is_ok(),
            "a job of {size} bytes (limit {LIMIT}) was refused: {got:?}"
        );
        assert_eq!(rig.count("job.accepted", id), 1, "{size} bytes");
        assert_eq!(rig.count("job.succeeded", id), 1, "{size} bytes");
    }
    assert_serves(&rig.env, "1.0.0", 1);

    let mut job = base.clone();
    job.job_id = "size-over".to_owned();
    let bytes = job_of_size(&job, LIMIT + 1);
    let got = rig.submit_bytes(bytes, &[&rig.env.keys.deployer]);
    rig.assert_refused(
        got,
        tonic::Code::ResourceExhausted,
        "too_large",
        &[
            &format!("{} bytes", LIMIT + 1),
            &format!("limit of {LIMIT}"),
        ],
    );
    assert_eq!(rig.count("job.accepted", "size-over"), 0);

    // Above the transport's decode limit (one for every RPC: 1 MiB artifact chunks) the
    // request never reaches admission; it is refused unread, and recorded all the same.
    let huge = vec![0u8; 4 << 20];
    let got = rig.submit_bytes(huge, &[&rig.env.keys.deployer]);
    let status = got.expect_err("a 4 MiB submit is refused");
    assert_eq!(status.code(), tonic::Code::OutOfRange, "{status:?}");
    let unread: Vec<serde_json::Value> = audit_events(&rig.env, "job.rejected")
        .unwrap()
        .into_iter()
        .filter(|e| {
            e["reason"] == "too_large"
                && e["detail"].as_str().is_some_and(|d| {
                    d.contains("Submit request is larger than the agent's decode limit of")
                        && d.contains("it was not read")
                })
        })
        .collect();
    assert_eq!(
        unread.len(),
        1,
        "the unread submit is audited once: {unread:?}"
    );
    assert_eq!(
        unread[0]["peer_fingerprint"].as_str().map(str::len),
        Some(64),
        "with the peer's certificate: {unread:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Keys and approvals.

#[test]
fn key_revoked_in_policy() {
    let rig = Rig::with_options(Options::default(), |raw| {
        let deployer = raw.key_mut("deployer").unwrap();
        assert_eq!(deployer.public_key, "keys/deployer.pub");
        deployer.revoked = true;
        deployer.revoked_reason = Some("laptop stolen".to_owned());
    });
    let before = rig.env.apps_snapshot();
    let job = rig.create_signed("revoked", &[]);
    let out = rig.submit(&job);
    rig.assert_rejected(&out, "key_not_valid", &["revoked"]);
    rig.assert_nothing_ran(&before);
}

#[test]
fn approval_quorum() {
    let mut rig = Rig::with_options(
        Options {
            approvals: 1,
            ..Options::default()
        },
        |_| {},
    );
    let before = rig.env.apps_snapshot();
    let alone = rig.create_signed("alone", &["--job-id", "alone-1"]);
    let out = rig.submit(&alone);
    rig.assert_rejected(&out, "quorum_not_met", &["approval"]);
    rig.assert_nothing_ran(&before);

    // With `gantry job approve` by an approver: accepted and run.
    let approved = rig.create_signed("approved", &["--job-id", "approved-1"]);
    rig.approve(&approved, &rig.env.keys.approver);
    rig.submit(&approved).assert_code(0);
    assert_eq!(rig.count("job.accepted", "approved-1"), 1);
    assert_serves(&rig.env, "1.0.0", 1);

    // Two approvals required: the one approver's signature sent twice counts once.
    // (The agent refuses a quorum that no set of configured keys can meet, so the viewer key
    // becomes a second approver.)
    rig.env.options.approvals = 2;
    let mut raw = rig.env.raw_config();
    let viewer = raw.key_mut("viewer").unwrap();
    viewer.roles.push("approver".to_owned());
    assert_eq!(viewer.roles, ["viewer", "approver"]);
    rig.env.write_raw_config(&raw).unwrap();
    rig.restart();
    let doubled = rig.create_signed("doubled", &["--job-id", "doubled-1"]);
    rig.approve(&doubled, &rig.env.keys.approver);
    let mut signed = SignedJob::decode(fs::read(&doubled).unwrap().as_slice()).unwrap();
    assert_eq!(signed.signatures.len(), 2, "deployer and approver");
    let copy = signed.signatures[1].clone();
    signed.signatures.push(copy);
    let pids = recorded_instance_pids(&rig.env.data_dir);
    let got = submit_raw(&rig.env, &rig.agent, signed).unwrap();
    rig.assert_refused(
        got,
        tonic::Code::PermissionDenied,
        "quorum_not_met",
        &["approval"],
    );
    assert_eq!(rig.count("job.accepted", "doubled-1"), 0);
    assert_eq!(recorded_instance_pids(&rig.env.data_dir), pids);
}

#[test]
fn job_show_policy_and_the_agent_agree_on_an_extra_unknown_approval() {
    let rig = Rig::with_options(
        Options {
            approvals: 1,
            ..Options::default()
        },
        |_| {},
    );
    let job = rig.create_signed("extra", &["--job-id", "extra-1"]);
    rig.approve(&job, &rig.env.keys.approver);
    // A key the config does not know adds its approval: the agent ignores it.
    rig.approve(&job, &rig.env.keys.attacker);
    let policy = rig.env.config.to_string_lossy().into_owned();
    let show = rig
        .env
        .gantry(&["job", "show", "--policy", &policy, &job.to_string_lossy()])
        .unwrap();
    show.assert_code(0);
    assert!(
        show.stdout.contains("the agent's policy admits this job")
            && !show.stdout.contains("MISSING")
            && show.stdout.contains("ignored"),
        "{}",
        show.all()
    );
    rig.submit(&job).assert_code(0);
    assert_eq!(rig.count("job.accepted", "extra-1"), 1);

    // Without the approver the two agree again: refused, for the approval.
    let alone = rig.create_signed("alone", &["--job-id", "alone-1"]);
    rig.approve(&alone, &rig.env.keys.attacker);
    let show = rig
        .env
        .gantry(&["job", "show", "--policy", &policy, &alone.to_string_lossy()])
        .unwrap();
    show.assert_code(3);
    assert!(show.stdout.contains("MISSING  approvals"), "{}", show.all());
    let out = rig.submit(&alone);
    rig.assert_rejected(&out, "quorum_not_met", &["approval"]);
}

/// An agent that admits a second controller certificate, `stolen-controller`, with a small
/// rejection budget (5 at once, 1 a second); a runtime and a client connected with that
/// certificate.
fn rig_with_a_stolen_certificate() -> (
    Rig,
    tokio::runtime::Runtime,
    AgentClient<tonic::transport::Channel>,
) {
    let rig = Rig::with_options(Options::default(), |raw| {
        raw.tls.client_names.push("stolen-controller".to_owned());
        raw.limits.client_rejections_burst = 5;
        raw.limits.client_rejections_per_second = 1;
    });
    let config = fs::read_to_string(&rig.env.config).unwrap();
    assert!(
        config.contains("client_rejections_burst = 5") && config.contains("stolen-controller"),
        "{config}"
    );
    let (cert, key) = rig.env.add_controller_cert("stolen-controller").unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let client = rt
        .block_on(connect_as(&rig.env, &rig.agent, &cert, &key))
        .unwrap();
    (rig, rt, client)
}

/// `n` submits of `job` in flight at once on `client`'s connection; each task ends with
/// `Ok` when the job was taken, or the status it was refused with.
fn submit_at_once(
    rt: &tokio::runtime::Runtime,
    client: &AgentClient<tonic::transport::Channel>,
    job: &SignedJob,
    n: usize,
) -> tokio::task::JoinSet<Result<(), tonic::Status>> {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (mut client, job) = (client.clone(), job.clone());
        set.spawn_on(
            async move { client.submit(job).await.map(|_| ()) },
            rt.handle(),
        );
    }
    set
}

/// A controller certificate in an attacker's hands floods the agent with jobs carrying a
/// well-formed signature by the attacker's key under the deployer's key id (the costliest
/// forgery to check). Once that certificate is over its rejection budget the agent stops
/// reading its connection: the flood gets no further answer, its first rejections are on
/// record, one `client.throttled` entry names it, and a job from the real controller's own
/// certificate is admitted and runs meanwhile.
#[test]
fn forged_signature_flood_pauses_only_its_certificate() {
    const FLOOD: usize = 40;
    let (rig, rt, stolen) = rig_with_a_stolen_certificate();
    let before = rig.env.apps_snapshot();

    let deployer = SigningKey::read_pem_file(&rig.env.keys.deployer.key).unwrap();
    let attacker = SigningKey::generate().unwrap();
    let bytes = rig
        .raw_job("forged", &["--job-id", "forged-1"])
        .encode_to_vec();
    let mut sig = sign_job(&attacker, &bytes);
    sig.key_id = deployer.key_id().to_string();
    let forged = SignedJob {
        job: bytes,
        signatures: vec![sig],
        comments: Vec::new(),
    };

    let mut flood = submit_at_once(&rt, &stolen, &forged, FLOOD);

    // The first rejections are recorded in full, each naming the stolen certificate.
    let rejected_by = |fp: &str| {
        audit_events(&rig.env, "job.rejected")
            .unwrap()
            .iter()
            .filter(|e| e["peer_fingerprint"] == fp && e["reason"] == "bad_signature")
            .count()
    };
    let mut fingerprint = String::new();
    wait_until(Duration::from_secs(30), "the flood is throttled", || {
        let throttled = audit_events(&rig.env, "client.throttled").unwrap();
        if let Some(entry) = throttled.first() {
            fingerprint = entry["peer_fingerprint"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
        }
        // Past 20 rejections at 1 a second, the pause is long enough for what follows.
        !fingerprint.is_empty() && rejected_by(&fingerprint) >= 20
    })
    .unwrap();
    let throttled = audit_events(&rig.env, "client.throttled").unwrap();
    assert_eq!(throttled.len(), 1, "one entry per episode: {throttled:#?}");
    assert_eq!(throttled[0]["burst"], 5);
    assert_eq!(throttled[0]["per_second"], 1);

    // The real controller, with its own certificate, is not held back.
    let valid = rig.create_signed("valid", &["--job-id", "valid-1"]);
    rig.submit(&valid).assert_code(0);
    assert_serves(&rig.env, "1.0.0", 1);
    let accepted = audit_events(&rig.env, "job.accepted").unwrap();
    assert_eq!(accepted.len(), 1, "only the valid job: {accepted:#?}");
    assert_eq!(accepted[0]["job_id"], "valid-1");
    assert_ne!(
        accepted[0]["peer_fingerprint"], fingerprint,
        "the valid job came over the other certificate"
    );

    // The stolen certificate is still paused: even a status request is not read.
    let mut client = stolen.clone();
    let unanswered = rt.block_on(async {
        tokio::time::timeout(
            Duration::from_secs(2),
            client.status(gantry_proto::v1::StatusRequest::default()),
        )
        .await
    });
    assert!(
        unanswered.is_err(),
        "a paused certificate got an answer: {unanswered:?}"
    );

    // Every answer the flood did get was the signature rejection; nothing of it ran.
    let mut answered = Vec::new();
    while let Some(joined) = flood.try_join_next() {
        match joined.unwrap() {
            Err(status) => answered.push(status),
            Ok(()) => panic!("a forged job was accepted"),
        }
    }
    flood.abort_all();
    assert!(answered.len() >= 20, "{} answers", answered.len());
    assert!(
        answered
            .iter()
            .all(|s| s.code() == tonic::Code::Unauthenticated),
        "{answered:#?}"
    );
    assert!(
        answered
            .iter()
            .any(|s| s.message().contains("over its rejection budget")),
        "the answers that started the pause say so: {answered:#?}"
    );
    assert_eq!(rig.count("job.accepted", "forged-1"), 0);
    assert_ne!(
        rig.env.apps_snapshot(),
        before,
        "the valid job installed its release"
    );
}

/// An attacker with a controller certificate and a captured valid signed job replays its
/// identical bytes at full speed: each re-attaches to the one run (nothing runs twice), and
/// each costs the certificate's budget like a rejection, so the replay is paused too.
#[test]
fn replay_of_a_captured_valid_job_at_full_speed_is_paused() {
    let (rig, rt, stolen) = rig_with_a_stolen_certificate();
    let captured = rig.create_signed("captured", &["--job-id", "captured-1"]);
    rig.submit(&captured).assert_code(0);
    assert_serves(&rig.env, "1.0.0", 1);
    let pids = recorded_instance_pids(&rig.env.data_dir);
    let signed = SignedJob::decode(fs::read(&captured).unwrap().as_slice()).unwrap();

    let mut replays = submit_at_once(&rt, &stolen, &signed, 20);
    // The pause is recorded when the budget runs out, which can be before the entries of the
    // resends that spent it are on disk: wait for both.
    let (mut throttled, mut resubmitted) = (Vec::new(), Vec::new());
    wait_until(
        Duration::from_secs(30),
        "the replay to be throttled after more than 5 resends",
        || {
            throttled = audit_events(&rig.env, "client.throttled").unwrap();
            resubmitted = audit_events(&rig.env, "job.resubmitted").unwrap();
            !throttled.is_empty() && resubmitted.len() > 5
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {resubmitted:#?} {throttled:#?}"));
    assert!(
        resubmitted.iter().all(|e| e["job_id"] == "captured-1"
            && e["peer_fingerprint"] == throttled[0]["peer_fingerprint"]),
        "{resubmitted:#?} {throttled:#?}"
    );
    replays.abort_all();
    assert_eq!(rig.count("job.accepted", "captured-1"), 1, "it ran once");
    assert_eq!(
        recorded_instance_pids(&rig.env.data_dir),
        pids,
        "nothing restarted"
    );
}

/// A holder of a controller certificate opens connection after connection (a paused
/// connection is never closed by the agent): beyond `limits.client_connections` each new one is
/// held unserved (a client reconnecting at once would cost a handshake each time) and closed
/// later, one log line says so, and a closed connection frees its place.
#[test]
fn one_certificate_cannot_hold_more_connections_than_its_limit() {
    let rig = Rig::with_options(Options::default(), |raw| {
        raw.limits.client_connections = 2;
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pki = &rig.env.pki;
    let connect = |within: Duration| {
        rt.block_on(async {
            let served = async {
                let mut client = connect_as(
                    &rig.env,
                    &rig.agent,
                    &pki.controller_cert,
                    &pki.controller_key,
                )
                .await?;
                client
                    .status(gantry_proto::v1::StatusRequest::default())
                    .await?;
                Ok::<_, anyhow::Error>(client)
            };
            tokio::time::timeout(within, served).await?
        })
    };
    let first = connect(Duration::from_secs(10)).unwrap();
    let _second = connect(Duration::from_secs(10)).unwrap();
    let third = connect(Duration::from_secs(2));
    assert!(third.is_err(), "a third connection was served");
    wait_until(Duration::from_secs(10), "the refusal is logged", || {
        rig.agent
            .log_text()
            .contains("has 2 connections open already (limits.client_connections)")
    })
    .unwrap();
    drop(first);
    wait_until(
        Duration::from_secs(30),
        "a closed connection frees its place",
        || connect(Duration::from_secs(2)).is_ok(),
    )
    .unwrap();
}

/// Security review D7: a release directory is tied to its digest. Deploying a version already
/// on disk with a different artifact is refused, naming both digests; what serves (and what
/// the release directory holds) stays the artifact that was signed for that version first.
#[test]
fn d7_a_version_on_disk_is_never_served_from_another_artifact() {
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let first = make_artifact(&env, "1.0.0", "").unwrap();
    crate::deploy(&ctl, &env, "1.0.0", &first, 1, "20s").assert_code(0);
    let other = make_artifact(&env, "1.0.0", "normal").unwrap();
    let out = crate::deploy(&ctl, &env, "1.0.0", &other, 1, "20s");
    let text = out.all();
    assert_ne!(out.code, 0, "{text}");
    assert!(
        text.contains("release 1.0.0 is already on disk, unpacked from artifact"),
        "{text}"
    );
    assert!(text.contains("a version is one artifact"), "{text}");
    assert!(
        !env.releases_dir().join("1.0.0/sample-mode").exists(),
        "the other artifact was unpacked over the signed one"
    );
    crate::assert_serves(&env, "1.0.0", 1);
}

/// Security review B12: a forged job cannot burn a job id. An attacker who learns the id of a
/// job about to be sent (job ids are predictable) submits a forgery under that id first; it is
/// refused before its bytes are decoded, so the id is not taken, and the real job with that id
/// then runs.
#[test]
fn b12_a_forged_job_does_not_consume_the_real_jobs_id() {
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    let id = "release-2026-12-01-web";
    let flags = [
        "--job-id",
        id,
        "--health",
        "http:/health",
        "--",
        "bin/gantry-sample-app",
    ];
    let forged = env.root.join("forged.job");
    crate::create_job(&env, &forged, "1.0.0", &v1, &flags);
    crate::sign_job_file(&env, &forged, &env.keys.attacker);
    let artifact = v1.to_string_lossy().into_owned();
    let out = ctl
        .run(&[
            "job",
            "submit",
            "--artifact",
            &artifact,
            &forged.to_string_lossy(),
        ])
        .unwrap();
    crate::assert_exit_3_naming(&out, &["no signature is by a trusted key"]);

    let real = env.root.join("real.job");
    crate::create_job(&env, &real, "1.0.0", &v1, &flags);
    crate::sign_job_file(&env, &real, &env.keys.deployer);
    let out = ctl
        .run(&[
            "job",
            "submit",
            "--artifact",
            &artifact,
            &real.to_string_lossy(),
        ])
        .unwrap();
    out.assert_code(0);
    let accepted = audit_events(&env, "job.accepted").unwrap();
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    assert_eq!(accepted[0]["job_id"], id);
    crate::assert_serves(&env, "1.0.0", 1);
}
