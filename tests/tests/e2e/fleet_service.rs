//! The controller service end to end: real agents (each its own process, data dir, id and
//! labels) in rings, `gantry server` over them, the operator's CLI. Ring order and bakes are
//! asserted from the agents' own audit logs; the service is killed by event count, not by
//! sleeping; no agent ever accepts one plan's deploy twice.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use gantry_proto::v1::{self, OnFailure};
use gantry_tests::fleet::{plan, release, ring_of_labels, sign_plan};
use gantry_tests::service::{Fleet, Service};
use gantry_tests::{audit_lines, make_artifact, wait_until};
use prost::Message;

/// Six agents: ring 0 `web-1`, ring 1 `web-2`, `web-3`, ring 2 `web-4` … `web-6`.
fn six() -> Fleet {
    Fleet::start(&[
        ("web-1", &[("ring", "0")]),
        ("web-2", &[("ring", "1")]),
        ("web-3", &[("ring", "1")]),
        ("web-4", &[("ring", "2")]),
        ("web-5", &[("ring", "2")]),
        ("web-6", &[("ring", "2")]),
    ])
    .unwrap()
}

fn ring(name: &str, n: &str, bake_ms: u64, on_failure: OnFailure, parallel: &str) -> v1::Ring {
    v1::Ring {
        bake_ms,
        on_failure: on_failure.into(),
        max_parallel: parallel.into(),
        host_deadline_ms: 60_000,
        ..ring_of_labels(name, &[("ring", n)])
    }
}

/// Writes plan `plan_id` of web `version` (signed by the deployer) and returns the plan file
/// and its artifact.
fn plan_file(
    fleet: &Fleet,
    plan_id: &str,
    version: &str,
    rings: Vec<v1::Ring>,
) -> (PathBuf, PathBuf) {
    let env = fleet.env();
    let artifact = make_artifact(env, version, "").unwrap();
    let p = plan(
        plan_id,
        "production",
        release(version, &artifact, 1).unwrap(),
        rings,
    );
    let signed = sign_plan(&p, &[&env.keys.deployer]).unwrap();
    let path = env.root.join(format!("{plan_id}.plan"));
    std::fs::write(&path, signed.encode_to_vec()).unwrap();
    (path, artifact)
}

fn start_service(fleet: &Fleet, name: &str, store: Option<&str>, lease: &str) -> Service {
    let dir = fleet.env().root.join(name);
    let config = fleet.write_config(&dir, name, store, lease).unwrap();
    Service::start(fleet, &config).unwrap()
}

/// `rollout status ID --json`, parsed.
fn status(svc: &Service, id: &str) -> serde_json::Value {
    let out = svc.gantry(&["rollout", "status", id, "--json"]).unwrap();
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.all()))
}

fn wait_final(svc: &Service, id: &str, within: Duration) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_until(within, "the rollout to end", || {
        last = status(svc, id);
        matches!(
            last["state"].as_str(),
            Some("succeeded" | "rolled_back" | "halted" | "aborted")
        )
    })
    .unwrap_or_else(|e| panic!("{e}: {last:#}\n{}", svc.log_tail()));
    last
}

/// The agent's audit entries `event` for plan `plan_id`.
fn plan_entries(fleet: &Fleet, agent: &str, event: &str, plan_id: &str) -> Vec<serde_json::Value> {
    audit_lines(&fleet.member(agent).env)
        .unwrap()
        .into_iter()
        .filter(|e| e["event"] == event && e["plan_id"] == plan_id)
        .collect()
}

fn ts(e: &serde_json::Value) -> SystemTime {
    humantime::parse_rfc3339(e["ts"].as_str().unwrap()).unwrap()
}

/// The end (`job.succeeded`, `job.failed`, `job.rolled_back`) of `job` on `agent`.
fn job_end(fleet: &Fleet, agent: &str, job: &str) -> Option<serde_json::Value> {
    audit_lines(&fleet.member(agent).env)
        .unwrap()
        .into_iter()
        .find(|e| {
            e["job_id"] == job
                && matches!(
                    e["event"].as_str(),
                    Some("job.succeeded" | "job.failed" | "job.rolled_back")
                )
        })
}

/// No agent accepted the plan's deploy more than once.
fn assert_each_deployed_at_most_once(fleet: &Fleet, plan_id: &str) {
    for m in &fleet.members {
        let accepted: Vec<_> = plan_entries(fleet, &m.env.agent_id, "job.accepted", plan_id)
            .into_iter()
            .filter(|e| e["action"] == "deploy")
            .collect();
        assert!(
            accepted.len() <= 1,
            "{} accepted the plan's deploy {} times: {accepted:#?}",
            m.env.agent_id,
            accepted.len()
        );
    }
}

