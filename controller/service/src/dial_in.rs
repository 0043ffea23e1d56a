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
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::audit::AuditLog;
use crate::sessions::Sessions;

/// How long an agent may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The rustls server config of the dial-in listener: ring provider, the service's
/// certificate, client certificates required and verified against `agent_ca`, ALPN `h2`.
///
/// # Errors
/// What cannot be read or used, naming the file.
pub fn server_config(
    cert: &Path,
    key: &Path,
    agent_ca: &Path,
) -> Result<rustls::ServerConfig, String> {
    let read = |what: &str, p: &Path| {
        std::fs::read(p).map_err(|e| format!("cannot read {what} {}: {e}", p.display()))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let ca_pem = read("agent CA certificate", agent_ca)?;
    for c in CertificateDer::pem_slice_iter(&ca_pem) {
        let c = c.map_err(|e| format!("{}: {e}", agent_ca.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", agent_ca.display()))?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|e| format!("agent CA {}: {e}", agent_ca.display()))?;
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
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("{} with {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// The configured dial-in agent whose id the (CA-verified) certificate is valid for.
pub fn agent_of<'a>(sessions: &'a Sessions, leaf: &CertificateDer<'_>) -> Option<&'a str> {
    let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
    sessions.expected().find(|id| {
        ServerName::try_from(*id)
            .is_ok_and(|name| cert.verify_is_valid_for_subject_name(&name).is_ok())
    })
}

/// Accepts agents' connections until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    config: rustls::ServerConfig,
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
            let Some(leaf) = tls.get_ref().1.peer_certificates().and_then(|c| c.first()) else {
                return refuse("no client certificate".into(), String::new());
            };
            let fingerprint = hex::encode(ring::digest::digest(&ring::digest::SHA256, leaf));
            let Some(id) = agent_of(&sessions, leaf).map(str::to_owned) else {
                return refuse(
                    "the certificate chains to the agent CA but is valid for no configured dial-in agent ([[agents]] without addr)".into(),
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
