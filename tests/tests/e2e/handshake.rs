//! Security review I1–I3 and C3: handshakes the real listener must refuse before any RPC,
//! each one counted and logged by the agent with the certificate's fingerprint where the peer
//! sent one. (A refused handshake comes from an unauthenticated peer, so it is a log line, not
//! an audit entry: see docs/security.md.)

use std::time::Duration;

use gantry_tests::certs::{self, Validity};
use gantry_tests::grpc::status_as;
use gantry_tests::{Agent, TestEnv, audit_lines, wait_until};

/// Waits until the agent's log has a refusal line with `reason` and, when given, `fingerprint`.
#[track_caller]
fn assert_logged(agent: &Agent, reason: &str, fingerprint: Option<&str>) {
    let want = format!("TLS handshake refused ({reason})");
    let found = wait_until(Duration::from_secs(10), &want, || {
        agent.log_text().lines().any(|l| {
            l.contains(&want) && fingerprint.is_none_or(|fp| l.contains(&format!("sha256 {fp}")))
        })
    });
    assert!(
        found.is_ok(),
        "{want} ({fingerprint:?}) not logged:\n{}",
        agent.log_tail()
    );
}

#[test]
fn i1_i3_c3_bad_client_certificates_are_refused_at_the_handshake_and_logged() {
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let before = audit_lines(&env).unwrap().len();

    // The controller's own certificate works: the rig is sound.
    let good = (
        env.pki.controller_cert.as_path(),
        env.pki.controller_key.as_path(),
    );
    status_as(&env, &agent, Some(good)).unwrap().unwrap();

    // I1: no client certificate at all.
    let refused = status_as(&env, &agent, None).unwrap();
    assert!(refused.is_err(), "answered without a client certificate");
    assert_logged(&agent, "no_client_certificate", None);

    let cases = [
        // I2: a certificate from a CA the agent does not trust.
        (
            "other-ca",
            certs::from_other_ca(&env, "other-ca", "controller").unwrap(),
            "unknown_issuer",
        ),
        // I3: expired, and not yet valid, from the agent's own CA.
        (
            "expired",
            certs::from_test_ca(&env, "expired", "controller", Validity::EXPIRED).unwrap(),
            "certificate_expired",
        ),
        (
            "future",
            certs::from_test_ca(&env, "future", "controller", Validity::FUTURE).unwrap(),
            "certificate_not_yet_valid",
        ),
        // C3: valid and from the CA, but not a configured controller.
        (
            "stranger",
            certs::from_test_ca(&env, "stranger", "stranger", Validity::CURRENT).unwrap(),
            "not_a_controller",
        ),
    ];
    for (what, (cert, key), reason) in &cases {
        let refused = status_as(&env, &agent, Some((cert, key))).unwrap();
        assert!(refused.is_err(), "{what}: answered");
        let fp = certs::fingerprint(cert).unwrap();
        assert_logged(&agent, reason, Some(&fp));
    }

    // Refused before any RPC: nothing reached admission or the audit log.
    assert_eq!(audit_lines(&env).unwrap().len(), before);
    // And the agent still serves its controller.
    status_as(&env, &agent, Some(good)).unwrap().unwrap();
}

/// Issue: an agent certificate that does not match its key passed `check-config`, and `run`
/// wrote audit entries and started the front door before failing. Both now stop at once,
/// saying so, and nothing is written.
#[test]
fn a_certificate_that_does_not_match_its_key_stops_check_config_and_run_before_any_write() {
    let env = TestEnv::with_options(gantry_tests::Options::front_door(1)).unwrap();
    std::fs::copy(&env.pki.controller_key, &env.pki.agent_key).unwrap();
    let config = env.config.to_string_lossy().into_owned();
    let check = env
        .agent_cmd(&["check-config", "--config", &config])
        .unwrap();
    check.assert_code(2);
    assert!(
        check.stderr.contains("invalid TLS configuration"),
        "{}",
        check.all()
    );
    let run = env.agent_cmd(&["run", "--config", &config]).unwrap();
    run.assert_code(2);
    assert!(
        run.stderr
            .contains("cannot load the TLS certificate and key"),
        "{}",
        run.all()
    );
    assert!(
        !env.data_dir.join("audit").exists(),
        "an audit entry was written"
    );
    assert!(
        !env.data_dir.join("apps/web/traffic").exists(),
        "the front door was set up"
    );
}

