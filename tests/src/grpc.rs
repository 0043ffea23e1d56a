//! Talking to the agent over gRPC directly, for what the `gantry` CLI refuses to send (it
//! checks a job file before submitting it, so a malformed job never leaves it).

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use gantry_proto::v1::agent_client::AgentClient;
use gantry_proto::v1::{
    AgentInfo, ArtifactChunk, ArtifactReceipt, ArtifactRef, DispatchRequest, InfoRequest, JobEvent,
    SignedJob,
};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::agent::Agent;
use crate::env::TestEnv;

/// Submits `job` as it is over mutual TLS with the controller's certificate; returns the
/// events the agent streamed, or the status it refused the job with.
///
/// # Errors
///
/// When the certificates cannot be read or no connection is made.
pub fn submit_raw(
    env: &TestEnv,
    agent: &Agent,
    job: SignedJob,
) -> anyhow::Result<Result<Vec<JobEvent>, tonic::Status>> {
    with_client(env, agent, |mut client| async move {
        let mut stream = match client.submit(job).await {
            Ok(resp) => resp.into_inner(),
            Err(status) => return Ok(Err(status)),
        };
        let mut events = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => return Ok(Ok(events)),
                Err(status) => return Ok(Err(status)),
            }
        }
    })
}

/// Sends a fleet dispatch as the controller service would (over mutual TLS with the
/// controller's certificate); returns the events the agent streamed, or the status it refused
/// the dispatch with.
///
/// # Errors
///
/// When the certificates cannot be read or no connection is made.
pub fn dispatch_raw(
    env: &TestEnv,
    agent: &Agent,
    request: DispatchRequest,
) -> anyhow::Result<Result<Vec<JobEvent>, tonic::Status>> {
    with_client(env, agent, |mut client| async move {
        let mut stream = match client.dispatch(request).await {
            Ok(resp) => resp.into_inner(),
            Err(status) => return Ok(Err(status)),
        };
        let mut events = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(ev)) => events.push(ev),
                Ok(None) => return Ok(Ok(events)),
                Err(status) => return Ok(Err(status)),
            }
        }
    })
}

/// Connects over mutual TLS with the controller's certificate and runs `call` on a
/// single-threaded runtime.
fn with_client<T, F, Fut>(env: &TestEnv, agent: &Agent, call: F) -> anyhow::Result<T>
where
    F: FnOnce(AgentClient<Channel>) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let identity = (
        env.pki.controller_cert.as_path(),
        env.pki.controller_key.as_path(),
    );
    with_client_as(env, agent, identity, call)
}

/// As [`with_client`], with the client certificate `identity` (certificate, key).
fn with_client_as<T, F, Fut>(
    env: &TestEnv,
    agent: &Agent,
    identity: (&Path, &Path),
    call: F,
) -> anyhow::Result<T>
where
    F: FnOnce(AgentClient<Channel>) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = connect_as(env, agent, identity.0, identity.1).await?;
        call(client).await
    })
}

