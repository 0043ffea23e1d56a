//! `gantry-agent run`: start-up in dependency order, serve until SIGTERM/SIGINT (or until an
//! fdatasync of the audit log fails: then the same drain and exit 2), then a bounded
//! drain that leaves every app instance running.
//!
//! Start-up: config → signing key → audit log (torn tail set aside) → `agent.started` →
//! replay store (records missing from it rebuilt from the log's `job.accepted` entries) →
//! artifact store → executor (adopts instances, closes interrupted jobs) →
//! listener → `<data_dir>/run/listen.addr` (in dial-out mode: no listener, the dial loop
//! and `run/dial.state`) → `READY=1` to systemd (and watchdog pings when
//! `WatchdogSec=` asks for them). Shutdown: `STOPPING=1` → stop accepting → let jobs finish
//! within the grace period, else interrupt them → detach instances → `agent.stopped` → final
//! checkpoint.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use gantry_proto::keys::SigningKey;
use gantry_proto::v1::agent_server::AgentServer;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admission::Admission;
use crate::admission::dispatch::FleetSeat;
use crate::artifact::ArtifactStore;
use crate::audit::{AuditLog, AuditOptions, Entry};
use crate::config::Config;
use crate::error::reason;
use crate::executor::Executor;
use crate::intake::Intake;
use crate::ledger::Ledger;
use crate::ledger::plans::PlanLedger;
use crate::server::handshake::HandshakeRefusals;
use crate::server::throttle::{Budget, ClientThrottle};
use crate::server::{AgentService, dialout, tls};
use crate::shutdown::{GRACE, Shutdown};
use crate::state::create_dir_mode;

/// The entry saying which accepted jobs the replay store lacked at start and got back from the
/// audit log (the directory deleted or emptied).
fn rebuilt_entry(ledger: &Ledger, restored: &[crate::job::JobId]) -> Entry {
    let ids: Vec<String> = restored.iter().map(ToString::to_string).collect();
    Entry::new("replay_store.rebuilt")
        .with("dir", json!(ledger.dir().display().to_string()))
        .with("restored", json!(ids.len()))
        .with("job_ids", json!(ids))
}

/// HTTP/2 limits: enough for a controller, too little for a resource-exhaustion attempt.
const MAX_CONCURRENT_STREAMS: u32 = 64;
const MAX_HEADER_LIST_SIZE: u32 = 16 * 1024;
/// Artifact chunks are at most this large; jobs are bounded separately by the config.
const MAX_CHUNK_BYTES: usize = 1024 * 1024;

