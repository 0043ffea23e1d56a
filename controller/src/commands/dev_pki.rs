//! `gantry dev-pki`: a throw-away CA, an agent server certificate naming the agent id, and a
//! controller client certificate; with `--add-client`, one more controller certificate from that
//! CA. ECDSA P-256 with ring; for trying Gantry out, not production.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gantry_policy::dns::DnsName;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256,
};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

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
    /// The name given to `--add-client` or `--client-name` cannot be used.
    #[error("invalid {flag} {name:?}: {reason}")]
    BadClientName {
        /// The flag that gave it.
        flag: &'static str,
        /// The name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A file of the existing CA is missing or unreadable.
    #[error(
        "cannot read {} (the CA made by `gantry dev-pki --out DIR --agent-id ID`)",
        path.display()
    )]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The CA key file holds no usable private key.
    #[error("{} is not a PEM private key", path.display())]
    CaKey {
        /// The file.
        path: PathBuf,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
    },
    /// The CA certificate file holds no PEM certificate.
    #[error("{} holds no PEM certificate", path.display())]
    CaCert {
        /// The file.
        path: PathBuf,
    },
    /// The CA key is not the key of the CA certificate beside it.
    #[error("{} is not the key of the CA certificate {}", key.display(), ca.display())]
    CaMismatch {
        /// The CA certificate.
        ca: PathBuf,
        /// The key file.
        key: PathBuf,
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
            | DevPkiError::BadClientName { .. }
            | DevPkiError::ReadCa { .. }
            | DevPkiError::CaKey { .. }
            | DevPkiError::CaCert { .. }
            | DevPkiError::CaMismatch { .. }
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
    let secs = gantry_client::clock::unix_secs(SystemTime::now()).max(0);
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

/// Checks a name for a certificate with the agent's own rule ([`DnsName`]), so that dev-pki
/// never issues a name that the agent's `agent_id` or `tls.client_names` would refuse:
/// uppercase is refused, not folded to lowercase.
///
/// # Errors
///
/// What is wrong, for a message.
fn check_dns_name(name: &str) -> Result<(), String> {
    DnsName::new(name).map(drop).map_err(|e| e.to_string())
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
    check_dns_name(client_name).map_err(|reason| DevPkiError::BadClientName {
        flag: "--client-name",
        name: client_name.to_owned(),
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
    let ca_params = ca_params();
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

    let (client_cert, client_key) = client_cert(client_name, &issuer)?;

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
    Ok(GeneratedPki {
        paths,
        controller_fingerprint: fingerprint(&client_cert),
    })
}

/// The CA's parameters. [`add_client`] rebuilds the issuer from them and the saved key (rcgen
/// here parses no certificate), so the subject name must stay exactly this.
fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn("Gantry dev CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params);
    params
}

/// A controller's client certificate (DNS SAN and CN `name`, clientAuth only) and its new key.
fn client_cert(
    name: &str,
    issuer: &Issuer<'_, &KeyPair>,
) -> Result<(rcgen::Certificate, KeyPair), DevPkiError> {
    let key = key_pair("controller key")?;
    let mut params = CertificateParams::new(vec![name.to_owned()])
        .map_err(generate("controller certificate"))?;
    params.distinguished_name = dn(name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params);
    let cert = params
        .signed_by(&key, issuer)
        .map_err(generate("controller certificate"))?;
    Ok((cert, key))
}

/// Lowercase hex SHA-256 of a certificate's DER, as `tls.client_fingerprints` pins it.
fn fingerprint(cert: &rcgen::Certificate) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, cert.der()))
}

/// What [`add_client`] made.
#[derive(Debug, Clone)]
pub struct AddedClient {
    /// `DIR/NAME.pem`, the client certificate (0644).
    pub cert: PathBuf,
    /// `DIR/NAME.key`, its private key (0600).
    pub key: PathBuf,
    /// Lowercase hex SHA-256 of the certificate's DER (for `tls.client_fingerprints`).
    pub fingerprint: String,
}

