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

    let (agent_cert, agent_key) = agent_cert(agent_id, &issuer)?;

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

/// An agent's server certificate (DNS SAN and CN `agent_id`, serverAuth) and its new key.
fn agent_cert(
    agent_id: &str,
    issuer: &Issuer<'_, &KeyPair>,
) -> Result<(rcgen::Certificate, KeyPair), DevPkiError> {
    let agent_key = key_pair("agent key")?;
    let mut agent_params =
        CertificateParams::new(vec![agent_id.to_owned()]).map_err(|e| DevPkiError::BadAgentId {
            id: agent_id.to_owned(),
            reason: e.to_string(),
        })?;
    agent_params.distinguished_name = dn(agent_id);
    agent_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    // ServerAuth for the listening agent, ClientAuth for one that dials out (`[controller] dial`).
    agent_params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    agent_params.use_authority_key_identifier_extension = true;
    set_validity(&mut agent_params);
    let cert = agent_params
        .signed_by(&agent_key, issuer)
        .map_err(generate("agent certificate"))?;
    Ok((cert, agent_key))
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

/// What [`add_client`] or [`add_agent`] made.
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
    issue_pair(dir, name, client_cert)
}

/// The CA key [`generate_pki`] wrote to `paths`, checked to be the key of `ca.pem`.
fn load_ca_key(paths: &PkiPaths) -> Result<KeyPair, DevPkiError> {
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
            ca: paths.ca.clone(),
            key: paths.ca_key.clone(),
        });
    }
    Ok(ca_key)
}

/// Issues another agent certificate (DNS SAN and CN `agent_id`, serverAuth) from the CA that
/// [`generate_pki`] wrote to `dir`: writes `dir/ID.pem` and `dir/ID.key`, never overwriting.
/// `gantry quickstart --fleet` gives each of its agents one.
///
/// # Errors
///
/// [`DevPkiError`]: a bad id, a missing, unreadable or mismatched `ca.pem` / `ca.key`, an
/// existing file, or a write failure.
pub fn add_agent(dir: &Path, agent_id: &str) -> Result<AddedClient, DevPkiError> {
    let bad = |reason: String| DevPkiError::BadAgentId {
        id: agent_id.to_owned(),
        reason,
    };
    check_dns_name(agent_id).map_err(bad)?;
    if matches!(agent_id, "ca" | "agent" | "controller") {
        return Err(bad(format!("{agent_id}.pem and {agent_id}.key are taken")));
    }
    issue_pair(dir, agent_id, agent_cert)
}

/// Makes a leaf certificate and its key for a name, signed by the issuer.
type MakeLeaf =
    fn(&str, &Issuer<'_, &KeyPair>) -> Result<(rcgen::Certificate, KeyPair), DevPkiError>;

/// Makes `dir/NAME.pem` and `dir/NAME.key` with `make`, signed by the CA in `dir`; never
/// overwrites.
fn issue_pair(dir: &Path, name: &str, make: MakeLeaf) -> Result<AddedClient, DevPkiError> {
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
    let ca_key = load_ca_key(&PkiPaths::in_dir(dir))?;
    let issuer = Issuer::new(ca_params(), &ca_key);
    let (cert, key) = make(name, &issuer)?;
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
mod tests;
