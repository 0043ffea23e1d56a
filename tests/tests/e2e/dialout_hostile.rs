//! A hostile controller service (issue 12): a test double that holds a certificate the agent
//! trusts as its controller service, takes the agent's dial, and speaks the Agent protocol over
//! it (the service side's own connector, `gantry_service::sessions::over_one_connection`). It
//! pushes 1,000 forged, expired, retargeted and below-quorum jobs: every one is refused and on
//! record (a `job.rejected` entry or a `job.rejected.summary` count, as in listening mode),
//! nothing runs; then a valid job runs, and its replays start nothing again.

use std::time::Duration;

use gantry_proto::envelope::sign_job;
use gantry_proto::keys::SigningKey;
use gantry_proto::v1::agent_client::AgentClient;
use gantry_proto::v1::{ArtifactChunk, ArtifactRef, Job, SignedJob};
use gantry_service::dial_in::{DialInTrust, server_config};
use gantry_service::sessions::over_one_connection;
use gantry_tests::{Agent, TestEnv, audit_events, banner, make_artifact, wait_until};
use prost::Message;
use tonic::transport::Channel;

const FLOOD: usize = 1_000;

/// The double's listener: accepts one agent connection with mutual TLS and returns an Agent
/// client over it (the double is the HTTP/2 client, as the real service is).
async fn accept_agent(
    listener: tokio::net::TcpListener,
    tls: rustls::ServerConfig,
) -> AgentClient<Channel> {
    let (tcp, _) = listener.accept().await.unwrap();
    let tls = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls))
        .accept(tcp)
        .await
        .unwrap();
    let channel = over_one_connection(tls).await.unwrap();
    AgentClient::new(channel)
}

fn signed(job: &Job, keys: &[&SigningKey]) -> SignedJob {
    let bytes = job.encode_to_vec();
    SignedJob {
        signatures: keys.iter().map(|k| sign_job(k, &bytes)).collect(),
        job: bytes,
        comments: Vec::new(),
    }
}

