//! TLS handshakes the listener refused, counted by reason and logged with the peer's
//! certificate fingerprint where it sent one.
//!
//! A refused handshake comes from a peer nobody has authenticated, so it is never an audit
//! entry: anyone who can reach the port could otherwise write to the audit log at will. It is
//! a log line instead, at most one per reason per [`LOG_EVERY`] (the next one says how many
//! were not logged in between), and a count per reason since start.
//!
//! The certificate checks run inside rustls, which reports an expired certificate or an
//! unknown issuer to the acceptor without the certificate itself. So the client verifier is
//! wrapped ([`CountingVerifier`]): it sees the certificate, and records the refusal with its
//! fingerprint before rustls sends the alert. Refusals without a certificate (none sent, a
//! protocol error, a timeout) are recorded by the acceptor, which knows the peer's address.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};

use crate::error::lock;

/// At most one log line per reason this often.
pub const LOG_EVERY: Duration = Duration::from_secs(1);

/// Why a handshake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The client sent no certificate.
    NoCertificate,
    /// Its certificate does not chain to the configured CA.
    UnknownIssuer,
    /// Its certificate has expired.
    Expired,
    /// Its certificate is not valid yet.
    NotYetValid,
    /// Its certificate is revoked by the CA's CRL.
    Revoked,
    /// The CA's CRL is past its `nextUpdate`: every certificate is refused until it is renewed.
    StaleCrl,
    /// Its certificate is invalid otherwise (encoding, signature, extensions, usage).
    BadCertificate,
    /// Its certificate chains to the CA but names no configured controller.
    NotController,
    /// The handshake failed for a reason other than the certificate.
    Protocol,
    /// The handshake did not finish in time.
    TimedOut,
}

impl Refusal {
    /// Every reason, in the order counts are kept.
    pub const ALL: [Refusal; 10] = [
        Refusal::NoCertificate,
        Refusal::UnknownIssuer,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::Revoked,
        Refusal::StaleCrl,
        Refusal::BadCertificate,
        Refusal::NotController,
        Refusal::Protocol,
        Refusal::TimedOut,
    ];

    /// A stable name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_client_certificate",
            Refusal::UnknownIssuer => "unknown_issuer",
            Refusal::Expired => "certificate_expired",
            Refusal::NotYetValid => "certificate_not_yet_valid",
            Refusal::Revoked => "certificate_revoked",
            Refusal::StaleCrl => "stale_crl",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::NotController => "not_a_controller",
            Refusal::Protocol => "handshake_failed",
            Refusal::TimedOut => "handshake_timed_out",
        }
    }

    fn index(self) -> usize {
        match self {
            Refusal::NoCertificate => 0,
            Refusal::UnknownIssuer => 1,
            Refusal::Expired => 2,
            Refusal::NotYetValid => 3,
            Refusal::Revoked => 4,
            Refusal::StaleCrl => 5,
            Refusal::BadCertificate => 6,
            Refusal::NotController => 7,
            Refusal::Protocol => 8,
            Refusal::TimedOut => 9,
        }
    }

    /// The reason for a certificate rustls refused.
    pub fn of_certificate(e: &CertificateError) -> Refusal {
        match e {
            CertificateError::UnknownIssuer | CertificateError::BadSignature => {
                Refusal::UnknownIssuer
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => Refusal::Expired,
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                Refusal::NotYetValid
            }
            CertificateError::Revoked => Refusal::Revoked,
            CertificateError::ExpiredRevocationList
            | CertificateError::ExpiredRevocationListContext { .. } => Refusal::StaleCrl,
            // rustls's enum is non-exhaustive: whatever it adds is a bad certificate too.
            _ => Refusal::BadCertificate,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Counts and rate-limited log lines of refused handshakes, shared by the acceptor and the
/// client verifier.
#[derive(Debug, Default)]
pub struct HandshakeRefusals {
    counts: [AtomicU64; 10],
    /// Per reason: when a line was last logged, and how many refusals were not logged since.
    logged: Mutex<[(Option<Instant>, u64); 10]>,
}

impl HandshakeRefusals {
    /// No refusals yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many handshakes were refused for `why` since start.
    pub fn count(&self, why: Refusal) -> u64 {
        self.counts[why.index()].load(Ordering::Relaxed)
    }

    /// Counts one refusal and logs it, unless a line for the same reason was logged within
    /// [`LOG_EVERY`].
    pub fn record(
        &self,
        why: Refusal,
        peer: Option<SocketAddr>,
        fingerprint: Option<&str>,
        detail: &dyn fmt::Display,
    ) {
        let total = self.counts[why.index()].fetch_add(1, Ordering::Relaxed) + 1;
        let unlogged = {
            let mut logged = lock(&self.logged);
            let (last, skipped) = &mut logged[why.index()];
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < LOG_EVERY) {
                *skipped += 1;
                return;
            }
            *last = Some(now);
            std::mem::take(skipped)
        };
        let peer = peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let fingerprint = fingerprint.unwrap_or("-");
        tracing::warn!(
            reason = why.as_str(),
            %peer,
            fingerprint,
            total,
            "TLS handshake refused ({why}): {detail}; client certificate sha256 {fingerprint}, peer {peer}; {total} refused for this reason since start, {unlogged} not logged since the last line"
        );
    }
}

/// The CA verifier, recording each certificate it refuses with the certificate's fingerprint.
#[derive(Debug)]
pub struct CountingVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    refusals: Arc<HandshakeRefusals>,
}

