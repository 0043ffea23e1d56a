//! What the controller service adds to a fleet rollout: N real agents on loopback (default 50,
//! `GANTRY_BENCH_AGENTS`), one `gantry server` over them (embedded store), and two plans with
//! `bake = 0`:
//!
//! * **one at a time** (`max_parallel = 1`): the rollout's wall time against the sum of the
//!   hosts' own deploy times (each agent's `job.accepted` to `job.succeeded`); the difference,
//!   per host, is what the service adds (artifact check and upload, dispatch signing, the
//!   store writes, following the job);
//! * **all at once** (`max_parallel = 100%`): wall time from `rollout.started` to
//!   `rollout.succeeded`.
//!
//! For each: the service's CPU time (utime + stime from `/proc/PID/stat`) and its resident
//! memory (VmRSS, VmHWM). Run with release binaries:
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p gantry-tests --bench fleet_dispatch
//! ```

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use gantry_proto::v1::{self, OnFailure};
use gantry_tests::fleet::{plan, release, ring_of_labels, sign_plan};
use gantry_tests::process::cpu_ticks;
use gantry_tests::service::{Fleet, Service};
use gantry_tests::{audit_lines, make_artifact, wait_until};
use prost::Message;

fn ts(v: &serde_json::Value) -> anyhow::Result<SystemTime> {
    let t = v["ts"].as_str().context("entry without ts")?;
    Ok(humantime::parse_rfc3339(t)?)
}

fn status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field}"))?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("odd status line")?
        .parse()?)
}

struct Measured {
    wall: Duration,
    host_sum: Duration,
    cpu_ms: u64,
    split: Split,
}

/// Where the time outside the hosts' own deploys goes, from the timestamps of the service's
/// `host.dispatched` (written after the host's `running` step is committed) and the agents'
/// `job.accepted` and `job.succeeded`; meaningful one host at a time.
#[derive(Default)]
struct Split {
    /// `rollout.started` to the first `host.dispatched`.
    lead: Duration,
    /// Each host's `host.dispatched` to its `job.accepted`: `HasArtifact` and the upload,
    /// signing the dispatch, the `Dispatch` RPC and the agent's admission.
    to_accepted: Duration,
    /// Each host's `job.succeeded` to the next host's `host.dispatched`: the job's end reaching
    /// the service over the followed stream, the host's `succeeded` and the next host's
    /// `running` commits, the operator-request check and the engine's pacing.
    between: Duration,
    /// The last `job.succeeded` to `rollout.succeeded`.
    tail: Duration,
}

