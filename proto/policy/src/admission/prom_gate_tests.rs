use gantry_proto::v1;

use super::*;

fn check(name: &str, query: &str, condition: &str) -> v1::PrometheusCheck {
    v1::PrometheusCheck {
        name: name.to_owned(),
        query: query.to_owned(),
        condition: condition.to_owned(),
    }
}

fn gate(url: &str, checks: Vec<v1::PrometheusCheck>) -> v1::PrometheusGate {
    v1::PrometheusGate {
        url: url.to_owned(),
        checks,
    }
}

/// The field and problem of a refusal.
#[track_caller]
fn refused(g: &v1::PrometheusGate) -> (String, String) {
    match decode(g) {
        Err(AdmissionError::InvalidJob { field, problem }) => (field, problem),
        other => panic!("expected InvalidJob, got {other:?}"),
    }
}

#[test]
fn a_valid_gate_decodes_with_every_check_in_order() {
    let g = gate(
        "http://127.0.0.1:9090/prom/",
        vec![
            check(
                "errors",
                r#"sum(rate(x{app="{{app}}",cohort="{{cohort}}"}[{{window}}]))"#,
                "< 0.01",
            ),
            check("Up_2-b", "up", ">=0.99"),
        ],
    );
    let d = decode(&g).unwrap();
    assert_eq!(
        d.url,
        PromUrl {
            host: "127.0.0.1".to_owned(),
            port: 9090,
            prefix: "/prom".to_owned()
        }
    );
    assert_eq!(d.checks.len(), 2);
    assert_eq!(d.checks[0].name, "errors");
    assert_eq!(d.checks[0].query, g.checks[0].query);
    assert_eq!(
        d.checks[0].condition,
        Condition {
            cmp: Cmp::Lt,
            value: 0.01
        }
    );
    assert_eq!(d.checks[1].name, "Up_2-b");
    assert_eq!(
        d.checks[1].condition,
        Condition {
            cmp: Cmp::Ge,
            value: 0.99
        }
    );
}

#[test]
fn urls_are_plain_http_with_a_host_and_an_optional_port_and_prefix() {
    let ok = |raw: &str| parse_url(raw).unwrap();
    assert_eq!(ok("http://prom").port, 80);
    assert_eq!(ok("http://prom").prefix, "");
    assert_eq!(ok("http://prom/").prefix, "");
    assert_eq!(ok("http://prom.example-1:65535/a/b").port, 65535);
    assert_eq!(ok("http://prom.example-1:65535/a/b").prefix, "/a/b");
    assert_eq!(ok("http://[::1]:9090").host, "::1");
    assert_eq!(ok("http://[::1]:9090").port, 9090);
    assert_eq!(ok("http://[::1]").port, 80);
    let long = format!("http://h/{}", "a".repeat(MAX_URL_BYTES - 9));
    assert_eq!(long.len(), MAX_URL_BYTES);
    assert!(parse_url(&long).is_ok());
    for (raw, why) in [
        ("https://prom:9090", "not an http:// URL"),
        ("prom:9090", "not an http:// URL"),
        ("http://user:pw@prom:9090", "user info"),
        ("http://prom:9090/?a=1", "query or fragment"),
        ("http://prom:9090/#x", "query or fragment"),
        ("http://prom :9090", "space or control"),
        ("http://prom\n:9090", "space or control"),
        ("http://", "does not name a host"),
        ("http://:9090", "does not name a host"),
        ("http://prom:", "does not name a host"),
        ("http://prom:0", "does not name a host"),
        ("http://prom:65536", "does not name a host"),
        ("http://prom:+80", "does not name a host"),
        ("http://prom:8a", "does not name a host"),
        ("http://pr_om:80", "does not name a host"),
        ("http://[::1]9090", "does not name a host"),
        ("http://[::1", "does not name a host"),
    ] {
        let err = parse_url(raw).unwrap_err();
        assert!(err.contains(why), "{raw:?}: {err}");
    }
    let too_long = format!("{long}a");
    assert!(
        parse_url(&too_long)
            .unwrap_err()
            .contains("more than the maximum of 512")
    );
}

