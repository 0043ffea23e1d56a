//! The agents over mutual TLS, with gantry-client: the service dials each agent with its own
//! client certificate (the agent's certificate must name the agent id), keeps one connection
//! per agent, and drops it when a call breaks so the next one reconnects.

use std::collections::HashMap;
use std::sync::Arc;

use gantry_client::connect::{Agent, ClientError, ConnSettings};
use gantry_client::upload::ensure_artifact;
use gantry_proto::v1::{
    AppStatus, ArtifactRef, DispatchRequest, InfoRequest, Outcome, PolicyDocument, PolicyRequest,
    StatusRequest, job_event,
};
use tokio::sync::Mutex;

use crate::agents::{
    AgentFacts, Agents, AuditSource, FlagPush, HostHealth, PushOutcome, RunObserver, RunOutcome,
    RunResult,
};
use crate::artifacts::ArtifactStore;
use crate::config::AgentTls;
use crate::sessions::Sessions;
use crate::store::AgentRecord;

/// The agents, dialled over mTLS, or over the connection they dialled in on.
#[derive(Debug)]
pub struct Dialer {
    tls: HashMap<String, AgentTls>,
    artifacts: ArtifactStore,
    conns: Mutex<HashMap<String, Agent>>,
    sessions: Arc<Sessions>,
}

impl Dialer {
    /// A dialer with no connection yet; `tls` says how to reach each configured agent that
    /// listens, `sessions` holds those that dial in.
    pub fn new(
        tls: HashMap<String, AgentTls>,
        artifacts: ArtifactStore,
        sessions: Arc<Sessions>,
    ) -> Self {
        Self {
            tls,
            artifacts,
            conns: Mutex::new(HashMap::new()),
            sessions,
        }
    }

