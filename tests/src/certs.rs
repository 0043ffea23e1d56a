//! Client certificates the agent must refuse at the handshake: from another CA, expired, not
//! yet valid, or from the test's own CA but for a name that is no controller.
//!
//! Certificates from the test's CA are signed with its key (`pki/ca.key`, made by `gantry
//! dev-pki`) under the CA's distinguished name as dev-pki writes it; the agent only checks the
//! chain (issuer name and signature), so that is all a forger with the CA key would need too.

use std::fs;
use std::path::PathBuf;

use anyhow::Context;
use rcgen::{
    CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::env::TestEnv;

/// A certificate's validity window, as calendar dates.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    /// First day it is valid (year, month, day).
    pub from: (i32, u8, u8),
    /// First day it is no longer valid.
    pub until: (i32, u8, u8),
}

impl Validity {
    /// Valid today and for years to come.
    pub const CURRENT: Validity = Validity {
        from: (2000, 1, 1),
        until: (2090, 1, 1),
    };
    /// Expired long ago.
    pub const EXPIRED: Validity = Validity {
        from: (2000, 1, 1),
        until: (2001, 1, 1),
    };
    /// Valid only from far in the future.
    pub const FUTURE: Validity = Validity {
        from: (2089, 1, 1),
        until: (2090, 1, 1),
    };
}

fn dn(org: &str, cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, org);
    dn.push(DnType::CommonName, cn);
    dn
}

fn leaf_params(name: &str, validity: Validity) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::new(vec![name.to_owned()])?;
    params.distinguished_name = dn("Gantry test", name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let (y, m, d) = validity.from;
    params.not_before = rcgen::date_time_ymd(y, m, d);
    let (y, m, d) = validity.until;
    params.not_after = rcgen::date_time_ymd(y, m, d);
    Ok(params)
}

fn write_pair(
    env: &TestEnv,
    file: &str,
    cert: &rcgen::Certificate,
    key: &KeyPair,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = env.root.join("rogue-certs");
    fs::create_dir_all(&dir)?;
    let cert_path = dir.join(format!("{file}.pem"));
    let key_path = dir.join(format!("{file}.key"));
    fs::write(&cert_path, cert.pem())?;
    fs::write(&key_path, key.serialize_pem())?;
    Ok((cert_path, key_path))
}

/// A client certificate for DNS name `name`, signed by the test's CA, valid as `validity`
/// says; written to `rogue-certs/<file>.pem` and `.key`.
///
/// # Errors
///
/// When the CA key cannot be read or a file cannot be written.
pub fn from_test_ca(
    env: &TestEnv,
    file: &str,
    name: &str,
    validity: Validity,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    with_serial(env, file, name, validity, None)
}

/// [`from_test_ca`] with the certificate's serial number set (for a CRL to name).
///
/// # Errors
///
/// As [`from_test_ca`].
pub fn with_serial(
    env: &TestEnv,
    file: &str,
    name: &str,
    validity: Validity,
    serial: Option<u64>,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ca_key = test_ca_key(env)?;
    let issuer = Issuer::new(test_ca_params(), &ca_key);
    let key = KeyPair::generate()?;
    let mut params = leaf_params(name, validity)?;
    params.serial_number = serial.map(rcgen::SerialNumber::from);
    let cert = params.signed_by(&key, &issuer)?;
    write_pair(env, file, &cert, &key)
}

fn test_ca_key(env: &TestEnv) -> anyhow::Result<KeyPair> {
    let ca_key_pem = fs::read_to_string(&env.pki.ca_key)
        .with_context(|| format!("cannot read {}", env.pki.ca_key.display()))?;
    Ok(KeyPair::from_pem(&ca_key_pem)?)
}

fn test_ca_params() -> CertificateParams {
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn("Gantry dev PKI", "Gantry dev CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    ca_params
}

/// Writes the test CA's revocation list to `path` (PEM): `revoked` serial numbers, valid
/// until `next_update` (year, month, day).
///
/// # Errors
///
/// When the CA key cannot be read or the file written.
pub fn write_crl(
    env: &TestEnv,
    path: &std::path::Path,
    revoked: &[u64],
    next_update: (i32, u8, u8),
) -> anyhow::Result<()> {
    let ca_key = test_ca_key(env)?;
    let issuer = Issuer::new(test_ca_params(), &ca_key);
    let (y, m, d) = next_update;
    let params = rcgen::CertificateRevocationListParams {
        this_update: rcgen::date_time_ymd(2020, 1, 1),
        next_update: rcgen::date_time_ymd(y, m, d),
        crl_number: rcgen::SerialNumber::from(u64::try_from(revoked.len())? + 1),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|s| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(*s),
                revocation_time: rcgen::date_time_ymd(2020, 6, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer)?;
    // Written beside and renamed over, as an operator's tooling would, so the agent never
    // reads half a file.
    let tmp = path.with_extension("tmp");
    fs::write(&tmp, crl.pem()?)?;
    fs::rename(&tmp, path)?;
    Ok(())
}

/// A currently valid client certificate for `name` from a CA of its own, which the agent
/// does not trust.
///
/// # Errors
///
/// When a file cannot be written.
pub fn from_other_ca(env: &TestEnv, file: &str, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::default();
    ca_params.distinguished_name = dn("Someone else", "Other CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let issuer = Issuer::new(ca_params, &ca_key);
    let key = KeyPair::generate()?;
    let cert = leaf_params(name, Validity::CURRENT)?.signed_by(&key, &issuer)?;
    write_pair(env, file, &cert, &key)
}

/// Lowercase hex SHA-256 of the DER of the certificate in PEM file `path`, as the agent logs
/// and pins fingerprints.
///
/// # Errors
///
/// When the file cannot be read or holds no certificate.
pub fn fingerprint(path: &std::path::Path) -> anyhow::Result<String> {
    let text = fs::read_to_string(path)?;
    let block = pem::parse(text).with_context(|| format!("{} is not PEM", path.display()))?;
    Ok(hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        block.contents(),
    )))
}