#[test]
fn a_bad_url_is_refused_with_its_field() {
    let (field, problem) = refused(&gate("https://prom", vec![check("a", "up", "> 0")]));
    assert_eq!(field, "release.rollout.analysis.prometheus.url");
    assert!(problem.contains("https"), "{problem}");
}

#[test]
fn the_number_of_checks_is_bounded() {
    let (field, problem) = refused(&gate("http://prom", vec![]));
    assert_eq!(field, "release.rollout.analysis.prometheus.checks");
    assert!(problem.contains("at least one check"), "{problem}");
    let many = |n: usize| -> Vec<_> {
        (0..n)
            .map(|i| check(&format!("c{i}"), "up", "> 0"))
            .collect()
    };
    assert_eq!(
        decode(&gate("http://prom", many(MAX_CHECKS)))
            .unwrap()
            .checks
            .len(),
        MAX_CHECKS
    );
    let (field, problem) = refused(&gate("http://prom", many(MAX_CHECKS + 1)));
    assert_eq!(field, "release.rollout.analysis.prometheus.checks");
    assert!(
        problem.contains("11 checks, more than the maximum of 10"),
        "{problem}"
    );
}

#[test]
fn names_are_short_plain_and_unique() {
    let name_of = |name: &str| refused(&gate("http://prom", vec![check(name, "up", "> 0")]));
    for bad in ["", "a b", "a.b", "é", &"a".repeat(MAX_NAME_BYTES + 1)] {
        let (field, problem) = name_of(bad);
        assert_eq!(field, "release.rollout.analysis.prometheus.checks[0].name");
        assert!(problem.contains("is not 1-64 of"), "{problem}");
    }
    let longest = "a".repeat(MAX_NAME_BYTES);
    assert!(decode(&gate("http://prom", vec![check(&longest, "up", "> 0")])).is_ok());
    let (field, problem) = refused(&gate(
        "http://prom",
        vec![
            check("a", "up", "> 0"),
            check("b", "up", "> 0"),
            check("a", "up", "< 1"),
        ],
    ));
    assert_eq!(field, "release.rollout.analysis.prometheus.checks[2].name");
    assert!(
        problem.contains("\"a\" names an earlier check too"),
        "{problem}"
    );
}

#[test]
fn queries_are_bounded_and_use_known_placeholders_only() {
    let query_of = |q: &str| decode(&gate("http://prom", vec![check("q", q, "> 0")]));
    let problem = |q: &str| match query_of(q) {
        Err(AdmissionError::InvalidJob { field, problem }) => {
            assert_eq!(field, "release.rollout.analysis.prometheus.checks[0].query");
            problem
        }
        other => panic!("{q:?}: expected InvalidJob, got {other:?}"),
    };
    assert_eq!(problem(""), "is empty");
    assert_eq!(problem(" \n"), "is empty");
    assert!(problem("up\u{0}").contains("control character"));
    assert!(problem("up\r").contains("control character"));
    assert!(query_of("sum(\n\tup)").is_ok());
    let longest = format!("up{}", " ".repeat(MAX_QUERY_BYTES - 2));
    assert!(query_of(&longest).is_ok());
    assert!(problem(&format!("{longest} ")).contains("2049 bytes, more than the maximum of 2048"));
    assert!(query_of("x{a=\"{{app}}\",c=\"{{cohort}}\"}[{{window}}] {{app}}").is_ok());
    assert!(query_of("x}} {").is_ok());
    let unknown = problem("x{a=\"{{app}}\"}[{{windows}}]");
    assert!(
        unknown.contains("unknown placeholder at \"{{windows}}]\""),
        "{unknown}"
    );
    assert!(problem("{{ app }}").contains("unknown placeholder"));
    assert!(problem("{{app}}{{").contains("unknown placeholder at \"{{\""));
}