#[test]
fn a_plan_runs_ring_by_ring_over_six_agents_with_bakes_respected() {
    let fleet = six();
    let svc = start_service(&fleet, "ctl-1", None, "10s");
    let rings = vec![
        ring("canary", "0", 1_500, OnFailure::Halt, "1"),
        ring("early", "1", 1_000, OnFailure::Halt, "2"),
        ring("everyone", "2", 0, OnFailure::Halt, "2"),
    ];
    let (plan, artifact) = plan_file(&fleet, "rel-2.0.0", "2.0.0", rings);

    let ls = svc.gantry(&["fleet", "ls"]).unwrap();
    ls.assert_code(0);
    for m in &fleet.members {
        assert!(ls.stdout.contains(&m.env.agent_id), "{}", ls.all());
    }
    assert!(
        ls.stdout.contains("ring=2") && !ls.stdout.contains("UNREACHABLE"),
        "{}",
        ls.all()
    );

    svc.gantry(&[
        "rollout",
        "start",
        &plan.to_string_lossy(),
        "--artifact",
        &artifact.to_string_lossy(),
    ])
    .unwrap()
    .assert_code(0);
    let watched = svc
        .gantry(&["rollout", "status", "rel-2.0.0", "--watch", "--json"])
        .unwrap();
    watched.assert_code(0);
    let end = status(&svc, "rel-2.0.0");
    assert_eq!(end["state"], "succeeded", "{end:#}");

    // From the agents' own logs: each accepted the plan once, ring by ring, each ring after the
    // previous one's last host finished plus its bake.
    assert_each_deployed_at_most_once(&fleet, "rel-2.0.0");
    let by_ring: [&[&str]; 3] = [
        &["web-1"],
        &["web-2", "web-3"],
        &["web-4", "web-5", "web-6"],
    ];
    let bakes = [1_500u64, 1_000];
    let mut ring_end: Vec<SystemTime> = Vec::new();
    for (r, agents) in by_ring.iter().enumerate() {
        let mut ends = Vec::new();
        for a in *agents {
            let accepted = plan_entries(&fleet, a, "job.accepted", "rel-2.0.0");
            assert_eq!(accepted.len(), 1, "{a}");
            let job = accepted[0]["job_id"].as_str().unwrap().to_owned();
            let finished = job_end(&fleet, a, &job).unwrap();
            assert_eq!(finished["event"], "job.succeeded", "{a}: {finished:#}");
            if r > 0 {
                let since = ts(&accepted[0])
                    .duration_since(ring_end[r - 1])
                    .unwrap_or_else(|_| {
                        panic!("{a} (ring {r}) accepted before ring {} ended", r - 1)
                    });
                assert!(
                    since >= Duration::from_millis(bakes[r - 1]),
                    "{a} started {since:?} after ring {} ended, inside its bake",
                    r - 1
                );
            }
            ends.push(ts(&finished));
        }
        ring_end.push(ends.into_iter().max().unwrap());
    }
    // Every host is on 2.0.0, and the service witnessed each one's checkpoint.
    let verify = svc.gantry(&["fleet", "audit", "verify"]).unwrap();
    verify.assert_code(0);
    assert!(
        verify.stdout.contains("6 of 6 agents verify"),
        "{}",
        verify.all()
    );
    let tail = svc
        .gantry(&["fleet", "audit", "tail", "--json", "--last", "100"])
        .unwrap();
    tail.assert_code(0);
    for event in ["rollout.started", "ring.passed", "rollout.succeeded"] {
        assert!(
            tail.stdout.contains(&format!("\"event\":\"{event}\"")),
            "{event}: {}",
            tail.all()
        );
    }
    assert!(tail.stdout.contains("\"by\":\"ops-1\""), "{}", tail.all());
}

