//! Hot deploys of the sample app: replacing a release, rolling back broken ones by itself, and
//! `gantry rollback`.

use gantry_tests::{Agent, Controller, TestEnv, audit_events, banner, make_artifact};

use crate::{assert_serves, deploy, status_version};

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
    let v2 = make_artifact(&env, "2.0.0", "").unwrap();
    let out = deploy(&ctl, &env, "2.0.0", &v2, 2, "20s");
    out.assert_code(0);
    assert_eq!(
        out.outcome().as_deref(),
        Some("succeeded"),
        "{}",
        out.stdout
    );
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
    let succeeded = audit_events(&env, "job.succeeded").unwrap();
    let v2_job = out.finished().unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        succeeded.iter().any(|e| e["job_id"] == v2_job.as_str()),
        "no job.succeeded for {v2_job}: {succeeded:?}"
    );

    let status = ctl.run(&["status", "--json"]).unwrap();
    status.assert_code(0);
    assert_eq!(
        status_version(&status, "web").as_deref(),
        Some("2.0.0"),
        "{}",
        status.stdout
    );

    let key = env.keys.deployer.key.to_string_lossy().into_owned();
    let out = ctl
        .run(&["rollback", "--key", &key, "--app", "web"])
        .unwrap();
    out.assert_code(0);
    assert_serves(&env, "1.0.0", 2);
    let status = ctl.run(&["status", "--json"]).unwrap();
    assert_eq!(
        status_version(&status, "web").as_deref(),
        Some("1.0.0"),
        "{}",
        status.stdout
    );
}

/// Deploys a v2.0.0 that misbehaves in `mode` and checks the agent put v1.0.0 back.
fn broken_release_is_rolled_back(mode: &str) {
    let (env, _agent, ctl) = with_v1();
    let v2 = make_artifact(&env, "2.0.0", mode).unwrap();
    let out = deploy(&ctl, &env, "2.0.0", &v2, 2, "4s");
    out.assert_code(1);
    assert_eq!(
        out.outcome().as_deref(),
        Some("rolled_back"),
        "{}",
        out.all()
    );
    assert_serves(&env, "1.0.0", 2);
    let job = out.finished().unwrap()["job_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rolled_back = audit_events(&env, "job.rolled_back").unwrap();
    assert!(
        rolled_back.iter().any(|e| e["job_id"] == job.as_str()),
        "no job.rolled_back for {job}: {rolled_back:?}"
    );
    let status = ctl.run(&["status", "--json"]).unwrap();
    assert_eq!(
        status_version(&status, "web").as_deref(),
        Some("1.0.0"),
        "{}",
        status.stdout
    );
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
    let status = ctl2.run(&["status", "--json"]).unwrap();
    status.assert_code(0);
    assert_eq!(
        status_version(&status, "web").as_deref(),
        Some("1.0.0"),
        "{}",
        status.stdout
    );
    assert!(banner(env.port(0)).is_some());
}
