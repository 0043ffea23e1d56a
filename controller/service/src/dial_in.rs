//! The dial-in listener (`[dial] listen`): agents in dial-out mode connect here with mutual
//! TLS. The service presents its own certificate (the name the agents' `[controller]
//! server_name` expects); an agent's certificate must chain to `agent_ca` and be valid for one
//! configured dial-in agent id, else the connection is refused, logged and audited. An accepted
//! connection becomes that agent's session ([`crate::sessions`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::audit::AuditLog;
use crate::sessions::Sessions;

/// How long an agent may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Who may dial in: each dial-in agent id with the CA its certificate must chain to.
#[derive(Debug)]
pub struct DialInTrust {
    by_agent: Vec<(String, Arc<dyn ClientCertVerifier>)>,
    any: Arc<dyn ClientCertVerifier>,
}

impl DialInTrust {
    /// From `(agent id, CA file)` pairs (each `[[agents]]` entry without addr, its `ca`).
    ///
    /// # Errors
    /// A CA file that cannot be read or used, named.
    pub fn new(agents: &[(String, std::path::PathBuf)]) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut all = RootCertStore::empty();
        let mut by_agent = Vec::new();
        for (id, ca) in agents {
            let roots = roots(ca)?;
            for r in roots.roots.iter() {
                all.roots.push(r.clone());
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("agent CA {}: {e}", ca.display()))?;
            by_agent.push((id.clone(), v));
        }
        let any = WebPkiClientVerifier::builder_with_provider(Arc::new(all), provider)
            .build()
            .map_err(|e| format!("the dial-in agents' CAs: {e}"))?;
        Ok(Self { by_agent, any })
    }

    /// The configured dial-in agent the chain belongs to: its leaf is valid for the agent's id
    /// and the chain verifies against that agent's own CA (not merely another agent's).
    pub fn agent_of(&self, chain: &[CertificateDer<'_>]) -> Option<&str> {
        let (leaf, intermediates) = chain.split_first()?;
        let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
        let now = UnixTime::now();
        self.by_agent
            .iter()
            .find(|(id, verifier)| {
                ServerName::try_from(id.as_str())
                    .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
                    && verifier
                        .verify_client_cert(leaf, intermediates, now)
                        .is_ok()
            })
            .map(|(id, _)| id.as_str())
    }
}

fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(ca)
        .map_err(|e| format!("cannot read agent CA certificate {}: {e}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        let c = c.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(c).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no CERTIFICATE block", ca.display()));
    }
    Ok(roots)
}

/// The rustls server config of the dial-in listener: ring provider, the service's
/// certificate, client certificates required and chaining to one of the dial-in agents' CAs,
/// ALPN `h2`.
///
/// # Errors
/// What cannot be read or used, naming the file.
pub fn server_config(
    cert: &Path,
    key: &Path,
    trust: &DialInTrust,
) -> Result<rustls::ServerConfig, String> {
    let read = |what: &str, p: &Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {what} {}: {e}", p.display()))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cert_pem = read("certificate", cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_pem = read("key", key)?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(Arc::clone(&trust.any))
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Accepts agents' connections until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
    trust: Arc<DialInTrust>,
    sessions: Arc<Sessions>,
    audit: Arc<AuditLog>,
) {
    let acceptor = TlsAcceptor::from(Arc::new(config));
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("dial-in accept failed: {e}");
                continue;
            }
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
        }
        let acceptor = acceptor.clone();
        let sessions = Arc::clone(&sessions);
        let trust = Arc::clone(&trust);
        let audit = Arc::clone(&audit);
        tokio::spawn(async move {
            let refuse = |why: String, fingerprint: String| {
                tracing::warn!(%peer, "dial-in refused: {why}");
                if let Err(e) = audit.append(
                    "agent.dial_refused",
                    &[
                        ("peer", Value::from(peer.to_string())),
                        ("reason", Value::from(why)),
                        ("peer_fingerprint", Value::from(fingerprint)),
                    ],
                ) {
                    tracing::error!("cannot record a refused dial-in: {e}");
                }
            };
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return refuse(format!("TLS handshake: {e}"), String::new()),
                Err(_) => {
                    return refuse(
                        format!("no TLS handshake within {} s", HANDSHAKE_TIMEOUT.as_secs()),
                        String::new(),
                    );
                }
            };
            let chain = tls.get_ref().1.peer_certificates().unwrap_or_default();
            let Some(leaf) = chain.first() else {
                return refuse("no client certificate".into(), String::new());
            };
            let fingerprint = hex::encode(ring::digest::digest(&ring::digest::SHA256, leaf));
            let Some(id) = trust.agent_of(chain).map(str::to_owned) else {
                return refuse(
                    "the certificate is valid for no configured dial-in agent ([[agents]] without addr) under that agent's CA".into(),
                    fingerprint,
                );
            };
            match sessions.accept(&id, peer.to_string(), tls).await {
                Ok(()) => {
                    if let Err(e) = audit.append(
                        "agent.dialled_in",
                        &[
                            ("agent", Value::from(id)),
                            ("peer", Value::from(peer.to_string())),
                            ("peer_fingerprint", Value::from(fingerprint)),
                        ],
                    ) {
                        tracing::error!("cannot record a dial-in: {e}");
                    }
                }
                Err(e) => {
                    tracing::warn!(agent = %id, %peer, "cannot start HTTP/2 over the agent's connection: {e}")
                }
            }
        });
    }
}
