//! The engine against a fake fleet: ring order, bakes, parallelism, failure policies,
//! deadlines, controls, resuming an interrupted rollout, and losing the lease.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_proto::keys::SigningKey;
use gantry_proto::v1::{
    Dispatch, DispatchAction, DispatchRequest, OnFailure, Plan, Release, Ring, RingGates, Selector,
    Signature, SignedPlan,
};
use prost::Message;
use serde_json::Value;

use super::{Driven, Engine, EngineSettings};
use crate::agents::{AgentFacts, Agents, HostHealth, RunObserver, RunOutcome, RunResult};
use crate::audit::{AuditLog, read_lines};
use crate::lease::LeaseSettings;
use crate::store::embedded::EmbeddedStore;
use crate::store::{
    AgentRecord, Control, ControlRequest, HostAction, HostRecord, HostStep, RolloutRecord,
    RolloutState, Store,
};

#[derive(Debug, Clone)]
struct Sent {
    agent: String,
    action: DispatchAction,
    ring: u32,
    epoch: u64,
    at: Instant,
}

#[derive(Default)]
struct Fake {
    sent: Mutex<Vec<Sent>>,
    fail: Mutex<HashMap<String, RunOutcome>>,
    hang: Mutex<HashSet<String>>,
    health: Mutex<HashMap<String, HostHealth>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay: Duration,
}

impl Fake {
    fn sent(&self) -> Vec<Sent> {
        self.sent.lock().unwrap().clone()
    }
    fn deploys(&self) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter(|s| s.action == DispatchAction::Deploy)
            .map(|s| s.agent)
            .collect()
    }
    fn rollbacks(&self) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter(|s| s.action == DispatchAction::Rollback)
            .map(|s| s.agent)
            .collect()
    }
}

