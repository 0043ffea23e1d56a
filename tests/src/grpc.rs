//! Talking to the agent over gRPC directly, for what the `gantry` CLI refuses to send (it
//! checks a job file before submitting it, so a malformed job never leaves it).

use std::fs;
use std::time::Duration;

use anyhow::Context;
use gantry_proto::v1::agent_client::AgentClient;
use gantry_proto::v1::{JobEvent, SignedJob};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

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
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let read = |p: &std::path::Path| {
            fs::read(p).with_context(|| format!("cannot read {}", p.display()))
        };
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(read(&env.pki.ca)?))
            .identity(Identity::from_pem(
                read(&env.pki.controller_cert)?,
                read(&env.pki.controller_key)?,
            ))
            .domain_name(env.agent_id.clone());
        let channel = Endpoint::from_shared(format!("https://{}", agent.addr))?
            .tls_config(tls)?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .with_context(|| format!("cannot connect to the agent at {}", agent.addr))?;
        let mut client = AgentClient::new(channel);
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
