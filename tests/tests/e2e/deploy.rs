//! Hot deploys of the sample app: replacing a release, rolling back broken ones by itself, and
//! `gantry rollback`.

use gantry_tests::{Agent, Controller, Output, TestEnv, audit_events, banner, make_artifact};

use crate::{assert_serves, deploy, status_version};

/// Deploys a v2.0.0 that misbehaves in `mode` (none when empty) on 2 instances, and checks the
/// run's exit `code` and `outcome`.
#[track_caller]
fn deploy_v2(
    env: &TestEnv,
    ctl: &Controller,
    mode: &str,
    health_deadline: &str,
    code: i32,
    outcome: &str,
) -> Output {
    let v2 = make_artifact(env, "2.0.0", mode).unwrap();
    let out = deploy(ctl, env, "2.0.0", &v2, 2, health_deadline);
    out.assert_code(code);
    assert_eq!(out.outcome().as_deref(), Some(outcome), "{}", out.all());
    out
}

/// `gantry status --json` through `ctl` succeeds and reports `version` for `web`.
#[track_caller]
fn assert_status_version(ctl: &Controller, version: &str) {
    let status = ctl.run(&["status", "--json"]).unwrap();
    status.assert_code(0);
    assert_eq!(
        status_version(&status, "web").as_deref(),
        Some(version),
        "{}",
        status.stdout
    );
}

/// The job in `out`'s finished event has a `kind` entry in the audit log.
#[track_caller]
fn assert_audited(env: &TestEnv, out: &Output, kind: &str) {
    let job = out.finished().unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let entries = audit_events(env, kind).unwrap();
    assert!(
        entries.iter().any(|e| e["job_id"] == job.as_str()),
        "no {kind} for {job}: {entries:?}"
    );
}

/// A running agent with v1.0.0 of `web` deployed on 2 instances.
fn with_v1() -> (TestEnv, Agent, Controller) {
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    let out = deploy(&ctl, &env, "1.0.0", &v1, 2, "20s");
    out.assert_code(0);
    assert_serves(&env, "1.0.0", 2);
    (env, agent, ctl)
}

#[test]
fn hot_deploy_replaces_the_release_and_rollback_returns_to_the_previous_one() {
    let (env, _agent, ctl) = with_v1();
    let out = deploy_v2(&env, &ctl, "", "20s", 0, "succeeded");
    let first = out.json_lines().into_iter().next();
    assert_eq!(
        first.map(|e| e["type"].clone()),
        Some("accepted".into()),
        "{}",
        out.stdout
    );
    assert_serves(&env, "2.0.0", 2);

    let accepted = audit_events(&env, "job.accepted").unwrap();
    assert_eq!(accepted.len(), 2, "{accepted:?}");
    assert!(
        accepted.iter().all(|e| e["strategy"] == "hot"),
        "{accepted:?}"
    );
    assert_audited(&env, &out, "job.succeeded");

    assert_status_version(&ctl, "2.0.0");

    let key = env.keys.deployer.key.to_string_lossy().into_owned();
    let out = ctl
        .run(&["rollback", "--key", &key, "--app", "web"])
        .unwrap();
    out.assert_code(0);
    assert_serves(&env, "1.0.0", 2);
    assert_status_version(&ctl, "1.0.0");
}

/// Deploys a v2.0.0 that misbehaves in `mode` and checks the agent put v1.0.0 back.
fn broken_release_is_rolled_back(mode: &str) {
    let (env, _agent, ctl) = with_v1();
    let out = deploy_v2(&env, &ctl, mode, "4s", 1, "rolled_back");
    assert_serves(&env, "1.0.0", 2);
    assert_audited(&env, &out, "job.rolled_back");
    assert_status_version(&ctl, "1.0.0");
}

#[test]
fn never_healthy_release_is_rolled_back() {
    broken_release_is_rolled_back("never-healthy");
}

#[test]
fn release_crashing_at_start_is_rolled_back() {
    broken_release_is_rolled_back("crash-at-start");
}

#[test]
fn instances_keep_serving_while_the_agent_is_stopped() {
    let (env, mut agent, ctl) = with_v1();
    agent.terminate().unwrap();
    assert_serves(&env, "1.0.0", 2);
    let agent = Agent::start(&env).unwrap();
    let ctl2 = Controller::new(&env, &agent);
    drop(ctl);
    assert_status_version(&ctl2, "1.0.0");
    assert!(banner(env.port(0)).is_some());
}