fn rollout(
    fleet: &Fleet,
    svc: &Service,
    id: &str,
    version: &str,
    parallel: &str,
) -> anyhow::Result<Measured> {
    let env = fleet.env();
    let artifact = make_artifact(env, version, "")?;
    let ring = v1::Ring {
        max_parallel: parallel.into(),
        host_deadline_ms: 120_000,
        on_failure: OnFailure::Halt.into(),
        ..ring_of_labels("all", &[("ring", "0")])
    };
    let p = plan(
        id,
        "production",
        release(version, &artifact, 1)?,
        vec![ring],
    );
    let signed = sign_plan(&p, &[&env.keys.deployer])?;
    let path = env.root.join(format!("{id}.plan"));
    std::fs::write(&path, signed.encode_to_vec())?;
    let pid = svc.pid().context("the service is not running")?;
    let cpu_before = cpu_ticks(pid)?;
    svc.gantry(&[
        "rollout",
        "start",
        &path.to_string_lossy(),
        "--artifact",
        &artifact.to_string_lossy(),
    ])?
    .assert_code(0);
    let mut state = String::new();
    wait_until(Duration::from_secs(1800), "the rollout to end", || {
        let out = svc.gantry(&["rollout", "status", id, "--json"]);
        state = out
            .ok()
            .and_then(|o| serde_json::from_str::<serde_json::Value>(o.stdout.trim()).ok())
            .and_then(|v| v["state"].as_str().map(str::to_owned))
            .unwrap_or_default();
        matches!(
            state.as_str(),
            "succeeded" | "halted" | "rolled_back" | "aborted"
        )
    })?;
    if state != "succeeded" {
        bail!("rollout {id} ended {state}\n{}", svc.log_tail());
    }
    let cpu_ms = (cpu_ticks(pid)? - cpu_before) * 10;
    let mut started = None;
    let mut ended = None;
    let mut dispatched: Vec<(serde_json::Value, SystemTime)> = Vec::new();
    for e in svc.audit_entries()? {
        if e["rollout"] == id {
            match e["event"].as_str() {
                Some("rollout.started") => started = Some(ts(&e)?),
                Some("rollout.succeeded") => ended = Some(ts(&e)?),
                Some("host.dispatched") => dispatched.push((e["job"].clone(), ts(&e)?)),
                _ => {}
            }
        }
    }
    let started = started.context("no rollout.started")?;
    let ended = ended.context("no rollout.succeeded")?;
    let wall = ended.duration_since(started)?;
    let job = |m: &gantry_tests::service::Member| -> anyhow::Result<(serde_json::Value, SystemTime, SystemTime)> {
        let lines = audit_lines(&m.env)?;
        let accepted = lines
            .iter()
            .find(|e| e["event"] == "job.accepted" && e["plan_id"] == id)
            .context("no job.accepted")?;
        let job_id = accepted["job_id"].clone();
        let done = lines
            .iter()
            .find(|e| e["event"] == "job.succeeded" && e["job_id"] == job_id)
            .context("no job.succeeded")?;
        Ok((job_id, ts(accepted)?, ts(done)?))
    };
    let mut host_sum = Duration::ZERO;
    let mut jobs = Vec::new();
    for m in &fleet.members {
        let (job_id, accepted, done) = job(m)?;
        host_sum += done.duration_since(accepted)?;
        jobs.push((job_id, accepted, done));
    }
    let of = |job_id: &serde_json::Value| {
        jobs.iter()
            .find(|j| &j.0 == job_id)
            .with_context(|| format!("no agent ran {job_id}"))
    };
    let since =
        |later: SystemTime, earlier: SystemTime| later.duration_since(earlier).unwrap_or_default();
    let mut split = Split::default();
    if let (Some(first), Some(last)) = (dispatched.first(), dispatched.last()) {
        split.lead = since(first.1, started);
        split.tail = since(ended, of(&last.0)?.2);
    }
    for (k, (job_id, at)) in dispatched.iter().enumerate() {
        let this = of(job_id)?;
        split.to_accepted += since(this.1, *at);
        if let Some((_, next_at)) = dispatched.get(k + 1) {
            split.between += since(*next_at, this.2);
        }
    }
    Ok(Measured {
        wall,
        host_sum,
        cpu_ms,
        split,
    })
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::var("GANTRY_BENCH_AGENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let ids: Vec<String> = (1..=n).map(|i| format!("web-{i}")).collect();
    let labels: &[(&str, &str)] = &[("ring", "0")];
    let agents: Vec<(&str, &[(&str, &str)])> = ids.iter().map(|id| (id.as_str(), labels)).collect();
    eprintln!("starting {n} agents …");
    let fleet = Fleet::start(&agents)?;
    let dir = fleet.env().root.join("bench-service");
    let config = fleet.write_config(&dir, "bench", None, "10s")?;
    let svc = Service::start(&fleet, &config)?;
    let pid = svc.pid().context("the service is not running")?;
    println!(
        "service after start: VmRSS {} KiB, VmHWM {} KiB",
        status_kib(pid, "VmRSS:")?,
        status_kib(pid, "VmHWM:")?
    );
    let seq = rollout(&fleet, &svc, "bench-seq", "2.0.0", "1")?;
    let per_host_ms = (seq.wall.as_secs_f64() - seq.host_sum.as_secs_f64()) * 1000.0 / n as f64;
    println!(
        "one at a time, {n} hosts: wall {:.3} s, sum of host deploys {:.3} s, service adds {:.1} ms per host; service CPU {} ms ({:.1} ms per host)",
        seq.wall.as_secs_f64(),
        seq.host_sum.as_secs_f64(),
        per_host_ms,
        seq.cpu_ms,
        seq.cpu_ms as f64 / n as f64
    );
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let per = |d: Duration| ms(d) / n as f64;
    println!(
        "one at a time, per host: dispatched -> accepted {:.1} ms (artifact check and upload, dispatch RPC, admission), succeeded -> next dispatched {:.1} ms (job end over the stream, two store commits, pacing); start -> first dispatch {:.1} ms, last succeeded -> rollout.succeeded {:.1} ms",
        per(seq.split.to_accepted),
        ms(seq.split.between) / n.saturating_sub(1).max(1) as f64,
        ms(seq.split.lead),
        ms(seq.split.tail)
    );
    let par = rollout(&fleet, &svc, "bench-par", "3.0.0", "100%")?;
    println!(
        "all at once, {n} hosts: wall {:.3} s, sum of host deploys {:.3} s; service CPU {} ms ({:.1} ms per host)",
        par.wall.as_secs_f64(),
        par.host_sum.as_secs_f64(),
        par.cpu_ms,
        par.cpu_ms as f64 / n as f64
    );
    println!(
        "service after both: VmRSS {} KiB, VmHWM {} KiB",
        status_kib(pid, "VmRSS:")?,
        status_kib(pid, "VmHWM:")?
    );
    Ok(())
}
