//! Client certificate revocation: the CA's CRL (`tls.crl`, PEM or DER), checked at every
//! handshake and reloaded when the file changes.
//!
//! The verifier in force sits behind a lock; [`RevocableVerifier::reload_if_changed`] (polled
//! by the daemon every [`RELOAD_EVERY`]) builds a new one when the file's size or mtime moved
//! and swaps it in, so a revocation takes effect within seconds, without a restart and
//! without dropping established connections. A CRL that cannot be read or parsed is logged
//! and the previous one stays in force: a broken file never lifts a revocation.
//!
//! A CRL past its `nextUpdate` refuses every client certificate (`stale_crl` in the log) until
//! a fresh one is installed. That is the fail-closed choice: revocation data nobody refreshes
//! is no revocation data. Without `tls.crl` no revocation is checked.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The revocation list cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RevocationError {
    /// The file cannot be read or holds no CRL.
    #[error("cannot load the certificate revocation list {}", path.display())]
    Load {
        /// The CRL file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// rustls refused the CA and CRL (a CRL not signed by the CA, say).
    #[error("invalid certificate revocation setup: {0}")]
    Verifier(String),
}

/// How often the daemon looks for a changed CRL file.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Size and modification time of the CRL file, to tell a change.
type Stamp = Option<(u64, SystemTime)>;

/// The CA verifier with the current CRL, swapped when the CRL file changes.
#[derive(Debug)]
pub struct RevocableVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    crl: Option<PathBuf>,
    /// The CA subjects offered to clients as hints; the same in every rebuilt verifier.
    hints: Vec<DistinguishedName>,
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    stamp: Mutex<Stamp>,
}

fn stamp_of(path: &Path) -> Stamp {
    let meta = fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()?))
}

/// The CRLs in `path`: every `X509 CRL` PEM block, or the whole file as one DER CRL.
///
/// # Errors
///
/// [`RevocationError::Load`] when the file cannot be read or holds no CRL.
pub fn read_crls(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, RevocationError> {
    let load = |source| RevocationError::Load {
        path: path.to_owned(),
        source,
    };
    let bytes = fs::read(path).map_err(load)?;
    if bytes.starts_with(b"-----BEGIN") {
        let crls = CertificateRevocationListDer::pem_slice_iter(&bytes)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| load(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        if crls.is_empty() {
            return Err(load(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no X509 CRL block",
            )));
        }
        Ok(crls)
    } else {
        Ok(vec![CertificateRevocationListDer::from(bytes)])
    }
}

fn build(
    roots: &Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
    crl: Option<&Path>,
) -> Result<Arc<dyn ClientCertVerifier>, RevocationError> {
    let mut builder =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), Arc::clone(provider));
    if let Some(path) = crl {
        builder = builder
            .with_crls(read_crls(path)?)
            .only_check_end_entity_revocation()
            .enforce_revocation_expiration();
    }
    builder
        .build()
        .map_err(|e| RevocationError::Verifier(e.to_string()))
}

impl RevocableVerifier {
    /// A verifier for certificates chaining to `roots`, checking the CRL in `crl` if given.
    ///
    /// # Errors
    ///
    /// [`RevocationError`] when the CRL cannot be read or parsed, or rustls refuses the
    /// verifier.
    pub fn new(
        roots: RootCertStore,
        provider: Arc<CryptoProvider>,
        crl: Option<&Path>,
    ) -> Result<Self, RevocationError> {
        let hints = roots.subjects();
        let roots = Arc::new(roots);
        let stamp = crl.and_then(stamp_of);
        let current = build(&roots, &provider, crl)?;
        Ok(Self {
            roots,
            provider,
            crl: crl.map(Path::to_owned),
            hints,
            current: RwLock::new(current),
            stamp: Mutex::new(stamp),
        })
    }

    /// Rebuilds the verifier when the CRL file changed since the last load; `Ok(true)` when a
    /// new CRL is in force.
    ///
    /// # Errors
    ///
    /// [`RevocationError`] when the changed file cannot be used; the previous CRL stays in force, and
    /// the same file is not retried until it changes again.
    pub fn reload_if_changed(&self) -> Result<bool, RevocationError> {
        let Some(path) = &self.crl else {
            return Ok(false);
        };
        let now = stamp_of(path);
        {
            let mut stamp = crate::error::lock(&self.stamp);
            if *stamp == now {
                return Ok(false);
            }
            *stamp = now;
        }
        let verifier = build(&self.roots, &self.provider, Some(path))?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = verifier;
        Ok(true)
    }

    /// The CRL file, if one is configured.
    pub fn crl_path(&self) -> Option<&Path> {
        self.crl.as_deref()
    }