    /// The dial-in sessions.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    async fn agent(&self, a: &AgentRecord) -> Result<Agent, ClientError> {
        // A dial-in agent not connected now is unreachable, like a listening one that is down.
        if self.sessions.expects(&a.id) {
            return self
                .sessions
                .get(&a.id)
                .map_err(|e| ClientError::Transport {
                    op: "connect",
                    addr: "(dials in)".to_owned(),
                    code: tonic::Code::Unavailable,
                    reason: e.to_string(),
                });
        }
        if let Some(c) = self.conns.lock().await.get(&a.id)
            && c.addr == a.addr
        {
            return Ok(c.clone());
        }
        let Some(tls) = self.tls.get(&a.id) else {
            return Err(ClientError::BadAddress {
                addr: a.addr.clone(),
                reason: format!("agent {} is not in the service's config", a.id),
            });
        };
        let conn = Agent::connect(&ConnSettings {
            addr: a.addr.clone(),
            agent_id: a.id.clone(),
            ca: tls.ca.clone(),
            cert: tls.cert.clone(),
            cert_key: tls.key.clone(),
            witness_dir: None,
            via: None,
        })
        .await?;
        self.conns.lock().await.insert(a.id.clone(), conn.clone());
        Ok(conn)
    }

    async fn forget(&self, id: &str) {
        self.conns.lock().await.remove(id);
    }

    /// `app`'s status on the agent (its `Status` RPC).
    ///
    /// # Errors
    /// Why it could not be read, or that the agent has no such app.
    pub async fn app_status(&self, agent: &AgentRecord, app: &str) -> Result<AppStatus, String> {
        let conn = match self.agent(agent).await {
            Ok(c) => c,
            Err(e) => return Err(self.broken(&agent.id, &e).await),
        };
        let status = match conn
            .client
            .clone()
            .status(StatusRequest {
                app: app.to_owned(),
            })
            .await
        {
            Ok(s) => s.into_inner(),
            Err(s) => {
                let e = conn.error("Status", s);
                return Err(self.broken(&agent.id, &e).await);
            }
        };
        status
            .apps
            .into_iter()
            .find(|a| a.name == app)
            .ok_or_else(|| format!("the agent has no app {app:?}"))
    }

    /// Reads an agent's whole audit log and checks it: the chain, its checkpoints under the
    /// key the agent reports, and that it still holds `witnessed` exactly.
    ///
    /// # Errors
    /// What is wrong, or why it could not be checked.
    pub async fn verify_audit(
        &self,
        a: &AgentRecord,
        witnessed: Option<&crate::store::CheckpointRecord>,
    ) -> Result<u64, String> {
        Ok(self.verified_audit(a, witnessed).await?.1)
    }

    /// An agent's whole audit log, once [`Self::verify_audit`]'s checks passed: every line, in
    /// order, and the count of entries verified.
    ///
    /// # Errors
    /// What is wrong, or why it could not be checked.
    pub async fn verified_audit(
        &self,
        a: &AgentRecord,
        witnessed: Option<&crate::store::CheckpointRecord>,
    ) -> Result<(Vec<String>, u64), String> {
        use gantry_proto::audit_chain::{check_witness, verify_lines};
        use gantry_proto::keys::PublicKey;
        use gantry_proto::v1::AuditTailRequest;
        let conn = match self.agent(a).await {
            Ok(c) => c,
            Err(e) => return Err(self.broken(&a.id, &e).await),
        };
        let info = conn
            .client
            .clone()
            .info(InfoRequest {})
            .await
            .map_err(|s| conn.error("Info", s).to_string())?
            .into_inner();
        let key = PublicKey::from_spki_pem(&info.public_key_pem)
            .map_err(|e| format!("the agent's audit key does not parse: {e}"))?;
        let mut stream = conn
            .client
            .clone()
            .audit_tail(AuditTailRequest {
                from_seq: 1,
                last: 0,
                follow: false,
            })
            .await
            .map_err(|s| conn.error("AuditTail", s).to_string())?
            .into_inner();
        let mut lines: Vec<String> = Vec::new();
        loop {
            match stream.message().await {
                Ok(Some(l)) => lines.push(l.line),
                Ok(None) => break,
                Err(s) => return Err(conn.error("AuditTail", s).to_string()),
            }
        }
        let summary = verify_lines(lines.iter().map(String::as_bytes), Some(&key))
            .map_err(|e| format!("the chain does not verify: {e}"))?;
        if let Some(w) = witnessed {
            check_witness(lines.iter().map(String::as_bytes), w.seq, &w.line)
                .map_err(|e| format!("witnessed checkpoint seq {}: {e}", w.seq))?;
        }
        Ok((lines, summary.entries))
    }

    /// The agent's effective policy, as its `Policy` RPC reports it.
    ///
    /// # Errors
    /// Why the agent could not be asked.
    pub async fn policy(&self, a: &AgentRecord) -> Result<PolicyDocument, String> {
        let conn = match self.agent(a).await {
            Ok(c) => c,
            Err(e) => return Err(self.broken(&a.id, &e).await),
        };
        conn.client
            .clone()
            .policy(PolicyRequest {})
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| conn.error("Policy", s).to_string())
    }

    /// The agent's audit lines as `AuditTail` streams them.
    ///
    /// # Errors
    /// Why the agent could not be asked.
    pub async fn audit_tail(
        &self,
        a: &AgentRecord,
        request: gantry_proto::v1::AuditTailRequest,
    ) -> Result<tonic::Streaming<gantry_proto::v1::AuditLine>, String> {
        let conn = match self.agent(a).await {
            Ok(c) => c,
            Err(e) => return Err(self.broken(&a.id, &e).await),
        };
        match conn.client.clone().audit_tail(request).await {
            Ok(s) => Ok(s.into_inner()),
            Err(s) => {
                let e = conn.error("AuditTail", s);
                Err(self.broken(&a.id, &e).await)
            }
        }
    }

    /// The agent's audit-signing key, from its `Info`.
    ///
    /// # Errors
    /// Why it could not be read.
    pub async fn audit_key(
        &self,
        a: &AgentRecord,
    ) -> Result<gantry_proto::keys::PublicKey, String> {
        let conn = match self.agent(a).await {
            Ok(c) => c,
            Err(e) => return Err(self.broken(&a.id, &e).await),
        };
        let info = match conn.client.clone().info(InfoRequest {}).await {
            Ok(i) => i.into_inner(),
            Err(s) => {
                let e = conn.error("Info", s);
                return Err(self.broken(&a.id, &e).await);
            }
        };
        gantry_proto::keys::PublicKey::from_spki_pem(&info.public_key_pem)
            .map_err(|e| format!("the agent's audit key does not parse: {e}"))
    }

    async fn broken(&self, id: &str, e: &ClientError) -> String {
        if e.is_transport() {
            self.forget(id).await;
        }
        e.to_string()
    }
}

