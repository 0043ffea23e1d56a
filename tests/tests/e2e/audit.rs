//! `gantry-agent audit verify` over the log of a real deploy: clean passes, and every kind of
//! tampering fails naming the seq where the chain breaks.

use gantry_tests::tamper::{Tamper, tampered_copy};
use std::path::Path;

use gantry_tests::{Agent, Controller, Output, TestEnv, audit_lines, make_artifact};

use crate::{deploy, names_seq};

/// An environment whose stopped agent has logged one deploy; asserts the log's shape.
fn logged_deploy() -> TestEnv {
    let env = TestEnv::new().unwrap();
    let mut agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    deploy(&ctl, &env, "1.0.0", &v1, 1, "20s").assert_code(0);
    // The controller checks the raw lines against the agent's key and what it witnessed.
    ctl.run(&["audit", "verify"]).unwrap().assert_code(0);
    agent.terminate().unwrap();

    let entries = audit_lines(&env).unwrap();
    assert!(
        entries.len() >= 6,
        "too few entries to tamper with: {entries:#?}"
    );
    let events: Vec<_> = entries
        .iter()
        .map(|e| e["event"].as_str().unwrap_or("?"))
        .collect();
    for want in [
        "agent.started",
        "job.accepted",
        "job.succeeded",
        "checkpoint",
        "agent.stopped",
    ] {
        assert!(events.contains(&want), "no {want} in {events:?}");
    }
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(
            e["seq"].as_u64(),
            Some(i as u64 + 1),
            "seq gap at entry {i}: {e}"
        );
    }
    env
}

fn verify(env: &TestEnv, dir: &Path) -> Output {
    let pubkey = env.keys.agent.public.to_string_lossy().into_owned();
    env.agent_cmd(&[
        "audit",
        "verify",
        "--dir",
        &dir.to_string_lossy(),
        "--pubkey",
        &pubkey,
    ])
    .unwrap()
}

/// Verifies a copy of the log damaged by `tamper`: exit 1, naming the seq.
#[track_caller]
fn assert_found(env: &TestEnv, tamper: Tamper) {
    let audit = env.data_dir.join("audit");
    let copy = env.root.join(format!("tampered-{tamper:?}"));
    let seq = tampered_copy(&audit, &copy, tamper).unwrap();
    let out = verify(env, &copy);
    assert_eq!(out.code, 1, "{tamper:?} passed verification\n{}", out.all());
    assert!(
        names_seq(&out.all(), seq),
        "{tamper:?}: output does not name seq {seq}:\n{}",
        out.all()
    );
}

#[test]
fn verify_accepts_the_real_log_and_names_the_seq_of_each_tampering() {
    let env = logged_deploy();
    let audit = env.data_dir.join("audit");
    verify(&env, &audit).assert_code(0);
    for tamper in [
        Tamper::EditField(3),
        Tamper::DeleteLine(3),
        Tamper::SwapWithNext(3),
    ] {
        assert_found(&env, tamper);
    }
    // The original is untouched by all this.
    verify(&env, &audit).assert_code(0);
}

#[test]
fn verify_reports_a_torn_last_line() {
    let env = logged_deploy();
    assert_found(&env, Tamper::TruncateMidLine);
}

#[test]
fn verify_with_the_wrong_key_fails() {
    let env = TestEnv::new().unwrap();
    let mut agent = Agent::start(&env).unwrap();
    agent.terminate().unwrap();
    let audit = env.data_dir.join("audit").to_string_lossy().into_owned();
    let wrong = env.keys.attacker.public.to_string_lossy().into_owned();
    let out = env
        .agent_cmd(&["audit", "verify", "--dir", &audit, "--pubkey", &wrong])
        .unwrap();
    assert_eq!(
        out.code,
        1,
        "checkpoints verified under an unrelated key\n{}",
        out.all()
    );
}

#[test]
fn audit_tail_json_prints_the_raw_entries() {
    let env = TestEnv::new().unwrap();
    let mut agent = Agent::start(&env).unwrap();
    agent.terminate().unwrap();
    let audit = env.data_dir.join("audit").to_string_lossy().into_owned();
    let out = env
        .agent_cmd(&["audit", "tail", "--dir", &audit, "-n", "2", "--json"])
        .unwrap();
    out.assert_code(0);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    let all = audit_lines(&env).unwrap();
    assert_eq!(
        lines,
        all[all.len() - 2..],
        "tail -n 2 is not the last two entries"
    );
}

/// Issue: `audit verify` on an empty or wrong directory said "ok: 0 entries", a false all-clear
/// for a reviewer pointed at the wrong path. No log found is an error (exit 2) naming the
/// directory; `--config` finds `<data_dir>/audit` itself and checks checkpoints against the
/// public half of the config's signing key.
#[test]
fn verify_and_tail_refuse_a_directory_without_a_log_and_find_it_through_the_config() {
    let env = logged_deploy();
    let empty = env.root.join("not-the-audit-dir");
    std::fs::create_dir(&empty).unwrap();
    let empty_s = empty.to_string_lossy().into_owned();
    for dir in [empty_s.as_str(), env.root.to_str().unwrap()] {
        let out = env.agent_cmd(&["audit", "verify", "--dir", dir]).unwrap();
        out.assert_code(2);
        assert!(!out.stdout.contains("ok"), "{}", out.all());
        assert!(
            out.stderr.contains(&format!("no audit log in {dir}")),
            "{}",
            out.all()
        );
        let out = env.agent_cmd(&["audit", "tail", "--dir", dir]).unwrap();
        out.assert_code(2);
        assert!(
            out.stderr.contains(&format!("no audit log in {dir}")),
            "{}",
            out.all()
        );
    }
    let missing = env.root.join("no-such-dir");
    let out = env
        .agent_cmd(&["audit", "verify", "--dir", &missing.to_string_lossy()])
        .unwrap();
    out.assert_code(2);
    assert!(
        out.stderr.contains(&format!(
            "cannot list audit directory {}",
            missing.display()
        )),
        "{}",
        out.all()
    );

    let config = env.config.to_string_lossy().into_owned();
    let out = env
        .agent_cmd(&["audit", "verify", "--config", &config])
        .unwrap();
    out.assert_code(0);
    let audit_dir = env.data_dir.join("audit");
    assert!(
        out.stdout
            .contains(&format!("entries in {}", audit_dir.display())),
        "{}",
        out.all()
    );
    assert!(
        out.stdout
            .contains("signatures verified with the public half of"),
        "{}",
        out.all()
    );
    let out = env
        .agent_cmd(&["audit", "tail", "--config", &config, "-n", "3"])
        .unwrap();
    out.assert_code(0);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.all());
    // One of the two, never both.
    let out = env
        .agent_cmd(&["audit", "verify", "--config", &config, "--dir", &empty_s])
        .unwrap();
    out.assert_code(2);
}