/// Security review E3 (slowloris): a peer that opens a connection and never completes the
/// handshake is cut off after the handshake timeout, and the refusal is logged.
#[test]
fn e3_a_connection_that_never_handshakes_is_closed_after_the_timeout() {
    use std::io::Read;
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let mut idle = std::net::TcpStream::connect(agent.addr).unwrap();
    // Longer than the agent's 10 s handshake timeout, so a read that ends is its doing.
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 64];
    let ended = idle.read(&mut buf);
    // End of stream (or a reset): the agent closed it. A timeout error would be our own.
    let closed = match &ended {
        Ok(n) => *n == 0,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    assert!(closed, "not closed by the agent: {ended:?}");
    assert_logged(&agent, "handshake_timed_out", None);
}

/// Security review E4: a request whose header list is over the agent's 16 KiB limit is
/// refused, and the agent goes on serving.
#[test]
fn e4_a_header_list_over_the_limit_is_refused() {
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let huge = "a".repeat(20 * 1024);
    let refused = gantry_tests::grpc::status_with_header(&env, &agent, "x-filler", &huge).unwrap();
    let Err(why) = refused else {
        panic!("a 20 KiB header was accepted")
    };
    // The agent's HTTP/2 server answered 431 Request Header Fields Too Large.
    assert!(why.contains("431"), "{why}");
    gantry_tests::grpc::status_with_header(&env, &agent, "x-filler", "small")
        .unwrap()
        .unwrap();
}

/// Security review E5: the agent accepts no compressed message (no decompression bomb can
/// reach a decoder): a request that says it is gzip-compressed is refused as unsupported.
#[test]
fn e5_a_compressed_request_is_refused_as_unsupported() {
    let env = TestEnv::new().unwrap();
    let agent = Agent::start(&env).unwrap();
    let refused =
        gantry_tests::grpc::status_with_header(&env, &agent, "grpc-encoding", "gzip").unwrap();
    let Err(why) = refused else {
        panic!("a gzip-encoded request was accepted")
    };
    assert!(why.contains("Unimplemented"), "{why}");
    assert!(why.contains("gzip"), "{why}");
}

/// Security review I4: with `tls.crl`, a revoked controller certificate is refused at the
/// handshake (`certificate_revoked`, with its fingerprint); a new CRL that no longer lists it
/// takes effect without a restart; a CRL past its nextUpdate refuses every certificate
/// (`stale_crl`) until a fresh one is installed.
#[test]
fn i4_a_revoked_certificate_is_refused_and_the_crl_reloads_when_it_changes() {
    let env = TestEnv::new().unwrap();
    let crl = env.pki.dir.join("ca.crl");
    certs::write_crl(&env, &crl, &[4242], (2090, 1, 1)).unwrap();
    let mut raw = env.raw_config();
    raw.tls.crl = Some(crl.to_string_lossy().into_owned());
    env.write_raw_config(&raw).unwrap();
    let agent = Agent::start(&env).unwrap();
    let (cert, key) =
        certs::with_serial(&env, "revoked", "controller", Validity::CURRENT, Some(4242)).unwrap();
    let fp = certs::fingerprint(&cert).unwrap();
    let good = (
        env.pki.controller_cert.as_path(),
        env.pki.controller_key.as_path(),
    );
    status_as(&env, &agent, Some(good)).unwrap().unwrap();
    assert!(
        status_as(&env, &agent, Some((&cert, &key)))
            .unwrap()
            .is_err()
    );
    assert_logged(&agent, "certificate_revoked", Some(&fp));

    // Un-revoked by a new CRL: admitted again once the agent has reloaded it.
    certs::write_crl(&env, &crl, &[], (2090, 1, 1)).unwrap();
    let admitted = wait_until(Duration::from_secs(15), "the new CRL is in force", || {
        status_as(&env, &agent, Some((&cert, &key)))
            .unwrap()
            .is_ok()
    });
    assert!(admitted.is_ok(), "{}", agent.log_tail());

    // A stale CRL: nobody gets in, not even the controller.
    certs::write_crl(&env, &crl, &[], (2021, 1, 1)).unwrap();
    let locked = wait_until(Duration::from_secs(15), "the stale CRL is in force", || {
        status_as(&env, &agent, Some(good)).unwrap().is_err()
    });
    assert!(locked.is_ok(), "{}", agent.log_tail());
    assert_logged(&agent, "stale_crl", None);
}
