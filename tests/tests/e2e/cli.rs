//! `gantry quickstart` and the agent's local operator commands.

use std::time::Duration;

use gantry_tests::{TestEnv, bins, process};

#[test]
fn quickstart_sets_up_a_local_agent_with_a_verifiable_audit_log() {
    let env = TestEnv::new().unwrap();
    let dir = env.root.join("qs");
    let mut cmd = env.command(&bins::path(bins::GANTRY).unwrap());
    cmd.arg("quickstart").arg("--dir").arg(&dir);
    let out = process::run(cmd, Duration::from_secs(600)).unwrap();
    out.assert_code(0);
    for p in [
        "agent.toml",
        "pki",
        "keys/deployer.key",
        "keys/deployer.pub",
        "keys/agent.key",
        "keys/agent.pub",
        "data/audit",
    ] {
        assert!(
            dir.join(p).exists(),
            "quickstart did not create {p}\n{}",
            out.all()
        );
    }
    let audit = dir.join("data/audit").to_string_lossy().into_owned();
    let pubkey = dir.join("keys/agent.pub").to_string_lossy().into_owned();
    env.agent_cmd(&["audit", "verify", "--dir", &audit, "--pubkey", &pubkey])
        .unwrap()
        .assert_code(0);
}

#[test]
fn check_config_accepts_the_generated_config() {
    let env = TestEnv::new().unwrap();
    let config = env.config.to_string_lossy().into_owned();
    env.agent_cmd(&["check-config", "--config", &config])
        .unwrap()
        .assert_code(0);
}

#[test]
fn check_config_names_the_bad_entry() {
    let env = TestEnv::new().unwrap();
    let text = env.config_text().replace(r#"ports = ""#, r#"ports = "9-"#);
    std::fs::write(&env.config, text).unwrap();
    let config = env.config.to_string_lossy().into_owned();
    let out = env
        .agent_cmd(&["check-config", "--config", &config])
        .unwrap();
    assert_ne!(
        out.code,
        0,
        "a broken port range passed check-config\n{}",
        out.all()
    );
    assert!(
        out.all().contains("ports"),
        "the error does not name apps.web.ports:\n{}",
        out.all()
    );
}

#[test]
fn policy_lists_who_may_do_what() {
    let env = TestEnv::new().unwrap();
    let config = env.config.to_string_lossy().into_owned();
    let out = env
        .agent_cmd(&["policy", "--config", &config, "--json"])
        .unwrap();
    out.assert_code(0);
    let policy: serde_json::Value = serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "policy --json is not one JSON document: {e}\n{}",
            out.stdout
        )
    });
    let text = policy.to_string();
    for word in ["deployer", "viewer", "web", &env.app_user] {
        assert!(
            text.contains(word),
            "policy --json does not mention {word}: {text}"
        );
    }
}

#[test]
fn job_show_prints_what_job_create_wrote() {
    let env = TestEnv::new().unwrap();
    let artifact = gantry_tests::make_artifact(&env, "1.2.3", "").unwrap();
    let job = env.root.join("job.bin").to_string_lossy().into_owned();
    env.gantry(&[
        "job",
        "create",
        "--out",
        &job,
        "--agent-id",
        &env.agent_id,
        "--app",
        "web",
        "--version",
        "1.2.3",
        "--artifact",
        &artifact.to_string_lossy(),
        "--job-id",
        "show-me-1",
        "--",
        "bin/gantry-sample-app",
    ])
    .unwrap()
    .assert_code(0);
    let key = env.keys.deployer.key.to_string_lossy().into_owned();
    env.gantry(&["job", "sign", "--key", &key, &job])
        .unwrap()
        .assert_code(0);
    let out = env.gantry(&["job", "show", &job]).unwrap();
    out.assert_code(0);
    for word in ["show-me-1", "web", "1.2.3", &env.agent_id] {
        assert!(
            out.stdout.contains(word),
            "job show does not print {word}:\n{}",
            out.stdout
        );
    }
}
