//! Benchmark (ignored by default; BENCHMARKS.md section 12): job pickup latency, dial-out vs
//! listening, in the same run. One listening agent (`web-1`, reached directly) and one dial-out
//! agent (`web-2`, reached through `gantry server`'s proxy); the same signed `restart` job
//! shape, alternating between the two; the time from sending `Submit` to receiving the
//! agent's `accepted` event (so it includes the way back, an upper bound of the pickup).
//!
//! `GANTRY_BENCH_JOBS=200 cargo test --release -p gantry-tests --test e2e -- --ignored
//! dialout_bench --nocapture`

use std::time::{Duration, Instant};

use gantry_client::connect::{Agent as Client, ConnSettings, Via};
use gantry_proto::envelope::sign_job;
use gantry_proto::keys::SigningKey;
use gantry_proto::v1::{self as v1, Job, SignedJob, job_event};
use gantry_tests::service::Fleet;
use gantry_tests::{Controller, Options, make_artifact, wait_until};
use prost::Message;

use super::fleet_service::start_service;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Submits `signed` and returns the time to its `accepted` event; follows it to its end.
async fn pickup(client: &Client, signed: SignedJob) -> Duration {
    let start = Instant::now();
    let mut stream = client
        .client
        .clone()
        .submit(signed)
        .await
        .unwrap()
        .into_inner();
    let mut took = None;
    while let Some(ev) = stream.message().await.unwrap() {
        if took.is_none() && matches!(ev.kind, Some(job_event::Kind::Accepted(_))) {
            took = Some(start.elapsed());
        }
    }
    took.expect("an accepted event")
}

