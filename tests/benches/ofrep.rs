//! OFREP on loopback against a real `gantry-agent` (release build):
//!
//! * **evaluation**: `GANTRY_BENCH_CONNS` keep-alive HTTP/1.1 connections (default 16, hyper's
//!   client, one request in flight each) send `POST /ofrep/v1/evaluate/flags/new-checkout` (a
//!   `fractional` flag) with a different targeting key each time, for `GANTRY_BENCH_SECS`
//!   (default 10) after a 1 s warm-up: requests/s, latency percentiles, the agent's CPU;
//! * **kill-switch propagation**: `GANTRY_BENCH_WATCHERS` (default 100) connections on
//!   `GET /ofrep/v1/events`; `GANTRY_BENCH_ROUNDS` (default 20) pushes over gRPC (mutual TLS,
//!   `gantry_client::flags::push`), alternately switching the flag off and on: per watcher and
//!   push, the time from sending `PushFlags` to the watcher's event (an upper bound of the
//!   time from the push being accepted: it includes the RPC), and the RPC's own time.
//!
//! The load generator runs on the same two cores as the agent. The 1-minute load average is
//! printed before and after. Run with release binaries:
//!
//! ```sh
//! cargo build --release --bins && cargo bench -p gantry-tests --bench ofrep
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::bail;
use gantry_client::{Agent as Client, ConnSettings};
use gantry_proto::keys::SigningKey;
use gantry_proto::v1;
use gantry_tests::ofrep::enable_flags;
use gantry_tests::process::cpu_ticks;
use gantry_tests::sse::Watchers;
use gantry_tests::{Agent, TestEnv, wait_until};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prost::Message;

