//! Dial-out mode (`[controller] dial`): the agent listens on nothing and keeps one outbound
//! mutual-TLS connection to the controller service. The agent is the TLS client; once the
//! handshake is done the roles flip and the agent's own gRPC server (the same `AgentService`,
//! layers and limits as in listening mode) serves HTTP/2 on that connection, the service being
//! the HTTP/2 client.
//!
//! The loop dials, verifies the service's certificate (chains to `[controller] ca`, carries
//! `server_name`), hands the stream to the server as one more incoming connection, waits until
//! the server drops it (HTTP/2 keep-alive notices a dead link), and dials again with jittered
//! exponential backoff. Each link change is an audit entry (`controller.connected`,
//! `controller.disconnected`) and a log line, and `run/dial.state` says where the link is.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use gantry_proto::conn::{Guarded, Linked};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use super::handshake::fingerprint;
use super::throttle::{ClientThrottle, Gated};
use super::tls::{HANDSHAKE_TIMEOUT, TlsError};
use crate::audit::{AuditLog, Entry};
use crate::config::DialOut;
use crate::error::reason;

/// How long the TCP connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The first retry delay after a failed dial or a lost link.
pub const BACKOFF_START: Duration = Duration::from_millis(500);
/// The longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// A link that lived this long resets the backoff: the next failure retries quickly again.
pub const STABLE_LINK: Duration = Duration::from_secs(10);
/// HTTP/2 keep-alive pings on the dialled connection: a ping every this often, and the link is
/// dropped when one is not answered within [`KEEPALIVE_TIMEOUT`] (a dead link is noticed within
/// 15 s).
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// See [`KEEPALIVE_INTERVAL`].
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection the server serves: the TLS stream, gated by the service certificate's
/// rejection budget, telling the dial loop when the server drops it.
pub type DialledConn = Gated<Linked<TlsStream<TcpStream>>>;

/// The incoming connections of dial-out mode, for tonic's `serve_with_incoming`.
pub type Incoming = tokio_stream::wrappers::ReceiverStream<io::Result<DialledConn>>;

/// Builds the rustls client config: ring provider, TLS 1.2/1.3, the service's certificate
/// verified against `[controller] ca`, the agent's own `tls.cert`/`tls.key` as its client
/// identity, ALPN `h2`.
///
/// # Errors
///
/// [`TlsError`] naming the file that could not be loaded.
pub fn client_config(
    ca: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<rustls::ClientConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in certs("controller CA certificate", ca)? {
        roots
            .add(c)
            .map_err(|e| invalid("controller CA certificate", ca, e))?;
    }
    let chain = certs("certificate chain", cert)?;
    let key_pem = read_pem("private key", key)?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid("private key", key, e))?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn read_pem(what: &'static str, path: &std::path::Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Load {
        what,
        path: path.to_owned(),
        source,
    })
}

fn invalid(what: &'static str, path: &std::path::Path, detail: impl ToString) -> TlsError {
    TlsError::Load {
        what,
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, detail.to_string()),
    }
}

fn certs(
    what: &'static str,
    path: &std::path::Path,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    let pem = read_pem(what, path)?;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, path, e))?;
    if certs.is_empty() {
        return Err(invalid(what, path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// Why the dial loop stopped the agent: the link was down longer than
/// `exit_on_disconnect_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkLost {
    /// The service's address.
    pub addr: String,
    /// The configured limit.
    pub after: Duration,
    /// The last reason a dial failed or the link ended.
    pub last_error: String,
}

impl std::fmt::Display for LinkLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the link to the controller service {} was down for {} (exit_on_disconnect_after); \
             app instances keep running; last error: {}",
            self.addr,
            humantime::format_duration(self.after),
            self.last_error
        )
    }
}

/// Where the loop records a lost link for the daemon's exit.
pub type LostSlot = Arc<Mutex<Option<LinkLost>>>;

/// What the dial loop needs.
#[derive(Debug)]
pub struct DialLoop {
    /// `[controller]`.
    pub settings: DialOut,
    /// The TLS client config ([`client_config`]).
    pub tls: rustls::ClientConfig,
    /// Rejection budgets per peer certificate: the service's is charged like a controller's.
    pub throttle: Arc<ClientThrottle>,
    /// Where link changes are recorded.
    pub audit: AuditLog,
    /// `run/dial.state`.
    pub state_file: PathBuf,
    /// Stops the loop; the loop cancels it itself when the link was down too long.
    pub shutdown: CancellationToken,
    /// Set before the loop cancels `shutdown` for a lost link.
    pub lost: LostSlot,
}