    fn current(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(
            &self
                .current
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl ClientCertVerifier for RevocableVerifier {
    fn offer_client_auth(&self) -> bool {
        self.current().offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.current().client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.current()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.current().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.current().supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use rcgen::{
        BasicConstraints, CertificateParams, CertificateRevocationListParams, IsCa, Issuer,
        KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber, date_time_ymd,
    };

    use rustls::CertificateError;

    use super::*;

    struct Pki {
        ca_cert: CertificateDer<'static>,
        ca_params: CertificateParams,
        ca_key: KeyPair,
        leaf: CertificateDer<'static>,
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(vec![]).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::from_params(&ca_params, &ca_key);
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["controller".to_owned()]).unwrap();
        params.serial_number = Some(SerialNumber::from(42u64));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let leaf = params.signed_by(&key, &issuer).unwrap();
        Pki {
            ca_cert: ca_cert.der().clone(),
            ca_params,
            ca_key,
            leaf: leaf.der().clone(),
        }
    }

    fn write_crl(pki: &Pki, path: &Path, revoked: &[u64], next_update_year: i32) {
        let params = CertificateRevocationListParams {
            this_update: date_time_ymd(2020, 1, 1),
            next_update: date_time_ymd(next_update_year, 1, 1),
            crl_number: SerialNumber::from(u64::from(revoked.len() as u32) + 1),
            issuing_distribution_point: None,
            revoked_certs: revoked
                .iter()
                .map(|s| RevokedCertParams {
                    serial_number: SerialNumber::from(*s),
                    revocation_time: date_time_ymd(2020, 6, 1),
                    reason_code: None,
                    invalidity_date: None,
                })
                .collect(),
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let issuer = Issuer::from_params(&pki.ca_params, &pki.ca_key);
        let crl = params.signed_by(&issuer).unwrap();
        fs::write(path, crl.pem().unwrap()).unwrap();
    }

    fn verifier(pki: &Pki, crl: Option<&Path>) -> RevocableVerifier {
        let mut roots = RootCertStore::empty();
        roots.add(pki.ca_cert.clone()).unwrap();
        RevocableVerifier::new(
            roots,
            Arc::new(rustls::crypto::ring::default_provider()),
            crl,
        )
        .unwrap()
    }

    fn check(v: &RevocableVerifier, pki: &Pki) -> Result<(), rustls::Error> {
        v.verify_client_cert(&pki.leaf, &[], UnixTime::now())
            .map(drop)
    }

    #[test]
    fn a_revoked_certificate_is_refused_and_a_changed_crl_takes_effect_on_reload() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let crl = dir.path().join("ca.crl");
        assert!(
            check(&verifier(&pki, None), &pki).is_ok(),
            "no CRL, no revocation"
        );

        write_crl(&pki, &crl, &[42], 2090);
        let v = verifier(&pki, Some(&crl));
        assert!(matches!(
            check(&v, &pki),
            Err(rustls::Error::InvalidCertificate(CertificateError::Revoked))
        ));
        assert!(!v.reload_if_changed().unwrap(), "unchanged file, no reload");

        write_crl(&pki, &crl, &[], 2090);
        assert!(v.reload_if_changed().unwrap());
        check(&v, &pki).unwrap();

        // A broken file keeps the CRL in force (here: nothing revoked) and is reported.
        write_crl(&pki, &crl, &[42], 2090);
        fs::write(
            &crl,
            "-----BEGIN X509 CRL-----\nnot base64\n-----END X509 CRL-----\n",
        )
        .unwrap();
        assert!(v.reload_if_changed().is_err());
        check(&v, &pki).unwrap();
    }

    #[test]
    fn a_crl_past_its_next_update_refuses_every_certificate() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let crl = dir.path().join("ca.crl");
        write_crl(&pki, &crl, &[], 2021);
        let err = check(&verifier(&pki, Some(&crl)), &pki).unwrap_err();
        assert!(
            matches!(
                &err,
                rustls::Error::InvalidCertificate(
                    CertificateError::ExpiredRevocationList
                        | CertificateError::ExpiredRevocationListContext { .. }
                )
            ),
            "{err:?}"
        );
        if let rustls::Error::InvalidCertificate(c) = &err {
            assert_eq!(
                super::super::handshake::Refusal::of_certificate(c),
                super::super::handshake::Refusal::StaleCrl
            );
        }
    }

    #[test]
    fn der_and_pem_crls_both_load() {
        let pki = pki();
        let dir = tempfile::tempdir().unwrap();
        let pem_path = dir.path().join("ca.crl.pem");
        write_crl(&pki, &pem_path, &[42], 2090);
        let der = read_crls(&pem_path).unwrap().remove(0);
        let der_path = dir.path().join("ca.crl");
        fs::write(&der_path, der.as_ref()).unwrap();
        assert!(check(&verifier(&pki, Some(&der_path)), &pki).is_err());
        let empty = dir.path().join("empty.pem");
        fs::write(
            &empty,
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        assert!(read_crls(&empty).is_err());
    }
}