/// Issues another controller client certificate, named `name`, from the CA that
/// [`generate_pki`] wrote to `dir`: writes `dir/NAME.pem` and `dir/NAME.key`, never
/// overwriting.
///
/// # Errors
///
/// [`DevPkiError`]: a bad name, a missing, unreadable or mismatched `ca.pem` / `ca.key`, an
/// existing file, or a write failure.
pub fn add_client(dir: &Path, name: &str) -> Result<AddedClient, DevPkiError> {
    let bad = |reason: String| DevPkiError::BadClientName {
        flag: "--add-client",
        name: name.to_owned(),
        reason,
    };
    check_dns_name(name).map_err(bad)?;
    let owner = match name {
        "ca" => Some("CA"),
        "agent" => Some("agent"),
        _ => None,
    };
    if let Some(owner) = owner {
        return Err(bad(format!(
            "{name}.pem and {name}.key are the {owner}'s files"
        )));
    }
    let paths = PkiPaths::in_dir(dir);
    let added = AddedClient {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
        fingerprint: String::new(),
    };
    for p in [&added.cert, &added.key] {
        if fs::symlink_metadata(p).is_ok() {
            return Err(DevPkiError::Exists { path: p.clone() });
        }
    }
    let read = |path: &Path| {
        fs::read(path).map_err(|source| DevPkiError::ReadCa {
            path: path.to_owned(),
            source,
        })
    };
    let ca_pem = read(&paths.ca)?;
    let key_pem = read(&paths.ca_key)?;
    let ca_key = std::str::from_utf8(&key_pem)
        .map_err(|_| rcgen::Error::CouldNotParseKeyPair)
        .and_then(KeyPair::from_pem)
        .map_err(|source| DevPkiError::CaKey {
            path: paths.ca_key.clone(),
            source,
        })?;
    let ca_der = CertificateDer::from_pem_slice(&ca_pem).map_err(|_| DevPkiError::CaCert {
        path: paths.ca.clone(),
    })?;
    // A certificate holds its public key verbatim: a key that is not in ca.pem would sign
    // certificates nothing trusting ca.pem accepts.
    if !contains(&ca_der, ca_key.public_key_raw()) {
        return Err(DevPkiError::CaMismatch {
            ca: paths.ca,
            key: paths.ca_key,
        });
    }
    let issuer = Issuer::new(ca_params(), &ca_key);
    let (cert, key) = client_cert(name, &issuer)?;
    write_new(&added.cert, 0o644, &cert.pem())?;
    write_new(&added.key, 0o600, &key.serialize_pem())?;
    Ok(AddedClient {
        fingerprint: fingerprint(&cert),
        ..added
    })
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
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

/// `gantry dev-pki`: makes the files (or, with `--add-client`, one more client certificate)
/// and says how to use them.
///
/// # Errors
///
/// See [`generate_pki`] and [`add_client`].
pub fn run(args: &crate::cli::DevPkiArgs) -> Result<(), DevPkiError> {
    if let Some(name) = &args.add_client {
        let added = add_client(&args.out, name)?;
        print!("{}", added_report(name, &added));
        return Ok(());
    }
    // clap requires --agent-id without --add-client; this only guards against a changed
    // definition.
    let Some(agent_id) = args.agent_id.as_deref() else {
        return Err(DevPkiError::BadAgentId {
            id: String::new(),
            reason: "required unless --add-client is given".to_owned(),
        });
    };
    let generated = generate_pki(&args.out, agent_id, &args.client_name)?;
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
        agent_id
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
        agent_id,
        p.ca.display(),
        p.controller.display(),
        p.controller_key.display()
    );
    Ok(())
}