#[test]
fn an_agent_started_with_a_relative_config_path_deploys_and_serves() {
    // The README's "deploy by hand": `gantry-agent run --config try/agent.toml` from the
    // directory above; every path in the config must still reach the same files.
    let env = TestEnv::with_options(gantry_tests::Options::front_door(2)).unwrap();
    let agent = Agent::start_with_relative_config(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    let out = deploy(&ctl, &env, "1.0.0", &v1, 2, "20s");
    out.assert_code(0);
    assert_serves(&env, "1.0.0", 2);
    let front_door = env.listen.unwrap().port();
    let mut last = None;
    let served = gantry_tests::wait_until(
        std::time::Duration::from_secs(10),
        "the front door serves 1.0.0",
        || {
            last = banner(front_door);
            last.as_deref().is_some_and(|b| b.starts_with("web 1.0.0"))
        },
    );
    assert!(
        served.is_ok(),
        "last answer: {last:?}\n{}",
        agent.log_tail()
    );
    assert_status_version(&ctl, "1.0.0");
}

#[test]
fn every_strategy_prunes_releases_beyond_releases_kept() {
    let env = TestEnv::with_options(gantry_tests::Options::front_door(1)).unwrap();
    let mut raw = env.raw_config();
    raw.limits.releases_kept = 2;
    env.write_raw_config(&raw).unwrap();
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let flags: [&[&str]; 4] = [
        &["--strategy", "rolling", "--drain-timeout", "1s"],
        &["--strategy", "blue-green", "--scale-down-delay", "1s"],
        &[
            "--strategy",
            "canary",
            "--step",
            "100:0s",
            "--analysis-interval",
            "200ms",
            "--drain-timeout",
            "1s",
        ],
        &["--strategy", "rolling", "--drain-timeout", "1s"],
    ];
    for (i, strategy) in flags.into_iter().enumerate() {
        let version = format!("1.0.{i}");
        let artifact = make_artifact(&env, &version, "").unwrap();
        let mut all: Vec<&str> = vec!["--instances", "1"];
        all.extend(strategy);
        all.extend([
            "--health",
            "http:/health",
            "--health-interval",
            "200ms",
            "--health-deadline",
            "20s",
        ]);
        let args = crate::deploy_args(&env.keys.deployer, &version, &artifact, &all);
        let out = ctl.run(&crate::strs(&args)).unwrap();
        out.assert_code(0);
        let on_disk = crate::releases(&env);
        assert!(
            on_disk.len() <= 2,
            "after {strategy:?} of {version}, releases_kept = 2 but on disk: {on_disk:?}"
        );
        assert!(on_disk.contains(&version), "{on_disk:?}");
    }
    assert_status_version(&ctl, "1.0.3");
}

/// Issue: a hot deploy stopped the old instances before checking that the new command
/// exists in the unpacked release, so a typo took the app down. The command is checked
/// right after the unpack; nothing that serves is touched.
#[test]
fn a_hot_deploy_whose_command_is_missing_leaves_the_old_release_serving() {
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let ctl = Controller::new(&env, &agent);
    let v1 = make_artifact(&env, "1.0.0", "").unwrap();
    deploy(&ctl, &env, "1.0.0", &v1, 2, "20s").assert_code(0);
    assert_serves(&env, "1.0.0", 2);
    let v2 = make_artifact(&env, "2.0.0", "").unwrap();
    let key = env.keys.deployer.key.to_string_lossy().into_owned();
    let artifact = v2.to_string_lossy().into_owned();
    let out = ctl
        .run(&[
            "deploy",
            "--key",
            &key,
            "--app",
            "web",
            "--version",
            "2.0.0",
            "--artifact",
            &artifact,
            "--instances",
            "2",
            "--health",
            "http:/health",
            "--",
            "bin/gantry-sampel-app",
        ])
        .unwrap();
    out.assert_code(1);
    assert!(
        out.all()
            .contains("release 2.0.0 cannot run its command \"bin/gantry-sampel-app\""),
        "{}",
        out.all()
    );
    assert_serves(&env, "1.0.0", 2);
    let v2_job = audit_events(&env, "job.accepted")
        .unwrap()
        .into_iter()
        .find(|e| e["version"] == "2.0.0")
        .map(|e| e["job_id"].clone())
        .unwrap();
    let v2_steps: Vec<String> = audit_events(&env, "job.step")
        .unwrap()
        .into_iter()
        .filter(|e| e["job_id"] == v2_job)
        .filter_map(|e| e["step"].as_str().map(str::to_owned))
        .collect();
    assert!(
        !v2_steps.iter().any(|s| s.starts_with("instances.stop")),
        "old instances were stopped: {v2_steps:?}"
    );
}