impl DialLoop {
    /// Starts the loop: the connections it makes come out of the returned stream.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] when `server_name` is not a DNS name.
    pub fn spawn(self) -> Result<(Incoming, tokio::task::JoinHandle<()>), TlsError> {
        let name = ServerName::try_from(self.settings.server_name.clone()).map_err(|_| {
            TlsError::Config(format!(
                "controller.server_name {:?} is not a DNS name",
                self.settings.server_name
            ))
        })?;
        let (tx, rx) = mpsc::channel(1);
        let task = tokio::spawn(self.run(name, tx));
        Ok((tokio_stream::wrappers::ReceiverStream::new(rx), task))
    }

    async fn run(self, name: ServerName<'static>, tx: mpsc::Sender<io::Result<DialledConn>>) {
        let connector = TlsConnector::from(Arc::new(self.tls.clone()));
        let addr = self.settings.dial.clone();
        let mut backoff = Backoff::new();
        let mut down_since = Instant::now();
        let mut last_error: String;
        let mut failures: u64 = 0;
        self.write_state(&format!("dialling {addr}"));
        loop {
            let attempt = tokio::select! {
                () = self.shutdown.cancelled() => break,
                a = dial(&connector, &addr, name.clone()) => a,
            };
            match attempt {
                Ok(tls) => {
                    failures = 0;
                    let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                    let fp = leaf.map(|c| fingerprint(c.as_ref())).unwrap_or_default();
                    let slot = match self.throttle.slot(&fp) {
                        Ok(slot) => slot,
                        Err(_) => {
                            last_error = "the service's certificate is at its connection limit \
                                          (limits.client_connections)"
                                .to_owned();
                            tracing::warn!("{last_error}");
                            if self
                                .wait_or_stop(&mut backoff, down_since, &last_error)
                                .await
                            {
                                break;
                            }
                            continue;
                        }
                    };
                    let (dropped_tx, dropped_rx) = oneshot::channel();
                    let conn = slot.gate(Guarded::new(tls, dropped_tx));
                    if tx.send(Ok(conn)).await.is_err() {
                        break; // the server has stopped
                    }
                    let since = Instant::now();
                    tracing::info!(controller = %addr, fingerprint = %fp, "connected to the controller service {addr} ({})", self.settings.server_name);
                    self.write_state(&format!("connected {addr}"));
                    self.record(
                        Entry::new("controller.connected")
                            .with("addr", json!(addr))
                            .with("server_name", json!(self.settings.server_name))
                            .with("peer_fingerprint", json!(fp)),
                    )
                    .await;
                    let stopped = tokio::select! {
                        () = self.shutdown.cancelled() => true,
                        _ = dropped_rx => false,
                    };
                    if stopped {
                        break;
                    }
                    let lived = since.elapsed();
                    last_error = "the link closed or stopped answering keep-alive pings".into();
                    tracing::warn!(controller = %addr, "disconnected from the controller service {addr} after {:.1} s; dialling again", lived.as_secs_f64());
                    self.write_state(&format!("dialling {addr}"));
                    self.record(
                        Entry::new("controller.disconnected")
                            .with("addr", json!(addr))
                            .with("peer_fingerprint", json!(fp))
                            .with(
                                "connected_ms",
                                json!(u64::try_from(lived.as_millis()).unwrap_or(u64::MAX)),
                            ),
                    )
                    .await;
                    down_since = Instant::now();
                    if lived >= STABLE_LINK {
                        backoff = Backoff::new();
                    }
                }
                Err(e) => {
                    failures += 1;
                    last_error = e;
                    // The first failure of a streak is a warning; the retries are not news.
                    if failures == 1 {
                        tracing::warn!(controller = %addr, "cannot reach the controller service: {last_error}; retrying with backoff");
                    } else {
                        tracing::debug!(controller = %addr, "dial {failures} failed: {last_error}");
                    }
                }
            }
            if self
                .wait_or_stop(&mut backoff, down_since, &last_error)
                .await
            {
                break;
            }
        }
    }

