//! Mutual TLS for the agent's listener: client certificates must chain to the configured CA and,
//! when the config pins fingerprints, be one of them. There is no plaintext listener.
//!
//! The rustls `ServerConfig` is built by hand (not through tonic's `ServerTlsConfig`) so the
//! handshake timeout, the pin check and the revocation check live in one place.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::handshake::{self, CountingVerifier, HandshakeRefusals, Refusal};
use super::revocation::{RevocableVerifier, RevocationError};
use super::throttle::{ClientThrottle, Gated};

/// How long a client may take to finish the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a connection over its certificate's limit is held, never read, before it is
/// closed: as long as a handshake may take, so a client reconnecting in a loop costs at most
/// one handshake per connection and per hold.
pub const REFUSED_HOLD: Duration = HANDSHAKE_TIMEOUT;

/// The TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("cannot load {what} from {}", path.display())]
    Load {
        /// What was being loaded ("CA certificate", "certificate chain", "private key").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// rustls refused the configuration.
    #[error("invalid TLS configuration: {0}")]
    Config(String),
    /// The certificate revocation list cannot be used.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
}

/// Which client certificates count as controllers, beyond chaining to the CA: those valid
/// for one of the configured DNS names, or pinned by fingerprint. There is no "any
/// certificate from the CA" setting: another agent's certificate is not a controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerIdentity {
    names: Vec<ServerName<'static>>,
    fingerprints: BTreeSet<String>,
}

impl ControllerIdentity {
    /// From the config's `tls.client_names` and `tls.client_fingerprints`.
    ///
    /// # Errors
    ///
    /// [`TlsError::Config`] when both are empty or a name is not a DNS name.
    pub fn new(names: &[String], fingerprints: &[String]) -> Result<Self, TlsError> {
        if names.is_empty() && fingerprints.is_empty() {
            return Err(TlsError::Config(
                "no controller identity: set tls.client_names or tls.client_fingerprints"
                    .to_owned(),
            ));
        }
        let names = names
            .iter()
            .map(|n| {
                ServerName::try_from(n.clone())
                    .map_err(|_| TlsError::Config(format!("{n:?} is not a DNS name")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            names,
            fingerprints: fingerprints.iter().map(|f| f.to_lowercase()).collect(),
        })
    }

    /// Whether the (already CA-verified) leaf certificate is a controller's.
    pub fn admits(&self, leaf: &CertificateDer<'_>) -> bool {
        if self.fingerprints.contains(&fingerprint(leaf.as_ref())) {
            return true;
        }
        let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
            return false;
        };
        self.names
            .iter()
            .any(|name| cert.verify_is_valid_for_subject_name(name).is_ok())
    }
}

pub use super::handshake::fingerprint;

fn read_pem(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Load {
        what,
        path: path.to_owned(),
        source,
    })
}

fn invalid(what: &'static str, path: &Path, detail: impl ToString) -> TlsError {
    TlsError::Load {
        what,
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidData, detail.to_string()),
    }
}

fn certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(what, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(what, path, e))?;
    if certs.is_empty() {
        return Err(invalid(what, path, "no CERTIFICATE block"));
    }
    Ok(certs)
}

/// Builds the rustls server config: ring provider, TLS 1.2/1.3, client certificates required
/// and verified against the CA (and its CRL, reloadable through the returned verifier), ALPN
/// `h2`.
///
/// # Errors
///
/// [`TlsError`] naming the file that could not be loaded.
pub fn server_config(
    material: &TlsMaterial<'_>,
    refusals: Arc<HandshakeRefusals>,
) -> Result<(rustls::ServerConfig, Arc<RevocableVerifier>), TlsError> {
    let TlsMaterial { ca, cert, key, crl } = *material;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in certs("CA certificate", ca)? {
        roots.add(c).map_err(|e| invalid("CA certificate", ca, e))?;
    }
    let revocable = Arc::new(RevocableVerifier::new(roots, provider.clone(), crl)?);
    let verifier = Arc::new(CountingVerifier::new(
        Arc::clone(&revocable) as Arc<dyn rustls::server::danger::ClientCertVerifier>,
        refusals,
    ));
    let chain = certs("certificate chain", cert)?;
    let key_pem = read_pem("private key", key)?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| invalid("private key", key, e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((config, revocable))
}

/// The files of the listener's TLS identity and trust.
#[derive(Debug, Clone, Copy)]
pub struct TlsMaterial<'a> {
    /// The CA client certificates must chain to.
    pub ca: &'a Path,
    /// The agent's certificate chain.
    pub cert: &'a Path,
    /// Its private key.
    pub key: &'a Path,
    /// The CA's revocation list, when revocation is checked.
    pub crl: Option<&'a Path>,
}

