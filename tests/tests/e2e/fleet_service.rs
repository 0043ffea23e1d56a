//! The controller service end to end: real agents (each its own process, data dir, id and
//! labels) in rings, `gantry server` over them, the operator's CLI. Ring order and bakes are
//! asserted from the agents' own audit logs; the service is killed by event count, not by
//! sleeping; no agent ever accepts one plan's deploy twice.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use gantry_proto::v1::{self, OnFailure};
use gantry_tests::agent::Agent;
use gantry_tests::fleet::{plan, release, ring_of_labels, sign_plan, trust_orchestrator};
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

pub(crate) fn ring(
    name: &str,
    n: &str,
    bake_ms: u64,
    on_failure: OnFailure,
    parallel: &str,
) -> v1::Ring {
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
pub(crate) fn plan_file(
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

pub(crate) fn start_service(
    fleet: &Fleet,
    name: &str,
    store: Option<&str>,
    lease: &str,
) -> Service {
    let dir = fleet.env().root.join(name);
    let config = fleet.write_config(&dir, name, store, lease).unwrap();
    Service::start(fleet, &config).unwrap()
}

/// `rollout start PLAN --artifact ARTIFACT`, which must exit 0.
pub(crate) fn start_rollout(svc: &Service, plan: &std::path::Path, artifact: &std::path::Path) {
    rollout_start(svc, plan, artifact).assert_code(0);
}

/// `rollout start PLAN --artifact ARTIFACT`, whatever it ends with.
pub(crate) fn rollout_start(
    svc: &Service,
    plan: &std::path::Path,
    artifact: &std::path::Path,
) -> gantry_tests::process::Output {
    svc.gantry(&[
        "rollout",
        "start",
        &plan.to_string_lossy(),
        "--artifact",
        &artifact.to_string_lossy(),
    ])
    .unwrap()
}

/// `rollout status ID --json`, parsed.
pub(crate) fn status(svc: &Service, id: &str) -> serde_json::Value {
    let out = svc.gantry(&["rollout", "status", id, "--json"]).unwrap();
    serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.all()))
}

