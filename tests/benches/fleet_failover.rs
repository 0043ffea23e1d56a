//! How fast a surviving replica takes a rollout over when its leader dies: three real agents on
//! loopback, two `gantry server` replicas on one real PostgreSQL (started by the bench, as the
//! conformance tests do), and `GANTRY_BENCH_RUNS` rollouts (default 5), each one host at a time.
//! In each run, as soon as the leader's audit log shows its first `host.dispatched`, the leader
//! is killed with SIGKILL; the bench reads from the survivor's audit log the time from the kill
//! to its `rollout.takeover` and to its first `host.dispatched`, waits for the rollout to
//! succeed, and starts the killed replica again for the next run. The lease period is
//! `GANTRY_BENCH_LEASE` (default `10s`, the service's default); `engine.poll` is 100 ms.
//! Run with release binaries:
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p gantry-tests --bench fleet_failover
//! ```

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use gantry_proto::v1::{self, OnFailure};
use gantry_service::store::pg_test::PgServer;
use gantry_tests::fleet::{plan, release, ring_of_labels, sign_plan};
use gantry_tests::service::{Fleet, Service};
use gantry_tests::{make_artifact, wait_until};
use prost::Message;

fn ts(v: &serde_json::Value) -> anyhow::Result<SystemTime> {
    let t = v["ts"].as_str().context("entry without ts")?;
    Ok(humantime::parse_rfc3339(t)?)
}

/// The service's own audit entries about rollout `id`, oldest first.
fn service_entries(svc: &Service, id: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    Ok(svc
        .audit_entries()?
        .into_iter()
        .filter(|e| e["rollout"] == id)
        .collect())
}

fn rollout_state(svc: &Service, id: &str) -> (String, String) {
    let v = svc
        .gantry(&["rollout", "status", id, "--json"])
        .ok()
        .and_then(|o| serde_json::from_str::<serde_json::Value>(o.stdout.trim()).ok())
        .unwrap_or_default();
    let s = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
    (s("state"), s("leader"))
}

struct Failover {
    takeover: Duration,
    dispatch: Duration,
}

fn one_run(
    fleet: &Fleet,
    replicas: &mut [(String, Service); 2],
    run: usize,
) -> anyhow::Result<Failover> {
    let env = fleet.env();
    let id = format!("failover-{run}");
    let version = format!("5.{run}.0");
    let artifact = make_artifact(env, &version, "")?;
    let ring = v1::Ring {
        max_parallel: "1".into(),
        host_deadline_ms: 120_000,
        on_failure: OnFailure::Halt.into(),
        ..ring_of_labels("all", &[("ring", "0")])
    };
    let p = plan(
        &id,
        "production",
        release(&version, &artifact, 1)?,
        vec![ring],
    );
    let signed = sign_plan(&p, &[&env.keys.deployer])?;
    let path = env.root.join(format!("{id}.plan"));
    std::fs::write(&path, signed.encode_to_vec())?;
    // Each replica keeps artifacts in its own data dir: hand it to both (the second start is
    // refused as existing, after keeping the artifact).
    for (i, (_, svc)) in replicas.iter().enumerate() {
        let out = svc.gantry(&[
            "rollout",
            "start",
            &path.to_string_lossy(),
            "--artifact",
            &artifact.to_string_lossy(),
        ])?;
        out.assert_code(if i == 0 { 0 } else { 2 });
    }
    let mut leader = String::new();
    wait_until(
        Duration::from_secs(120),
        "the leader's first dispatch",
        || {
            leader = rollout_state(&replicas[0].1, &id).1;
            replicas
                .iter()
                .find(|(name, _)| *name == leader)
                .and_then(|(_, svc)| service_entries(svc, &id).ok())
                .is_some_and(|e| e.iter().any(|e| e["event"] == "host.dispatched"))
        },
    )?;
    let dead = replicas
        .iter()
        .position(|(name, _)| *name == leader)
        .context("the leader is neither replica")?;
    let survivor = 1 - dead;
    let killed_at = SystemTime::now();
    replicas[dead].1.kill_9()?;
    let mut took = None;
    wait_until(
        Duration::from_secs(120),
        "the survivor's takeover and first dispatch",
        || {
            let Ok(entries) = service_entries(&replicas[survivor].1, &id) else {
                return false;
            };
            let Some(t) = entries
                .iter()
                .position(|e| e["event"] == "rollout.takeover")
            else {
                return false;
            };
            let d = entries[t..]
                .iter()
                .find(|e| e["event"] == "host.dispatched");
            took = d.map(|d| (entries[t].clone(), d.clone()));
            took.is_some()
        },
    )?;
    let (takeover, dispatched) = took.context("no takeover")?;
    let mut state = String::new();
    wait_until(Duration::from_secs(300), "the rollout to end", || {
        state = rollout_state(&replicas[survivor].1, &id).0;
        matches!(
            state.as_str(),
            "succeeded" | "halted" | "rolled_back" | "aborted"
        )
    })?;
    if state != "succeeded" {
        bail!(
            "rollout {id} ended {state}\n{}",
            replicas[survivor].1.log_tail()
        );
    }
    replicas[dead].1.restart()?;
    Ok(Failover {
        takeover: ts(&takeover)?.duration_since(killed_at)?,
        dispatch: ts(&dispatched)?.duration_since(killed_at)?,
    })
}

fn spread(mut v: Vec<Duration>) -> String {
    v.sort();
    let s = |d: Duration| format!("{:.2}", d.as_secs_f64());
    format!(
        "min {} s, median {} s, max {} s",
        s(v[0]),
        s(v[v.len() / 2]),
        s(v[v.len() - 1])
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let runs: usize = std::env::var("GANTRY_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .max(1);
    let lease = std::env::var("GANTRY_BENCH_LEASE").unwrap_or_else(|_| "10s".into());
    let period = humantime::parse_duration(&lease).context("GANTRY_BENCH_LEASE")?;
    let Some(pg) = PgServer::start() else {
        bail!("no PostgreSQL installed");
    };
    let url = pg.url();
    let fleet = Fleet::start(&[
        ("web-1", &[("ring", "0")]),
        ("web-2", &[("ring", "0")]),
        ("web-3", &[("ring", "0")]),
    ])?;
    let replica = |name: &str| -> anyhow::Result<(String, Service)> {
        let dir = fleet.env().root.join(name);
        let config = fleet.write_config(&dir, name, Some(&url), &lease)?;
        Ok((name.to_owned(), Service::start(&fleet, &config)?))
    };
    let mut replicas = [replica("ctl-a")?, replica("ctl-b")?];
    println!(
        "{}, load average before: {}",
        humantime::format_rfc3339_seconds(SystemTime::now()),
        loadavg()
    );
    let (mut takeovers, mut dispatches) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let f = one_run(&fleet, &mut replicas, run)?;
        println!(
            "run {run}: kill -9 to rollout.takeover {:.2} s, to first host.dispatched {:.2} s",
            f.takeover.as_secs_f64(),
            f.dispatch.as_secs_f64()
        );
        takeovers.push(f.takeover);
        dispatches.push(f.dispatch);
    }
    println!(
        "{runs} runs, lease.period {:.1} s, engine.poll 0.1 s:\n  kill -9 to rollout.takeover: {}\n  kill -9 to first host.dispatched: {}",
        period.as_secs_f64(),
        spread(takeovers),
        spread(dispatches)
    );
    println!("load average after: {}", loadavg());
    Ok(())
}
