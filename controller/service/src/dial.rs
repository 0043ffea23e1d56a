//! The agents over mutual TLS, with gantry-client: the service dials each agent with its own
//! client certificate (the agent's certificate must name the agent id), keeps one connection
//! per agent, and drops it when a call breaks so the next one reconnects.

use std::collections::HashMap;
use std::path::PathBuf;

use gantry_client::connect::{Agent, ClientError, ConnSettings};
use gantry_client::upload::ensure_artifact;
use gantry_proto::v1::{
    ArtifactRef, DispatchRequest, InfoRequest, Outcome, StatusRequest, job_event,
};
use tokio::sync::Mutex;

use crate::agents::{AgentFacts, Agents, HostHealth, RunObserver, RunOutcome, RunResult};
use crate::artifacts::ArtifactStore;
use crate::store::AgentRecord;

/// The service's client identity, and where the agents' artifacts come from.
#[derive(Debug, Clone)]
pub struct DialSettings {
    /// The CA the agents' certificates chain to.
    pub ca: PathBuf,
    /// The service's client certificate.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// The agents, dialled over mTLS.
#[derive(Debug)]
pub struct Dialer {
    settings: DialSettings,
    artifacts: ArtifactStore,
    conns: Mutex<HashMap<String, Agent>>,
}

impl Dialer {
    /// A dialer with no connection yet.
    pub fn new(settings: DialSettings, artifacts: ArtifactStore) -> Self {
        Self {
            settings,
            artifacts,
            conns: Mutex::new(HashMap::new()),
        }
    }

    async fn agent(&self, a: &AgentRecord) -> Result<Agent, ClientError> {
        if let Some(c) = self.conns.lock().await.get(&a.id)
            && c.addr == a.addr
        {
            return Ok(c.clone());
        }
        let conn = Agent::connect(&ConnSettings {
            addr: a.addr.clone(),
            agent_id: a.id.clone(),
            ca: self.settings.ca.clone(),
            cert: self.settings.cert.clone(),
            cert_key: self.settings.key.clone(),
            witness_dir: None,
        })
        .await?;
        self.conns.lock().await.insert(a.id.clone(), conn.clone());
        Ok(conn)
    }

    async fn forget(&self, id: &str) {
        self.conns.lock().await.remove(id);
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
        let Some(a) = status.apps.iter().find(|a| a.name == app) else {
            return Err(format!("the agent has no app {app:?}"));
        };
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