#[test]
fn a_release_failing_health_in_ring_1_rolls_that_ring_back_and_never_reaches_ring_2() {
    let fleet = Fleet::start(&[
        ("web-1", &[("ring", "0")]),
        ("web-2", &[("ring", "1")]),
        ("web-3", &[("ring", "1")]),
        ("web-4", &[("ring", "2")]),
    ])
    .unwrap();
    // web-3's app port is taken: the release cannot come up healthy there.
    let port = fleet.member("web-3").env.port(0);
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let svc = start_service(&fleet, "ctl-1", None, "10s");
    let rings = vec![
        ring("canary", "0", 0, OnFailure::Halt, "1"),
        ring("early", "1", 0, OnFailure::RollbackRing, "1"),
        ring("everyone", "2", 0, OnFailure::Halt, "1"),
    ];
    let (plan, artifact) = plan_file(&fleet, "rel-2.1.0", "2.1.0", rings);
    svc.gantry(&[
        "rollout",
        "start",
        &plan.to_string_lossy(),
        "--artifact",
        &artifact.to_string_lossy(),
    ])
    .unwrap()
    .assert_code(0);
    let end = wait_final(&svc, "rel-2.1.0", Duration::from_secs(120));
    assert_eq!(end["state"], "rolled_back", "{end:#}");
    let reason = end["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("ring 1 (early) failed: host web-3: "),
        "{reason}"
    );
    // The exit code of status says it did not succeed.
    svc.gantry(&["rollout", "status", "rel-2.1.0"])
        .unwrap()
        .assert_code(1);
    // web-2 passed and was rolled back by the plan; ring 2 never received the plan; ring 0
    // keeps it (rollback_ring).
    assert_eq!(
        plan_entries(&fleet, "web-2", "job.accepted", "rel-2.1.0").len(),
        2
    );
    let web2: Vec<_> = plan_entries(&fleet, "web-2", "job.accepted", "rel-2.1.0")
        .into_iter()
        .map(|e| e["action"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(web2, ["deploy", "rollback"]);
    assert!(plan_entries(&fleet, "web-4", "job.accepted", "rel-2.1.0").is_empty());
    assert!(
        audit_lines(&fleet.member("web-4").env)
            .unwrap()
            .iter()
            .all(|e| e["plan_id"] != "rel-2.1.0")
    );
    assert_eq!(
        plan_entries(&fleet, "web-1", "job.accepted", "rel-2.1.0").len(),
        1
    );
    assert_each_deployed_at_most_once(&fleet, "rel-2.1.0");
}

/// Kills the service at the `n`-th job event it logged, restarts it, and waits for the end.
fn kill_at(fleet: &Fleet, svc: &mut Service, n: usize) {
    wait_until(
        Duration::from_secs(90),
        "the service to reach the kill point",
        || svc.job_events() >= n || !svc.running(),
    )
    .unwrap();
    svc.kill_9().unwrap();
    svc.restart().unwrap();
    let _ = fleet;
}

#[test]
fn kill_9_of_the_service_at_many_points_resumes_and_never_deploys_twice() {
    let fleet = Fleet::start(&[
        ("web-1", &[("ring", "0")]),
        ("web-2", &[("ring", "1")]),
        ("web-3", &[("ring", "1")]),
    ])
    .unwrap();
    let mut svc = start_service(&fleet, "ctl-1", None, "10s");
    let rings = vec![
        ring("canary", "0", 300, OnFailure::RollbackAll, "1"),
        ring("rest", "1", 0, OnFailure::RollbackAll, "1"),
    ];
    let (plan, artifact) = plan_file(&fleet, "rel-3.0.0", "3.0.0", rings);
    svc.gantry(&[
        "rollout",
        "start",
        &plan.to_string_lossy(),
        "--artifact",
        &artifact.to_string_lossy(),
    ])
    .unwrap()
    .assert_code(0);
    // Kill points by the count of job events the service has logged (cumulative across its
    // restarts, in its one log): accepted, steps, finished of each host in turn.
    for n in [1, 3, 6, 9, 12] {
        kill_at(&fleet, &mut svc, n);
        let s = status(&svc, "rel-3.0.0");
        if matches!(s["state"].as_str(), Some("succeeded" | "rolled_back")) {
            break;
        }
    }
    let end = wait_final(&svc, "rel-3.0.0", Duration::from_secs(120));
    assert_eq!(end["state"], "succeeded", "{end:#}");
    assert_each_deployed_at_most_once(&fleet, "rel-3.0.0");
    for a in ["web-1", "web-2", "web-3"] {
        let accepted = plan_entries(&fleet, a, "job.accepted", "rel-3.0.0");
        assert_eq!(accepted.len(), 1, "{a}");
        let job = accepted[0]["job_id"].as_str().unwrap().to_owned();
        assert_eq!(
            job_end(&fleet, a, &job).unwrap()["event"],
            "job.succeeded",
            "{a}"
        );
    }
    // The service recorded its restarts as takeovers and its cut-off steps as interrupted,
    // never as cancelled.
    let tail = svc
        .gantry(&["fleet", "audit", "tail", "--json", "--last", "500"])
        .unwrap();
    assert!(
        tail.stdout.contains("\"event\":\"rollout.takeover\""),
        "{}",
        tail.all()
    );
    assert!(!tail.stdout.contains("cancel"), "{}", tail.all());
}
