//! `gantry server`: opens the store, the audit log and the artifact store, keeps the
//! inventory fresh from each agent's `Info`, drives every unfinished rollout whose lease it can
//! take, and serves the `Controller` gRPC API with mutual TLS until `shutdown` resolves.
//!
//! * `grpc.rs`: the handlers (the flag-set ones call [`crate::flag_sets`], whose delivery loop
//!   `run` starts); `status.rs`: records to the wire and errors to statuses;
//!   `operator.rs`: the operator's name from their client certificate;
//!   `inventory.rs`: the `Info` refresher; `live_signals.rs`: the hosts' golden signals
//!   `GetRollout` asks their agents for; `proxy.rs`: Agent RPCs forwarded to dialled-in agents; `fleet_tail.rs`: the agents' logs interleaved; `scheduler.rs`: one driver per unfinished rollout.
//! * `dashboard/`: the read-only web dashboard on `[dashboard] listen`, when configured.

mod dashboard;
mod fleet_tail;
mod grpc;
mod inventory;
mod live_signals;
mod operator;
mod proxy;
mod scheduler;
mod status;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;

use gantry_proto::keys::SigningKey;
use gantry_proto::v1::controller_server::ControllerServer;
use tokio::sync::Notify;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::artifacts::{ArtifactError, ArtifactStore};
use crate::audit::{AuditError, AuditLog};
use crate::config::{AgentMode, Config, StoreChoice};
use crate::dial::Dialer;
use crate::engine::{Engine, EngineSettings};
use crate::lease::LeaseSettings;
use crate::sessions::Sessions;
use crate::store::embedded::EmbeddedStore;
use crate::store::postgres::PostgresStore;
use crate::store::{Store, StoreError};

pub use grpc::ControllerService;

/// Largest message the service accepts (plans are small; artifacts come in chunks).
const MAX_DECODE: usize = 4 * 1024 * 1024;

/// Why the service could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The artifact store could not be opened.
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    /// The orchestrator key could not be read.
    #[error("cannot read orchestrator key {}: {reason}", path.display())]
    Key {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        reason: String,
    },
    /// The TLS files or names cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listener failed.
    #[error("cannot serve on {addr}: {reason}")]
    Serve {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        reason: String,
    },
}

/// Runs the service until `shutdown` resolves.
///
/// # Errors
/// [`ServerError`].
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    match &config.store {
        StoreChoice::Embedded => {
            let store = EmbeddedStore::open(&config.data_dir)?;
            tracing::info!(path = %store.path().display(), "embedded store open");
            serve(config, Arc::new(store), shutdown).await
        }
        StoreChoice::Postgres(url) => {
            let store = PostgresStore::connect_with_ca(url, config.store_ca.as_deref()).await?;
            tracing::info!(tls = config.store_ca.is_some(), "postgres store connected");
            serve(config, Arc::new(store), shutdown).await
        }
    }
}