/// Why the agent could not start or stopped abnormally.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The config is invalid.
    #[error("invalid config {}:\n{problems}", path.display())]
    Config {
        /// The config file.
        path: PathBuf,
        /// Every problem, one per line.
        problems: String,
    },
    /// A start-up step failed.
    #[error("cannot {step}")]
    Start {
        /// What was being done.
        step: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another agent runs on the same data dir (or its lock cannot be taken).
    #[error("refusing to start")]
    Locked(#[source] crate::lock::LockError),
    /// Some apps' users cannot reach their directories under the data dir.
    #[error("refusing to start:{}", .0.iter().map(|u| format!("\n  {u}")).collect::<String>())]
    Unreachable(Vec<crate::reach::Unreachable>),
    /// In dial-out mode, the link to the service was down longer than
    /// `exit_on_disconnect_after`; the agent stopped as on SIGTERM (apps keep running).
    #[error("{0}")]
    LinkLost(crate::server::dialout::LinkLost),
    /// An fdatasync of the audit log failed: the agent stopped as on SIGTERM (apps keep
    /// running) rather than retry it (case H4).
    #[error("stopped: the audit log failed for good: {cause}")]
    AuditFailed {
        /// What failed, naming the file and the errno.
        cause: String,
    },
    /// The server failed while running.
    #[error("the gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

fn start<E: std::error::Error + Send + Sync + 'static>(
    step: impl Into<String>,
) -> impl FnOnce(E) -> DaemonError {
    let step = step.into();
    move |e| DaemonError::Start {
        step,
        source: Box::new(e),
    }
}

/// Loads and validates the config, naming every problem.
///
/// # Errors
///
/// [`DaemonError::Config`] listing the problems.
pub fn load_config(path: &Path) -> Result<Config, DaemonError> {
    Config::load(path).map_err(|e| DaemonError::Config {
        path: path.to_owned(),
        problems: e.to_string(),
    })
}

/// Runs the agent until SIGTERM or SIGINT.
///
/// # Errors
///
/// [`DaemonError`] when start-up fails or the server breaks.
pub async fn run(config: Config) -> Result<(), DaemonError> {
    // Before anything reads a key or writes the data dir: refuse unsafe modes, owners, symlinks.
    crate::fsguard::check(&config)
        .map_err(start("check the agent's keys, config and data directory"))?;
    let unreachable = crate::reach::unreachable_apps(&config);
    if !unreachable.is_empty() {
        return Err(DaemonError::Unreachable(unreachable));
    }
    let config = Arc::new(config);
    let shutdown = Shutdown::new();
    // Before anything else: a SIGTERM during start-up must be a clean stop, not a kill.
    let signals = shutdown
        .install_signals()
        .map_err(start("install the SIGTERM and SIGINT handlers"))?;
    let key = Arc::new(
        SigningKey::read_pem_file(&config.audit.signing_key).map_err(start(format!(
            "load the agent's signing key {}",
            config.audit.signing_key.display()
        )))?,
    );
    // Before anything is written: a TLS certificate that does not match its key, or a port
    // in use, stops the agent with no audit entry and no front door started.
    let refusals = Arc::new(HandshakeRefusals::new());
    let (tls_config, revocation) =
        tls::server_config(&tls_material(&config), Arc::clone(&refusals))
            .map_err(start("load the TLS certificate and key"))?;
    // Listening mode checks who connects; dial-out mode checks whom it dials instead.
    let transport = match (&config.listen, &config.controller) {
        (_, Some(dial)) => Transport::Dial(Box::new(
            crate::server::dialout::client_config(&dial.ca, &config.tls.cert, &config.tls.key)
                .map_err(start(
                    "load the TLS material for dialling the controller service",
                ))?,
        )),
        (Some(addr), None) => Transport::Listen(*addr),
        (None, None) => {
            return Err(DaemonError::Config {
                path: config.path.clone(),
                problems: "set `listen` or `[controller] dial`".to_owned(),
            });
        }
    };
    let controllers = match transport {
        Transport::Listen(_) => Some(
            tls::ControllerIdentity::new(&config.tls.client_names, &config.tls.client_fingerprints)
                .map_err(start("read the controllers' identities"))?,
        ),
        Transport::Dial(_) => None,
    };
    create_dir_mode(&config.data_dir, 0o711).map_err(start(format!(
        "create the data directory {}",
        config.data_dir.display()
    )))?;
    // Before anything else is written there: a second agent on this data dir stops here.
    let _lock = crate::lock::acquire(&config.data_dir).map_err(DaemonError::Locked)?;
    let listener = match transport {
        Transport::Listen(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(start(format!("listen on {addr}")))?;
            let bound = listener
                .local_addr()
                .map_err(start("read the bound address"))?;
            Some((listener, bound))
        }
        Transport::Dial(_) => None,
    };
    // Explicit modes, whatever the umask (the unit's is 0077): app users traverse `apps/` to
    // their own `apps/<app>` (0755) but cannot list it; the rest is the agent's alone.
    for (sub, mode) in [
        ("jobs", 0o700),
        ("run", 0o755),
        ("artifacts", 0o700),
        ("apps", 0o711),
        ("plans", 0o700),
    ] {
        let dir = config.data_dir.join(sub);
        create_dir_mode(&dir, mode).map_err(start(format!("create {}", dir.display())))?;
    }

    let audit_dir = config.data_dir.join("audit");
    let (audit, recovery) = AuditLog::open(
        AuditOptions {
            dir: audit_dir.clone(),
            checkpoint_every: config.audit.checkpoint_every,
            checkpoint_interval: config.audit.checkpoint_interval,
            max_file_bytes: config.audit.max_file_bytes,
            min_free_bytes: config.audit.min_free_bytes,
        },
        Arc::clone(&key),
    )
    .map_err(start(format!(
        "open the audit log in {}",
        audit_dir.display()
    )))?;
    if let Some(r) = &recovery {
        tracing::warn!(
            "a torn audit line ({} bytes) was set aside to {}",
            r.bytes,
            r.moved_to.display()
        );
    }
    let started = Entry::new("agent.started")
        .with("agent_id", json!(config.agent_id))
        .with("version", json!(env!("CARGO_PKG_VERSION")))
        .with("config_digest", json!(config.digest))
        .with("key_id", json!(key.key_id().to_string()))
        .with("pid", json!(std::process::id()));
    audit
        .append(started)
        .await
        .map_err(start("record agent.started in the audit log"))?;

    let ledger = Arc::new(
        Ledger::open(&config.data_dir.join("jobs")).map_err(start("open the replay store"))?,
    );
    // So that no accepted job is admitted twice when the store was deleted or emptied.
    let rebuilt = ledger
        .rebuild_from_log(&audit_dir)
        .map_err(start("rebuild the replay store from the audit log"))?;
    if !rebuilt.ended.is_empty() {
        let ids: Vec<String> = rebuilt.ended.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "the replay store had not recorded how {} job(s) ended (a failed write); took their outcome from the audit log: {}",
            ids.len(),
            ids.join(", ")
        );
    }
    let restored = rebuilt.restored;
    if !restored.is_empty() {
        tracing::warn!(
            "the replay store {} lacked {} accepted job(s); rebuilt them from the audit log",
            ledger.dir().display(),
            restored.len()
        );
        audit
            .append(rebuilt_entry(&ledger, &restored))
            .await
            .map_err(start("record replay_store.rebuilt in the audit log"))?;
    }
    let plans = Arc::new(
        PlanLedger::open(&config.data_dir.join("plans"))
            .map_err(start("open the fleet plan records"))?,
    );
    // So that a deleted plans/ directory does not lower any plan's epoch fence.
    let restored_plans = plans
        .rebuild_from_log(&audit_dir)
        .map_err(start("rebuild the fleet plan records from the audit log"))?;
    if !restored_plans.is_empty() {
        tracing::warn!(
            "the fleet plan records lacked {} plan(s) the audit log shows dispatched; rebuilt them",
            restored_plans.len()
        );
        audit
            .append(
                Entry::new("plan_store.rebuilt")
                    .with(
                        "dir",
                        json!(config.data_dir.join("plans").display().to_string()),
                    )
                    .with("restored", json!(restored_plans.len()))
                    .with("plan_ids", json!(restored_plans)),
            )
            .await
            .map_err(start("record plan_store.rebuilt in the audit log"))?;
    }
    let admission = Arc::new(
        Admission::over(
            Arc::clone(&config.policy),
            config.limits.clone(),
            config.agent_id.clone(),
            Arc::clone(&ledger),
        )
        .with_fleet(FleetSeat {
            placement: config.placement.clone(),
            plans,
        }),
    );
    let store = Arc::new(
        ArtifactStore::open(
            &config.data_dir.join("artifacts"),
            config.limits.max_artifact_bytes,
        )
        .map_err(start("open the artifact store"))?
        .with_quota(config.limits.max_store_bytes, config.audit.min_free_bytes)
        .with_client_budget(config.limits.max_unused_bytes_per_client),
    );
    // Before the server accepts an upload: temp files of the older naming go; partial uploads
    // named by their digest stay for a resume unless nobody resumed them within the TTL.
    // A failure is only logged (hygiene, not safety) and does not stop start-up.
    crate::artifact::store::log_leftover_removal("an interrupted upload", store.remove_leftovers());
    crate::artifact::store::log_partial_collection(store.collect_partials(
        config.limits.unused_artifact_ttl,
        std::time::SystemTime::now(),
    ));
    let secrets = crate::secrets::SecretsKey::load_or_create(&config.data_dir).map_err(start(
        "load the key that hashes secret values for the audit log",
    ))?;
    // Flags are served before instances are started or adopted: an app may read them at start.
    let flags = crate::flags::Flags::open(Arc::clone(&config), audit.clone())
        .map_err(start("load the flag sets in force"))?;
    for (app, policy, feed) in flags.endpoints() {
        let ofrep = TcpListener::bind(policy.listen)
            .await
            .map_err(start(format!(
                "listen on {} for the flags of app {app} (OFREP)",
                policy.listen
            )))?;
        tracing::info!(%app, "serving flags over OFREP on http://{}", policy.listen);
        tokio::spawn(crate::flags::ofrep::serve(ofrep, feed, shutdown.token()));
    }
    let jobs_token = CancellationToken::new();
    let executor = Executor::start(
        Arc::clone(&config),
        audit.clone(),
        Arc::clone(&ledger),
        Arc::clone(&store),
        shutdown.tracker().clone(),
        jobs_token.clone(),
        flags.clone(),
    )
    .await
    .map_err(start("start the executor"))?;

    let throttle = Arc::new(ClientThrottle::new(Budget {
        burst: config.limits.client_rejections_burst,
        per_second: config.limits.client_rejections_per_second,
        connections: config.limits.client_connections,
    }));
    let service = AgentService::new(
        config.agent_id.clone(),
        config.placement.clone(),
        Arc::clone(&key),
        audit.clone(),
        audit_dir,
        Intake::new(
            admission,
            audit.clone(),
            executor.clone(),
            Arc::new(secrets),
        ),
        executor.clone(),
        Arc::clone(&store),
        config.limits.max_artifact_bytes,
        Arc::clone(&throttle),
    )
    .with_flags(flags)
    .with_policy(Arc::clone(&config));
    let decode_limit =
        (config.limits.max_job_bytes * 2 + 64 * 1024).max(MAX_CHUNK_BYTES + 64 * 1024);
    let flusher = {
        let service = service.clone();
        let token = shutdown.token();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = tick.tick() => {}
                }
                if let Err(e) = service.flush_rejection_summary().await {
                    tracing::error!("cannot record the rejection summary: {}", reason(&e));
                }
            }
            service
        })
    };
    let oversize = crate::server::oversize::OversizeLayer::new(service.clone(), decode_limit);
    let svc = AgentServer::new(service)
        .max_decoding_message_size(decode_limit)
        .max_encoding_message_size(4 * 1024 * 1024);
    let server_token = shutdown.token();
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_max_header_list_size(MAX_HEADER_LIST_SIZE)
        .timeout(Duration::from_secs(3600));
    if config.controller.is_some() {
        // The one dialled link: notice a dead one within 15 s and dial again.
        builder = builder
            .http2_keepalive_interval(Some(dialout::KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(dialout::KEEPALIVE_TIMEOUT));
    }
    let router = builder.layer(oversize).add_service(svc);
    let stopped = async move { server_token.cancelled().await };
    let lost: dialout::LostSlot = Arc::default();
    let (server, addr_file, dial_task) =
        match (listener, controllers, transport, &config.controller) {
            (Some((listener, bound)), Some(controllers), _, _) => {
                let incoming = tls::incoming(
                    listener,
                    tls_config,
                    controllers,
                    Arc::clone(&throttle),
                    refusals,
                    shutdown.token(),
                );
                let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped));
                let addr_file = config.data_dir.join("run").join("listen.addr");
                crate::state::write_atomic(&addr_file, bound.to_string().as_bytes())
                    .map_err(start(format!("write {}", addr_file.display())))?;
                tracing::info!(agent_id = %config.agent_id, "listening on {bound} (mutual TLS)");
                crate::readiness::ready(&format!("listening on {bound} (mutual TLS)"));
                (server, addr_file, None)
            }
            (_, _, Transport::Dial(client_tls), Some(dial)) => {
                let state_file = config.data_dir.join("run").join("dial.state");
                let (incoming, task) = dialout::DialLoop {
                    settings: dial.clone(),
                    tls: *client_tls,
                    throttle: Arc::clone(&throttle),
                    audit: audit.clone(),
                    state_file: state_file.clone(),
                    shutdown: shutdown.token(),
                    lost: Arc::clone(&lost),
                }
                .spawn()
                .map_err(start("start dialling the controller service"))?;
                let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopped));
                let doing = format!(
                    "dialling {} ({}); listening on nothing (mutual TLS)",
                    dial.dial, dial.server_name
                );
                tracing::info!(agent_id = %config.agent_id, "{doing}");
                crate::readiness::ready(&doing);
                (server, state_file, Some(task))
            }
            _ => {
                return Err(DaemonError::Config {
                    path: config.path.clone(),
                    problems: "set `listen` or `[controller] dial`".to_owned(),
                });
            }
        };
    // Its own token: pings go on through the drain (a drain is progress, not a hang).
    let watchdog_stop = CancellationToken::new();
    let watchdog = crate::readiness::spawn_watchdog(watchdog_stop.clone());

    let crl_watch = spawn_crl_reload(revocation, shutdown.token());
    let metrics = match config.metrics_listen {
        Some(addr) => {
            let listener = crate::exporter::bind(addr)
                .await
                .map_err(start(format!("listen for /metrics on {addr}")))?;
            let bound = listener.local_addr().unwrap_or(addr);
            tracing::info!(
                "serving /metrics on http://{bound}/metrics and the dashboard on http://{bound}/dashboard"
            );
            let (dashboard, sampling) =
                crate::dashboard::Dashboard::start(executor.clone(), &audit, shutdown.token());
            let exporter = crate::exporter::serve(
                listener,
                executor.clone(),
                Some(dashboard),
                shutdown.token(),
            );
            Some(tokio::spawn(async move {
                exporter.await;
                if let Err(e) = sampling.await {
                    tracing::warn!("the dashboard's sampler failed: {e}");
                }
            }))
        }
        None => None,
    };

    // A failed fdatasync of the audit log stops the agent through this same path (case H4).
    let audit_watch = {
        let audit = audit.clone();
        let token = shutdown.token();
        tokio::spawn(async move {
            tokio::select! {
                cause = audit.failed_for_good() => {
                    tracing::error!("the audit log failed for good; stopping: {cause}");
                    token.cancel();
                }
                () = token.cancelled() => {}
            }
        })
    };
    let signal = signals.wait().await;
    tracing::info!("{signal}: shutting down; app instances keep running");
    crate::readiness::stopping(&format!(
        "{signal}: draining jobs; app instances keep running"
    ));
    let _ = std::fs::remove_file(&addr_file);
    if !shutdown.drain(GRACE).await {
        tracing::warn!(
            "jobs still running after {}s; interrupting them",
            GRACE.as_secs()
        );
        jobs_token.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(5), shutdown.tracker().wait()).await;
    }
    executor.detach_all().await;
    let server_result = match tokio::time::timeout(Duration::from_secs(5), server).await {
        Ok(Ok(r)) => r.map_err(DaemonError::Serve),
        Ok(Err(join)) => Err(DaemonError::Start {
            step: "run the gRPC server".to_owned(),
            source: Box::new(join),
        }),
        Err(_) => Ok(()),
    };
    if let Ok(service) = flusher.await
        && let Err(e) = service.flush_rejection_summary().await
    {
        tracing::error!("cannot record the rejection summary: {}", reason(&e));
    }
    let stopped = Entry::new("agent.stopped")
        .with("agent_id", json!(config.agent_id))
        .with("config_digest", json!(config.digest))
        .with("signal", json!(signal));
    if let Err(e) = audit.append(stopped).await {
        tracing::error!("cannot record agent.stopped: {}", reason(&e));
    }
    let closed = audit.clone();
    if let Err(e) = audit.close().await {
        tracing::error!("cannot write the shutdown checkpoint: {}", reason(&e));
    }
    // Also when the final checkpoint's sync was the one that failed.
    let fatal = closed.fatal();
    if let Err(e) = audit_watch.await {
        tracing::warn!("the audit watch task failed: {e}");
    }
    watchdog_stop.cancel();
    if let Some(task) = crl_watch
        && let Err(e) = task.await
    {
        tracing::warn!("the CRL reload task failed: {e}");
    }
    if let Some(task) = watchdog
        && let Err(e) = task.await
    {
        tracing::warn!("the watchdog task failed: {e}");
    }
    if let Some(task) = metrics
        && let Err(e) = task.await
    {
        tracing::warn!("the metrics listener failed: {e}");
    }
    if let Some(task) = dial_task
        && let Err(e) = task.await
    {
        tracing::warn!("the dial loop failed: {e}");
    }
    if let Some(cause) = fatal {
        return Err(DaemonError::AuditFailed { cause });
    }
    if let Some(lost) = lost.lock().unwrap_or_else(PoisonError::into_inner).take() {
        return Err(DaemonError::LinkLost(lost));
    }
    server_result
}

