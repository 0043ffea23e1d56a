//! Rollout flags: validation and the built `Rollout` (how `job show` prints it is in
//! `rollout_show_tests.rs`).

use super::*;

fn args() -> RolloutArgs {
    RolloutArgs::default()
}

fn err(strategy: Strategy, a: &RolloutArgs) -> String {
    build_rollout(strategy, a).unwrap_err().to_string()
}

#[test]
fn no_flags_no_rollout() {
    for s in [
        Strategy::Hot,
        Strategy::Rolling,
        Strategy::BlueGreen,
        Strategy::Canary,
    ] {
        assert_eq!(build_rollout(s, &args()), Ok(None));
    }
}

#[test]
fn rolling_flags_fill_only_what_was_given() {
    let a = RolloutArgs {
        batch: Some("25%".into()),
        min_healthy_time: Some("10s".into()),
        no_auto_revert: true,
        ..args()
    };
    let r = build_rollout(Strategy::Rolling, &a).unwrap().unwrap();
    assert_eq!(
        r,
        Rollout {
            batch: "25%".into(),
            min_healthy_time_ms: 10_000,
            no_auto_revert: true,
            ..Rollout::default()
        }
    );
    let a = RolloutArgs {
        batch: Some(" 2 ".into()),
        healthy_deadline: Some("1m".into()),
        drain_timeout: Some("5s".into()),
        ..args()
    };
    let r = build_rollout(Strategy::Rolling, &a).unwrap().unwrap();
    assert_eq!(
        (
            r.batch.as_str(),
            r.healthy_deadline_ms,
            r.drain_timeout_ms,
            r.analysis
        ),
        ("2", 60_000, 5_000, None)
    );
}

#[test]
fn blue_green_flags() {
    let a = RolloutArgs {
        preview_weight: Some("10".into()),
        preview: Some("30s".into()),
        scale_down_delay: Some("5s".into()),
        manual_promote: true,
        ..args()
    };
    let r = build_rollout(Strategy::BlueGreen, &a).unwrap().unwrap();
    assert_eq!(
        (
            r.preview_weight,
            r.preview_ms,
            r.scale_down_delay_ms,
            r.manual_promote
        ),
        (10, 30_000, 5_000, true)
    );
    // A preview weight needs a duration, or lasts until promote.
    let a = RolloutArgs {
        preview_weight: Some("10%".into()),
        ..args()
    };
    assert!(err(Strategy::BlueGreen, &a).starts_with("invalid --preview-weight: needs --preview"));
    let a = RolloutArgs {
        preview_weight: Some("10".into()),
        manual_promote: true,
        ..args()
    };
    assert_eq!(
        build_rollout(Strategy::BlueGreen, &a)
            .unwrap()
            .unwrap()
            .preview_weight,
        10
    );
}

