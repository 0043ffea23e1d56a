//! A forged-job flood against a real agent over gRPC (mutual TLS), and what it does to valid
//! jobs and to the agent's memory. Not a criterion bench: it needs a running agent, which
//! `scripts/bench-flood.sh` starts (from `gantry quickstart`) and passes in:
//!
//! - `GANTRY_FLOOD_DIR`: the quickstart directory (`pki/`, `keys/deployer.key`);
//! - `GANTRY_FLOOD_ADDR`: the agent's gRPC address; `GANTRY_FLOOD_PID`: its pid (for VmRSS);
//! - `GANTRY_FLOOD_AGENT_ID` (default `quickstart-agent`), `GANTRY_FLOOD_APPS` (default
//!   `sample`): comma-separated apps; one valid client per app runs concurrently (jobs for one
//!   app are serialised by the agent, so parallel valid jobs need several apps).
//!
//! Phases:
//!
//! 1. `baseline`: per app, one client submits valid, correctly signed `stop` jobs one after
//!    another (each admitted, run and followed to its end) for `GANTRY_FLOOD_VALID_SECS`
//!    (default 10): valid jobs per second over all clients, and submit-to-first-event latency
//!    (admission).
//! 2. `under flood`: the same, while `GANTRY_FLOOD_CONNS` connections (default 64) each keep
//!    `GANTRY_FLOOD_STREAMS` (default 64, the agent's per-connection stream limit) forged
//!    submits in flight: a job with a well-formed Ed25519 signature by an untrusted key that
//!    claims the deployer's key id (the costliest forgery: a full verification per trusted
//!    key). Forged rejections per second are reported too.
//! 3. `after`: the valid jobs of phase 1 again, once the flood's connections are closed (a
//!    second baseline, so that the flood's ratio does not rest on one 10 s sample).
//! 4. `volume`: the flood alone until `GANTRY_FLOOD_TOTAL` rejections (default 1 000 000) or
//!    `GANTRY_FLOOD_MAX_SECS` (default 300), printing VmRSS every 10 s, then VmRSS/VmHWM
//!    after 3 s idle. With the agent's default rejection budget one certificate gets about
//!    10 rejections a second; `scripts/bench-flood.sh` takes CLIENT_REJECTIONS_* to lift it.
//!
//! `GANTRY_FLOOD_PHASES` (default `baseline,flood,after`) picks the phases; they run in the
//! order above.
//!
//! Client certificates: the valid jobs use the quickstart controller's (`pki/controller.pem`).
//! The flood, as in the threat model (one controller's certificate stolen, the release pipeline
//! keeps its own), uses a second client certificate, `pki/stolen-controller.pem`, that
//! `scripts/bench-flood.sh` makes with `gantry dev-pki --add-client stolen-controller` (signed
//! by the quickstart CA); the script adds `client_names = ["controller", "stolen-controller"]`
//! to the config so the agent accepts it. `GANTRY_FLOOD_SAME_CERT=1` floods with the valid
//! jobs' own certificate instead (the old measurement).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gantry_proto::envelope::sign_job;
use gantry_proto::keys::SigningKey;
use gantry_proto::v1;
use gantry_proto::v1::agent_client::AgentClient;
use prost::Message;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Env {
    dir: PathBuf,
    addr: String,
    pid: Option<u32>,
    agent_id: String,
    apps: Vec<String>,
    /// The valid clients' certificate and key (PEM).
    valid_id: (Vec<u8>, Vec<u8>),
    /// The flood's certificate and key (PEM).
    flood_id: (Vec<u8>, Vec<u8>),
}

fn read(p: &Path) -> Result<Vec<u8>, BoxError> {
    Ok(std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))?)
}

fn fingerprint_of(pem: &[u8]) -> String {
    let der = pem_der(pem).unwrap_or_default();
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &der))
}