/// How the agent meets its controllers.
enum Transport {
    /// It listens here.
    Listen(std::net::SocketAddr),
    /// It dials the service with this TLS client config.
    Dial(Box<rustls::ClientConfig>),
}

/// The listener's TLS files as the config names them.
pub fn tls_material(config: &Config) -> tls::TlsMaterial<'_> {
    tls::TlsMaterial {
        ca: &config.tls.ca,
        cert: &config.tls.cert,
        key: &config.tls.key,
        crl: config.tls.crl.as_deref(),
    }
}

/// Polls the CRL file and swaps in a changed one until `stop`; `None` without a CRL.
fn spawn_crl_reload(
    verifier: Arc<crate::server::revocation::RevocableVerifier>,
    stop: CancellationToken,
) -> Option<tokio::task::JoinHandle<()>> {
    let path = verifier.crl_path()?.to_owned();
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(crate::server::revocation::RELOAD_EVERY);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            match verifier.reload_if_changed() {
                Ok(true) => tracing::info!(
                    "reloaded the certificate revocation list {}",
                    path.display()
                ),
                Ok(false) => {}
                Err(e) => tracing::error!(
                    "cannot use the changed certificate revocation list (the previous one stays in force): {}",
                    reason(&e)
                ),
            }
        }
    }))
}
