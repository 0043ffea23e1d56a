//! The submit/follow flow against an in-process mock agent over real mutual TLS.

use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use gantry_proto::keys;
use gantry_proto::v1::agent_server::{Agent as AgentService, AgentServer};
use gantry_proto::v1::{
    AgentInfo, ArtifactChunk, ArtifactPresence, ArtifactReceipt, ArtifactRef, AuditLine,
    AuditTailRequest, Checkpoint, InfoRequest, JobAccepted, JobEvent, JobFinished, JobStep,
    Outcome, SignedJob, StatusRequest, StatusResponse, WatchRequest, job_event,
};
use tokio_stream::Stream;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use gantry_client::upload::CHUNK;
use gantry_client::{ConnSettings, witness};

use super::*;
use crate::cli::JobSpecArgs;
use crate::commands::dev_pki::generate_pki;
use crate::commands::job::spec::build_job;

type EventStream = Pin<Box<dyn Stream<Item = Result<JobEvent, Status>> + Send>>;
type LineStream = Pin<Box<dyn Stream<Item = Result<AuditLine, Status>> + Send>>;

#[derive(Default)]
struct Seen {
    chunks: Vec<usize>,
    stored: Option<String>,
    /// What the mock holds of an interrupted upload (`ArtifactPresence.held` is its length).
    partial: Vec<u8>,
    /// The offset of every upload call.
    offsets: Vec<u64>,
    /// The next upload breaks off (UNAVAILABLE) after this many chunks.
    break_after: Option<usize>,
    submits: u32,
    watches: u32,
    /// The job bytes of every submit.
    jobs: Vec<Vec<u8>>,
}

#[derive(Clone)]
struct Mock {
    seen: Arc<Mutex<Seen>>,
    outcome: Outcome,
    /// The first Submit stream ends after "accepted", as if the connection dropped.
    drop_first: bool,
    reject: Option<Status>,
}

/// The mock agent's audit log: seven entries, the last a checkpoint signed by its key.
struct MockLog {
    key: keys::SigningKey,
    lines: Vec<String>,
}

fn mock_log() -> &'static MockLog {
    static LOG: std::sync::OnceLock<MockLog> = std::sync::OnceLock::new();
    LOG.get_or_init(|| {
        use gantry_proto::audit_chain::{GENESIS_PREV, line_hash, sign_checkpoint};
        let key = keys::SigningKey::generate().unwrap();
        let mut prev = GENESIS_PREV.to_owned();
        let mut lines = Vec::new();
        for seq in 1..=7 {
            let line = if seq == 7 {
                format!(
                    r#"{{"seq":7,"ts":"2025-01-01T00:00:00Z","prev":"{prev}","event":"checkpoint","key_id":"{}","sig":"{}"}}"#,
                    key.key_id(),
                    sign_checkpoint(&key, &prev)
                )
            } else {
                format!(r#"{{"seq":{seq},"ts":"2025-01-01T00:00:00Z","prev":"{prev}","event":"job.step"}}"#)
            };
            prev = line_hash(line.as_bytes());
            lines.push(line);
        }
        MockLog { key, lines }
    })
}

fn ev(seq: u64, kind: job_event::Kind) -> JobEvent {
    JobEvent {
        job_id: "j".into(),
        seq,
        ts_ms: 1,
        kind: Some(kind),
    }
}

impl Mock {
    fn events(&self) -> Vec<JobEvent> {
        vec![
            ev(
                1,
                job_event::Kind::Accepted(JobAccepted {
                    app: "web".into(),
                    ..JobAccepted::default()
                }),
            ),
            ev(
                2,
                job_event::Kind::Step(JobStep {
                    step: "instance.started".into(),
                    ..JobStep::default()
                }),
            ),
            ev(
                3,
                job_event::Kind::Finished(JobFinished {
                    outcome: self.outcome as i32,
                    reason: "done".into(),
                    checkpoint: Some(Checkpoint {
                        seq: 7,
                        line: mock_log().lines[6].clone(),
                    }),
                }),
            ),
        ]
    }
}

#[tonic::async_trait]
impl AgentService for Mock {
    type SubmitStream = EventStream;
    type WatchStream = EventStream;
    type AuditTailStream = LineStream;
    type DispatchStream = EventStream;