impl Agents for Dialer {
    async fn run(
        &self,
        agent: &AgentRecord,
        request: DispatchRequest,
        observer: &mut (dyn RunObserver + '_),
    ) -> RunResult {
        let unreachable = |reason: String| RunResult {
            outcome: RunOutcome::Unreachable(reason),
            checkpoint: None,
        };
        let conn = match self.agent(agent).await {
            Ok(c) => c,
            Err(e) => return unreachable(self.broken(&agent.id, &e).await),
        };
        let mut stream = match conn.client.clone().dispatch(request).await {
            Ok(s) => s.into_inner(),
            Err(status) => {
                let e = conn.error("Dispatch", status);
                return match e {
                    ClientError::Rejected { ref message, .. } => RunResult {
                        outcome: RunOutcome::Refused(message.clone()),
                        checkpoint: None,
                    },
                    other => unreachable(self.broken(&agent.id, &other).await),
                };
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(ev)) => {
                    observer.event(&agent.id, &ev);
                    if let Some(job_event::Kind::Finished(f)) = ev.kind {
                        let outcome = match Outcome::try_from(f.outcome) {
                            Ok(Outcome::Succeeded) => RunOutcome::Succeeded,
                            Ok(Outcome::RolledBack) => RunOutcome::Failed(format!(
                                "rolled back on the agent: {}",
                                f.reason
                            )),
                            Ok(Outcome::Interrupted) => RunOutcome::Failed(format!(
                                "interrupted on the agent: {}",
                                f.reason
                            )),
                            Ok(Outcome::Failed | Outcome::Unspecified) | Err(_) => {
                                RunOutcome::Failed(f.reason.clone())
                            }
                        };
                        return RunResult {
                            outcome,
                            checkpoint: f.checkpoint,
                        };
                    }
                }
                Ok(None) => {
                    return unreachable("the event stream ended before the job finished".into());
                }
                Err(status) => {
                    let e = conn.error("Dispatch", status);
                    return match e {
                        ClientError::Rejected { ref message, .. } => RunResult {
                            outcome: RunOutcome::Refused(message.clone()),
                            checkpoint: None,
                        },
                        other => unreachable(self.broken(&agent.id, &other).await),
                    };
                }
            }
        }
    }

    async fn health(&self, agent: &AgentRecord, app: &str) -> Result<HostHealth, String> {
        let a = self.app_status(agent, app).await?;
        Ok(HostHealth {
            version: a.version.clone(),
            running: !a.instances.is_empty() && a.instances.iter().all(|i| i.state == "running"),
            restarts: a.instances.iter().map(|i| u64::from(i.restarts)).sum(),
            conn_errors: a.backends.iter().map(|b| b.connect_errors).sum(),
        })
    }

    async fn ensure_artifact(
        &self,
        agent: &AgentRecord,
        sha256: &str,
        size: u64,
    ) -> Result<(), String> {
        let conn = match self.agent(agent).await {
            Ok(c) => c,
            Err(e) => return Err(self.broken(&agent.id, &e).await),
        };
        let path = self.artifacts.path_of(sha256).filter(|p| p.exists());
        let want = ArtifactRef {
            sha256: sha256.to_owned(),
            size,
        };
        match ensure_artifact(&conn, &want, path.as_deref(), &mut ()).await {
            Ok(_) => Ok(()),
            Err(e) => {
                if let gantry_client::upload::UploadError::Client(c) = &e
                    && c.is_transport()
                {
                    self.forget(&agent.id).await;
                }
                Err(e.to_string())
            }
        }
    }

    async fn info(&self, agent: &AgentRecord) -> Result<AgentFacts, String> {
        let conn = match self.agent(agent).await {
            Ok(c) => c,
            Err(e) => return Err(self.broken(&agent.id, &e).await),
        };
        match conn.client.clone().info(InfoRequest {}).await {
            Ok(i) => {
                let i = i.into_inner();
                Ok(AgentFacts {
                    version: i.version,
                    environment: i.environment,
                    labels: i.labels.into_iter().collect(),
                })
            }
            Err(s) => {
                let e = conn.error("Info", s);
                Err(self.broken(&agent.id, &e).await)
            }
        }
    }
}

impl AuditSource for Dialer {
    async fn verified_lines(
        &self,
        agent: &AgentRecord,
        witnessed: Option<&crate::store::CheckpointRecord>,
    ) -> Result<Vec<String>, String> {
        Ok(self.verified_audit(agent, witnessed).await?.0)
    }
}

/// How long one push of a flag set may take before the agent counts as unreachable.
const PUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl FlagPush for Dialer {
    async fn push_flags(
        &self,
        agent: &AgentRecord,
        signed: gantry_proto::v1::SignedFlags,
    ) -> PushOutcome {
        let conn = match self.agent(agent).await {
            Ok(c) => c,
            Err(e) => return PushOutcome::Unreachable(self.broken(&agent.id, &e).await),
        };
        let pushed =
            tokio::time::timeout(PUSH_TIMEOUT, gantry_client::flags::push(&conn, signed)).await;
        match pushed {
            Ok(Ok(receipt)) => PushOutcome::Applied {
                unchanged: receipt.unchanged,
            },
            Ok(Err(ClientError::Rejected { message, .. })) => PushOutcome::Refused(message),
            Ok(Err(e)) => PushOutcome::Unreachable(self.broken(&agent.id, &e).await),
            Err(_) => {
                self.forget(&agent.id).await;
                PushOutcome::Unreachable(format!(
                    "PushFlags did not answer within {}s",
                    PUSH_TIMEOUT.as_secs()
                ))
            }
        }
    }
}