/// Connects to the agent over mutual TLS with the client certificate `cert` (PEM) and its
/// key `key`, on the caller's tokio runtime.
///
/// # Errors
///
/// When the files cannot be read or no connection is made.
pub async fn connect_as(
    env: &TestEnv,
    agent: &Agent,
    cert: &Path,
    key: &Path,
) -> anyhow::Result<AgentClient<Channel>> {
    let read = |p: &Path| fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&env.pki.ca)?))
        .identity(Identity::from_pem(read(cert)?, read(key)?))
        .domain_name(env.agent_id.clone());
    let channel = Endpoint::from_shared(format!("https://{}", agent.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await
        .with_context(|| format!("cannot connect to the agent at {}", agent.addr))?;
    Ok(AgentClient::new(channel))
}

/// The agent's `Info` answer, over mutual TLS with the controller's certificate.
///
/// # Errors
///
/// When no connection is made or the call fails.
pub fn info(env: &TestEnv, agent: &Agent) -> anyhow::Result<AgentInfo> {
    with_client(env, agent, |mut client| async move {
        Ok(client.info(InfoRequest {}).await?.into_inner())
    })
}

/// The agent's `HasArtifact` answer for `sha256` and `size`: whether it holds the artifact,
/// and how many bytes of an interrupted upload of it.
///
/// # Errors
///
/// When no connection is made or the call fails.
pub fn has_artifact(
    env: &TestEnv,
    agent: &Agent,
    sha256: &str,
    size: u64,
) -> anyhow::Result<gantry_proto::v1::ArtifactPresence> {
    let want = ArtifactRef {
        sha256: sha256.to_owned(),
        size,
    };
    with_client(env, agent, |mut client| async move {
        Ok(client.has_artifact(want).await?.into_inner())
    })
}

/// Streams `data` to the agent's artifact store claiming `sha256` and `size` in the first
/// chunk (64 KiB chunks); returns the receipt or the status the upload was refused with.
///
/// # Errors
///
/// When the certificates cannot be read or no connection is made.
pub fn upload_raw(
    env: &TestEnv,
    agent: &Agent,
    sha256: &str,
    size: u64,
    data: &[u8],
) -> anyhow::Result<Result<ArtifactReceipt, tonic::Status>> {
    let identity = (
        env.pki.controller_cert.as_path(),
        env.pki.controller_key.as_path(),
    );
    upload_raw_as(env, agent, identity, sha256, size, data)
}

/// As [`upload_raw`], over TLS with the client certificate `identity` (PEM certificate and
/// key) instead of the controller's.
///
/// # Errors
///
/// When the certificates cannot be read or no connection is made.
pub fn upload_raw_as(
    env: &TestEnv,
    agent: &Agent,
    identity: (&Path, &Path),
    sha256: &str,
    size: u64,
    data: &[u8],
) -> anyhow::Result<Result<ArtifactReceipt, tonic::Status>> {
    let mut chunks: Vec<ArtifactChunk> = data
        .chunks(64 << 10)
        .map(|c| ArtifactChunk {
            meta: None,
            data: c.to_vec(),
            offset: 0,
        })
        .collect();
    let meta = ArtifactRef {
        sha256: sha256.to_owned(),
        size,
    };
    match chunks.first_mut() {
        Some(first) => first.meta = Some(meta),
        None => chunks.push(ArtifactChunk {
            meta: Some(meta),
            data: Vec::new(),
            offset: 0,
        }),
    }
    with_client_as(env, agent, identity, |mut client| async move {
        Ok(client
            .upload_artifact(tokio_stream::iter(chunks))
            .await
            .map(tonic::Response::into_inner))
    })
}

/// Asks the agent for its status over TLS with the client certificate `identity` (PEM
/// certificate and key), or with none; returns whether the call was answered, and the error
/// text otherwise (a refused handshake fails the connection or the first call).
///
/// # Errors
///
/// When the files cannot be read.
pub fn status_as(
    env: &TestEnv,
    agent: &Agent,
    identity: Option<(&Path, &Path)>,
) -> anyhow::Result<Result<(), String>> {
    let read = |p: &Path| fs::read(p).with_context(|| format!("cannot read {}", p.display()));
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&env.pki.ca)?))
        .domain_name(env.agent_id.clone());
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
    }
    let addr = agent.addr;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(async move {
        let endpoint = Endpoint::from_shared(format!("https://{addr}"))
            .map_err(|e| e.to_string())?
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(10));
        let channel = endpoint.connect().await.map_err(|e| format!("{e:?}"))?;
        AgentClient::new(channel)
            .status(gantry_proto::v1::StatusRequest::default())
            .await
            .map(drop)
            .map_err(|s| format!("{s:?}"))
    }))
}

/// Asks the agent for its status with the controller's certificate and one extra request
/// header `name: value`; the error text when the call fails.
///
/// # Errors
///
/// When the certificates cannot be read.
pub fn status_with_header(
    env: &TestEnv,
    agent: &Agent,
    name: &'static str,
    value: &str,
) -> anyhow::Result<Result<(), String>> {
    let value: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = value.parse()?;
    with_client(env, agent, |mut client| async move {
        let mut request = tonic::Request::new(gantry_proto::v1::StatusRequest::default());
        request.metadata_mut().insert(name, value);
        Ok(client
            .status(request)
            .await
            .map(drop)
            .map_err(|s| format!("{s:?}")))
    })
}

/// The agent's own status answer (not the CLI's rendering of it).
///
/// # Errors
///
/// When no connection is made or the call fails.
pub fn status_raw(
    env: &TestEnv,
    agent: &Agent,
) -> anyhow::Result<gantry_proto::v1::StatusResponse> {
    with_client(env, agent, |mut client| async move {
        Ok(client
            .status(gantry_proto::v1::StatusRequest::default())
            .await?
            .into_inner())
    })
}