/// The first PEM block's DER.
fn pem_der(pem: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = std::str::from_utf8(pem).ok()?;
    let body: String = text
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn num(name: &str, default: u64) -> u64 {
    var(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

async fn connect(env: &Env, id: &(Vec<u8>, Vec<u8>)) -> Result<AgentClient<Channel>, BoxError> {
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&env.dir.join("pki/ca.pem"))?))
        .identity(Identity::from_pem(&id.0, &id.1))
        .domain_name(env.agent_id.clone());
    let channel = Endpoint::from_shared(format!("https://{}", env.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(AgentClient::new(channel).max_decoding_message_size(16 << 20))
}

fn job(env: &Env, app: &str, id: &str, action: v1::Action) -> Vec<u8> {
    let t = now();
    v1::Job {
        job_id: id.to_owned(),
        agent_id: env.agent_id.clone(),
        app: app.to_owned(),
        action: action as i32,
        issued_at: t - 5,
        not_before: t - 5,
        expires_at: t + 1800,
        release: None,
        reason: "flood bench".to_owned(),
        restore_flags: false,
    }
    .encode_to_vec()
}

fn rss(pid: Option<u32>) -> String {
    let Some(pid) = pid else {
        return "n/a".to_owned();
    };
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return "gone".to_owned();
    };
    let field = |k: &str| {
        s.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (r, h) = (field("VmRSS:"), field("VmHWM:"));
    format!(
        "VmRSS {:.1} MiB ({r} kB), VmHWM {:.1} MiB ({h} kB)",
        r as f64 / 1024.0,
        h as f64 / 1024.0
    )
}

/// Valid `stop` jobs for `app` one after another for `secs`: (jobs finished, admission
/// latencies in µs).
async fn valid_loop(
    env: &Env,
    app: &str,
    key: &SigningKey,
    secs: u64,
    tag: &str,
) -> Result<(u64, Vec<u64>), BoxError> {
    let mut client = connect(env, &env.valid_id).await?;
    let mut lat = Vec::new();
    let mut done = 0u64;
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed() < Duration::from_secs(secs) {
        n += 1;
        let bytes = job(
            env,
            app,
            &format!("flood-valid-{tag}-{app}-{}-{n}", std::process::id()),
            v1::Action::Stop,
        );
        let signed = v1::SignedJob {
            signatures: vec![sign_job(key, &bytes)],
            job: bytes,
            comments: Vec::new(),
        };
        let start = Instant::now();
        let one = async {
            let mut stream = client.submit(signed).await?.into_inner();
            let first = stream.message().await?;
            lat.push(u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX));
            if first.is_none() {
                return Err::<(), BoxError>("a valid job's stream ended without an event".into());
            }
            while stream.message().await?.is_some() {}
            Ok(())
        };
        // A paused certificate (the flood's own, with GANTRY_FLOOD_SAME_CERT=1) gets no answer:
        // the phase ends on time all the same, and says so.
        let left = Duration::from_secs(secs).saturating_sub(t0.elapsed()) + Duration::from_secs(1);
        match tokio::time::timeout(left, one).await {
            Ok(result) => result?,
            Err(_) => {
                println!(
                    "{tag}: {app}: a valid job got no answer in {:.1} s (its certificate is paused?)",
                    start.elapsed().as_secs_f64()
                );
                break;
            }
        }
        done += 1;
    }
    Ok((done, lat))
}

fn pct(v: &mut [u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    let rank = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

struct Flood {
    stop: Arc<AtomicBool>,
    rejected: Arc<AtomicU64>,
    other: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_flood(env: &Env, deployer_id: &str) -> Result<Flood, BoxError> {
    let conns = num("GANTRY_FLOOD_CONNS", 64);
    let streams = num("GANTRY_FLOOD_STREAMS", 64);
    let attacker = SigningKey::generate()?;
    // One forged job: signed by the attacker, claiming the deployer's key id.
    let bytes = job(env, &env.apps[0], "flood-forged", v1::Action::Restart);
    let mut sig = sign_job(&attacker, &bytes);
    deployer_id.clone_into(&mut sig.key_id);
    let forged = v1::SignedJob {
        job: bytes,
        signatures: vec![sig],
        comments: Vec::new(),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let rejected = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    let mut refused = 0u64;
    for _ in 0..conns {
        // Beyond limits.client_connections the agent closes new connections.
        let client = match connect(env, &env.flood_id).await {
            Ok(client) => client,
            Err(e) => {
                refused += 1;
                if refused == 1 {
                    eprintln!("flood: a connection failed: {e}");
                }
                continue;
            }
        };
        for _ in 0..streams {
            let (mut client, forged) = (client.clone(), forged.clone());
            let (stop, rejected, other) = (stop.clone(), rejected.clone(), other.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client.submit(forged.clone()).await {
                        Err(s) if s.code() == tonic::Code::Unauthenticated => {
                            rejected.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(s) => {
                            if other.fetch_add(1, Ordering::Relaxed) < 3 {
                                eprintln!("flood: unexpected answer: {s}");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(_) => {
                            other.fetch_add(1, Ordering::Relaxed);
                            eprintln!("flood: a forged job was accepted");
                        }
                    }
                }
            }));
        }
    }
    eprintln!(
        "flood: {} connections x {streams} streams in flight ({refused} of {conns} failed to connect)",
        conns - refused
    );
    Ok(Flood {
        stop,
        rejected,
        other,
        tasks,
    })
}

impl Flood {
    async fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        // Streams of a paused certificate are never answered: do not wait for them.
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn run() -> Result<(), BoxError> {
    let dir: PathBuf = var("GANTRY_FLOOD_DIR")
        .ok_or("set GANTRY_FLOOD_DIR (see scripts/bench-flood.sh)")?
        .into();
    let valid_id = (
        read(&dir.join("pki/controller.pem"))?,
        read(&dir.join("pki/controller.key"))?,
    );
    let same_cert = var("GANTRY_FLOOD_SAME_CERT").is_some_and(|v| v == "1");
    let flood_id = if same_cert {
        valid_id.clone()
    } else {
        // Made by `gantry dev-pki --add-client stolen-controller` (scripts/bench-flood.sh).
        (
            read(&dir.join("pki/stolen-controller.pem"))?,
            read(&dir.join("pki/stolen-controller.key"))?,
        )
    };
    println!(
        "valid jobs: certificate pki/controller.pem, SHA-256 {}",
        fingerprint_of(&valid_id.0)
    );
    println!(
        "flood: {}, SHA-256 {}",
        if same_cert {
            "the SAME certificate as the valid jobs (GANTRY_FLOOD_SAME_CERT=1)"
        } else {
            "its own certificate (DNS name stolen-controller, signed by the quickstart CA)"
        },
        fingerprint_of(&flood_id.0)
    );
    let env = Env {
        dir,
        valid_id,
        flood_id,
        addr: var("GANTRY_FLOOD_ADDR").ok_or("set GANTRY_FLOOD_ADDR")?,
        pid: var("GANTRY_FLOOD_PID").and_then(|p| p.parse().ok()),
        agent_id: var("GANTRY_FLOOD_AGENT_ID").unwrap_or_else(|| "quickstart-agent".to_owned()),
        apps: var("GANTRY_FLOOD_APPS")
            .unwrap_or_else(|| "sample".to_owned())
            .split(',')
            .map(str::to_owned)
            .collect(),
    };
    let env = Arc::new(env);
    let phases = var("GANTRY_FLOOD_PHASES").unwrap_or_else(|| "baseline,flood,after".to_owned());
    let key = Arc::new(SigningKey::read_pem_file(
        &env.dir.join("keys/deployer.key"),
    )?);
    let deployer_id = key.key_id().to_string();
    let secs = num("GANTRY_FLOOD_VALID_SECS", 10);
    let valid = |tag: &'static str| {
        let tasks: Vec<_> = env
            .apps
            .iter()
            .map(|app| {
                let (env, app, key) = (env.clone(), app.clone(), key.clone());
                tokio::spawn(async move { valid_loop(&env, &app, &key, secs, tag).await })
            })
            .collect();
        async move {
            let (mut done, mut lat) = (0, Vec::new());
            for t in tasks {
                let (d, l) = t.await.map_err(|e| format!("valid client: {e}"))??;
                done += d;
                lat.extend(l);
            }
            Ok::<_, BoxError>((done, lat))
        }
    };
    println!("agent {} pid {:?}: {}", env.addr, env.pid, rss(env.pid));

    let report = |name: &str, done: u64, mut lat: Vec<u64>| {
        println!(
            "{name}: {done} valid jobs in {secs} s from {} clients = {:.1} jobs/s; submit -> first event p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            env.apps.len(),
            done as f64 / secs as f64,
            pct(&mut lat, 0.5) as f64 / 1000.0,
            pct(&mut lat, 0.99) as f64 / 1000.0,
            pct(&mut lat, 1.0) as f64 / 1000.0,
        );
    };
    if phases.contains("baseline") {
        let (done, lat) = valid("base").await?;
        report("baseline", done, lat);
        println!("baseline: after the valid jobs: {}", rss(env.pid));
    }
    if phases.contains("flood") {
        let flood = start_flood(&env, &deployer_id).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let r0 = flood.rejected.load(Ordering::Relaxed);
        let t0 = Instant::now();
        let (done, lat) = valid("flood").await?;
        let r1 = flood.rejected.load(Ordering::Relaxed);
        let el = t0.elapsed().as_secs_f64();
        report("under flood", done, lat);
        println!(
            "under flood: forged jobs rejected {:.0}/s meanwhile; other answers {}; {}",
            (r1 - r0) as f64 / el,
            flood.other.load(Ordering::Relaxed),
            rss(env.pid)
        );
        flood.finish().await;
    }
    if phases.contains("after") {
        let (done, lat) = valid("after").await?;
        report("after the flood", done, lat);
    }
    if phases.contains("volume") {
        let total = num("GANTRY_FLOOD_TOTAL", 1_000_000);
        let max = Duration::from_secs(num("GANTRY_FLOOD_MAX_SECS", 300));
        let flood = start_flood(&env, &deployer_id).await?;
        let t0 = Instant::now();
        let mut last = (Instant::now(), 0u64);
        loop {
            tokio::time::sleep(Duration::from_secs(10)).await;
            let r = flood.rejected.load(Ordering::Relaxed);
            let rate = (r - last.1) as f64 / last.0.elapsed().as_secs_f64();
            last = (Instant::now(), r);
            println!(
                "volume: {:>4.0} s: {r} rejected ({rate:.0}/s over the last 10 s), other {}; {}",
                t0.elapsed().as_secs_f64(),
                flood.other.load(Ordering::Relaxed),
                rss(env.pid)
            );
            if r >= total || t0.elapsed() >= max {
                break;
            }
        }
        let el = t0.elapsed().as_secs_f64();
        let r = flood.rejected.load(Ordering::Relaxed);
        flood.finish().await;
        println!(
            "volume: {r} forged jobs rejected in {el:.0} s ({:.0}/s)",
            r as f64 / el
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        println!("volume: idle 3 s after the flood: {}", rss(env.pid));
    }
    Ok(())
}

fn main() {
    // `cargo bench` passes `--bench`; there is nothing to filter.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("flood: cannot start a runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(run()) {
        eprintln!("flood: {e}");
        std::process::exit(1);
    }
}