impl Agents for Fake {
    async fn run(
        &self,
        agent: &AgentRecord,
        request: DispatchRequest,
        _observer: &mut (dyn RunObserver + '_),
    ) -> RunResult {
        let d = Dispatch::decode(request.dispatch.unwrap().dispatch.as_slice()).unwrap();
        assert_eq!(d.agent_id, agent.id);
        let action = DispatchAction::try_from(d.action).unwrap();
        self.sent.lock().unwrap().push(Sent {
            agent: agent.id.clone(),
            action,
            ring: d.ring,
            epoch: d.epoch,
            at: Instant::now(),
        });
        if self.hang.lock().unwrap().contains(&agent.id) {
            std::future::pending::<()>().await;
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let outcome = match action {
            DispatchAction::Deploy => self
                .fail
                .lock()
                .unwrap()
                .get(&agent.id)
                .cloned()
                .unwrap_or(RunOutcome::Succeeded),
            _ => RunOutcome::Succeeded,
        };
        RunResult {
            outcome,
            checkpoint: None,
        }
    }

    async fn health(&self, agent: &AgentRecord, _app: &str) -> Result<HostHealth, String> {
        Ok(self
            .health
            .lock()
            .unwrap()
            .get(&agent.id)
            .cloned()
            .unwrap_or(HostHealth {
                version: "1.1.0".into(),
                running: true,
                restarts: 0,
                conn_errors: 0,
            }))
    }

    async fn ensure_artifact(&self, _: &AgentRecord, _: &str, _: u64) -> Result<(), String> {
        Ok(())
    }

    async fn info(&self, _: &AgentRecord) -> Result<AgentFacts, String> {
        Ok(AgentFacts::default())
    }
}

fn settings(holder: &str) -> EngineSettings {
    EngineSettings {
        lease: LeaseSettings {
            holder: holder.into(),
            period: Duration::from_secs(2),
        },
        dispatch_validity: Duration::from_secs(60),
        poll: Duration::from_millis(20),
        retry: Duration::from_millis(20),
    }
}

fn ring(n: u32, bake_ms: u64, on_failure: OnFailure) -> Ring {
    Ring {
        name: format!("ring-{n}"),
        selector: Some(Selector {
            agent_ids: vec![],
            labels: [("ring".to_string(), n.to_string())].into(),
        }),
        max_parallel: "2".into(),
        min_healthy: "100%".into(),
        bake_ms,
        gates: None,
        on_failure: on_failure.into(),
        host_deadline_ms: 0,
        flag_percent: None,
    }
}

struct World {
    _dir: tempfile::TempDir,
    audit_dir: std::path::PathBuf,
    store: Arc<EmbeddedStore>,
    fake: Arc<Fake>,
    engine: Engine<EmbeddedStore, Fake>,
}

async fn world(fake: Fake, hosts_per_ring: &[usize]) -> World {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(EmbeddedStore::open(&dir.path().join("store")).unwrap());
    let mut n = 0;
    for (r, count) in hosts_per_ring.iter().enumerate() {
        for _ in 0..*count {
            n += 1;
            store
                .put_agent(AgentRecord {
                    id: format!("web-{n}"),
                    addr: format!("127.0.0.1:{}", 7000 + n),
                    version: "0.1.0".into(),
                    environment: "prod".into(),
                    labels: [("ring".to_string(), r.to_string())].into(),
                    reachable: true,
                    last_seen_ms: 1,
                    error: String::new(),
                })
                .await
                .unwrap();
        }
    }
    let audit_dir = dir.path().join("audit");
    let audit = Arc::new(AuditLog::open(&audit_dir, SigningKey::generate().unwrap()).unwrap());
    let fake = Arc::new(fake);
    let engine = Engine::new(
        store.clone(),
        fake.clone(),
        audit,
        SigningKey::generate().unwrap(),
        settings("replica-a"),
    );
    World {
        _dir: dir,
        audit_dir,
        store,
        fake,
        engine,
    }
}

async fn start(w: &World, rings: Vec<Ring>) -> String {
    start_plan(w, "rel-1.1.0", 1, in_an_hour(), rings).await
}

fn in_an_hour() -> i64 {
    gantry_client::clock::unix_secs(std::time::SystemTime::now()) + 3600
}

/// Hands in plan `plan_id` (web 1.1.0 for `prod`), created at `created_ms`, valid until
/// `expires_at` (Unix seconds).
async fn start_plan(
    w: &World,
    plan_id: &str,
    created_ms: i64,
    expires_at: i64,
    rings: Vec<Ring>,
) -> String {
    let plan = Plan {
        plan_id: plan_id.into(),
        expires_at,
        app: "web".into(),
        environment: "prod".into(),
        release: Some(Release {
            version: "1.1.0".into(),
            ..Release::default()
        }),
        rings,
        ..Plan::default()
    };
    let signed = SignedPlan {
        plan: plan.encode_to_vec(),
        signatures: vec![Signature {
            key_id: "k".into(),
            sig: vec![1],
        }],
        comments: Vec::new(),
    };
    w.store
        .create_rollout(RolloutRecord {
            id: plan.plan_id.clone(),
            signed_plan: signed.encode_to_vec(),
            plan_sha256: gantry_proto::fleet::plan_digest(&signed.plan),
            state: RolloutState::Pending,
            ring: 0,
            bake_until_ms: 0,
            rollback_to: 0,
            bake_counts: Default::default(),
            reason: String::new(),
            started_by: "ops-1".into(),
            created_ms,
            updated_ms: created_ms,
        })
        .await
        .unwrap();
    plan.plan_id
}

fn events(w: &World) -> Vec<String> {
    read_lines(&w.audit_dir)
        .unwrap()
        .iter()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["event"].as_str().unwrap().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_runs_ring_by_ring_with_bakes_and_max_parallel_respected() {
    let fake = Fake {
        delay: Duration::from_millis(30),
        ..Fake::default()
    };
    let w = world(fake, &[1, 2, 3]).await;
    let mut rings = vec![
        ring(0, 300, OnFailure::Halt),
        ring(1, 200, OnFailure::Halt),
        ring(2, 0, OnFailure::Halt),
    ];
    rings[2].max_parallel = "50%".into();
    let id = start(&w, rings).await;
    let t0 = Instant::now();
    let driven = w.engine.drive(&id).await.unwrap();
    assert_eq!(driven, Driven::Finished(RolloutState::Succeeded));
    let sent = w.fake.sent();
    let rings_in_order: Vec<u32> = sent.iter().map(|s| s.ring).collect();
    assert_eq!(rings_in_order, [0, 1, 1, 2, 2, 2]);
    // Ring 1 started only after ring 0's bake, ring 2 after ring 1's.
    let first = |r: u32| sent.iter().find(|s| s.ring == r).unwrap().at;
    assert!(first(1) - first(0) >= Duration::from_millis(300));
    assert!(first(2) - first(1) >= Duration::from_millis(200));
    assert!(t0.elapsed() >= Duration::from_millis(500));
    // 50% of 3 hosts is 2 at a time; never more than 2 in flight anywhere.
    assert_eq!(w.fake.max_in_flight.load(Ordering::SeqCst), 2);
    assert!(
        sent.iter()
            .all(|s| s.epoch == 1 && s.action == DispatchAction::Deploy)
    );
    let r = w.store.rollout(&id).await.unwrap().unwrap();
    assert_eq!((r.state, r.ring), (RolloutState::Succeeded, 2));
    let hosts = w.store.hosts(&id).await.unwrap();
    assert_eq!(hosts.len(), 6);
    assert!(
        hosts.iter().all(|h| h.step == HostStep::Succeeded),
        "{hosts:?}"
    );
    let ev = events(&w);
    let passed = ev.iter().filter(|e| *e == "ring.passed").count();
    assert_eq!(passed, 3, "{ev:?}");
    assert!(ev.contains(&"rollout.succeeded".to_string()), "{ev:?}");
    assert_eq!(ev.last().unwrap(), "checkpoint");
    // Running it again changes nothing: the rollout is final.
    assert_eq!(
        w.engine.drive(&id).await.unwrap(),
        Driven::Finished(RolloutState::Succeeded)
    );
    assert_eq!(w.fake.sent().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_host_in_ring_1_rolls_that_ring_back_and_ring_2_never_receives_it() {
    let fake = Fake::default();
    fake.fail.lock().unwrap().insert(
        "web-3".into(),
        RunOutcome::Failed("health check failed: GET /health returned 500".into()),
    );
    let w = world(fake, &[1, 2, 2]).await;
    let mut r1 = ring(1, 0, OnFailure::RollbackRing);
    r1.max_parallel = "1".into();
    let id = start(
        &w,
        vec![ring(0, 0, OnFailure::Halt), r1, ring(2, 0, OnFailure::Halt)],
    )
    .await;
    let driven = w.engine.drive(&id).await.unwrap();
    assert_eq!(driven, Driven::Finished(RolloutState::RolledBack));
    assert_eq!(w.fake.deploys(), ["web-1", "web-2", "web-3"]);
    // web-2 succeeded in ring 1 and is rolled back; web-3 failed (and reverted itself);
    // ring 0 stays (rollback_ring); ring 2 never received anything.
    assert_eq!(w.fake.rollbacks(), ["web-2"]);
    assert!(w.fake.sent().iter().all(|s| s.ring != 2));
    let r = w.store.rollout(&id).await.unwrap().unwrap();
    assert_eq!(
        r.reason,
        "ring 1 (ring-1) failed: host web-3: health check failed: GET /health returned 500"
    );
    let ev = events(&w);
    assert!(
        ev.contains(&"host.failed".into()) && ev.contains(&"ring.failed".into()),
        "{ev:?}"
    );
    assert!(ev.contains(&"rollout.rolled_back".into()), "{ev:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_all_rolls_back_every_ring_latest_first_and_halt_rolls_back_nothing() {
    let fake = Fake::default();
    fake.fail.lock().unwrap().insert(
        "web-3".into(),
        RunOutcome::Refused("plan below quorum".into()),
    );
    let w = world(fake, &[2, 2]).await;
    let id = start(
        &w,
        vec![
            ring(0, 0, OnFailure::Halt),
            ring(1, 0, OnFailure::RollbackAll),
        ],
    )
    .await;
    assert_eq!(
        w.engine.drive(&id).await.unwrap(),
        Driven::Finished(RolloutState::RolledBack)
    );
    // Latest ring first; ring 0's two hosts roll back at once (max_parallel 2), in either order.
    let rolled = w.fake.rollbacks();
    assert_eq!(rolled[0], "web-4");
    let mut ring0 = rolled[1..].to_vec();
    ring0.sort();
    assert_eq!(ring0, ["web-1", "web-2"]);
    let r = w.store.rollout(&id).await.unwrap().unwrap();
    assert!(
        r.reason.contains("host web-3: refused: plan below quorum"),
        "{}",
        r.reason
    );

    let fake = Fake::default();
    fake.fail
        .lock()
        .unwrap()
        .insert("web-2".into(), RunOutcome::Failed("crashed".into()));
    let w = world(fake, &[2, 2]).await;
    let id = start(
        &w,
        vec![ring(0, 0, OnFailure::Halt), ring(1, 0, OnFailure::Halt)],
    )
    .await;
    assert_eq!(
        w.engine.drive(&id).await.unwrap(),
        Driven::Finished(RolloutState::Halted)
    );
    assert!(w.fake.rollbacks().is_empty());
    assert!(events(&w).contains(&"rollout.halted".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_healthy_lets_a_ring_pass_with_one_failure_out_of_four() {
    let fake = Fake::default();
    fake.fail
        .lock()
        .unwrap()
        .insert("web-2".into(), RunOutcome::Failed("crashed".into()));
    let w = world(fake, &[4]).await;
    let mut r0 = ring(0, 0, OnFailure::Halt);
    r0.min_healthy = "75%".into();
    let id = start(&w, vec![r0]).await;
    assert_eq!(
        w.engine.drive(&id).await.unwrap(),
        Driven::Finished(RolloutState::Succeeded)
    );
    assert_eq!(w.fake.deploys().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_answers_fails_its_step_at_its_deadline() {
    let fake = Fake::default();
    fake.hang.lock().unwrap().insert("web-1".into());
    let w = world(fake, &[1]).await;
    let mut r0 = ring(0, 0, OnFailure::Halt);
    r0.host_deadline_ms = 300;
    let id = start(&w, vec![r0]).await;
    let t0 = Instant::now();
    assert_eq!(
        w.engine.drive(&id).await.unwrap(),
        Driven::Finished(RolloutState::Halted)
    );
    assert!(t0.elapsed() < Duration::from_secs(3));
    let h = &w.store.hosts(&id).await.unwrap()[0];
    assert_eq!(h.step, HostStep::Failed);
    assert!(
        h.reason.contains("did not finish within its deadline"),
        "{}",
        h.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gate_crossed_during_the_bake_fails_the_ring() {
    let w = world(Fake::default(), &[2]).await;
    let mut r0 = ring(0, 5_000, OnFailure::RollbackRing);
    r0.gates = Some(RingGates {
        max_restarts: 1,
        max_conn_errors: 0,
        max_unhealthy_hosts: 0,
    });
    let id = start(&w, vec![r0]).await;
    let (store, fake) = (w.store.clone(), w.fake.clone());
    let id2 = id.clone();
    tokio::spawn(async move {
        // Once baking, web-2's app starts crash-looping.
        loop {
            if store.rollout(&id2).await.unwrap().unwrap().bake_until_ms > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        fake.health.lock().unwrap().insert(
            "web-2".into(),
            HostHealth {
                version: "1.1.0".into(),
                running: true,
                restarts: 3,
                conn_errors: 0,
            },
        );
    });
    let t0 = Instant::now();
    assert_eq!(
        w.engine.drive(&id).await.unwrap(),
        Driven::Finished(RolloutState::RolledBack)
    );
    assert!(
        t0.elapsed() < Duration::from_secs(4),
        "the gate ended the bake early"
    );
    let r = w.store.rollout(&id).await.unwrap().unwrap();
    assert!(
        r.reason
            .contains("host web-2: 3 instance restarts during the bake (gate max_restarts = 1)"),
        "{}",
        r.reason
    );
    // Both hosts of the ring roll back at once (max_parallel 2): in either order.
    let mut rolled = w.fake.rollbacks();
    rolled.sort();
    assert_eq!(rolled, ["web-1", "web-2"]);
}

/// Polls the store until `ok` holds for the rollout (10 s at most).
async fn until_rollout(w: &World, id: &str, ok: impl Fn(&RolloutRecord) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if ok(&w.store.rollout(id).await.unwrap().unwrap()) {
            return;
        }
        assert!(Instant::now() < deadline, "the rollout never got there");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn restarts(w: &World, agent: &str, n: u64) {
    w.fake.health.lock().unwrap().insert(
        agent.into(),
        HostHealth {
            version: "1.1.0".into(),
            running: true,
            restarts: n,
            conn_errors: 0,
        },
    );
}

/// A ring of two hosts baking 5 s with `max_restarts = 2`: web-2 restarts twice while the
/// first driver watches, the driver dies (its task is dropped mid-bake, as a kill would), and
/// web-2's counter reads `after_resume` for the driver that resumes the bake.
async fn restarts_across_a_resume(after_resume: u64) -> (World, String, Driven) {
    let w = world(Fake::default(), &[2]).await;
    let mut r0 = ring(0, 5_000, OnFailure::Halt);
    r0.gates = Some(RingGates {
        max_restarts: 2,
        max_conn_errors: 0,
        max_unhealthy_hosts: 0,
    });
    let id = start(&w, vec![r0]).await;
    let engine = w.engine.clone();
    let id2 = id.clone();
    let first = tokio::spawn(async move { engine.drive(&id2).await });
    until_rollout(&w, &id, |r| r.bake_counts.len() == 2).await;
    restarts(&w, "web-2", 2);
    until_rollout(&w, &id, |r| {
        r.bake_counts.get("web-2").is_some_and(|c| c.restarts == 2)
    })
    .await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    restarts(&w, "web-2", after_resume);
    let driven = w.engine.drive(&id).await.unwrap();
    (w, id, driven)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_before_and_after_a_resumed_bake_cross_the_gate_together() {
    // 2 restarts before the resume, 1 after (the counter reads 3): 3 in all.
    let (w, id, driven) = restarts_across_a_resume(3).await;
    assert_eq!(driven, Driven::Finished(RolloutState::Halted));
    let r = w.store.rollout(&id).await.unwrap().unwrap();
    assert!(
        r.reason
            .contains("host web-2: 3 instance restarts during the bake (gate max_restarts = 2)"),
        "{}",
        r.reason
    );
    assert!(r.bake_counts.is_empty(), "{:?}", r.bake_counts);
    assert!(events(&w).contains(&"rollout.takeover".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_counter_that_was_reset_counts_on_from_zero() {
    // The agent restarted between the readings: its counter starts again and reads 1, lower
    // than the 2 last read. That 1 is new, so 3 in all.
    let (w, id, driven) = restarts_across_a_resume(1).await;
    assert_eq!(driven, Driven::Finished(RolloutState::Halted));
    let r = w.store.rollout(&id).await.unwrap().unwrap();
    assert!(
        r.reason
            .contains("host web-2: 3 instance restarts during the bake"),
        "{}",
        r.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_within_the_gate_across_a_resume_pass_the_bake() {
    // 2 before, none after: within max_restarts = 2.
    let (w, id, driven) = restarts_across_a_resume(2).await;
    assert_eq!(driven, Driven::Finished(RolloutState::Succeeded));
    let r = w.store.rollout(&id).await.unwrap().unwrap();
    assert!(r.bake_counts.is_empty(), "{:?}", r.bake_counts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_rollout_resumes_under_a_new_epoch_and_records_the_interruption() {
    let w = world(Fake::default(), &[2, 1]).await;
    let id = start(
        &w,
        vec![ring(0, 0, OnFailure::Halt), ring(1, 0, OnFailure::Halt)],
    )
    .await;
    // An earlier process took the lease, passed ring 0's web-1 and died with web-2 running.
    let old = w
        .store
        .acquire_lease(&id, "replica-a", 0, 1)
        .await
        .unwrap()
        .unwrap();
    let host = |agent: &str, step| HostRecord {
        rollout_id: id.clone(),
        agent_id: agent.into(),
        ring: 0,
        action: HostAction::Deploy,
        step,
        job_id: "j".into(),
        reason: String::new(),
        updated_ms: 0,
    };
    w.store
        .put_host(host("web-1", HostStep::Succeeded), old.epoch)
        .await
        .unwrap();
    w.store
        .put_host(host("web-2", HostStep::Running), old.epoch)
        .await
        .unwrap();
    let mut r = w.store.rollout(&id).await.unwrap().unwrap();
    r.state = RolloutState::Running;
    w.store.update_rollout(r, old.epoch).await.unwrap();

    assert_eq!(
        w.engine.drive(&id).await.unwrap(),
        Driven::Finished(RolloutState::Succeeded)
    );
    // web-1 is not sent again; web-2 is re-dispatched (an attach on the agent), epoch 2.
    let sent = w.fake.sent();
    let summary: Vec<(String, u64)> = sent.iter().map(|s| (s.agent.clone(), s.epoch)).collect();
    assert_eq!(summary, [("web-2".into(), 2), ("web-3".into(), 2)]);
    let ev = events(&w);
    assert!(ev.contains(&"rollout.takeover".into()), "{ev:?}");
    assert!(ev.contains(&"host.interrupted".into()), "{ev:?}");
    assert!(!ev.iter().any(|e| e.contains("cancel")), "{ev:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_the_next_ring_resume_goes_on_and_abort_rolls_back() {
    let w = world(Fake::default(), &[1, 1]).await;
    let id = start(
        &w,
        vec![
            ring(0, 300, OnFailure::RollbackAll),
            ring(1, 0, OnFailure::RollbackAll),
        ],
    )
    .await;
    let req = |control| ControlRequest {
        rollout_id: id.clone(),
        control,
        by: "ops-2".into(),
        at_ms: gantry_client::clock::now_ms(),
    };
    let engine = w.engine.clone();
    let id2 = id.clone();
    let driver = tokio::spawn(async move { engine.drive(&id2).await.unwrap() });
    // Pause while ring 0 bakes.
    loop {
        if w.store.rollout(&id).await.unwrap().unwrap().bake_until_ms > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.store.set_control(req(Control::Pause)).await.unwrap();
    loop {
        if w.store.rollout(&id).await.unwrap().unwrap().state == RolloutState::Paused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        w.fake.deploys(),
        ["web-1"],
        "nothing dispatched while paused"
    );
    w.store.set_control(req(Control::Resume)).await.unwrap();
    // The bake (already over) ends and ring 1 starts; then abort.
    loop {
        if w.fake.deploys().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    w.store.set_control(req(Control::Abort)).await.unwrap();
    let end = driver.await.unwrap();
    // The abort lands after ring 1 passed (it had no bake) or during it: either way the run
    // ends rolled back or succeeded, never stuck; with ring 1 still current it rolls back.
    let r = w.store.rollout(&id).await.unwrap().unwrap();
    let ev = events(&w);
    assert!(
        ev.contains(&"rollout.paused".into()) && ev.contains(&"rollout.resumed".into()),
        "{ev:?}"
    );
    match end {
        Driven::Finished(RolloutState::RolledBack) => {
            assert!(r.reason.starts_with("aborted by ops-2"), "{}", r.reason);
            assert_eq!(w.fake.rollbacks(), ["web-2", "web-1"]);
            assert!(ev.contains(&"rollout.aborted".into()), "{ev:?}");
        }
        Driven::Finished(RolloutState::Succeeded) => {}
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_whose_lease_was_taken_stops_without_sending_more() {
    let fake = Fake {
        delay: Duration::from_millis(200),
        ..Fake::default()
    };
    let w = world(fake, &[3]).await;
    let mut r0 = ring(0, 0, OnFailure::Halt);
    r0.max_parallel = "1".into();
    let id = start(&w, vec![r0]).await;
    let engine = w.engine.clone();
    let id2 = id.clone();
    let driver = tokio::spawn(async move { engine.drive(&id2).await.unwrap() });
    loop {
        if !w.fake.sent().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Another replica takes the lease (as if this one had been frozen past it).
    let far = gantry_client::clock::now_ms() + 60_000;
    w.store
        .acquire_lease(&id, "replica-b", far, 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(driver.await.unwrap(), Driven::LeaseLost);
    assert_eq!(
        w.fake.sent().len(),
        1,
        "nothing sent after the lease was lost"
    );
}

async fn add_agent(w: &World, id: &str, ring: u32) {
    w.store
        .put_agent(AgentRecord {
            id: id.into(),
            addr: "127.0.0.1:7999".into(),
            version: "0.1.0".into(),
            environment: "prod".into(),
            labels: [("ring".to_string(), ring.to_string())].into(),
            reachable: true,
            last_seen_ms: 1,
            error: String::new(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_joining_a_ring_after_the_rollout_succeeded_is_brought_up_to_date_once() {
    let w = world(Fake::default(), &[1, 1]).await;
    let id = start(
        &w,
        vec![ring(0, 0, OnFailure::Halt), ring(1, 0, OnFailure::Halt)],
    )
    .await;
    assert_eq!(
        w.engine.drive(&id).await.unwrap(),
        Driven::Finished(RolloutState::Succeeded)
    );
    assert_eq!(
        w.engine.catch_up_finished(&id).await.unwrap(),
        0,
        "nobody is late"
    );
    // Two new machines: one labelled for ring 0, one for ring 1.
    add_agent(&w, "web-9", 1).await;
    add_agent(&w, "web-8", 0).await;
    assert_eq!(w.engine.catch_up_finished(&id).await.unwrap(), 2);
    let late: Vec<(String, u32)> = w
        .fake
        .sent()
        .into_iter()
        .skip(2)
        .map(|s| (s.agent, s.ring))
        .collect();
    assert_eq!(late, [("web-8".to_owned(), 0), ("web-9".to_owned(), 1)]);
    let hosts = w.store.hosts(&id).await.unwrap();
    assert_eq!(hosts.len(), 4);
    assert!(
        hosts.iter().all(|h| h.step == HostStep::Succeeded),
        "{hosts:?}"
    );
    let r = w.store.rollout(&id).await.unwrap().unwrap();
    assert_eq!(
        r.state,
        RolloutState::Succeeded,
        "the rollout stays as it was"
    );
    assert!(events(&w).contains(&"rollout.catching_up".to_owned()));
    // Once: the next pass finds nobody late.
    assert_eq!(w.engine.catch_up_finished(&id).await.unwrap(), 0);
    assert_eq!(w.fake.sent().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_host_gets_only_the_newest_release_and_never_an_expired_plan() {
    let w = world(Fake::default(), &[1]).await;
    let old = start_plan(
        &w,
        "rel-1",
        1,
        in_an_hour(),
        vec![ring(0, 0, OnFailure::Halt)],
    )
    .await;
    assert_eq!(
        w.engine.drive(&old).await.unwrap(),
        Driven::Finished(RolloutState::Succeeded)
    );
    let new = start_plan(
        &w,
        "rel-2",
        2,
        in_an_hour(),
        vec![ring(0, 0, OnFailure::Halt)],
    )
    .await;
    assert_eq!(
        w.engine.drive(&new).await.unwrap(),
        Driven::Finished(RolloutState::Succeeded)
    );
    add_agent(&w, "web-7", 0).await;
    assert_eq!(
        w.engine.catch_up_finished(&old).await.unwrap(),
        0,
        "a newer rollout of web in prod succeeded since"
    );
    assert_eq!(w.engine.catch_up_finished(&new).await.unwrap(), 1);
    let expired = start_plan(
        &w,
        "rel-3",
        3,
        in_an_hour() - 7200,
        vec![ring(0, 0, OnFailure::Halt)],
    )
    .await;
    // Mark it succeeded as a driver would have (its plan expired since).
    let mut r = w.store.rollout(&expired).await.unwrap().unwrap();
    r.state = RolloutState::Succeeded;
    let lease = w
        .store
        .acquire_lease(&expired, "replica-a", 1, 60_000)
        .await
        .unwrap()
        .unwrap();
    w.store.update_rollout(r, lease.epoch).await.unwrap();
    add_agent(&w, "web-6", 0).await;
    assert_eq!(w.engine.catch_up_finished(&expired).await.unwrap(), 0);
    // rel-3 is the newest success: rel-2 no longer hands its older release to anyone.
    assert_eq!(w.engine.catch_up_finished(&new).await.unwrap(), 0);
    let to: Vec<String> = w.fake.deploys();
    assert_eq!(to, ["web-1", "web-1", "web-7"], "{to:?}");
}