async fn serve<S: Store>(
    config: Config,
    store: Arc<S>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let read_key = || {
        SigningKey::read_pem_file(&config.orchestrator_key).map_err(|e| ServerError::Key {
            path: config.orchestrator_key.clone(),
            reason: e.to_string(),
        })
    };
    let key = read_key()?;
    let audit_dir = config.data_dir.join("audit");
    // The audit log seals its checkpoints with the same key (read twice: keys are not Clone).
    let audit =
        Arc::new(AuditLog::open(&audit_dir, read_key()?)?.rotate_at(config.audit_max_file_bytes));
    let artifacts = ArtifactStore::open(&config.data_dir.join("artifacts"))?;
    let tls_map: HashMap<_, _> = config
        .agents
        .iter()
        .map(|a| (a.id.clone(), a.tls.clone()))
        .collect();
    let sessions = Arc::new(Sessions::new(
        config
            .agents
            .iter()
            .filter(|a| a.mode == AgentMode::Dial)
            .map(|a| a.id.clone()),
    ));
    let dialer = Arc::new(Dialer::new(
        tls_map,
        artifacts.clone(),
        Arc::clone(&sessions),
    ));
    let operators = operator::Operators::new(&config.client_names).map_err(ServerError::Tls)?;
    let proxy_operators =
        Arc::new(operator::Operators::new(&config.client_names).map_err(ServerError::Tls)?);

    audit.append(
        "service.started",
        &[
            ("replica", config.replica_id.clone().into()),
            ("version", env!("CARGO_PKG_VERSION").into()),
            ("listen", config.listen.to_string().into()),
        ],
    )?;
    inventory::seed(store.as_ref(), &config.agents).await?;
    inventory::refresh_once(store.as_ref(), dialer.as_ref(), &config.agents).await;
    tokio::spawn(inventory::refresh(
        store.clone(),
        dialer.clone(),
        config.agents.clone(),
        config.refresh,
    ));

    let engine = Engine::new(
        store.clone(),
        dialer.clone(),
        audit.clone(),
        key,
        EngineSettings {
            lease: LeaseSettings {
                holder: config.replica_id.clone(),
                period: config.lease_period,
            },
            dispatch_validity: config.dispatch_validity,
            poll: config.poll,
            retry: config.retry,
        },
    );
    let wake = Arc::new(Notify::new());
    tokio::spawn(scheduler::run(
        engine,
        store.clone(),
        wake.clone(),
        config.poll,
    ));

    let read = |what: &str, p: &std::path::Path| {
        std::fs::read(p)
            .map_err(|e| ServerError::Tls(format!("cannot read {what} {}: {e}", p.display())))
    };
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(
            read("certificate", &config.cert)?,
            read("key", &config.key)?,
        ))
        .client_ca_root(Certificate::from_pem(read("CA certificate", &config.ca)?));
    let dashboard = match config.dashboard {
        Some(addr) => {
            Some(start_dashboard(addr, store.clone(), audit_dir.clone(), dialer.clone()).await?)
        }
        None => None,
    };
    let proxy = proxy::AgentProxy {
        sessions: Arc::clone(&sessions),
        operators: proxy_operators,
        audit: Arc::clone(&audit),
    };
    let flags = crate::flag_sets::Distributor::new(
        Arc::clone(&store),
        Arc::clone(&dialer),
        Arc::clone(&audit),
    );
    tokio::spawn(flags.clone().run(config.retry));
    let service = ControllerService {
        store,
        audit,
        audit_dir,
        artifacts,
        dialer,
        operators,
        wake,
        promotion: config.promotion.clone(),
        flags,
    };
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| ServerError::Serve {
            addr: config.listen,
            reason: e.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|e| ServerError::Serve {
        addr: config.listen,
        reason: e.to_string(),
    })?;
    if let Some(addr) = config.dial_listen {
        let trust = Arc::new(
            crate::dial_in::DialInTrust::new(
                &config
                    .agents
                    .iter()
                    .filter(|a| a.mode == AgentMode::Dial)
                    .map(|a| (a.id.clone(), a.tls.ca.clone()))
                    .collect::<Vec<_>>(),
            )
            .map_err(ServerError::Tls)?,
        );
        let tls = crate::dial_in::server_config(&config.cert, &config.key, &trust)
            .map_err(ServerError::Tls)?;
        let listener =
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| ServerError::Serve {
                    addr,
                    reason: e.to_string(),
                })?;
        let bound = listener.local_addr().map_err(|e| ServerError::Serve {
            addr,
            reason: e.to_string(),
        })?;
        tracing::info!(addr = %bound, "dial-in listener ready (agents in dial-out mode)");
        println!("gantry server dial-in on {bound}");
        tokio::spawn(crate::dial_in::serve(
            listener,
            tls,
            trust,
            Arc::clone(&sessions),
            Arc::clone(&service.audit),
        ));
    }
    // Tests and scripts wait for this line.
    tracing::info!(addr = %bound, replica = %config.replica_id, "gantry server ready");
    println!("gantry server ready on {bound}");
    let served = Server::builder()
        .tls_config(tls)
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .add_service(ControllerServer::new(service).max_decoding_message_size(MAX_DECODE))
        .add_service(proxy)
        .serve_with_incoming_shutdown(
            tokio_stream::wrappers::TcpListenerStream::new(listener),
            shutdown,
        )
        .await
        .map_err(|e| ServerError::Serve {
            addr: bound,
            reason: e.to_string(),
        });
    if let Some(task) = dashboard {
        task.abort();
    }
    served
}

/// Binds the dashboard's listener and serves it in a task.
async fn start_dashboard<S: Store>(
    addr: std::net::SocketAddr,
    store: Arc<S>,
    audit_dir: std::path::PathBuf,
    dialer: Arc<Dialer>,
) -> Result<tokio::task::JoinHandle<()>, ServerError> {
    let serve_error = |e: std::io::Error| ServerError::Serve {
        addr,
        reason: format!("dashboard: {e}"),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(serve_error)?;
    let bound = listener.local_addr().map_err(serve_error)?;
    if !bound.ip().is_loopback() {
        tracing::warn!(
            "the dashboard listens on {bound}, beyond loopback: it is read-only and unauthenticated"
        );
    }
    tracing::info!(addr = %bound, "dashboard ready");
    // Tests and scripts read the bound address (port 0 in tests) from this line.
    println!("gantry server dashboard on http://{bound}/dashboard");
    Ok(tokio::spawn(dashboard::serve(
        listener,
        dashboard::Dashboard {
            store,
            audit_dir,
            dialer: Some(dialer),
        },
    )))
}