#[test]
fn canary_flags_and_analysis() {
    let a = RolloutArgs {
        steps: vec!["10:30s".into(), "50%:promote".into(), "100:1s".into()],
        canary_instances: Some("2".into()),
        max_probe_failures: Some("4".into()),
        max_restarts: Some("0".into()),
        max_conn_errors: Some("7".into()),
        max_cpu: Some("150%".into()),
        max_memory: Some("256MiB".into()),
        analysis_interval: Some("2s".into()),
        max_error_rate: Some("2%".into()),
        max_p95_latency: Some("300ms".into()),
        min_samples: Some("500".into()),
        no_data: Some("fail".into()),
        compare: Some("stable".into()),
        compare_alpha: Some("0.01".into()),
        ..args()
    };
    let r = build_rollout(Strategy::Canary, &a).unwrap().unwrap();
    assert_eq!(
        r.steps,
        vec![
            CanaryStep {
                weight: 10,
                pause_ms: 30_000,
                until_promote: false,
                flag_percent: None,
            },
            CanaryStep {
                weight: 50,
                pause_ms: 0,
                until_promote: true,
                flag_percent: None,
            },
            CanaryStep {
                weight: 100,
                pause_ms: 1_000,
                until_promote: false,
                flag_percent: None,
            },
        ]
    );
    assert_eq!(r.canary_instances, 2);
    assert_eq!(
        r.analysis,
        Some(Analysis {
            max_probe_failures: 4,
            max_restarts: 0,
            max_conn_errors: 7,
            max_cpu_percent: 150.0,
            max_memory_bytes: 256 << 20,
            interval_ms: 2_000,
            max_error_rate: 0.02,
            max_p95_latency_ms: 300,
            min_samples: 500,
            no_data: "fail".into(),
            prometheus: None,
            max_memory_share: 0.0,
            compare: "stable".into(),
            compare_alpha: 0.01,
        })
    );
    // One analysis flag alone: the rest stay at the agent's defaults (0).
    let a = RolloutArgs {
        max_memory: Some("1GB".into()),
        ..args()
    };
    let r = build_rollout(Strategy::Canary, &a).unwrap().unwrap();
    assert_eq!(
        r.analysis,
        Some(Analysis {
            max_memory_bytes: 1_000_000_000,
            ..Analysis::default()
        })
    );
    assert!(r.steps.is_empty());
    // A share of the host's memory instead of a size.
    let a = RolloutArgs {
        max_memory: Some("80%".into()),
        ..args()
    };
    let r = build_rollout(Strategy::Canary, &a).unwrap().unwrap();
    let analysis = r.analysis.unwrap();
    assert_eq!(
        (analysis.max_memory_share, analysis.max_memory_bytes),
        (0.8, 0)
    );
    for bad in ["0%", "101%", "x%", "-5%"] {
        let a = RolloutArgs {
            max_memory: Some(bad.into()),
            ..args()
        };
        let e = build_rollout(Strategy::Canary, &a).unwrap_err().to_string();
        assert!(
            e.contains("--max-memory") && e.contains("80%"),
            "{bad}: {e}"
        );
    }
    // The Prometheus flags alone give an analysis with the gate and the defaults.
    let a = RolloutArgs {
        prometheus: Some("http://127.0.0.1:9090".into()),
        prom_checks: vec!["up:up{job=\"gantry\"}:>= 1".into()],
        ..args()
    };
    let r = build_rollout(Strategy::Hot, &a).unwrap().unwrap();
    let g = r.analysis.unwrap().prometheus.unwrap();
    assert_eq!(g.url, "http://127.0.0.1:9090");
    assert_eq!(g.checks[0].query, "up{job=\"gantry\"}");
    assert_eq!(g.checks[0].condition, ">= 1");
}

#[test]
fn a_flag_for_another_strategy_is_named() {
    let step = RolloutArgs {
        steps: vec!["10:1s".into()],
        ..args()
    };
    assert_eq!(
        err(Strategy::Rolling, &step),
        "invalid --step: is a canary flag and does not fit --strategy rolling"
    );
    let batch = RolloutArgs {
        batch: Some("1".into()),
        ..args()
    };
    assert_eq!(
        err(Strategy::Canary, &batch),
        "invalid --batch: is a rolling flag and does not fit --strategy canary"
    );
    let drain = RolloutArgs {
        drain_timeout: Some("1s".into()),
        ..args()
    };
    assert_eq!(
        err(Strategy::Hot, &drain),
        "invalid --drain-timeout: is a rolling, blue-green or canary flag and does not fit \
         --strategy hot"
    );
    for (a, flag) in [
        (
            RolloutArgs {
                manual_promote: true,
                ..args()
            },
            "--manual-promote",
        ),
        (
            RolloutArgs {
                no_auto_revert: true,
                ..args()
            },
            "--no-auto-revert",
        ),
        (
            RolloutArgs {
                max_cpu: Some("50".into()),
                ..args()
            },
            "--max-cpu",
        ),
        (
            RolloutArgs {
                scale_down_delay: Some("5s".into()),
                ..args()
            },
            "--scale-down-delay",
        ),
    ] {
        // None fits hot, and each fits only one of the others.
        let fitting = [Strategy::Rolling, Strategy::BlueGreen, Strategy::Canary]
            .into_iter()
            .filter(|s| build_rollout(*s, &a).is_ok())
            .count();
        assert_eq!(fitting, 1, "{flag}");
        let e = err(Strategy::Hot, &a);
        assert!(e.starts_with(&format!("invalid {flag}: is a ")), "{e}");
    }
    // And for an action that is not a deploy.
    assert_eq!(
        refuse_for_action(&step, "rollback")
            .unwrap_err()
            .to_string(),
        "invalid --step: is only for deploy, not rollback"
    );
    assert_eq!(refuse_for_action(&args(), "stop"), Ok(()));
}

