//! `gantry dev-pki`: a throw-away CA, an agent server certificate naming the agent id, and a
//! controller client certificate. ECDSA P-256 with ring; for trying Gantry out, not production.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use crate::exit::Exit;

/// Why the PKI could not be made.
#[derive(Debug, thiserror::Error)]
pub enum DevPkiError {
    /// The agent id cannot be a DNS name in a certificate.
    #[error("invalid --agent-id {id:?}: {reason}")]
    BadAgentId {
        /// The id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// Key or certificate generation failed.
    #[error("cannot generate the {what}")]
    Generate {
        /// What was being made.
        what: &'static str,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// A file exists already.
    #[error("refusing to overwrite {}", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The directory or a file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl DevPkiError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            DevPkiError::BadAgentId { .. }
            | DevPkiError::Generate { .. }
            | DevPkiError::Exists { .. }
            | DevPkiError::Write { .. } => Exit::Usage,
        }
    }
}

/// The files `dev-pki` writes, under one directory.
#[derive(Debug, Clone)]
pub struct PkiPaths {
    /// CA certificate.
    pub ca: PathBuf,
    /// CA private key.
    pub ca_key: PathBuf,
    /// The agent's server certificate.
    pub agent: PathBuf,
    /// Its key.
    pub agent_key: PathBuf,
    /// The controller's client certificate.
    pub controller: PathBuf,
    /// Its key.
    pub controller_key: PathBuf,
}

impl PkiPaths {
    /// The file names under `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            agent: dir.join("agent.pem"),
            agent_key: dir.join("agent.key"),
            controller: dir.join("controller.pem"),
            controller_key: dir.join("controller.key"),
        }
    }
}

fn generate(what: &'static str) -> impl Fn(rcgen::Error) -> DevPkiError {
    move |source| DevPkiError::Generate { what, source }
}

fn key_pair(what: &'static str) -> Result<KeyPair, DevPkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(generate(what))
}

/// Valid from the start of last year for three years: no clock-edge surprises, bounded life.
fn set_validity(params: &mut CertificateParams) {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Close enough to the calendar year; the margin of a year absorbs the approximation.
    let year = 1970 + i32::try_from(secs / 31_556_952).unwrap_or(0);
    params.not_before = rcgen::date_time_ymd(year - 1, 1, 1);
    params.not_after = rcgen::date_time_ymd(year + 2, 1, 1);
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Gantry dev PKI");
    dn.push(DnType::CommonName, cn);
    dn
}

/// Checks that `name` is a DNS host name (letters, digits, '-' in dot-separated labels).
///
/// # Errors
///
/// What is wrong, for a message.
pub fn check_dns_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 253 {
        return Err("a DNS name is 1 to 253 characters".to_owned());
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !ok {
            return Err(format!(
                "label {label:?} must be 1-63 letters, digits or '-', not starting or ending with '-'"
            ));
        }
    }
    Ok(())
}

/// What [`generate_pki`] made.
#[derive(Debug, Clone)]
pub struct GeneratedPki {
    /// The files.
    pub paths: PkiPaths,
    /// Lowercase hex SHA-256 of the controller certificate's DER (for the agent's
    /// `tls.client_fingerprints` pin).
    pub controller_fingerprint: String,
}

/// Makes the CA and both certificates in `out` (created if missing); refuses to overwrite.
///
/// # Errors
///
/// [`DevPkiError`]: a bad agent id, an existing file, or a write failure.
pub fn generate_pki(
    out: &Path,
    agent_id: &str,
    client_name: &str,
) -> Result<GeneratedPki, DevPkiError> {
    check_dns_name(agent_id).map_err(|reason| DevPkiError::BadAgentId {
        id: agent_id.to_owned(),
        reason,
    })?;
    let paths = PkiPaths::in_dir(out);
    for p in [
        &paths.ca,
        &paths.ca_key,
        &paths.agent,
        &paths.agent_key,
        &paths.controller,
        &paths.controller_key,
    ] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(DevPkiError::Exists { path: p.clone() });
        }
    }

    let ca_key = key_pair("CA key")?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn("Gantry dev CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut ca_params);
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(generate("CA certificate"))?;
    let issuer = Issuer::new(ca_params, &ca_key);

    let agent_key = key_pair("agent key")?;
    let mut agent_params =
        CertificateParams::new(vec![agent_id.to_owned()]).map_err(|e| DevPkiError::BadAgentId {
            id: agent_id.to_owned(),
            reason: e.to_string(),
        })?;
    agent_params.distinguished_name = dn(agent_id);
    agent_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    agent_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    agent_params.use_authority_key_identifier_extension = true;
    set_validity(&mut agent_params);
    let agent_cert = agent_params
        .signed_by(&agent_key, &issuer)
        .map_err(generate("agent certificate"))?;

    let client_key = key_pair("controller key")?;
    let mut client_params = CertificateParams::new(vec![client_name.to_owned()])
        .map_err(generate("controller certificate"))?;
    client_params.distinguished_name = dn(client_name);
    client_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    client_params.use_authority_key_identifier_extension = true;
    set_validity(&mut client_params);
    let client_cert = client_params
        .signed_by(&client_key, &issuer)
        .map_err(generate("controller certificate"))?;

    fs::create_dir_all(out).map_err(|source| DevPkiError::Write {
        path: out.to_owned(),
        source,
    })?;
    write_new(&paths.ca, 0o644, &ca_cert.pem())?;
    write_new(&paths.ca_key, 0o600, &ca_key.serialize_pem())?;
    write_new(&paths.agent, 0o644, &agent_cert.pem())?;
    write_new(&paths.agent_key, 0o600, &agent_key.serialize_pem())?;
    write_new(&paths.controller, 0o644, &client_cert.pem())?;
    write_new(&paths.controller_key, 0o600, &client_key.serialize_pem())?;
    let controller_fingerprint = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        client_cert.der(),
    ));
    Ok(GeneratedPki {
        paths,
        controller_fingerprint,
    })
}