#[test]
fn conditions_are_an_operator_and_a_finite_number() {
    let c = |raw: &str| parse_condition(raw).unwrap();
    assert_eq!(
        c("< 0.01"),
        Condition {
            cmp: Cmp::Lt,
            value: 0.01
        }
    );
    assert_eq!(
        c("<=5"),
        Condition {
            cmp: Cmp::Le,
            value: 5.0
        }
    );
    assert_eq!(
        c(" > -1 "),
        Condition {
            cmp: Cmp::Gt,
            value: -1.0
        }
    );
    assert_eq!(
        c(">= 1e3"),
        Condition {
            cmp: Cmp::Ge,
            value: 1000.0
        }
    );
    for bad in [
        "", "0.01", "= 1", "== 1", "!= 1", "<", "< abc", "< NaN", "> inf", "<= 1 2",
    ] {
        assert!(parse_condition(bad).is_err(), "{bad:?}");
    }
    assert!(
        parse_condition("< NaN")
            .unwrap_err()
            .contains("after < is not a finite number")
    );
    assert!(
        parse_condition("= 1")
            .unwrap_err()
            .contains("<, <=, > or >=")
    );
    let (field, _) = refused(&gate("http://prom", vec![check("a", "up", "~ 1")]));
    assert_eq!(
        field,
        "release.rollout.analysis.prometheus.checks[0].condition"
    );
}

#[test]
fn the_rollout_decoder_carries_the_gate_and_its_refusals() {
    use crate::admission::decode::rollout;
    let with = |g: Option<v1::PrometheusGate>| v1::Rollout {
        analysis: Some(v1::Analysis {
            prometheus: g,
            ..v1::Analysis::default()
        }),
        ..v1::Rollout::default()
    };
    assert_eq!(
        rollout(Some(&with(None)), 2).unwrap().analysis.prometheus,
        None
    );
    let ok = gate("http://prom:9090", vec![check("a", "up", "> 0")]);
    let spec = rollout(Some(&with(Some(ok))), 2).unwrap();
    let decoded = spec.analysis.prometheus.unwrap();
    assert_eq!(decoded.url.port, 9090);
    assert_eq!(decoded.checks[0].name, "a");
    let bad = gate("http://prom:9090", vec![check("a", "up", "~ 0")]);
    match rollout(Some(&with(Some(bad))), 2) {
        Err(AdmissionError::InvalidJob { field, .. }) => assert_eq!(
            field,
            "release.rollout.analysis.prometheus.checks[0].condition"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_batch_analysis_is_a_bounded_duration() {
    use std::time::Duration;

    use crate::admission::decode::rollout;
    let with = |ms| v1::Rollout {
        batch_analysis_ms: ms,
        ..v1::Rollout::default()
    };
    assert_eq!(
        rollout(Some(&with(0)), 2).unwrap().batch_analysis,
        Duration::ZERO
    );
    assert_eq!(
        rollout(Some(&with(2500)), 2).unwrap().batch_analysis,
        Duration::from_millis(2500)
    );
    match rollout(Some(&with(u32::MAX)), 2) {
        Err(AdmissionError::InvalidJob { field, .. }) => {
            assert_eq!(field, "release.rollout.batch_analysis_ms");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_memory_share_is_above_0_and_at_most_1() {
    use crate::admission::decode::rollout;
    let with = |share: f64| v1::Rollout {
        analysis: Some(v1::Analysis {
            max_memory_share: share,
            ..v1::Analysis::default()
        }),
        ..v1::Rollout::default()
    };
    let share = |s: f64| rollout(Some(&with(s)), 2).map(|r| r.analysis.max_memory_share);
    assert_eq!(share(0.0).unwrap(), None);
    assert_eq!(share(1.0).unwrap(), Some(1.0));
    assert_eq!(share(0.8).unwrap(), Some(0.8));
    assert_eq!(share(f64::MIN_POSITIVE).unwrap(), Some(f64::MIN_POSITIVE));
    for bad in [-0.1, 1.000_001, f64::NAN, f64::INFINITY, -f64::MIN_POSITIVE] {
        match share(bad) {
            Err(AdmissionError::InvalidJob { field, problem }) => {
                assert_eq!(field, "release.rollout.analysis.max_memory_share");
                assert!(
                    problem.contains("not a share above 0 and at most 1"),
                    "{problem}"
                );
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
}