#[test]
fn every_flag_validates_and_names_itself() {
    let cases: Vec<(RolloutArgs, Strategy, &str)> = vec![
        (
            RolloutArgs {
                batch: Some("0".into()),
                ..args()
            },
            Strategy::Rolling,
            "--batch",
        ),
        (
            RolloutArgs {
                batch: Some("101%".into()),
                ..args()
            },
            Strategy::Rolling,
            "--batch",
        ),
        (
            RolloutArgs {
                batch: Some("0%".into()),
                ..args()
            },
            Strategy::Rolling,
            "--batch",
        ),
        (
            RolloutArgs {
                batch: Some("half".into()),
                ..args()
            },
            Strategy::Rolling,
            "--batch",
        ),
        (
            RolloutArgs {
                min_healthy_time: Some("soon".into()),
                ..args()
            },
            Strategy::Rolling,
            "--min-healthy-time",
        ),
        (
            RolloutArgs {
                healthy_deadline: Some("0s".into()),
                ..args()
            },
            Strategy::Rolling,
            "--healthy-deadline",
        ),
        (
            RolloutArgs {
                drain_timeout: Some("-1s".into()),
                ..args()
            },
            Strategy::BlueGreen,
            "--drain-timeout",
        ),
        (
            RolloutArgs {
                preview_weight: Some("101".into()),
                preview: Some("1s".into()),
                ..args()
            },
            Strategy::BlueGreen,
            "--preview-weight",
        ),
        (
            RolloutArgs {
                preview: Some("x".into()),
                ..args()
            },
            Strategy::BlueGreen,
            "--preview",
        ),
        (
            RolloutArgs {
                scale_down_delay: Some("100d".into()),
                ..args()
            },
            Strategy::BlueGreen,
            "--scale-down-delay",
        ),
        (
            RolloutArgs {
                steps: vec!["0:1s".into()],
                ..args()
            },
            Strategy::Canary,
            "--step",
        ),
        (
            RolloutArgs {
                canary_instances: Some("0".into()),
                ..args()
            },
            Strategy::Canary,
            "--canary-instances",
        ),
        (
            RolloutArgs {
                max_probe_failures: Some("0".into()),
                ..args()
            },
            Strategy::Canary,
            "--max-probe-failures",
        ),
        (
            RolloutArgs {
                max_restarts: Some("-1".into()),
                ..args()
            },
            Strategy::Canary,
            "--max-restarts",
        ),
        (
            RolloutArgs {
                max_conn_errors: Some("many".into()),
                ..args()
            },
            Strategy::Canary,
            "--max-conn-errors",
        ),
        (
            RolloutArgs {
                max_error_rate: Some("1.5".into()),
                ..args()
            },
            Strategy::Canary,
            "--max-error-rate",
        ),
        (
            RolloutArgs {
                no_data: Some("maybe".into()),
                ..args()
            },
            Strategy::Canary,
            "--no-data",
        ),
        (
            RolloutArgs {
                compare: Some("baseline".into()),
                ..args()
            },
            Strategy::Canary,
            "--compare",
        ),
        (
            RolloutArgs {
                compare: Some("stable".into()),
                compare_alpha: Some("0.6".into()),
                ..args()
            },
            Strategy::Canary,
            "--compare-alpha",
        ),
        (
            RolloutArgs {
                compare_alpha: Some("0.01".into()),
                ..args()
            },
            Strategy::Canary,
            "--compare-alpha",
        ),
        (
            RolloutArgs {
                compare: Some("stable".into()),
                ..args()
            },
            Strategy::Rolling,
            "--compare",
        ),
        (
            RolloutArgs {
                max_cpu: Some("0".into()),
                ..args()
            },
            Strategy::Canary,
            "--max-cpu",
        ),
        (
            RolloutArgs {
                max_cpu: Some("NaN".into()),
                ..args()
            },
            Strategy::Canary,
            "--max-cpu",
        ),
        (
            RolloutArgs {
                max_memory: Some("256 parsecs".into()),
                ..args()
            },
            Strategy::Canary,
            "--max-memory",
        ),
        (
            RolloutArgs {
                max_memory: Some("0MiB".into()),
                ..args()
            },
            Strategy::Canary,
            "--max-memory",
        ),
        (
            RolloutArgs {
                analysis_interval: Some("0ms".into()),
                ..args()
            },
            Strategy::Canary,
            "--analysis-interval",
        ),
    ];
    for (a, strategy, flag) in cases {
        let e = err(strategy, &a);
        assert!(e.starts_with(&format!("invalid {flag}: ")), "{flag}: {e}");
    }
    // 0 is the documented default of --min-healthy-time, so it may be given.
    let a = RolloutArgs {
        min_healthy_time: Some("0s".into()),
        ..args()
    };
    assert_eq!(
        build_rollout(Strategy::Rolling, &a)
            .unwrap()
            .unwrap()
            .min_healthy_time_ms,
        0
    );
}