fn write_new(path: &Path, mode: u32, text: &str) -> Result<(), DevPkiError> {
    let write = || -> std::io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()
    };
    write().map_err(|source| DevPkiError::Write {
        path: path.to_owned(),
        source,
    })
}

/// `gantry dev-pki`: makes the files and says how to use them.
///
/// # Errors
///
/// See [`generate_pki`].
pub fn run(args: &crate::cli::DevPkiArgs) -> Result<(), DevPkiError> {
    let generated = generate_pki(&args.out, &args.agent_id, &args.client_name)?;
    let p = &generated.paths;
    println!(
        "wrote a development CA and certificates to {}",
        args.out.display()
    );
    println!(
        "  CA:         {}  (key {})",
        p.ca.display(),
        p.ca_key.display()
    );
    println!(
        "  agent:      {}  (key {}; DNS name {})",
        p.agent.display(),
        p.agent_key.display(),
        args.agent_id
    );
    println!(
        "  controller: {}  (key {})",
        p.controller.display(),
        p.controller_key.display()
    );
    println!(
        "  controller certificate SHA-256 (for tls.client_fingerprints): {}",
        generated.controller_fingerprint
    );
    println!("for the controller:");
    println!(
        "  export GANTRY_AGENT_ID={} GANTRY_CA={} GANTRY_CERT={} GANTRY_CERT_KEY={}",
        args.agent_id,
        p.ca.display(),
        p.controller.display(),
        p.controller_key.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use std::os::unix::fs::PermissionsExt;

    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    use super::*;

    fn cert(path: &Path) -> CertificateDer<'static> {
        CertificateDer::from_pem_file(path).unwrap()
    }

    #[test]
    fn certificates_chain_to_the_ca_and_name_the_agent() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("pki");
        let made = generate_pki(&out, "agent-7", "controller").unwrap();
        let p = &made.paths;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert(&p.ca)).unwrap();
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());

        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            roots.clone(),
            provider.clone(),
        )
        .build()
        .unwrap();
        let name = ServerName::try_from("agent-7").unwrap();
        server
            .verify_server_cert(&cert(&p.agent), &[], &name, &[], UnixTime::now())
            .unwrap();
        let impostor = ServerName::try_from("agent-8").unwrap();
        assert!(
            server
                .verify_server_cert(&cert(&p.agent), &[], &impostor, &[], UnixTime::now())
                .is_err()
        );
        // The controller's certificate is for clients only.
        let controller_name = ServerName::try_from("controller").unwrap();
        assert!(
            server
                .verify_server_cert(
                    &cert(&p.controller),
                    &[],
                    &controller_name,
                    &[],
                    UnixTime::now()
                )
                .is_err()
        );

        let client = rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider)
            .build()
            .unwrap();
        client
            .verify_client_cert(&cert(&p.controller), &[], UnixTime::now())
            .unwrap();

        for key in [&p.ca_key, &p.agent_key, &p.controller_key] {
            let mode = fs::metadata(key).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", key.display());
        }
        let der = cert(&p.controller);
        assert_eq!(
            made.controller_fingerprint,
            hex::encode(ring::digest::digest(&ring::digest::SHA256, der.as_ref()))
        );

        let again = generate_pki(&out, "agent-7", "controller").unwrap_err();
        assert!(matches!(again, DevPkiError::Exists { .. }), "{again}");
    }

    #[test]
    fn bad_agent_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = generate_pki(dir.path(), "not a name!", "controller").unwrap_err();
        assert!(err.to_string().contains("--agent-id"), "{err}");
    }
}
