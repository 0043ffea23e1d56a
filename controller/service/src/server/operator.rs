//! Who is calling: the operator's client certificate (already verified against the CA by the
//! TLS handshake) must be valid for one of the configured `tls.client_names`; that name is
//! what the audit log records as `by`.

use rustls::pki_types::{CertificateDer, ServerName};

/// The configured operator names.
#[derive(Debug, Clone)]
pub struct Operators {
    names: Vec<(String, ServerName<'static>)>,
}

impl Operators {
    /// From `tls.client_names`; names that are not DNS names are returned as errors.
    ///
    /// # Errors
    /// The first name that is not a DNS name.
    pub fn new(names: &[String]) -> Result<Self, String> {
        let names = names
            .iter()
            .map(|n| {
                ServerName::try_from(n.clone())
                    .map(|s| (n.clone(), s))
                    .map_err(|_| format!("tls.client_names: {n:?} is not a DNS name"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { names })
    }

    /// The configured name the leaf certificate is valid for, if any.
    pub fn name_of(&self, leaf: &CertificateDer<'_>) -> Option<String> {
        let cert = webpki::EndEntityCert::try_from(leaf).ok()?;
        self.names
            .iter()
            .find(|(_, n)| cert.verify_is_valid_for_subject_name(n).is_ok())
            .map(|(s, _)| s.clone())
    }

    /// The operator behind a request, or `PermissionDenied`.
    ///
    /// # Errors
    /// A status naming what is missing.
    pub fn of<T>(&self, req: &tonic::Request<T>) -> Result<String, tonic::Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| tonic::Status::unauthenticated("no client certificate"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| tonic::Status::unauthenticated("no client certificate"))?;
        self.name_of(leaf).ok_or_else(|| {
            tonic::Status::permission_denied(
                "the client certificate names no configured operator (tls.client_names)",
            )
        })
    }
}