#[test]
fn step_parsing() {
    assert_eq!(
        parse_step("25:1m30s"),
        Ok(CanaryStep {
            weight: 25,
            pause_ms: 90_000,
            until_promote: false,
            flag_percent: None,
        })
    );
    assert_eq!(
        parse_step("100:PROMOTE"),
        Ok(CanaryStep {
            weight: 100,
            pause_ms: 0,
            until_promote: true,
            flag_percent: None,
        })
    );
    for bad in [
        "50",
        "50:",
        ":30s",
        "0:30s",
        "101:1s",
        "50:forever",
        "x:1s",
        "-5:1s",
    ] {
        let e = parse_step(bad).unwrap_err().to_string();
        assert!(e.starts_with("invalid --step: "), "{bad}: {e}");
        assert!(e.contains(&format!("{bad:?}")), "{bad}: {e}");
    }
    // A zero pause is a step that moves on at once (a final 100% step, typically).
    assert_eq!(parse_step("100:0s").map(|s| s.pause_ms), Ok(0));
    assert!(
        parse_step("0:1s")
            .unwrap_err()
            .to_string()
            .contains("from 1 to 100")
    );
}

#[test]
fn step_sequences() {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        parse_steps(&s(&["10:1s", "10:promote", "50:2s", "100:1s"]))
            .unwrap()
            .len(),
        4
    );
    assert_eq!(
        parse_steps(&s(&["50:1s", "20:1s"]))
            .unwrap_err()
            .to_string(),
        "invalid --step: \"20:1s\" comes after \"50:1s\": weights must not decrease"
    );
    let e = parse_steps(&s(&["10:1s", "100:1s", "100:promote"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("invalid --step: \"100:1s\" is not the last step"),
        "{e}"
    );
    assert!(parse_steps(&[]).unwrap().is_empty());
}

#[test]
fn a_step_may_give_the_flag_percent() {
    let step = |weight, pause_ms, until_promote, flag_percent| CanaryStep {
        weight,
        pause_ms,
        until_promote,
        flag_percent,
    };
    assert_eq!(
        parse_step("10:30s:flag=0"),
        Ok(step(10, 30_000, false, Some(0)))
    );
    assert_eq!(
        parse_step("50:promote:flag=100"),
        Ok(step(50, 0, true, Some(100)))
    );
    assert_eq!(
        parse_step(" 20%:1m : flag=5% "),
        Ok(step(20, 60_000, false, Some(5)))
    );
    // Without :flag=, the step gives none (the weight is the flag's percent).
    assert_eq!(parse_step("20:1m"), Ok(step(20, 60_000, false, None)));
    assert_eq!(
        parse_step("10:30s:flag=101").unwrap_err().to_string(),
        "invalid --step: \"10:30s:flag=101\": the flag's percent must be from 0 to 100 \
         (expected WEIGHT:DURATION like 10:30s, or WEIGHT:promote, optionally followed by \
         :flag=PCT)"
    );
    for (bad, why) in [
        ("10:30s:flag=x", "the flag's percent must be from 0 to 100"),
        (
            "10:promote:flag=-1",
            "the flag's percent must be from 0 to 100",
        ),
        ("10:30s:flag=", "the flag's percent must be from 0 to 100"),
        ("10:30s:foo=3", "\"foo=3\" is not flag=PCT"),
        ("10:30s:5", "\"5\" is not flag=PCT"),
        (
            "0:30s:flag=5",
            "the weight must be a percentage from 1 to 100",
        ),
    ] {
        let e = parse_step(bad).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("invalid --step: {bad:?}: {why} (expected ")),
            "{bad}: {e}"
        );
    }
}