const FLAG: &str = "new-checkout";

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn definition(on: bool) -> Vec<u8> {
    let state = if on { "ENABLED" } else { "DISABLED" };
    serde_json::json!({"flags": {FLAG: {
        "state": state, "defaultVariant": "off",
        "variants": {"on": true, "off": false},
        "targeting": {"fractional": [["on", 25], ["off", 75]]}
    }}})
    .to_string()
    .into_bytes()
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn signed(agent_id: &str, version: u64, on: bool, key: &SigningKey) -> v1::SignedFlags {
    let now = unix_now();
    let doc = v1::FlagSet {
        app: "web".to_owned(),
        version,
        issued_at: now,
        expires_at: now + 600,
        agent_ids: vec![agent_id.to_owned()],
        definition_json: definition(on),
        reason: "bench".to_owned(),
        ..Default::default()
    };
    let mut s = v1::SignedFlags {
        flags: doc.encode_to_vec(),
        signatures: Vec::new(),
    };
    gantry_client::flags::add_flags_signature(&mut s, key);
    s
}

/// Sends requests on one keep-alive connection until `stop`; the latency of each, in ns.
async fn client(addr: SocketAddr, n: usize, stop: Arc<AtomicBool>) -> anyhow::Result<Vec<u64>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    let path = format!("/ofrep/v1/evaluate/flags/{FLAG}");
    let mut out = Vec::with_capacity(1 << 20);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let body = format!(r#"{{"context":{{"targetingKey":"user-{n}-{i}"}}}}"#);
        let req = hyper::Request::post(path.as_str())
            .header(hyper::header::HOST, "127.0.0.1")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?;
        let t = Instant::now();
        sender.ready().await?;
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        let took = t.elapsed();
        if status != hyper::StatusCode::OK || !bytes.starts_with(b"{") {
            bail!("answer {status}: {}", String::from_utf8_lossy(&bytes));
        }
        out.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }
    Ok(out)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn us(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

fn ms(ns: u64) -> String {
    format!("{:.2} ms", ns as f64 / 1e6)
}

fn evaluation(addr: SocketAddr, agent_pid: Option<u32>) -> anyhow::Result<()> {
    let conns = usize::try_from(env_num("GANTRY_BENCH_CONNS", 16))?;
    let secs = env_num("GANTRY_BENCH_SECS", 10);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    println!(
        "== evaluation: {conns} keep-alive connections, {secs} s (load average before: {})",
        load_average()
    );
    let (lat, elapsed, cpu) = rt.block_on(async {
        // Warm-up: the agent's allocator, the connections, the caches.
        let stop = Arc::new(AtomicBool::new(false));
        let warm: Vec<_> = (0..conns)
            .map(|n| tokio::spawn(client(addr, n, Arc::clone(&stop))))
            .collect();
        tokio::time::sleep(Duration::from_secs(1)).await;
        stop.store(true, Ordering::Relaxed);
        for w in warm {
            w.await??;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let cpu0 = agent_pid.map(cpu_ticks).transpose()?;
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..conns)
            .map(|n| tokio::spawn(client(addr, n, Arc::clone(&stop))))
            .collect();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        stop.store(true, Ordering::Relaxed);
        let mut lat = Vec::new();
        for t in tasks {
            lat.extend(t.await??);
        }
        let elapsed = t0.elapsed();
        let cpu1 = agent_pid.map(cpu_ticks).transpose()?;
        let cpu = cpu0.zip(cpu1).map(|(a, b)| b - a);
        anyhow::Ok((lat, elapsed, cpu))
    })?;
    let mut lat = lat;
    lat.sort_unstable();
    let rps = lat.len() as f64 / elapsed.as_secs_f64();
    println!(
        "requests {} in {:.2} s: {:.0} requests/s; latency p50 {} p90 {} p99 {} p99.9 {} max {}",
        lat.len(),
        elapsed.as_secs_f64(),
        rps,
        us(pct(&lat, 0.50)),
        us(pct(&lat, 0.90)),
        us(pct(&lat, 0.99)),
        us(pct(&lat, 0.999)),
        us(lat.last().copied().unwrap_or(0)),
    );
    if let Some(ticks) = cpu {
        println!(
            "agent CPU: {:.2} s over {:.2} s ({:.0} % of one core)",
            ticks as f64 / 100.0,
            elapsed.as_secs_f64(),
            ticks as f64 / elapsed.as_secs_f64()
        );
    }
    println!("load average after: {}", load_average());
    Ok(())
}

fn propagation(
    env: &TestEnv,
    agent: &Agent,
    ofrep: SocketAddr,
    key: &SigningKey,
) -> anyhow::Result<()> {
    let watchers_n = usize::try_from(env_num("GANTRY_BENCH_WATCHERS", 100))?;
    let rounds = env_num("GANTRY_BENCH_ROUNDS", 20);
    println!(
        "\n== kill-switch propagation: {watchers_n} watchers, {rounds} pushes (load average before: {})",
        load_average()
    );
    let watchers = Watchers::start(ofrep, watchers_n, false)?;
    wait_until(
        Duration::from_secs(30),
        "every watcher got version 1",
        || watchers.count_with(1, 0) == watchers_n,
    )
    .map_err(|e| anyhow::anyhow!("{e}\n{}", watchers.describe()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let settings = settings(env, agent);
    let client = rt.block_on(Client::connect(&settings))?;
    let mut delays = Vec::new();
    let mut rpcs = Vec::new();
    for round in 0..rounds {
        let version = round + 2;
        let doc = signed(&env.agent_id, version, round % 2 == 1, key);
        let t0 = Instant::now();
        rt.block_on(gantry_client::flags::push(&client, doc))?;
        rpcs.push(u64::try_from(t0.elapsed().as_nanos())?);
        wait_until(
            Duration::from_secs(30),
            "every watcher got the push",
            || watchers.count_with(version, 0) == watchers_n,
        )
        .map_err(|e| anyhow::anyhow!("{e}\n{}", watchers.describe()))?;
        for at in watchers.arrivals(version).into_iter().flatten() {
            delays.push(u64::try_from(at.saturating_duration_since(t0).as_nanos())?);
        }
    }
    delays.sort_unstable();
    rpcs.sort_unstable();
    println!(
        "{} events: PushFlags sent -> event p50 {} p99 {} max {}; PushFlags RPC p50 {} max {}",
        delays.len(),
        ms(pct(&delays, 0.50)),
        ms(pct(&delays, 0.99)),
        ms(delays.last().copied().unwrap_or(0)),
        ms(pct(&rpcs, 0.50)),
        ms(rpcs.last().copied().unwrap_or(0)),
    );
    println!("load average after: {}", load_average());
    Ok(())
}

/// The controller's connection to `agent`.
fn settings(env: &TestEnv, agent: &Agent) -> ConnSettings {
    ConnSettings {
        addr: agent.addr.to_string(),
        agent_id: env.agent_id.clone(),
        ca: env.pki.ca.clone(),
        cert: env.pki.controller_cert.clone(),
        cert_key: env.pki.controller_key.clone(),
        witness_dir: None,
        via: None,
    }
}

fn main() -> anyhow::Result<()> {
    let env = TestEnv::new()?;
    let (keys, ofrep) = enable_flags(&env)?;
    let agent = Agent::start(&env)?;
    let key = SigningKey::read_pem_file(&keys.flagger.key)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let settings = settings(&env, &agent);
    rt.block_on(async {
        let client = Client::connect(&settings).await?;
        gantry_client::flags::push(&client, signed(&env.agent_id, 1, true, &key)).await?;
        anyhow::Ok(())
    })?;
    evaluation(ofrep, agent.pid())?;
    propagation(&env, &agent, ofrep, &key)?;
    Ok(())
}