pub(crate) fn wait_final(svc: &Service, id: &str, within: Duration) -> serde_json::Value {
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
pub(crate) fn plan_entries(
    fleet: &Fleet,
    agent: &str,
    event: &str,
    plan_id: &str,
) -> Vec<serde_json::Value> {
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
pub(crate) fn job_end(fleet: &Fleet, agent: &str, job: &str) -> Option<serde_json::Value> {
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

    start_rollout(&svc, &plan, &artifact);
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
    // The agents' entries interleaved by time, each naming its agent, each chain checked.
    let agents_tail = svc
        .gantry(&["fleet", "audit", "tail", "--json", "--last", "30"])
        .unwrap();
    agents_tail.assert_code(0);
    let entries = agents_tail.json_lines();
    for m in &fleet.members {
        assert!(
            entries
                .iter()
                .any(|e| e["agent_id"] == m.env.agent_id.as_str()
                    && e["entry"]["event"] == "job.accepted"
                    && e["entry"]["plan_id"] == "rel-2.0.0"),
            "{}: {}",
            m.env.agent_id,
            agents_tail.all()
        );
    }
    assert!(
        entries.iter().all(|e| e["error"] == ""),
        "{}",
        agents_tail.all()
    );
    let stamps: Vec<&str> = entries
        .iter()
        .filter_map(|e| e["entry"]["ts"].as_str())
        .collect();
    assert!(
        stamps.windows(2).all(|w| w[0] <= w[1]),
        "not in time order: {stamps:?}"
    );
    let tail = svc
        .gantry(&[
            "fleet",
            "audit",
            "tail",
            "--service",
            "--json",
            "--last",
            "100",
        ])
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

    // The security reviewer's view: each agent's keys and what they may do, vouched for by
    // the config digest in its own verified audit log, and the plan it accepted.
    let review = svc.gantry(&["fleet", "policy"]).unwrap();
    review.assert_code(0);
    for m in &fleet.members {
        let started = audit_lines(&m.env)
            .unwrap()
            .into_iter()
            .rfind(|e| e["event"] == "agent.started")
            .unwrap();
        assert!(
            review.stdout.contains(&format!(
                "{}: config sha256:{}: vouched for by its audit log",
                m.env.agent_id,
                started["config_digest"].as_str().unwrap()
            )),
            "{}",
            review.all()
        );
    }
    assert!(
        review.stdout.contains("signs deploy")
            && review.stdout.contains("signs plans")
            && review.stdout.contains("dispatches"),
        "{}",
        review.all()
    );
    assert!(
        review
            .stdout
            .contains("rel-2.0.0 web ring 2 (everyone) epoch"),
        "{}",
        review.all()
    );
    let one = svc
        .gantry(&["fleet", "policy", "--agent", "web-4", "--json"])
        .unwrap();
    one.assert_code(0);
    let lines: Vec<&str> = one.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", one.all());
    let doc: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
    assert_eq!(doc["agent_id"], "web-4");
    assert_eq!(doc["digest_ok"], true, "{doc:#}");
    assert_eq!(doc["policy"]["agent_id"], "web-4", "{doc:#}");
    assert_eq!(doc["plans"][0]["plan_id"], "rel-2.0.0", "{doc:#}");
    assert_eq!(doc["plans"][0]["ring"], 2, "{doc:#}");
    assert_eq!(doc["plans"][0]["dispatch_action"], "deploy", "{doc:#}");
    let unknown = svc
        .gantry(&["fleet", "policy", "--agent", "web-9"])
        .unwrap();
    unknown.assert_code(2);
    assert!(
        unknown
            .stderr
            .contains("no agent web-9 in the service's inventory"),
        "{}",
        unknown.all()
    );
    // An agent that cannot answer is not vouched for: exit 1, and why.
    let mut fleet = fleet;
    fleet.members[5].agent.kill_9().unwrap();
    let down = svc
        .gantry(&["fleet", "policy", "--agent", "web-6"])
        .unwrap();
    down.assert_code(1);
    assert!(
        down.stdout
            .starts_with("web-6: config -: NOT VOUCHED FOR: cannot read its policy: "),
        "{}",
        down.all()
    );
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
    start_rollout(&svc, &plan, &artifact);
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
    // web-2 passed and was rolled back by the plan (its rollback job; with no release before
    // the plan's, the agent stops the app); ring 2 never received the plan; ring 0 keeps it
    // (rollback_ring).
    let web2: Vec<(String, String)> = plan_entries(&fleet, "web-2", "job.accepted", "rel-2.1.0")
        .into_iter()
        .map(|e| {
            (
                e["job_id"].as_str().unwrap_or_default().to_owned(),
                e["action"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let job = |a| gantry_proto::fleet::job_id("rel-2.1.0", "web-2", a);
    assert_eq!(
        web2,
        [
            (job(v1::DispatchAction::Deploy), "deploy".to_owned()),
            (job(v1::DispatchAction::Rollback), "stop".to_owned())
        ]
    );
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

fn is_final(s: &serde_json::Value) -> bool {
    matches!(
        s["state"].as_str(),
        Some("succeeded" | "rolled_back" | "halted" | "aborted")
    )
}

/// Kills the service once it has logged `n` job events (counted over its whole log, across
/// restarts) and starts it again; false when the rollout ended first.
fn kill_at(svc: &mut Service, id: &str, n: usize) -> bool {
    let mut ended = false;
    wait_until(
        Duration::from_secs(90),
        "the service to reach the kill point",
        || {
            if svc.job_events() >= n {
                return true;
            }
            ended = is_final(&status(svc, id));
            ended
        },
    )
    .unwrap();
    if ended {
        return false;
    }
    svc.kill_9().unwrap();
    svc.restart().unwrap();
    true
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
    start_rollout(&svc, &plan, &artifact);
    // Kill points by the count of job events the service has logged (cumulative across its
    // restarts, in its one log): each host's accepted, steps and finished in turn; an attach
    // after a restart replays a job's events, so later points land on later steps.
    let mut kills = 0;
    for n in 1..=60 {
        if kills == 20 || !kill_at(&mut svc, "rel-3.0.0", n) {
            break;
        }
        kills += 1;
    }
    eprintln!("kill -9 points reached: {kills}");
    assert!(kills >= 10, "only {kills} kill points were reached");
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
        .gantry(&[
            "fleet",
            "audit",
            "tail",
            "--service",
            "--json",
            "--last",
            "500",
        ])
        .unwrap();
    assert!(
        tail.stdout.contains("\"event\":\"rollout.takeover\""),
        "{}",
        tail.all()
    );
    assert!(!tail.stdout.contains("cancel"), "{}", tail.all());
}

/// Two replicas on one PostgreSQL (the test's own server): the one driving the rollout is
/// killed; the other takes the lease over and finishes it, each host deploying once.
#[test]
fn two_replicas_on_postgres_the_survivor_finishes_a_rollout_whose_leader_was_killed() {
    let Some(pg) = gantry_service::store::pg_test::PgServer::start() else {
        return;
    };
    let fleet = Fleet::start(&[
        ("web-1", &[("ring", "0")]),
        ("web-2", &[("ring", "1")]),
        ("web-3", &[("ring", "1")]),
    ])
    .unwrap();
    let url = pg.url();
    let mut a = start_service(&fleet, "ctl-a", Some(&url), "2s");
    let mut b = start_service(&fleet, "ctl-b", Some(&url), "2s");
    let rings = vec![
        ring("canary", "0", 500, OnFailure::RollbackAll, "1"),
        ring("rest", "1", 0, OnFailure::RollbackAll, "1"),
    ];
    let (plan, artifact) = plan_file(&fleet, "rel-4.0.0", "4.0.0", rings);
    // Each replica keeps artifacts in its own data dir: both get it. The second start is
    // refused (the plan runs once), after its artifact was taken.
    let start = |svc: &Service| rollout_start(svc, &plan, &artifact);
    start(&a).assert_code(0);
    let again = start(&b);
    again.assert_code(2);
    assert!(again.all().contains("exists already"), "{}", again.all());
    let mut leader = String::new();
    wait_until(
        Duration::from_secs(60),
        "a replica to take the lease and dispatch",
        || {
            let s = status(&b, "rel-4.0.0");
            leader = s["leader"].as_str().unwrap_or_default().to_owned();
            !leader.is_empty() && (a.job_events() + b.job_events()) >= 1
        },
    )
    .unwrap();
    let (dead, survivor) = if leader == "ctl-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dead.kill_9().unwrap();
    let end = wait_final(survivor, "rel-4.0.0", Duration::from_secs(120));
    assert_eq!(
        end["state"],
        "succeeded",
        "{end:#}\n{}",
        survivor.log_tail()
    );
    assert_ne!(end["leader"], leader, "{end:#}");
    assert!(end["epoch"].as_u64().unwrap() >= 2, "{end:#}");
    assert_each_deployed_at_most_once(&fleet, "rel-4.0.0");
}

/// The old leader frozen past its lease (SIGSTOP) while the other replica takes over; woken
/// (SIGCONT), nothing it sends is admitted by any agent: every deploy the agents accepted
/// after the takeover carries the new epoch.
#[test]
fn a_leader_frozen_past_its_lease_sends_nothing_the_agents_admit_after_it_wakes() {
    let Some(pg) = gantry_service::store::pg_test::PgServer::start() else {
        return;
    };
    let fleet = Fleet::start(&[
        ("web-1", &[("ring", "0")]),
        ("web-2", &[("ring", "1")]),
        ("web-3", &[("ring", "1")]),
    ])
    .unwrap();
    let url = pg.url();
    let mut a = start_service(&fleet, "ctl-a", Some(&url), "2s");
    let mut b = start_service(&fleet, "ctl-b", Some(&url), "2s");
    let rings = vec![
        ring("canary", "0", 500, OnFailure::RollbackAll, "1"),
        ring("rest", "1", 0, OnFailure::RollbackAll, "1"),
    ];
    let (plan, artifact) = plan_file(&fleet, "rel-5.0.0", "5.0.0", rings);
    // Both replicas hold the artifact, so whichever drives can upload it.
    for svc in [&a, &b] {
        svc.gantry(&[
            "rollout",
            "start",
            &plan.to_string_lossy(),
            "--artifact",
            &artifact.to_string_lossy(),
        ])
        .unwrap();
    }
    let mut leader = String::new();
    wait_until(Duration::from_secs(60), "a replica to dispatch", || {
        let s = status(&b, "rel-5.0.0");
        leader = s["leader"].as_str().unwrap_or_default().to_owned();
        !leader.is_empty() && (a.job_events() + b.job_events()) >= 1
    })
    .unwrap();
    let (old, new) = if leader == "ctl-a" {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    old.signal(nix::sys::signal::Signal::SIGSTOP).unwrap();
    let stopped_at = SystemTime::now();
    let mut epoch = 0;
    wait_until(
        Duration::from_secs(30),
        "the other replica to take over",
        || {
            let s = status(new, "rel-5.0.0");
            epoch = s["epoch"].as_u64().unwrap_or(0);
            s["leader"] != leader.as_str() && epoch >= 2
        },
    )
    .unwrap();
    let end = wait_final(new, "rel-5.0.0", Duration::from_secs(120));
    assert_eq!(end["state"], "succeeded", "{end:#}");
    old.signal(nix::sys::signal::Signal::SIGCONT).unwrap();
    // Give the woken replica time to act on whatever it had in flight: it must find its
    // lease gone (logged) before it sends anything.
    wait_until(
        Duration::from_secs(30),
        "the woken replica to notice its lease is gone",
        || old.log_text().contains("lease"),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let old_epoch = epoch - 1;
    for m in &fleet.members {
        for e in plan_entries(&fleet, &m.env.agent_id, "job.accepted", "rel-5.0.0") {
            if e["epoch"].as_u64().unwrap_or(0) <= old_epoch {
                assert!(
                    ts(&e) < stopped_at,
                    "{} admitted epoch {} after the old leader was frozen: {e:#}",
                    m.env.agent_id,
                    e["epoch"]
                );
            }
        }
    }
    assert_each_deployed_at_most_once(&fleet, "rel-5.0.0");
}

#[test]
fn a_host_labelled_into_a_ring_after_the_rollout_succeeded_gets_the_release_once() {
    let mut fleet =
        Fleet::start(&[("web-1", &[("ring", "0")]), ("web-2", &[("ring", "9")])]).unwrap();
    let svc = start_service(&fleet, "ctl-1", None, "10s");
    let (plan, artifact) = plan_file(
        &fleet,
        "rel-late",
        "2.0.0",
        vec![ring("everyone", "0", 0, OnFailure::Halt, "1")],
    );
    start_rollout(&svc, &plan, &artifact);
    let s = wait_final(&svc, "rel-late", Duration::from_secs(120));
    assert_eq!(s["state"], "succeeded", "{s:#}");
    assert!(plan_entries(&fleet, "web-2", "job.accepted", "rel-late").is_empty());

    // web-2 is relabelled into the ring (same address), after the rollout has ended.
    let addr = fleet.members[1].agent.addr;
    let gantry_tests::service::Member { env, mut agent } = fleet.members.remove(1);
    agent.terminate().unwrap();
    // Dropped before the new one starts: dropping a handle reaps what runs under its data dir.
    drop(agent);
    let mut raw = env.raw_config();
    trust_orchestrator(
        &mut raw,
        &fleet.orchestrator.pair.public,
        Some("production"),
        &[("ring", "0")],
    );
    raw.listen = Some(addr.to_string());
    env.write_raw_config(&raw).unwrap();
    let agent = Agent::start(&env).unwrap();
    fleet
        .members
        .push(gantry_tests::service::Member { env, agent });

    wait_until(
        Duration::from_secs(60),
        "web-2 to be brought up to date",
        || {
            job_end(
                &fleet,
                "web-2",
                &gantry_proto::fleet::job_id("rel-late", "web-2", v1::DispatchAction::Deploy),
            )
            .is_some_and(|e| e["event"] == "job.succeeded")
        },
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", svc.log_tail()));
    let status = status(&svc, "rel-late");
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let hosts: Vec<&str> = status["rings"][0]["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["agent_id"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, ["web-1", "web-2"], "{status:#}");
    let tail = svc
        .gantry(&[
            "fleet",
            "audit",
            "tail",
            "--service",
            "--json",
            "--last",
            "50",
        ])
        .unwrap();
    assert!(
        tail.stdout.contains("\"event\":\"rollout.catching_up\"") && tail.stdout.contains("web-2"),
        "{}",
        tail.all()
    );
    assert_eq!(
        plan_entries(&fleet, "web-2", "job.accepted", "rel-late").len(),
        1
    );
    assert_each_deployed_at_most_once(&fleet, "rel-late");
}