/// What `--add-client NAME` prints.
fn added_report(name: &str, added: &AddedClient) -> String {
    let (cert, key) = (added.cert.display(), added.key.display());
    [
        format!("wrote a controller client certificate for {name}"),
        format!("  certificate: {cert}"),
        format!("  key:         {key}"),
        format!(
            "  certificate SHA-256 (for tls.client_fingerprints): {}",
            added.fingerprint
        ),
        format!(
            "the agent admits it once {name:?} is in tls.client_names or its fingerprint is in \
             tls.client_fingerprints"
        ),
        format!("for that controller: export GANTRY_CERT={cert} GANTRY_CERT_KEY={key}"),
    ]
    .iter()
    .fold(String::new(), |text, line| text + line + "\n")
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

    /// The names the agent's config refuses, dev-pki refuses too (`tls.client_names` and
    /// `agent_id` are checked by the same `DnsName` rule).
    #[test]
    fn names_the_agent_refuses_are_not_issued() {
        for name in ["Agent-7", "CONTROLLER", "a_b", "x.-y"] {
            let dir = tempfile::tempdir().unwrap();
            let err = generate_pki(dir.path(), name, "controller").unwrap_err();
            assert!(matches!(err, DevPkiError::BadAgentId { .. }), "{err}");
            let err = generate_pki(dir.path(), "agent-7", name).unwrap_err();
            assert!(matches!(err, DevPkiError::BadClientName { .. }), "{err}");
            assert!(err.to_string().contains("--client-name"), "{err}");
            assert!(
                fs::read_dir(dir.path()).unwrap().next().is_none(),
                "files written for {name:?}"
            );
            generate_pki(dir.path(), "agent-7", "controller").unwrap();
            let err = add_client(dir.path(), name).unwrap_err();
            assert!(matches!(err, DevPkiError::BadClientName { .. }), "{err}");

            // The agent's config check refuses the same name in both places.
            let toml = gantry_policy::config::raw::RawConfig::new(name)
                .client_name(name)
                .to_toml()
                .unwrap();
            let path = dir.path().join("agent.toml");
            fs::write(&path, toml).unwrap();
            let errs = gantry_policy::config::Config::load_policy_only(&path).unwrap_err();
            assert!(errs.for_entry("agent_id").is_some(), "{errs}");
            assert!(errs.for_entry("tls.client_names[0]").is_some(), "{errs}");
        }
    }

    #[test]
    fn bad_agent_id_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = generate_pki(dir.path(), "not a name!", "controller").unwrap_err();
        assert!(err.to_string().contains("--agent-id"), "{err}");
    }

    /// A client verifier trusting `ca` only.
    fn client_verifier(ca: &Path) -> Arc<dyn rustls::server::danger::ClientCertVerifier> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert(ca)).unwrap();
        rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn added_client_chains_to_the_existing_ca_and_names_itself() {
        let dir = tempfile::tempdir().unwrap();
        let made = generate_pki(dir.path(), "agent-7", "controller").unwrap();
        let added = add_client(dir.path(), "release-pipeline").unwrap();
        assert_eq!(added.cert, dir.path().join("release-pipeline.pem"));
        assert_eq!(added.key, dir.path().join("release-pipeline.key"));

        let der = cert(&added.cert);
        client_verifier(&made.paths.ca)
            .verify_client_cert(&der, &[], UnixTime::now())
            .unwrap();
        // It names NAME as a DNS SAN (what the agent's tls.client_names matches): a dNSName
        // GeneralName is context tag 2, its length, then the name.
        let dns_san = |n: &str| {
            let mut encoded = vec![0x82, u8::try_from(n.len()).unwrap()];
            encoded.extend_from_slice(n.as_bytes());
            contains(der.as_ref(), &encoded)
        };
        assert!(dns_san("release-pipeline"));
        assert!(!dns_san("controller"));
        // A client certificate only: it cannot pose as an agent.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert(&made.paths.ca)).unwrap();
        let server = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        let as_agent = ServerName::try_from("release-pipeline").unwrap();
        assert!(
            server
                .verify_server_cert(&der, &[], &as_agent, &[], UnixTime::now())
                .is_err()
        );

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&added.cert), 0o644);
        assert_eq!(mode(&added.key), 0o600);
        let fingerprint = hex::encode(ring::digest::digest(&ring::digest::SHA256, der.as_ref()));
        assert_eq!(added.fingerprint, fingerprint);
        assert_ne!(added.fingerprint, made.controller_fingerprint);
        let report = added_report("release-pipeline", &added);
        assert!(
            report.contains(&format!(
                "certificate SHA-256 (for tls.client_fingerprints): {fingerprint}"
            )),
            "{report}"
        );
        assert!(
            report.contains(&added.cert.display().to_string()),
            "{report}"
        );
        assert!(
            report.contains(&added.key.display().to_string()),
            "{report}"
        );
        assert!(report.contains("tls.client_names"), "{report}");
    }

    #[test]
    fn adding_the_same_client_twice_refuses_to_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        generate_pki(dir.path(), "agent-7", "controller").unwrap();
        let first = add_client(dir.path(), "alice").unwrap();
        let before = fs::read(&first.cert).unwrap();
        let err = add_client(dir.path(), "alice").unwrap_err();
        assert!(
            err.to_string().contains(&first.cert.display().to_string()),
            "{err}"
        );
        assert!(matches!(err, DevPkiError::Exists { .. }), "{err}");
        assert_eq!(fs::read(&first.cert).unwrap(), before);
        // The first controller's files are taken too.
        let err = add_client(dir.path(), "controller").unwrap_err();
        assert!(err.to_string().contains("controller.pem"), "{err}");
    }

    #[test]
    fn the_ca_and_agent_file_names_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["ca", "agent", "not a name", ""] {
            let err = add_client(dir.path(), name).unwrap_err();
            assert!(matches!(err, DevPkiError::BadClientName { .. }), "{err}");
            assert!(err.to_string().contains("--add-client"), "{err}");
        }
    }

    #[test]
    fn a_missing_ca_is_named() {
        let dir = tempfile::tempdir().unwrap();
        generate_pki(dir.path(), "agent-7", "controller").unwrap();
        let ca_key = dir.path().join("ca.key");
        fs::remove_file(&ca_key).unwrap();
        let err = add_client(dir.path(), "alice").unwrap_err();
        assert!(matches!(err, DevPkiError::ReadCa { .. }), "{err}");
        assert!(
            err.to_string().contains(&ca_key.display().to_string()),
            "{err}"
        );
        assert_eq!(err.exit(), Exit::Usage);
        assert!(!dir.path().join("alice.pem").exists());

        let empty = tempfile::tempdir().unwrap();
        let err = add_client(empty.path(), "alice").unwrap_err();
        let ca = empty.path().join("ca.pem");
        assert!(err.to_string().contains(&ca.display().to_string()), "{err}");
    }

    #[test]
    fn a_key_that_is_not_the_cas_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        generate_pki(dir.path(), "agent-7", "controller").unwrap();
        generate_pki(other.path(), "agent-7", "controller").unwrap();
        fs::remove_file(dir.path().join("ca.key")).unwrap();
        fs::copy(other.path().join("ca.key"), dir.path().join("ca.key")).unwrap();
        let err = add_client(dir.path(), "alice").unwrap_err();
        assert!(matches!(err, DevPkiError::CaMismatch { .. }), "{err}");

        fs::write(dir.path().join("ca.key"), "not a key").unwrap();
        let err = add_client(dir.path(), "alice").unwrap_err();
        assert!(matches!(err, DevPkiError::CaKey { .. }), "{err}");
        assert!(err.to_string().contains("ca.key"), "{err}");
    }

    #[test]
    fn agent_id_is_required_only_without_add_client() {
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            crate::cli::Cli::try_parse_from(
                ["gantry", "dev-pki", "--out", "pki"].iter().chain(args),
            )
        };
        let err = parse(&[]).unwrap_err().to_string();
        assert!(err.contains("--agent-id <ID>|--add-client <NAME>"), "{err}");
        let cli = parse(&["--add-client", "alice"]).unwrap();
        let crate::cli::Command::DevPki(a) = cli.command else {
            panic!("not dev-pki")
        };
        assert_eq!(a.add_client.as_deref(), Some("alice"));
        assert_eq!(a.agent_id, None);
        assert!(parse(&["--agent-id", "a", "--add-client", "alice"]).is_err());
        assert!(parse(&["--client-name", "x", "--add-client", "alice"]).is_err());
        assert!(parse(&["--agent-id", "a"]).is_ok());
    }
}