impl CountingVerifier {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ClientCertVerifier>, refusals: Arc<HandshakeRefusals>) -> Self {
        Self { inner, refusals }
    }
}

impl ClientCertVerifier for CountingVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now);
        if let Err(e) = &verified {
            let why = match e {
                rustls::Error::InvalidCertificate(c) => Refusal::of_certificate(c),
                _ => Refusal::BadCertificate,
            };
            let fingerprint = fingerprint(end_entity.as_ref());
            self.refusals.record(why, None, Some(&fingerprint), e);
        }
        verified
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Lowercase hex SHA-256 of a certificate's DER bytes, as logs show and
/// `tls.client_fingerprints` pins it.
pub fn fingerprint(cert: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, cert))
}

/// What the acceptor makes of a failed handshake: the reason to record, or `None` when the
/// verifier has recorded it already (a refused certificate).
pub fn acceptor_refusal(e: &std::io::Error) -> Option<Refusal> {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::NoCertificatesPresented) => Some(Refusal::NoCertificate),
        Some(rustls::Error::InvalidCertificate(_)) => None,
        _ => Some(Refusal::Protocol),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_counted_per_reason_and_logged_at_most_once_per_interval() {
        let r = HandshakeRefusals::new();
        for _ in 0..5 {
            r.record(Refusal::Expired, None, Some("ab"), &"expired");
        }
        r.record(Refusal::NoCertificate, None, None, &"none");
        assert_eq!(r.count(Refusal::Expired), 5);
        assert_eq!(r.count(Refusal::NoCertificate), 1);
        assert_eq!(r.count(Refusal::TimedOut), 0);
        let logged = lock(&r.logged);
        assert_eq!(logged[Refusal::Expired.index()].1, 4, "four not logged");
        assert_eq!(logged[Refusal::NoCertificate.index()].1, 0);
    }

    #[test]
    fn every_reason_has_its_own_slot_and_name() {
        let mut names: Vec<&str> = Refusal::ALL.iter().map(|r| r.as_str()).collect();
        let indexes: Vec<usize> = Refusal::ALL.iter().map(|r| r.index()).collect();
        assert_eq!(indexes, (0..10).collect::<Vec<_>>());
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 10);
    }

    #[test]
    fn certificate_errors_map_to_their_reasons() {
        assert_eq!(
            Refusal::of_certificate(&CertificateError::Expired),
            Refusal::Expired
        );
        assert_eq!(
            Refusal::of_certificate(&CertificateError::NotValidYet),
            Refusal::NotYetValid
        );
        assert_eq!(
            Refusal::of_certificate(&CertificateError::UnknownIssuer),
            Refusal::UnknownIssuer
        );
        assert_eq!(
            Refusal::of_certificate(&CertificateError::BadEncoding),
            Refusal::BadCertificate
        );
        let none = std::io::Error::other(rustls::Error::NoCertificatesPresented);
        assert_eq!(acceptor_refusal(&none), Some(Refusal::NoCertificate));
        let cert =
            std::io::Error::other(rustls::Error::InvalidCertificate(CertificateError::Expired));
        assert_eq!(acceptor_refusal(&cert), None);
        assert_eq!(
            acceptor_refusal(&std::io::Error::other("reset")),
            Some(Refusal::Protocol)
        );
    }
}