    async fn submit(&self, req: Request<SignedJob>) -> Result<Response<EventStream>, Status> {
        if let Some(s) = &self.reject {
            return Err(s.clone());
        }
        let signed = req.into_inner();
        assert!(!signed.signatures.is_empty());
        let first = {
            let mut seen = self.seen.lock().unwrap();
            seen.jobs.push(signed.job);
            seen.submits += 1;
            seen.submits == 1
        };
        let mut events = self.events();
        if self.drop_first && first {
            events.truncate(1);
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(
            events.into_iter().map(Ok),
        ))))
    }

    async fn watch(&self, _: Request<WatchRequest>) -> Result<Response<EventStream>, Status> {
        self.seen.lock().unwrap().watches += 1;
        Ok(Response::new(Box::pin(tokio_stream::iter(
            self.events().into_iter().map(Ok),
        ))))
    }

    async fn upload_artifact(
        &self,
        req: Request<Streaming<ArtifactChunk>>,
    ) -> Result<Response<ArtifactReceipt>, Status> {
        let mut stream = req.into_inner();
        let mut meta = None;
        let mut count = 0;
        while let Some(chunk) = stream.message().await? {
            let mut seen = self.seen.lock().unwrap();
            if meta.is_none() {
                meta = chunk.meta.clone();
                let held = seen.partial.len() as u64;
                seen.offsets.push(chunk.offset);
                if chunk.offset == 0 {
                    seen.partial.clear();
                } else if chunk.offset != held {
                    return Err(Status::failed_precondition("offset is not what is held"));
                }
            }
            if seen.break_after == Some(count) {
                seen.break_after = None;
                return Err(Status::unavailable("connection reset"));
            }
            count += 1;
            seen.partial.extend_from_slice(&chunk.data);
            seen.chunks.push(chunk.data.len());
        }
        let meta = meta.ok_or_else(|| Status::invalid_argument("no meta"))?;
        let mut seen = self.seen.lock().unwrap();
        let bytes = std::mem::take(&mut seen.partial);
        let digest = hex::encode(ring::digest::digest(&ring::digest::SHA256, &bytes));
        let size = bytes.len() as u64;
        if digest != meta.sha256 || size != meta.size {
            return Err(Status::invalid_argument("digest mismatch"));
        }
        seen.stored = Some(digest.clone());
        Ok(Response::new(ArtifactReceipt {
            sha256: digest,
            size,
            already_present: false,
        }))
    }

    async fn has_artifact(
        &self,
        req: Request<ArtifactRef>,
    ) -> Result<Response<ArtifactPresence>, Status> {
        let seen = self.seen.lock().unwrap();
        let present = seen.stored.as_deref() == Some(req.get_ref().sha256.as_str());
        let held = seen.partial.len() as u64;
        Ok(Response::new(ArtifactPresence { present, held }))
    }

    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        Ok(Response::new(StatusResponse::default()))
    }

    async fn audit_tail(
        &self,
        req: Request<AuditTailRequest>,
    ) -> Result<Response<LineStream>, Status> {
        let from = usize::try_from(req.get_ref().from_seq.max(1) - 1).unwrap();
        let lines: Vec<Result<AuditLine, Status>> = mock_log()
            .lines
            .iter()
            .skip(from)
            .map(|l| {
                Ok(AuditLine {
                    seq: 0,
                    line: l.clone(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(lines))))
    }

    async fn info(&self, _: Request<InfoRequest>) -> Result<Response<AgentInfo>, Status> {
        let key = mock_log().key.public_key();
        Ok(Response::new(AgentInfo {
            agent_id: "agent-1".into(),
            public_key_pem: key.to_spki_pem(),
            key_id: key.key_id().to_string(),
            ..AgentInfo::default()
        }))
    }

    async fn dispatch(
        &self,
        _: Request<gantry_proto::v1::DispatchRequest>,
    ) -> Result<Response<EventStream>, Status> {
        Err(Status::unimplemented("the client tests send no dispatches"))
    }

    async fn push_flags(
        &self,
        _: Request<gantry_proto::v1::SignedFlags>,
    ) -> Result<Response<gantry_proto::v1::FlagsReceipt>, Status> {
        Err(Status::unimplemented("the client tests push no flags"))
    }

    async fn get_flags(
        &self,
        _: Request<gantry_proto::v1::FlagsRequest>,
    ) -> Result<Response<gantry_proto::v1::FlagsInForce>, Status> {
        Err(Status::unimplemented("the client tests read no flags"))
    }

    async fn policy(
        &self,
        _: Request<gantry_proto::v1::PolicyRequest>,
    ) -> Result<Response<gantry_proto::v1::PolicyDocument>, Status> {
        Err(Status::unimplemented("the client tests read no policy"))
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    settings: ConnSettings,
    seen: Arc<Mutex<Seen>>,
}

async fn start(mock: impl FnOnce(Arc<Mutex<Seen>>) -> Mock) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let pki = generate_pki(&dir.path().join("pki"), "agent-1", "controller")
        .unwrap()
        .paths;
    let read = |p: &Path| std::fs::read(p).unwrap();
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read(&pki.agent), read(&pki.agent_key)))
        .client_ca_root(Certificate::from_pem(read(&pki.ca)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let svc = AgentServer::new(mock(seen.clone()));
    let server = Server::builder().tls_config(tls).unwrap();
    tokio::spawn(server.serve_with_incoming(
        svc,
        tokio_stream::wrappers::TcpListenerStream::new(listener),
    ));
    let settings = ConnSettings {
        addr: addr.to_string(),
        agent_id: "agent-1".into(),
        ca: pki.ca,
        cert: pki.controller,
        cert_key: pki.controller_key,
        witness_dir: Some(dir.path().join("state")),
        via: None,
    };
    Fixture {
        dir,
        settings,
        seen,
    }
}

fn mock(outcome: Outcome) -> impl FnOnce(Arc<Mutex<Seen>>) -> Mock {
    move |seen| Mock {
        seen,
        outcome,
        drop_first: false,
        reject: None,
    }
}

fn signed_deploy(dir: &Path, artifact: &Path) -> JobFile {
    let info = crate::commands::job::spec::hash_file(artifact).unwrap();
    let spec = JobSpecArgs {
        app: "web".into(),
        action: "deploy".into(),
        version: Some("1.0.0".into()),
        strategy: "hot".into(),
        instances: "1".into(),
        health: "tcp".into(),
        health_interval: "500ms".into(),
        health_timeout: "2s".into(),
        healthy_threshold: "1".into(),
        unhealthy_threshold: "3".into(),
        health_deadline: "30s".into(),
        progress_deadline: "10m".into(),
        valid_for: "15m".into(),
        not_before: None,
        env: Vec::new(),
        secret_env: Vec::new(),
        notes: None,
        evidence: Vec::new(),
        job_id: None,
        reason: String::new(),
        rollout: Default::default(),
        command: vec!["bin/app".into()],
    };
    let mut file =
        JobFile::new(build_job("agent-1", &spec, Some(&info), SystemTime::now()).unwrap());
    let (key, _, _) = keys::write_keypair(&dir.join("deployer")).unwrap();
    file.sign(&dir.join("job"), &key).unwrap();
    file
}

async fn connect(f: &Fixture) -> Agent {
    Agent::connect(&f.settings).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_uploads_in_chunks_follows_and_witnesses() {
    let f = start(mock(Outcome::Succeeded)).await;
    let artifact = f.dir.path().join("a.tgz");
    std::fs::write(&artifact, vec![7u8; 600 * 1024]).unwrap();
    let file = signed_deploy(f.dir.path(), &artifact);
    let agent = connect(&f).await;
    let out = Events::new(Mode::Json);
    ensure_artifact(&agent, &file, Some(&artifact), &out)
        .await
        .unwrap();
    assert_eq!(
        f.seen.lock().unwrap().chunks,
        vec![CHUNK, CHUNK, 600 * 1024 - 2 * CHUNK]
    );
    // Present now: no second upload.
    ensure_artifact(&agent, &file, None, &out).await.unwrap();
    assert_eq!(f.seen.lock().unwrap().chunks.len(), 3);

    let mut out = Events::new(Mode::Json);
    assert_eq!(
        submit_and_follow(&agent, &file, &mut out).await.unwrap(),
        Exit::Success
    );
    let w = witness::load(
        &f.dir.path().join("state"),
        "agent-1",
        &mock_log().key.key_id(),
    )
    .unwrap()
    .unwrap();
    assert_eq!(w.seq, 7);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_resumes_at_the_byte_the_agent_holds() {
    let f = start(mock(Outcome::Succeeded)).await;
    let artifact = f.dir.path().join("a.tgz");
    let data: Vec<u8> = (0..600 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(&artifact, &data).unwrap();
    let file = signed_deploy(f.dir.path(), &artifact);
    // An earlier upload broke off after 300 KiB.
    f.seen.lock().unwrap().partial = data[..300 * 1024].to_vec();
    let agent = connect(&f).await;
    ensure_artifact(&agent, &file, Some(&artifact), &Events::new(Mode::Json))
        .await
        .unwrap();
    let seen = f.seen.lock().unwrap();
    assert_eq!(seen.offsets, [300 * 1024]);
    assert_eq!(
        seen.chunks,
        [CHUNK, 300 * 1024 - CHUNK],
        "only the rest is sent"
    );
    assert!(seen.stored.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_that_breaks_off_is_tried_again_from_what_the_agent_then_holds() {
    let f = start(mock(Outcome::Succeeded)).await;
    let artifact = f.dir.path().join("a.tgz");
    std::fs::write(&artifact, vec![3u8; 600 * 1024]).unwrap();
    let file = signed_deploy(f.dir.path(), &artifact);
    f.seen.lock().unwrap().break_after = Some(2);
    let agent = connect(&f).await;
    ensure_artifact(&agent, &file, Some(&artifact), &Events::new(Mode::Json))
        .await
        .unwrap();
    let seen = f.seen.lock().unwrap();
    assert_eq!(seen.offsets, [0, 2 * CHUNK as u64]);
    assert_eq!(seen.chunks, [CHUNK, CHUNK, 600 * 1024 - 2 * CHUNK]);
    assert!(seen.stored.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_wrong_artifact_is_a_usage_error() {
    let f = start(mock(Outcome::Succeeded)).await;
    let artifact = f.dir.path().join("a.tgz");
    std::fs::write(&artifact, b"one").unwrap();
    let file = signed_deploy(f.dir.path(), &artifact);
    let agent = connect(&f).await;
    let out = Events::new(Mode::Json);
    let err = ensure_artifact(&agent, &file, None, &out)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--artifact"), "{err}");
    assert_eq!(err.exit(), Exit::Usage);
    let other = f.dir.path().join("b.tgz");
    std::fs::write(&other, b"two").unwrap();
    let err = ensure_artifact(&agent, &file, Some(&other), &out)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            SubmitError::Upload(UploadError::ArtifactMismatch { .. })
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolled_back_is_exit_1() {
    let f = start(mock(Outcome::RolledBack)).await;
    let artifact = f.dir.path().join("a.tgz");
    std::fs::write(&artifact, b"x").unwrap();
    let file = signed_deploy(f.dir.path(), &artifact);
    let agent = connect(&f).await;
    let mut out = Events::new(Mode::Json);
    assert_eq!(
        submit_and_follow(&agent, &file, &mut out).await.unwrap(),
        Exit::JobFailed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_is_reattached_with_watch() {
    let f = start(|seen| Mock {
        seen,
        outcome: Outcome::Succeeded,
        drop_first: true,
        reject: None,
    })
    .await;
    let artifact = f.dir.path().join("a.tgz");
    std::fs::write(&artifact, b"x").unwrap();
    let file = signed_deploy(f.dir.path(), &artifact);
    let agent = connect(&f).await;
    let mut out = Events::new(Mode::Json);
    assert_eq!(
        submit_and_follow(&agent, &file, &mut out).await.unwrap(),
        Exit::Success
    );
    let seen = f.seen.lock().unwrap();
    assert_eq!((seen.submits, seen.watches), (1, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_refusal_is_exit_3() {
    let f = start(|seen| Mock {
        seen,
        outcome: Outcome::Succeeded,
        drop_first: false,
        reject: Some(Status::permission_denied("key abc lacks role deployer")),
    })
    .await;
    let artifact = f.dir.path().join("a.tgz");
    std::fs::write(&artifact, b"x").unwrap();
    let file = signed_deploy(f.dir.path(), &artifact);
    let agent = connect(&f).await;
    let mut out = Events::new(Mode::Json);
    let err = submit_and_follow(&agent, &file, &mut out)
        .await
        .unwrap_err();
    assert_eq!(err.exit(), Exit::Rejected);
    assert!(err.to_string().contains("lacks role deployer"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_certificate_for_another_id_is_refused() {
    let f = start(mock(Outcome::Succeeded)).await;
    let mut settings = f.settings.clone();
    settings.agent_id = "agent-2".into();
    let err = Agent::connect(&settings).await.unwrap_err();
    assert_eq!(Exit::from(err.fault()), Exit::Usage);
    assert!(
        err.to_string().starts_with("cannot reach agent at"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_abort_are_signed_action_jobs_and_exit_0_on_success() {
    use gantry_proto::v1::{Action, Job};
    use prost::Message;

    use crate::cli::{ActionArgs, ConnArgs};
    use crate::commands::rollback::signed_action_job;

    let f = start(mock(Outcome::Succeeded)).await;
    let (key, key_path, _) = keys::write_keypair(&f.dir.path().join("deployer")).unwrap();
    let args = ActionArgs {
        conn: ConnArgs::default(),
        keys: vec![key_path],
        app: "web".into(),
        reason: "looks good".into(),
        valid_for: "5m".into(),
        json: true,
    };
    let agent = connect(&f).await;
    for action in [Action::Promote, Action::Abort] {
        let file = signed_action_job("agent-1", &args, action, None, SystemTime::now()).unwrap();
        assert_eq!(file.signed.signatures.len(), 1);
        assert_eq!(file.signed.signatures[0].key_id, key.key_id().as_str());
        let mut out = Events::new(Mode::Json);
        assert_eq!(
            submit_and_follow(&agent, &file, &mut out).await.unwrap(),
            Exit::Success
        );
        let sent = f.seen.lock().unwrap().jobs.last().cloned().unwrap();
        assert_eq!(sent, file.signed.job, "the exact signed bytes are sent");
        let job = Job::decode(sent.as_slice()).unwrap();
        assert_eq!(job.action, action as i32);
        assert_eq!(
            (job.app.as_str(), job.reason.as_str()),
            ("web", "looks good")
        );
        assert_eq!(job.agent_id, "agent-1");
        assert_eq!(job.release, None);
        assert_eq!(job.expires_at - job.not_before, 300);
        assert!(
            job.job_id
                .starts_with(&format!("web-{}-", gantry_policy::job::action_name(action))),
            "{}",
            job.job_id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_promote_exits_1_and_a_refused_one_3() {
    use gantry_proto::v1::Action;

    use crate::cli::{ActionArgs, ConnArgs};
    use crate::commands::rollback::signed_action_job;

    let args = |dir: &Path| {
        let (_, key_path, _) = keys::write_keypair(&dir.join("deployer")).unwrap();
        ActionArgs {
            conn: ConnArgs::default(),
            keys: vec![key_path],
            app: "web".into(),
            reason: String::new(),
            valid_for: "15m".into(),
            json: true,
        }
    };
    let f = start(mock(Outcome::Failed)).await;
    let file = signed_action_job(
        "agent-1",
        &args(f.dir.path()),
        Action::Promote,
        None,
        SystemTime::now(),
    )
    .unwrap();
    let mut out = Events::new(Mode::Json);
    assert_eq!(
        submit_and_follow(&connect(&f).await, &file, &mut out)
            .await
            .unwrap(),
        Exit::JobFailed
    );
    assert_eq!(out.finished().map(|fin| fin.reason.as_str()), Some("done"));

    let f = start(|seen| Mock {
        seen,
        outcome: Outcome::Succeeded,
        drop_first: false,
        reject: Some(Status::failed_precondition(
            "no rollout of web is waiting for promote",
        )),
    })
    .await;
    let file = signed_action_job(
        "agent-1",
        &args(f.dir.path()),
        Action::Abort,
        None,
        SystemTime::now(),
    )
    .unwrap();
    let mut out = Events::new(Mode::Json);
    let err = submit_and_follow(&connect(&f).await, &file, &mut out)
        .await
        .unwrap_err();
    assert_eq!(err.exit(), Exit::Rejected);
    assert!(err.to_string().contains("waiting for promote"), "{err}");
}
