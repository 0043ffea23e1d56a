//! dev-pki tests: the certificates chain to the CA and name who they are for, refused names,
//! and `--add-client` against an existing CA.

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
        crate::cli::Cli::try_parse_from(["gantry", "dev-pki", "--out", "pki"].iter().chain(args))
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