#[test]
fn the_flag_percent_must_not_decrease() {
    let s = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        parse_steps(&s(&["10:1s:flag=20", "50:1s:flag=10"]))
            .unwrap_err()
            .to_string(),
        "invalid --step: \"50:1s:flag=10\" comes after \"10:1s:flag=20\": the flag's percent \
         (the weight unless :flag= gives it) must not decrease, as a user served the canary \
         variant keeps it"
    );
    // Without :flag=, a step's weight is its flag percent.
    let e = parse_steps(&s(&["10:1s:flag=30", "20:1s"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(
            "invalid --step: \"20:1s\" comes after \"10:1s:flag=30\": the flag's percent"
        ),
        "{e}"
    );
    let e = parse_steps(&s(&["40:1s", "50:1s:flag=5"]))
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("invalid --step: \"50:1s:flag=5\" comes after \"40:1s\": the flag's percent"),
        "{e}"
    );
    let steps = parse_steps(&s(&[
        "10:1s:flag=0",
        "50:1s:flag=0",
        "60:promote",
        "100:1s",
    ]))
    .unwrap();
    assert_eq!(
        steps.iter().map(|s| s.flag_percent).collect::<Vec<_>>(),
        [Some(0), Some(0), None, None]
    );
}

#[test]
fn a_canary_flag_is_named_once_and_only_for_a_canary() {
    let a = RolloutArgs {
        steps: vec!["10:30s:flag=5".into(), "50:promote".into()],
        canary_flag: Some(" new-checkout ".into()),
        ..args()
    };
    let r = build_rollout(Strategy::Canary, &a).unwrap().unwrap();
    assert_eq!(r.canary_flag, "new-checkout");
    assert_eq!(
        r.steps.iter().map(|s| s.flag_percent).collect::<Vec<_>>(),
        [Some(5), None]
    );
    // The flag alone: the steps' weights are its percents.
    let a = RolloutArgs {
        canary_flag: Some("new-checkout".into()),
        ..args()
    };
    assert_eq!(
        build_rollout(Strategy::Canary, &a),
        Ok(Some(Rollout {
            canary_flag: "new-checkout".into(),
            ..Rollout::default()
        }))
    );
    // A percent with no flag to give it to.
    let a = RolloutArgs {
        steps: vec!["10:30s".into(), "50:30s:flag=20".into()],
        ..args()
    };
    assert_eq!(
        err(Strategy::Canary, &a),
        "invalid --step: \"50:30s:flag=20\" sets a flag's percent: name the flag with \
         --canary-flag"
    );
    for empty in ["", "  "] {
        let a = RolloutArgs {
            canary_flag: Some(empty.into()),
            ..args()
        };
        assert_eq!(
            err(Strategy::Canary, &a),
            "invalid --canary-flag: is empty: name a flag",
            "{empty:?}"
        );
    }
    let a = RolloutArgs {
        canary_flag: Some("new-checkout".into()),
        ..args()
    };
    assert_eq!(
        err(Strategy::Rolling, &a),
        "invalid --canary-flag: is a canary flag and does not fit --strategy rolling"
    );
    assert_eq!(
        refuse_for_action(&a, "restart").unwrap_err().to_string(),
        "invalid --canary-flag: is only for deploy, not restart"
    );
}
