//! The `gantry` CLI as a new user meets it (issue 10): errors that name the real problem,
//! `--json` errors CI can read, `--detach`, `history`, `status --watch`, completions and man
//! pages.

use gantry_tests::{Agent, Controller, TestEnv, make_artifact};

use crate::{deploy, deploy_args, mentions, strs};

/// `gantry status` with explicit connection flags (no environment), plus `extra`.
fn status_with(env: &TestEnv, addr: &str, cert_key: &str, extra: &[&str]) -> gantry_tests::Output {
    let ca = env.pki.ca.to_string_lossy().into_owned();
    let cert = env.pki.controller_cert.to_string_lossy().into_owned();
    let mut args = vec![
        "status",
        "--agent",
        addr,
        "--agent-id",
        &env.agent_id,
        "--ca",
        &ca,
        "--cert",
        &cert,
        "--cert-key",
        cert_key,
    ];
    args.extend(extra);
    env.gantry(&args).unwrap()
}

/// Issue 10 item 9: a certificate/key mismatch read "invalid agent address", and an address
/// without a port "connection refused".
#[test]
fn connection_errors_name_the_real_problem() {
    let env = TestEnv::new().unwrap();
    let own_key = env.pki.controller_key.to_string_lossy().into_owned();
    let other_key = env.pki.agent_key.to_string_lossy().into_owned();

    let out = status_with(&env, "127.0.0.1:1", &other_key, &[]);
    out.assert_code(2);
    assert!(
        mentions(&out.stderr, &["cannot use client certificate"])
            && !out.stderr.contains("address"),
        "{}",
        out.all()
    );

    let out = status_with(&env, "localhost", &own_key, &[]);
    out.assert_code(2);
    assert!(
        out.stderr
            .contains("invalid agent address \"localhost\": no port"),
        "{}",
        out.all()
    );
    assert!(!mentions(&out.stderr, &["refused"]), "{}", out.all());
}

/// Issue 10 item 10: with `--json`, an unreachable agent and a rejected job each end with one
/// JSON object on stdout holding the error and the exit code.
#[test]
fn json_errors_are_one_object_with_the_exit_code() {
    let env = TestEnv::new().unwrap();
    let own_key = env.pki.controller_key.to_string_lossy().into_owned();
    let out = status_with(&env, "127.0.0.1:1", &own_key, &["--json"]);
    out.assert_code(2);
    let objs = out.json_lines();
    assert_eq!(objs.len(), 1, "{}", out.all());
    assert_eq!(objs[0]["type"], "error");
    assert_eq!(objs[0]["exit_code"], 2);
    assert!(
        objs[0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot reach agent at 127.0.0.1:1")),
        "{}",
        objs[0]
    );

    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    let args = deploy_args(&env.keys.attacker, "1.0.0", &v1, &[]);
    let out = ctl.run(&strs(&args)).unwrap();
    out.assert_code(3);
    let err = out
        .json_lines()
        .into_iter()
        .find(|v| v["type"] == "error")
        .unwrap_or_else(|| panic!("no error object on stdout:\n{}", out.all()));
    assert_eq!(err["exit_code"], 3, "{err}");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("refused Submit")),
        "{err}"
    );
}

/// Issue 10 items 10 and 14: `deploy --detach` returns once the job is accepted and says how
/// to follow it; `history` lists the app's releases from the audit log; `status --watch`
/// refreshes.
#[test]
fn detach_history_and_status_watch() {
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    deploy(&ctl, &env, "1.0.0", &v1, 1, "20s").assert_code(0);

    let v2 = make_artifact(&env, "1.1.0", "").unwrap();
    let args = deploy_args(
        &env.keys.deployer,
        "1.1.0",
        &v2,
        &[
            "--health",
            "http:/health",
            "--health-interval",
            "200ms",
            "--detach",
        ],
    );
    let out = ctl.run(&strs(&args)).unwrap();
    out.assert_code(0);
    assert!(
        out.stderr.contains("detached: job") && out.stderr.contains("gantry job watch"),
        "{}",
        out.all()
    );
    assert!(
        !out.json_lines().iter().any(|v| v["type"] == "finished"),
        "--detach followed the job to its end:\n{}",
        out.all()
    );
    let job_id = out
        .json_lines()
        .into_iter()
        .find(|v| v["type"] == "accepted")
        .and_then(|v| v["job_id"].as_str().map(str::to_owned))
        .unwrap();
    ctl.run(&["job", "watch", &job_id]).unwrap().assert_code(0);

    let out = ctl.run(&["history", "--app", "web"]).unwrap();
    out.assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let at = |v: &str| {
        lines
            .iter()
            .position(|l| l.contains(v) && l.contains("succeeded"))
    };
    assert!(
        at("1.0.0").is_some() && at("1.1.0") > at("1.0.0"),
        "{}",
        out.all()
    );
    assert!(out.stdout.contains("current   1.1.0"), "{}", out.all());
    let out = ctl.run(&["history", "--app", "web", "--json"]).unwrap();
    out.assert_code(0);
    let h = &out.json_lines()[0];
    assert_eq!(h["history"].as_array().map(Vec::len), Some(2), "{h}");

    let out = ctl
        .run(&[
            "status",
            "--watch",
            "--interval",
            "100ms",
            "--count",
            "3",
            "--json",
        ])
        .unwrap();
    out.assert_code(0);
    assert_eq!(out.json_lines().len(), 3, "{}", out.all());
}

/// Issue 10 item 14: completions and man pages from the binary itself.
#[test]
fn completions_and_man_pages() {
    let env = TestEnv::new().unwrap();
    let out = env.gantry(&["completions", "bash"]).unwrap();
    out.assert_code(0);
    for sub in ["deploy", "history", "status", "audit", "completions", "man"] {
        assert!(out.stdout.contains(sub), "{sub} missing");
    }
    let dir = env.root.join("man1");
    env.gantry(&["man", "--out", &dir.to_string_lossy()])
        .unwrap()
        .assert_code(0);
    for page in [
        "gantry.1",
        "gantry-deploy.1",
        "gantry-history.1",
        "gantry-audit-tail.1",
    ] {
        assert!(dir.join(page).exists(), "no {page}");
    }
}
