//! Route tables: validation, round trips, lenient parsing with errors named by file.

use super::*;

// ---------------------------------------------------------------------------------------------
// Route table rules.

#[test]
fn valid_tables_pass_and_round_trip() {
    let t = table(
        7,
        &[
            ("v1.2.0-0", lo(18000), 90, false),
            ("v1.3.0+build.1-0", lo(18001), 10, false),
            ("v1.1.0-0", lo(18002), 0, true),
        ],
    );
    t.validate(&BackendAddrs::LoopbackOnly, Some(lo(8080)))
        .unwrap();
    let back = RouteTable::from_bytes(
        &t.to_bytes(),
        Path::new("routes.json"),
        &BackendAddrs::default(),
        None,
    )
    .unwrap();
    assert_eq!(back, t);
    // An empty table routes nothing, on purpose.
    table(8, &[])
        .validate(&BackendAddrs::LoopbackOnly, None)
        .unwrap();
    // `holding` is left out of the file unless set.
    assert!(!String::from_utf8(t.to_bytes()).unwrap().contains("holding"));
}

#[test]
fn a_holding_table_needs_a_hold_timeout_and_may_drain_every_backend() {
    let ok = BackendAddrs::LoopbackOnly;
    let mut held = table(3, &[("old-0", lo(18000), 100, true)]);
    held.holding = true;
    assert_eq!(
        held.validate(&ok, None).unwrap_err(),
        RouteProblem::HoldingWithoutTimeout
    );
    assert!(
        RouteProblem::HoldingWithoutTimeout
            .to_string()
            .contains("hold_timeout_ms is 0")
    );
    held.hold_timeout_ms = 5000;
    // Every backend draining is what a holding table is for; without holding it is refused.
    held.validate(&ok, None).unwrap();
    let mut empty = table(4, &[]);
    empty.hold_timeout_ms = 5000;
    empty.holding = true;
    empty.validate(&ok, None).unwrap();
    let back =
        RouteTable::from_bytes(&held.to_bytes(), Path::new("routes.json"), &ok, None).unwrap();
    assert!(back.holding);
    assert_eq!(back, held);
    held.holding = false;
    assert_eq!(
        held.validate(&ok, None).unwrap_err(),
        RouteProblem::NoWeight
    );
}

#[test]
fn each_broken_rule_is_named() {
    let ok = BackendAddrs::LoopbackOnly;
    let check = |t: RouteTable| t.validate(&ok, Some(lo(8080))).unwrap_err();

    assert_eq!(
        check(table(1, &[("a", lo(1), 1, false), ("a", lo(2), 1, false)])),
        RouteProblem::DuplicateId { id: "a".into() }
    );
    for bad in ["", "a b", "a\nserver evil", "ä", &"x".repeat(129)] {
        assert!(
            matches!(
                check(table(1, &[(bad, lo(1), 1, false)])),
                RouteProblem::BadId { .. }
            ),
            "{bad:?}"
        );
    }
    assert_eq!(
        check(table(1, &[("a", lo(1), 0, false), ("b", lo(2), 0, false)])),
        RouteProblem::NoWeight
    );
    // Every backend draining: new connections would have nowhere to go.
    assert_eq!(
        check(table(1, &[("a", lo(1), 100, true)])),
        RouteProblem::NoWeight
    );
    assert!(matches!(
        check(table(1, &[("a", lo(1), MAX_WEIGHT + 1, false)])),
        RouteProblem::WeightTooLarge { .. }
    ));
    let remote: SocketAddr = "10.1.2.3:80".parse().unwrap();
    assert!(matches!(
        check(table(1, &[("a", remote, 1, false)])),
        RouteProblem::AddrNotAllowed { .. }
    ));
    table(1, &[("a", remote, 1, false)])
        .validate(&BackendAddrs::with_extra([remote.ip()]), None)
        .unwrap();
    assert!(matches!(
        check(table(1, &[("a", lo(0), 1, false)])),
        RouteProblem::AddrUnusable { .. }
    ));
    assert!(matches!(
        check(table(1, &[("a", "0.0.0.0:80".parse().unwrap(), 1, false)])),
        RouteProblem::AddrUnusable { .. }
    ));
    assert!(matches!(
        check(table(1, &[("a", lo(8080), 1, false)])),
        RouteProblem::AddrIsListener { .. }
    ));
    // A wildcard listener is reached through loopback too.
    assert!(matches!(
        table(1, &[("a", lo(8080), 1, false)])
            .validate(&ok, Some("0.0.0.0:8080".parse().unwrap()))
            .unwrap_err(),
        RouteProblem::AddrIsListener { .. }
    ));
    let mut t = table(1, &[("a", lo(1), 1, false)]);
    t.drain_timeout_ms = 0;
    assert!(matches!(
        check(t.clone()),
        RouteProblem::BadTimeout {
            field: "drain_timeout_ms",
            ..
        }
    ));
    t.drain_timeout_ms = 1000;
    t.connect_timeout_ms = 3_600_000;
    assert!(matches!(
        check(t),
        RouteProblem::BadTimeout {
            field: "connect_timeout_ms",
            ..
        }
    ));
    let many: Vec<(String, SocketAddr)> = (0..=MAX_BACKENDS)
        .map(|i| (format!("b{i}"), lo(10_000 + i as u16)))
        .collect();
    let big = RouteTable::new(
        1,
        many.iter()
            .map(|(id, addr)| Backend::new(id.clone(), *addr, 1))
            .collect(),
    );
    assert!(matches!(check(big), RouteProblem::TooManyBackends { .. }));
}

#[test]
fn route_files_parse_leniently_but_report_errors_by_file() {
    let origin = Path::new("/run/gantry/web/routes.json");
    let addrs = BackendAddrs::LoopbackOnly;
    // Defaults for the optional fields; unknown fields (from a newer agent) are ignored.
    let t = RouteTable::from_bytes(
        br#"{"generation":3,"backends":[{"id":"a","addr":"127.0.0.1:9","weight":1,"future":1}],"later":true}"#,
        origin,
        &addrs,
        None,
    )
    .unwrap();
    assert_eq!(t.drain_timeout_ms, DEFAULT_DRAIN_TIMEOUT_MS);
    assert_eq!(t.connect_timeout_ms, DEFAULT_CONNECT_TIMEOUT_MS);
    assert!(!t.backends[0].draining);

    let err = RouteTable::from_bytes(b"{\"generation\":", origin, &addrs, None).unwrap_err();
    assert!(matches!(err, TrafficError::ParseRoutes { .. }));
    assert!(err.to_string().contains("/run/gantry/web/routes.json"));
    let err = RouteTable::from_bytes(
        br#"{"generation":3,"backends":[{"id":"a","addr":"127.0.0.1:9","weight":0}]}"#,
        origin,
        &addrs,
        None,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        TrafficError::InvalidRoutes {
            problem: RouteProblem::NoWeight,
            ..
        }
    ));
    let err = RouteTable::load(Path::new("/nonexistent/routes.json"), &addrs, None).unwrap_err();
    assert!(matches!(err, TrafficError::ReadRoutes { .. }));
}
