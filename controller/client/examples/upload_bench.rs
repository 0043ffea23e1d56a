//! Upload throughput, fresh and resumed from the middle, and the latency of `Info` (a
//! heartbeat-sized RPC) on the same connection while a large upload runs, against a running
//! agent. `scripts/bench-upload.sh` starts the agent and runs this; see BENCHMARKS.md.
//!
//! Environment: `GANTRY_AGENT`, `GANTRY_AGENT_ID`, `GANTRY_CA`, `GANTRY_CERT`,
//! `GANTRY_CERT_KEY` (as for `gantry`), `GANTRY_BENCH_DIR` (where the artifacts are written),
//! `GANTRY_BENCH_MB` (artifact size, default 256), `GANTRY_BENCH_INFOS` (idle `Info` calls,
//! default 300).

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gantry_client::upload::{self, CHUNK};
use gantry_client::{Agent, ConnSettings};
use gantry_proto::v1::{ArtifactChunk, ArtifactRef, InfoRequest};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

fn var(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| format!("{name} is not set").into())
}

/// `mb` MiB of xorshift bytes (seeded, so each file has its own digest).
fn write_artifact(path: &Path, mb: usize, seed: u64) -> Result<ArtifactRef> {
    let mut x = seed | 1;
    let mut data = Vec::with_capacity(mb << 20);
    while data.len() < mb << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, &data)?;
    Ok(ArtifactRef {
        sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &data)),
        size: data.len() as u64,
    })
}

/// p50, p99 and max of `v` (nearest rank), in ms.
fn summary(mut v: Vec<Duration>) -> String {
    v.sort();
    let rank = |p: f64| {
        let r = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[r - 1].as_secs_f64() * 1000.0
    };
    format!(
        "n {:>5}  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        v.len(),
        rank(0.5),
        rank(0.99),
        rank(1.0)
    )
}

async fn info_once(agent: &Agent) -> Result<Duration> {
    let t = Instant::now();
    agent.client.clone().info(InfoRequest::default()).await?;
    Ok(t.elapsed())
}

/// Uploads `path` with gantry-client while another task calls `Info` every 10 ms on the same
/// connection; returns the upload's time and the `Info` latencies seen meanwhile.
async fn upload_with_infos(
    agent: &Agent,
    path: &Path,
    want: &ArtifactRef,
) -> Result<(Duration, Vec<Duration>)> {
    let done = Arc::new(AtomicBool::new(false));
    let pinger = {
        let agent = agent.clone();
        let done = Arc::clone(&done);
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if let Ok(d) = info_once(&agent).await {
                    seen.push(d);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            seen
        })
    };
    let t = Instant::now();
    let result = upload::upload(agent, path, want.clone(), &mut ()).await;
    let took = t.elapsed();
    done.store(true, Ordering::Relaxed);
    let infos = pinger.await?;
    result?;
    Ok((took, infos))
}

/// Sends the first `bytes` of `path` as `want` and ends the stream: the agent refuses the
/// short upload and keeps what it got as a partial to resume.
async fn leave_partial(agent: &Agent, path: &Path, want: &ArtifactRef, bytes: usize) -> Result<()> {
    let data = std::fs::read(path)?;
    let mut chunks: Vec<ArtifactChunk> = data[..bytes]
        .chunks(CHUNK)
        .map(|c| ArtifactChunk {
            meta: None,
            data: c.to_vec(),
            offset: 0,
        })
        .collect();
    if let Some(first) = chunks.first_mut() {
        first.meta = Some(want.clone());
    }
    let answer = agent
        .client
        .clone()
        .upload_artifact(tokio_stream::iter(chunks))
        .await;
    if answer.is_ok() {
        return Err("the agent accepted a short upload".into());
    }
    Ok(())
}

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

#[tokio::main]
async fn main() -> Result<()> {
    let settings = ConnSettings {
        addr: var("GANTRY_AGENT")?,
        agent_id: var("GANTRY_AGENT_ID")?,
        ca: var("GANTRY_CA")?.into(),
        cert: var("GANTRY_CERT")?.into(),
        cert_key: var("GANTRY_CERT_KEY")?.into(),
        witness_dir: None,
        via: None,
    };
    let dir = PathBuf::from(var("GANTRY_BENCH_DIR")?);
    let mb: usize = std::env::var("GANTRY_BENCH_MB").map_or(Ok(256), |v| v.parse())?;
    let infos: usize = std::env::var("GANTRY_BENCH_INFOS").map_or(Ok(300), |v| v.parse())?;
    let agent = Agent::connect(&settings).await?;

    let mut idle = Vec::new();
    for _ in 0..infos {
        idle.push(info_once(&agent).await?);
    }
    println!("Info, idle:                        {}", summary(idle));

    let fresh_path = dir.join("fresh.bin");
    let fresh = write_artifact(&fresh_path, mb, 0x9e37_79b9_7f4a_7c15)?;
    let (took, during) = upload_with_infos(&agent, &fresh_path, &fresh).await?;
    println!(
        "fresh upload of {mb} MiB:           {:>8.0} ms  {:>7.1} MiB/s",
        took.as_secs_f64() * 1000.0,
        mib_per_s(fresh.size, took)
    );
    println!("Info, during the fresh upload:     {}", summary(during));

    let resumed_path = dir.join("resumed.bin");
    let resumed = write_artifact(&resumed_path, mb, 0x2545_f491_4f6c_dd1d)?;
    let half = (mb << 20) / 2;
    leave_partial(&agent, &resumed_path, &resumed, half).await?;
    let (took, during) = upload_with_infos(&agent, &resumed_path, &resumed).await?;
    let rest = resumed.size - half as u64;
    println!(
        "resumed upload from {} MiB:       {:>8.0} ms  {:>7.1} MiB/s of the {} MiB sent (the agent re-hashes the {} MiB it held first)",
        half >> 20,
        took.as_secs_f64() * 1000.0,
        mib_per_s(rest, took),
        rest >> 20,
        half >> 20
    );
    println!("Info, during the resumed upload:   {}", summary(during));
    Ok(())
}
