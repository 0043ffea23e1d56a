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
    #[error("--agent-id {id:?} is not a valid DNS name for a certificate")]
    BadAgentId {
        /// The id.
        id: String,
        /// rcgen's reason.
        #[source]
        source: rcgen::Error,
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

/// Makes the CA and both certificates in `out` (created if missing); refuses to overwrite.
///
/// # Errors
///
/// [`DevPkiError`]: a bad agent id, an existing file, or a write failure.
pub fn generate_pki(
    out: &Path,
    agent_id: &str,
    client_name: &str,
) -> Result<PkiPaths, DevPkiError> {
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
    let mut agent_params = CertificateParams::new(vec![agent_id.to_owned()]).map_err(|source| {
        DevPkiError::BadAgentId {
            id: agent_id.to_owned(),
            source,
        }
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
    Ok(paths)
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
    let p = generate_pki(&args.out, &args.agent_id, &args.client_name)?;
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