#[test]
#[ignore = "benchmark: run with --ignored dialout_bench --nocapture"]
fn dialout_bench_job_pickup_latency_dial_out_vs_listening() {
    let jobs: usize = std::env::var("GANTRY_BENCH_JOBS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let fleet = Fleet::start_dialling(
        &[("web-1", &[]), ("web-2", &[])],
        &["web-2"],
        &Options {
            ports: 1,
            ..Options::default()
        },
    )
    .unwrap();
    let svc = start_service(&fleet, "ctl-1", None, "10s");
    wait_until(Duration::from_secs(45), "web-2 connected", || {
        svc.gantry(&["fleet", "ls", "--json"]).is_ok_and(|o| {
            o.stdout
                .contains("\"connected\":true,\"connected_since_ms\"")
        })
    })
    .unwrap();

    // 1.0.0 runs on both (directly on web-1, through the service on web-2).
    let artifact = make_artifact(fleet.env(), "1.0.0", "").unwrap();
    let flags = [
        "--strategy",
        "hot",
        "--instances",
        "1",
        "--health",
        "http:/health",
        "--health-interval",
        "200ms",
    ];
    let args = crate::deploy_args(&fleet.env().keys.deployer, "1.0.0", &artifact, &flags);
    let direct = fleet.member("web-1");
    Controller::new(&direct.env, &direct.agent)
        .run(&crate::strs(&args))
        .unwrap()
        .assert_code(0);
    let server = svc.addr.to_string();
    let mut proxied = crate::strs(&args);
    let at = proxied.iter().position(|a| *a == "--").unwrap();
    proxied.splice(at..at, ["--agent", "web-2", "--server", &server]);
    svc.gantry(&proxied).unwrap().assert_code(0);

    // A restart job per agent, as `gantry job create` writes it, varied by job id.
    let template = |id: &str| {
        let out = fleet.env().root.join(format!("restart-{id}.job"));
        fleet
            .env()
            .gantry(&[
                "job",
                "create",
                "--out",
                &out.to_string_lossy(),
                "--agent-id",
                id,
                "--app",
                "web",
                "--action",
                "restart",
            ])
            .unwrap()
            .assert_code(0);
        let signed = SignedJob::decode(std::fs::read(&out).unwrap().as_slice()).unwrap();
        Job::decode(signed.job.as_slice()).unwrap()
    };
    let deployer = SigningKey::read_pem_file(&fleet.env().keys.deployer.key).unwrap();
    let sign = |mut job: Job, n: usize| {
        job.job_id = format!("bench-{}-{n}", job.agent_id);
        let bytes = job.encode_to_vec();
        SignedJob {
            signatures: vec![sign_job(&deployer, &bytes)],
            job: bytes,
            comments: Vec::new(),
        }
    };
    let (t1, t2) = (template("web-1"), template("web-2"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let d = &fleet.member("web-1").env;
    let listening = rt
        .block_on(Client::connect(&ConnSettings {
            addr: direct.agent.addr.to_string(),
            agent_id: "web-1".into(),
            ca: d.pki.ca.clone(),
            cert: d.pki.controller_cert.clone(),
            cert_key: d.pki.controller_key.clone(),
            witness_dir: None,
            via: None,
        }))
        .unwrap();
    let dialled = rt
        .block_on(Client::connect(&ConnSettings {
            addr: "web-2".into(),
            agent_id: "web-2".into(),
            ca: fleet.pki.join("ca.pem"),
            cert: fleet.pki.join("controller.pem"),
            cert_key: fleet.pki.join("controller.key"),
            witness_dir: None,
            via: Some(Via {
                server: server.clone(),
                server_name: "gantry-server".into(),
            }),
        }))
        .unwrap();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for n in 0..jobs {
        a.push(rt.block_on(pickup(&listening, sign(t1.clone(), n))));
        b.push(rt.block_on(pickup(&dialled, sign(t2.clone(), n))));
    }
    a.sort();
    b.sort();
    for (name, v) in [("listening (direct)", &a), ("dial-out (via service)", &b)] {
        println!(
            "{name:<24} jobs {:>4}  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
            v.len(),
            ms(percentile(v, 0.50)),
            ms(percentile(v, 0.99)),
            ms(*v.last().unwrap())
        );
    }
    assert!(
        percentile(&b, 0.99) < Duration::from_secs(1),
        "goal p99 < 1 s"
    );
}

/// A stand-in agent for the swarm: answers `Info`, nothing else.
#[derive(Debug, Clone)]
struct Minimal {
    id: String,
}

type Events<T> =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send>>;

fn no<T>() -> Result<T, tonic::Status> {
    Err(tonic::Status::unimplemented(
        "a swarm stand-in answers Info only",
    ))
}

#[tonic::async_trait]
impl gantry_proto::v1::agent_server::Agent for Minimal {
    type SubmitStream = Events<v1::JobEvent>;
    type WatchStream = Events<v1::JobEvent>;
    type AuditTailStream = Events<v1::AuditLine>;
    type DispatchStream = Events<v1::JobEvent>;

    async fn submit(
        &self,
        _: tonic::Request<v1::SignedJob>,
    ) -> Result<tonic::Response<Self::SubmitStream>, tonic::Status> {
        no()
    }
    async fn watch(
        &self,
        _: tonic::Request<v1::WatchRequest>,
    ) -> Result<tonic::Response<Self::WatchStream>, tonic::Status> {
        no()
    }
    async fn upload_artifact(
        &self,
        _: tonic::Request<tonic::Streaming<v1::ArtifactChunk>>,
    ) -> Result<tonic::Response<v1::ArtifactReceipt>, tonic::Status> {
        no()
    }
    async fn has_artifact(
        &self,
        _: tonic::Request<v1::ArtifactRef>,
    ) -> Result<tonic::Response<v1::ArtifactPresence>, tonic::Status> {
        no()
    }
    async fn status(
        &self,
        _: tonic::Request<v1::StatusRequest>,
    ) -> Result<tonic::Response<v1::StatusResponse>, tonic::Status> {
        no()
    }
    async fn audit_tail(
        &self,
        _: tonic::Request<v1::AuditTailRequest>,
    ) -> Result<tonic::Response<Self::AuditTailStream>, tonic::Status> {
        no()
    }
    async fn info(
        &self,
        _: tonic::Request<v1::InfoRequest>,
    ) -> Result<tonic::Response<v1::AgentInfo>, tonic::Status> {
        Ok(tonic::Response::new(v1::AgentInfo {
            agent_id: self.id.clone(),
            version: "swarm".into(),
            environment: "production".into(),
            ..Default::default()
        }))
    }
    async fn dispatch(
        &self,
        _: tonic::Request<v1::DispatchRequest>,
    ) -> Result<tonic::Response<Self::DispatchStream>, tonic::Status> {
        no()
    }
    async fn push_flags(
        &self,
        _: tonic::Request<v1::SignedFlags>,
    ) -> Result<tonic::Response<v1::FlagsReceipt>, tonic::Status> {
        no()
    }
    async fn get_flags(
        &self,
        _: tonic::Request<v1::FlagsRequest>,
    ) -> Result<tonic::Response<v1::FlagsInForce>, tonic::Status> {
        no()
    }
    async fn policy(
        &self,
        _: tonic::Request<v1::PolicyRequest>,
    ) -> Result<tonic::Response<v1::PolicyDocument>, tonic::Status> {
        no()
    }
}

/// The dialled TLS stream, telling the member's loop when the server drops it.
struct Linked {
    inner: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    _dropped: tokio::sync::oneshot::Sender<()>,
}

impl tonic::transport::server::Connected for Linked {
    type ConnectInfo = ();
    fn connect_info(&self) {}
}

impl tokio::io::AsyncRead for Linked {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Linked {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One swarm member: dials, serves `Minimal` on the link (keep-alive as the agent's), dials
/// again with the agent's backoff (full jitter, 0.5 s doubling to 30 s, reset after 10 s up).
async fn member(id: String, addr: String, tls: std::sync::Arc<rustls::ClientConfig>) {
    use gantry_proto::v1::agent_server::AgentServer;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Linked>>(1);
    let svc = AgentServer::new(Minimal { id: id.clone() });
    tokio::spawn(
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(svc)
            .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx)),
    );
    let connector = tokio_rustls::TlsConnector::from(tls);
    let name = rustls::pki_types::ServerName::try_from("gantry-server").unwrap();
    let mut ceiling = Duration::from_millis(500);
    loop {
        let link = async {
            let tcp = tokio::net::TcpStream::connect(&addr).await.ok()?;
            connector.connect(name.clone(), tcp).await.ok()
        }
        .await;
        if let Some(tls) = link {
            let (dropped, gone) = tokio::sync::oneshot::channel();
            if tx
                .send(Ok(Linked {
                    inner: tls,
                    _dropped: dropped,
                }))
                .await
                .is_err()
            {
                return;
            }
            let up = Instant::now();
            let _ = gone.await;
            if up.elapsed() >= Duration::from_secs(10) {
                ceiling = Duration::from_millis(500);
            }
        }
        let mut b = [0u8; 4];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
        let unit = f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX);
        tokio::time::sleep(ceiling.mul_f64(unit)).await;
        ceiling = (ceiling * 2).min(Duration::from_secs(30));
    }
}

fn proc_stat(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit(')').next().unwrap();
    let cols: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = cols[11].parse::<u64>().unwrap() + cols[12].parse::<u64>().unwrap();
    (rss_kb, ticks)
}

fn connected_count(svc: &gantry_tests::service::Service) -> usize {
    svc.gantry(&["fleet", "ls", "--json"])
        .map(|o| {
            o.json_lines()
                .iter()
                .filter(|a| a["mode"] == "dial" && a["connected"] == true)
                .count()
        })
        .unwrap_or(0)
}

#[test]
#[ignore = "benchmark: run with --ignored dialout_bench --nocapture"]
fn dialout_bench_many_dial_out_agents_against_one_service() {
    let n: usize = std::env::var("GANTRY_BENCH_AGENTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let fleet = Fleet::start(&[("web-1", &[])]).unwrap();
    let dir = fleet.env().root.join("swarm-svc");
    let config = fleet.write_config(&dir, "ctl-1", None, "10s").unwrap();
    // The swarm's CA and one client certificate per stand-in agent.
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, &ca_key);
    let ca_path = dir.join("swarm-ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[dial]\nlisten = \"127.0.0.1:{port}\"\n"));
    let mut roots = rustls::RootCertStore::empty();
    {
        use rustls::pki_types::pem::PemObject;
        let ca =
            rustls::pki_types::CertificateDer::from_pem_file(fleet.pki.join("ca.pem")).unwrap();
        roots.add(ca).unwrap();
    }
    let roots = std::sync::Arc::new(roots);
    let mut members = Vec::new();
    for i in 0..n {
        let id = format!("swarm-{i}");
        text.push_str(&format!(
            "\n[[agents]]\nid = \"{id}\"\nca = \"{}\"\n",
            ca_path.display()
        ));
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec![id.clone()]).unwrap();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = p.signed_by(&key, &issuer).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots.clone())
        .with_client_auth_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        )
        .unwrap();
        let mut tls = tls;
        tls.alpn_protocols = vec![b"h2".to_vec()];
        members.push((id, std::sync::Arc::new(tls)));
    }
    std::fs::write(&config, text).unwrap();
    let mut svc = gantry_tests::service::Service::start(&fleet, &config).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = format!("127.0.0.1:{port}");
    let started = Instant::now();
    for (id, tls) in members {
        rt.spawn(member(id, addr.clone(), tls));
    }
    wait_until(Duration::from_secs(120), "the swarm connected", || {
        connected_count(&svc) == n
    })
    .unwrap_or_else(|e| panic!("{e}: {} of {n}\n{}", connected_count(&svc), svc.log_tail()));
    let first = started.elapsed();
    // Idle with every link up: keep-alive pings and an Info every 5 s per agent.
    std::thread::sleep(Duration::from_secs(5));
    let pid = svc.pid().unwrap();
    let (_, t0) = proc_stat(pid);
    let window = Duration::from_secs(20);
    std::thread::sleep(window);
    let (rss_kb, t1) = proc_stat(pid);
    let hz = 100.0; // USER_HZ on Linux
    let cpu = (t1 - t0) as f64 / hz / window.as_secs_f64() * 100.0;
    // A service restart (SIGKILL, then a new process on the same dial port).
    svc.kill_9().unwrap();
    let cut = Instant::now();
    svc.restart().unwrap();
    let restarted = cut.elapsed();
    let mut counts = Vec::new();
    wait_until(Duration::from_secs(120), "the swarm reconnected", || {
        let c = connected_count(&svc);
        counts.push((cut.elapsed().as_secs_f64(), c));
        c == n
    })
    .unwrap_or_else(|e| panic!("{e}: {counts:?}"));
    let again = cut.elapsed();
    println!(
        "agents {n}: all connected {:.1} s after start",
        first.as_secs_f64()
    );
    println!(
        "service idle with {n} links: RSS {:.1} MiB, CPU {cpu:.1} % of one core over {:?}",
        rss_kb as f64 / 1024.0,
        window
    );
    println!(
        "restart: new process ready {:.1} s after the kill; all {n} back {:.1} s after the kill",
        restarted.as_secs_f64(),
        again.as_secs_f64()
    );
    let step = counts.len().div_ceil(10).max(1);
    let curve: Vec<String> = counts
        .iter()
        .step_by(step)
        .map(|(t, c)| format!("{t:.1}s:{c}"))
        .collect();
    println!(
        "reconnect curve (time since kill: connected): {}",
        curve.join(" ")
    );
    assert!(again < Duration::from_secs(60), "goal < 60 s");
}