#[test]
#[allow(clippy::needless_update)] // the artifact chunks: see there
fn a_hostile_service_gets_every_bad_job_refused_and_audited_and_a_valid_job_still_runs() {
    let env = TestEnv::new().unwrap();
    let svc_pki = env.root.join("hostile-pki");
    env.gantry(&[
        "dev-pki",
        "--out",
        &svc_pki.to_string_lossy(),
        "--agent-id",
        "controller.example",
        "--client-name",
        "nobody",
    ])
    .unwrap()
    .assert_code(0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();

    let mut raw = env.raw_config();
    raw = raw.dial(&format!("127.0.0.1:{port}"), "controller.example");
    if let Some(c) = raw.controller.as_mut() {
        c.ca = Some(svc_pki.join("ca.pem").to_string_lossy().into_owned());
    }
    // Two signatures needed: a deployer's and an approver's.
    raw.apps.get_mut("web").unwrap().approvals = 1;
    // The rejection budget is the service's certificate's: keep it out of the way so the
    // valid job is read at once after the flood (throttling has its own tests).
    raw.limits.client_rejections_burst = 10 * FLOOD as u32;
    raw.limits.client_rejections_per_second = 10 * FLOOD as u32;
    env.write_raw_config(&raw).unwrap();

    let trust = DialInTrust::new(&[(env.agent_id.clone(), env.pki.ca.clone())]).unwrap();
    let tls = server_config(
        &svc_pki.join("agent.pem"),
        &svc_pki.join("agent.key"),
        &trust,
    )
    .unwrap();
    let accepted = rt.spawn(accept_agent(listener, tls));
    let agent = Agent::start(&env).unwrap();
    assert!(agent.dials_out);
    let client = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), accepted).await })
        .expect("the agent dials the double")
        .unwrap();

    // The artifact, uploaded over the dialled link.
    let artifact = make_artifact(&env, "1.0.0", "").unwrap();
    let data = std::fs::read(&artifact).unwrap();
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, &data));
    let chunks: Vec<ArtifactChunk> = data
        .chunks(64 << 10)
        .enumerate()
        // `..Default::default()` so fields added to the chunk later (resumable uploads) keep
        // their defaults.
        .map(|(i, c)| ArtifactChunk {
            meta: (i == 0).then(|| ArtifactRef {
                sha256: sha.clone(),
                size: data.len() as u64,
            }),
            data: c.to_vec(),
            ..Default::default()
        })
        .collect();
    rt.block_on(client.clone().upload_artifact(tokio_stream::iter(chunks)))
        .unwrap();

    // A valid job, as `gantry job create` writes it.
    let job_file = env.root.join("valid.job");
    env.gantry(&[
        "job",
        "create",
        "--out",
        &job_file.to_string_lossy(),
        "--agent-id",
        &env.agent_id,
        "--app",
        "web",
        "--version",
        "1.0.0",
        "--artifact",
        &artifact.to_string_lossy(),
        "--instances",
        "1",
        "--health",
        "http:/health",
        "--health-interval",
        "200ms",
        "--",
        "bin/gantry-sample-app",
    ])
    .unwrap()
    .assert_code(0);
    let template = Job::decode(
        SignedJob::decode(std::fs::read(&job_file).unwrap().as_slice())
            .unwrap()
            .job
            .as_slice(),
    )
    .unwrap();
    let deployer = SigningKey::read_pem_file(&env.keys.deployer.key).unwrap();
    let approver = SigningKey::read_pem_file(&env.keys.approver.key).unwrap();
    let attacker = SigningKey::generate().unwrap();

    // 1,000 bad jobs, four kinds, each its own job id, all in flight together.
    let mut bad = Vec::new();
    for i in 0..FLOOD {
        let mut job = template.clone();
        job.job_id = format!("bad-{i}");
        let s = match i % 4 {
            // Forged: the attacker's signature under the deployer's key id.
            0 => {
                let bytes = job.encode_to_vec();
                let mut sig = sign_job(&attacker, &bytes);
                sig.key_id = deployer.key_id().to_string();
                let mut approval = sign_job(&attacker, &bytes);
                approval.key_id = approver.key_id().to_string();
                SignedJob {
                    job: bytes,
                    signatures: vec![sig, approval],
                    comments: Vec::new(),
                }
            }
            // Expired an hour ago, validly signed.
            1 => {
                job.issued_at -= 7_200;
                job.not_before -= 7_200;
                job.expires_at = job.issued_at + 60;
                signed(&job, &[&deployer, &approver])
            }
            // For another agent.
            2 => {
                job.agent_id = "web-9".into();
                signed(&job, &[&deployer, &approver])
            }
            // Below quorum: the deployer alone.
            _ => signed(&job, &[&deployer]),
        };
        bad.push(s);
    }
    let answers: Vec<Result<(), tonic::Status>> = rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for s in bad {
            let mut c = client.clone();
            set.spawn(async move { c.submit(s).await.map(|_| ()) });
        }
        let mut out = Vec::new();
        while let Some(r) = set.join_next().await {
            out.push(r.unwrap());
        }
        out
    });
    assert_eq!(answers.len(), FLOOD);
    for a in &answers {
        let status = a.as_ref().expect_err("a bad job was taken");
        assert!(
            matches!(
                status.code(),
                tonic::Code::Unauthenticated
                    | tonic::Code::PermissionDenied
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::InvalidArgument
            ),
            "{status:?}"
        );
    }

    // Every refusal is on record: in full, or counted in a summary.
    let mut recorded = 0;
    wait_until(Duration::from_secs(20), "every refusal on record", || {
        // Only the bad jobs were sent so far; a signature that does not verify is recorded
        // without the (untrusted) job id.
        let full = audit_events(&env, "job.rejected").unwrap().len();
        let counted: u64 = audit_events(&env, "job.rejected.summary")
            .unwrap()
            .iter()
            .filter_map(|e| e["count"].as_u64())
            .sum();
        recorded = full + usize::try_from(counted).unwrap();
        recorded >= FLOOD
    })
    .unwrap_or_else(|e| panic!("{e}: {recorded} of {FLOOD}\n{}", agent.log_tail()));
    assert_eq!(recorded, FLOOD, "each refusal recorded once");
    assert!(audit_events(&env, "job.accepted").unwrap().is_empty());
    assert_eq!(banner(env.port(0)), None, "nothing runs after the flood");
    let reasons: std::collections::BTreeSet<String> = audit_events(&env, "job.rejected")
        .unwrap()
        .iter()
        .filter_map(|e| e["reason"].as_str().map(str::to_owned))
        .collect();
    assert!(
        reasons.len() >= 2,
        "several kinds refused in full: {reasons:?}"
    );

    // A valid job runs; its replays attach and start nothing.
    let mut valid = template.clone();
    valid.job_id = "valid-1".into();
    let good = signed(&valid, &[&deployer, &approver]);
    let events = rt.block_on(async {
        let mut stream = client
            .clone()
            .submit(good.clone())
            .await
            .unwrap()
            .into_inner();
        let mut n = 0;
        while let Some(_ev) = stream.message().await.unwrap() {
            n += 1;
        }
        n
    });
    assert!(events > 0);
    let body = banner(env.port(0)).unwrap_or_default();
    assert_eq!(body, "web 1.0.0 instance 0\n");
    for _ in 0..10 {
        rt.block_on(client.clone().submit(good.clone())).unwrap();
    }
    let accepted = audit_events(&env, "job.accepted").unwrap();
    assert_eq!(accepted.len(), 1, "{accepted:#?}");
    assert_eq!(accepted[0]["job_id"], "valid-1");
    // Every entry names the service's certificate, the peer of the dialled connection.
    let service_fp = audit_events(&env, "controller.connected").unwrap()[0]["peer_fingerprint"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(accepted[0]["peer_fingerprint"], service_fp.as_str());
    drop(agent);
}