/// Accepts TCP connections, completes TLS handshakes concurrently (each bounded by
/// [`HANDSHAKE_TIMEOUT`]), drops peers that are not configured controllers, and yields the rest,
/// each gated by its certificate's rejection budget, in a channel for tonic's
/// `serve_with_incoming`.
pub fn incoming(
    listener: TcpListener,
    config: rustls::ServerConfig,
    controllers: ControllerIdentity,
    throttle: Arc<ClientThrottle>,
    refusals: Arc<HandshakeRefusals>,
    shutdown: CancellationToken,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<Gated<TlsStream<TcpStream>>>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let controllers = Arc::new(controllers);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                () = shutdown.cancelled() => break,
                accepted = listener.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    continue;
                }
            };
            // Small request/response messages: do not let Nagle hold them back.
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(%peer, "cannot set TCP_NODELAY: {e}");
            }
            let acceptor = acceptor.clone();
            let controllers = Arc::clone(&controllers);
            let throttle = Arc::clone(&throttle);
            let refusals = Arc::clone(&refusals);
            let tx = tx.clone();
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        match handshake::acceptor_refusal(&e) {
                            Some(why) => refusals.record(why, Some(peer), None, &e),
                            // The verifier counted and logged it, with the fingerprint.
                            None => tracing::debug!(%peer, "TLS handshake refused: {e}"),
                        }
                        return;
                    }
                    Err(_) => {
                        refusals.record(
                            Refusal::TimedOut,
                            Some(peer),
                            None,
                            &format_args!("no handshake within {}s", HANDSHAKE_TIMEOUT.as_secs()),
                        );
                        return;
                    }
                };
                let leaf = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
                let fp = leaf.map(|c| fingerprint(c.as_ref())).unwrap_or_default();
                if !leaf.is_some_and(|c| controllers.admits(c)) {
                    refusals.record(
                        Refusal::NotController,
                        Some(peer),
                        Some(&fp),
                        &"the certificate chains to the CA but names no configured controller (tls.client_names, tls.client_fingerprints)",
                    );
                    return;
                }
                // A certificate over its rejection budget is not read until it is back in
                // credit; one at its connection limit gets no more.
                match throttle.slot(&fp) {
                    Ok(slot) => {
                        let _ = tx.send(Ok(slot.gate(tls))).await;
                    }
                    Err(refused) => {
                        if let Some(count) = refused.report {
                            tracing::warn!(
                                %peer,
                                fingerprint = %fp,
                                "client certificate has {} connections open already (limits.client_connections): {count} more held unserved for {} s each, then closed",
                                refused.limit,
                                REFUSED_HOLD.as_secs()
                            );
                        }
                        // Held, not closed at once: a client that reconnects at once would
                        // cost a TLS handshake each time. Never read, it costs nothing else.
                        tokio::time::sleep(REFUSED_HOLD).await;
                        drop(tls);
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn another_agents_certificate_is_not_a_controller() {
        let ids = ControllerIdentity::new(&["controller".to_owned()], &[]).unwrap();
        assert!(ids.admits(&cert("controller")));
        assert!(!ids.admits(&cert("agent-2")));
    }

    #[test]
    fn a_pinned_fingerprint_admits_exactly_that_certificate() {
        let pinned = cert("ci-runner");
        let ids = ControllerIdentity::new(&[], &[fingerprint(pinned.as_ref())]).unwrap();
        assert!(ids.admits(&pinned));
        assert!(
            !ids.admits(&cert("ci-runner")),
            "same name, other certificate"
        );
    }

    #[test]
    fn an_identity_must_be_configured() {
        assert!(matches!(
            ControllerIdentity::new(&[], &[]),
            Err(TlsError::Config(_))
        ));
        assert!(ControllerIdentity::new(&["not a name!".to_owned()], &[]).is_err());
    }
}