    /// Sleeps the next backoff delay (no longer than the exit limit leaves); true when the
    /// loop must end (shutdown, or the link down past `exit_on_disconnect_after`).
    async fn wait_or_stop(&self, backoff: &mut Backoff, down_since: Instant, why: &str) -> bool {
        let mut delay = backoff.next();
        if let Some(limit) = self.settings.exit_on_disconnect_after {
            let down = down_since.elapsed();
            if down >= limit {
                let lost = LinkLost {
                    addr: self.settings.dial.clone(),
                    after: limit,
                    last_error: why.to_owned(),
                };
                tracing::error!("{lost}; stopping the agent");
                *self.lost.lock().unwrap_or_else(PoisonError::into_inner) = Some(lost);
                self.shutdown.cancel();
                return true;
            }
            delay = delay.min(limit - down);
        }
        tokio::select! {
            () = self.shutdown.cancelled() => true,
            () = tokio::time::sleep(delay) => false,
        }
    }

    fn write_state(&self, text: &str) {
        // Informational only (tests and operators read it): a failed write is logged.
        if let Err(e) = crate::state::write_atomic(&self.state_file, format!("{text}\n").as_bytes())
        {
            tracing::warn!("cannot write {}: {}", self.state_file.display(), reason(&e));
        }
    }

    async fn record(&self, entry: Entry) {
        if let Err(e) = self.audit.append(entry).await {
            tracing::error!("cannot record a controller link change: {}", reason(&e));
        }
    }
}

/// One dial: TCP connect then the TLS handshake, each bounded.
async fn dial(
    connector: &TlsConnector,
    addr: &str,
    name: ServerName<'static>,
) -> Result<TlsStream<TcpStream>, String> {
    let tcp = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => return Err(format!("connect to {addr}: {e}")),
        Err(_) => {
            return Err(format!(
                "connect to {addr}: no answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            ));
        }
    };
    // Small request/response messages: do not let Nagle hold them back.
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY: {e}");
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(format!("TLS handshake with {addr}: {e}")),
        Err(_) => Err(format!(
            "TLS handshake with {addr}: not done within {} s",
            HANDSHAKE_TIMEOUT.as_secs()
        )),
    }
}

/// Exponential backoff with full jitter: each delay is uniform in `[0, d]`, `d` doubling from
/// [`BACKOFF_START`] to [`BACKOFF_CAP`], so agents cut off together do not return together.
#[derive(Debug)]
struct Backoff {
    ceiling: Duration,
}

impl Backoff {
    fn new() -> Self {
        Self {
            ceiling: BACKOFF_START,
        }
    }

    fn next(&mut self) -> Duration {
        let ceiling = self.ceiling;
        self.ceiling = (self.ceiling * 2).min(BACKOFF_CAP);
        jitter(ceiling, random_unit())
    }
}

/// `ceiling` scaled by `unit` in `[0, 1]`.
fn jitter(ceiling: Duration, unit: f64) -> Duration {
    ceiling.mul_f64(unit.clamp(0.0, 1.0))
}

fn random_unit() -> f64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 4];
    // A failed read of the system RNG leaves zeroes: an immediate retry, not an error.
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / f64::from(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_full_jitter() {
        let mut b = Backoff::new();
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling);
            let d = b.next();
            assert!(d <= *ceilings.last().unwrap(), "{d:?}");
        }
        assert_eq!(ceilings[0], Duration::from_millis(500));
        assert_eq!(ceilings[1], Duration::from_secs(1));
        assert_eq!(ceilings[2], Duration::from_secs(2));
        assert_eq!(*ceilings.last().unwrap(), BACKOFF_CAP);
        assert_eq!(jitter(Duration::from_secs(10), 0.0), Duration::ZERO);
        assert_eq!(
            jitter(Duration::from_secs(10), 1.0),
            Duration::from_secs(10)
        );
        assert_eq!(
            jitter(Duration::from_secs(10), 0.25),
            Duration::from_millis(2500)
        );
        assert_eq!(
            jitter(Duration::from_secs(10), 7.0),
            Duration::from_secs(10)
        );
    }

    #[test]
    fn a_lost_link_says_where_how_long_and_that_apps_keep_running() {
        let lost = LinkLost {
            addr: "controller.example:7443".into(),
            after: Duration::from_secs(3),
            last_error: "connect to controller.example:7443: connection refused".into(),
        };
        let text = lost.to_string();
        assert!(
            text.contains("controller.example:7443 was down for 3s"),
            "{text}"
        );
        assert!(text.contains("app instances keep running"), "{text}");
        assert!(text.contains("connection refused"), "{text}");
    }
}
