//! Rollout parameters, strategies that need a router, and promote/abort.

use super::*;
use crate::config::RouterConfig;
use crate::job::{AnalysisSpec, BatchSize, CanaryStep, RolloutSpec};

/// Decodes `r` for a release of `instances` instances.
fn decode(r: v1::Rollout, instances: u32) -> Result<RolloutSpec, AdmissionError> {
    decode::rollout(Some(&r), instances)
}

/// The field an `InvalidJob` names, and its message.
fn invalid_field(r: Result<RolloutSpec, AdmissionError>) -> (String, String) {
    match r {
        Err(e @ AdmissionError::InvalidJob { .. }) => {
            let AdmissionError::InvalidJob { field, problem } = &e else {
                unreachable!()
            };
            (field.clone(), format!("{problem} / {e}"))
        }
        other => panic!("expected InvalidJob, got {other:?}"),
    }
}

fn assert_invalid(r: v1::Rollout, field: &str, says: &str) {
    let (f, msg) = invalid_field(decode(r, 4));
    assert_eq!(f, field, "{msg}");
    assert!(msg.contains(says), "{msg:?} does not say {says:?}");
    assert!(msg.contains(field), "{msg:?} does not name {field}");
}

const DAY_MS: u32 = 24 * 3600 * 1000;

/// The default rollout with `edit` applied.
fn rollout(edit: impl FnOnce(&mut v1::Rollout)) -> v1::Rollout {
    let mut r = v1::Rollout::default();
    edit(&mut r);
    r
}

/// A canary step to `weight` percent that pauses a second.
fn step(weight: u32) -> v1::CanaryStep {
    v1::CanaryStep {
        weight,
        pause_ms: 1000,
        until_promote: false,
        flag_percent: None,
    }
}

#[test]
fn absent_or_all_zero_rollout_is_the_default() {
    assert_eq!(decode::rollout(None, 3).unwrap(), RolloutSpec::default());
    assert_eq!(
        decode(v1::Rollout::default(), 3).unwrap(),
        RolloutSpec::default()
    );
    let d = RolloutSpec::default();
    assert_eq!(d.batch, BatchSize::Count(1));
    assert_eq!(d.drain_timeout, Duration::from_secs(30));
    assert_eq!(d.scale_down_delay, Duration::from_secs(600));
    assert!(d.auto_revert && d.auto_promote);
    assert_eq!(d.canary_instances, 1);
}

#[test]
fn every_field_is_decoded() {
    let r = v1::Rollout {
        batch: "25%".to_owned(),
        min_healthy_time_ms: 1500,
        watch_ms: 4000,
        batch_analysis_ms: 6000,
        healthy_deadline_ms: 20_000,
        no_auto_revert: true,
        drain_timeout_ms: 5_000,
        preview_weight: 10,
        preview_ms: 60_000,
        scale_down_delay_ms: 120_000,
        manual_promote: true,
        canary_flag: "new-checkout".to_owned(),
        steps: vec![
            v1::CanaryStep {
                weight: 5,
                pause_ms: 10_000,
                until_promote: false,
                flag_percent: Some(3),
            },
            v1::CanaryStep {
                weight: 50,
                pause_ms: 999,
                until_promote: true,
                flag_percent: None,
            },
            v1::CanaryStep {
                weight: 100,
                pause_ms: 0,
                until_promote: false,
                flag_percent: None,
            },
        ],
        analysis: Some(v1::Analysis {
            max_probe_failures: 7,
            max_restarts: 2,
            max_conn_errors: 9,
            max_cpu_percent: 150.5,
            max_memory_bytes: 256 << 20,
            interval_ms: 500,
            max_error_rate: 0.01,
            max_p95_latency_ms: 350,
            min_samples: 400,
            no_data: "fail".into(),
            max_memory_share: 0.5,
            compare: "stable".into(),
            compare_alpha: 0.01,
            prometheus: Some(v1::PrometheusGate {
                url: "http://127.0.0.1:9090".into(),
                checks: vec![v1::PrometheusCheck {
                    name: "errors".into(),
                    query: "sum(x{app=\"{{app}}\"})".into(),
                    condition: "<= 0.5".into(),
                }],
            }),
        }),
        canary_instances: 2,
    };
    let s = decode(r, 4).unwrap();
    assert_eq!(
        s,
        RolloutSpec {
            batch: BatchSize::Percent(25),
            min_healthy_time: Duration::from_millis(1500),
            watch: Duration::from_secs(4),
            batch_analysis: Duration::from_secs(6),
            canary_flag: Some("new-checkout".to_owned()),
            flag_limit: None,
            healthy_deadline: Some(Duration::from_secs(20)),
            auto_revert: false,
            drain_timeout: Duration::from_secs(5),
            preview_weight: 10,
            preview: Duration::from_secs(60),
            scale_down_delay: Duration::from_secs(120),
            auto_promote: false,
            steps: vec![
                CanaryStep {
                    weight: 5,
                    pause: Some(Duration::from_secs(10)),
                    flag_percent: Some(3),
                },
                CanaryStep {
                    weight: 50,
                    pause: None,
                    flag_percent: Some(50),
                },
                CanaryStep {
                    weight: 100,
                    pause: Some(Duration::ZERO),
                    flag_percent: Some(100),
                },
            ],
            analysis: AnalysisSpec {
                max_probe_failures: 7,
                max_restarts: 2,
                max_conn_errors: 9,
                max_cpu_percent: Some(150.5),
                max_memory_bytes: Some(256 << 20),
                interval: Duration::from_millis(500),
                max_error_rate: 0.01,
                max_p95_latency: Duration::from_millis(350),
                min_samples: Some(400),
                no_data: crate::job::NoData::Fail,
                max_memory_share: Some(0.5),
                compare: crate::job::Compare::Stable,
                compare_alpha: 0.01,
                prometheus: Some(crate::job::PromGate {
                    url: crate::job::PromUrl {
                        host: "127.0.0.1".into(),
                        port: 9090,
                        prefix: String::new(),
                    },
                    checks: vec![crate::job::PromCheck {
                        name: "errors".into(),
                        query: "sum(x{app=\"{{app}}\"})".into(),
                        condition: crate::job::Condition {
                            cmp: crate::job::Cmp::Le,
                            value: 0.5,
                        },
                    }],
                }),
            },
            canary_instances: 2,
        }
    );
}

#[test]
fn batch_counts_and_percents() {
    for (text, want) in [
        ("1", BatchSize::Count(1)),
        ("3", BatchSize::Count(3)),
        ("1%", BatchSize::Percent(1)),
        ("100%", BatchSize::Percent(100)),
        ("", BatchSize::Count(1)),
    ] {
        let r = rollout(|r| r.batch = text.to_owned());
        assert_eq!(decode(r, 4).unwrap().batch, want, "{text:?}");
    }
    for bad in [
        "0",
        "0%",
        "101%",
        "-1",
        "+1",
        " 2",
        "2 ",
        "25 %",
        "%",
        "x",
        "1.5",
        "2%%",
        "99999999999",
    ] {
        let r = rollout(|r| r.batch = bad.to_owned());
        let (field, msg) = invalid_field(decode(r, 4));
        assert_eq!(field, "release.rollout.batch", "{bad:?}: {msg}");
    }
}

#[test]
fn durations_over_a_day_are_refused_naming_the_field() {
    let too_long = DAY_MS + 1;
    let cases: Vec<(&str, v1::Rollout)> = vec![
        (
            "release.rollout.min_healthy_time_ms",
            rollout(|r| r.min_healthy_time_ms = too_long),
        ),
        (
            "release.rollout.watch_ms",
            rollout(|r| r.watch_ms = too_long),
        ),
        (
            "release.rollout.healthy_deadline_ms",
            rollout(|r| r.healthy_deadline_ms = too_long),
        ),
        (
            "release.rollout.drain_timeout_ms",
            rollout(|r| r.drain_timeout_ms = too_long),
        ),
        (
            "release.rollout.preview_ms",
            rollout(|r| r.preview_ms = too_long),
        ),
        (
            "release.rollout.scale_down_delay_ms",
            rollout(|r| r.scale_down_delay_ms = too_long),
        ),
        (
            "release.rollout.steps[0].pause_ms",
            rollout(|r| {
                r.steps = vec![v1::CanaryStep {
                    weight: 10,
                    pause_ms: too_long,
                    until_promote: false,
                    flag_percent: None,
                }]
            }),
        ),
        (
            "release.rollout.analysis.interval_ms",
            rollout(|r| {
                r.analysis = Some(v1::Analysis {
                    interval_ms: too_long,
                    ..v1::Analysis::default()
                })
            }),
        ),
    ];
    for (field, r) in cases {
        assert_invalid(r, field, "24 h");
    }
    // Exactly a day is fine.
    let r = rollout(|r| r.scale_down_delay_ms = DAY_MS);
    assert_eq!(
        decode(r, 1).unwrap().scale_down_delay,
        Duration::from_secs(86_400)
    );
}

#[test]
fn zero_fields_take_their_defaults() {
    let r = v1::Rollout {
        healthy_deadline_ms: 0,
        drain_timeout_ms: 0,
        scale_down_delay_ms: 0,
        canary_instances: 0,
        analysis: Some(v1::Analysis::default()),
        ..v1::Rollout::default()
    };
    let s = decode(r, 2).unwrap();
    assert_eq!(s.healthy_deadline, None);
    assert_eq!(s.drain_timeout, Duration::from_secs(30));
    assert_eq!(s.scale_down_delay, Duration::from_secs(600));
    assert_eq!(s.canary_instances, 1);
    assert_eq!(s.analysis, AnalysisSpec::default());
    assert_eq!(s.analysis.max_probe_failures, 3);
    assert_eq!(s.analysis.max_restarts, 0);
    assert_eq!(s.analysis.max_conn_errors, 5);
    assert_eq!(s.analysis.max_cpu_percent, None);
    assert_eq!(s.analysis.max_memory_bytes, None);
    assert_eq!(s.analysis.interval, Duration::from_secs(1));
}

#[test]
fn weights_are_percents() {
    assert_invalid(
        rollout(|r| r.preview_weight = 101),
        "release.rollout.preview_weight",
        "more than 100",
    );
    assert_eq!(
        decode(rollout(|r| r.preview_weight = 100), 1)
            .unwrap()
            .preview_weight,
        100
    );
    assert_invalid(
        rollout(|r| r.steps = vec![step(10), step(101)]),
        "release.rollout.steps[1].weight",
        "more than 100",
    );
}

#[test]
fn canary_steps_must_not_decrease_and_are_bounded() {
    assert_invalid(
        rollout(|r| r.steps = vec![step(10), step(50), step(20)]),
        "release.rollout.steps[2].weight",
        "must not decrease",
    );
    // Equal weights in a row are fine (hold longer), and so is a 0% first step.
    let s = decode(
        rollout(|r| r.steps = vec![step(0), step(10), step(10), step(100)]),
        2,
    )
    .unwrap();
    assert_eq!(
        s.steps.iter().map(|s| s.weight).collect::<Vec<_>>(),
        [0, 10, 10, 100]
    );
    let twenty: Vec<_> = (0..20).map(|i| step(i * 5)).collect();
    assert_eq!(
        decode(rollout(|r| r.steps = twenty.clone()), 2)
            .unwrap()
            .steps
            .len(),
        20
    );
    let mut twenty_one = twenty;
    twenty_one.push(step(100));
    assert_invalid(
        rollout(|r| r.steps = twenty_one),
        "release.rollout.steps",
        "21 steps",
    );
}

#[test]
fn cpu_threshold_must_be_a_positive_finite_percent() {
    for bad in [-1.0, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.001] {
        assert_invalid(
            rollout(|r| {
                r.analysis = Some(v1::Analysis {
                    max_cpu_percent: bad,
                    ..v1::Analysis::default()
                })
            }),
            "release.rollout.analysis.max_cpu_percent",
            "not a positive number",
        );
    }
}

#[test]
fn compare_is_threshold_or_stable_at_a_significance_up_to_half() {
    let with = |compare: &str, alpha: f64| {
        rollout(|r| {
            r.analysis = Some(v1::Analysis {
                compare: compare.into(),
                compare_alpha: alpha,
                ..v1::Analysis::default()
            })
        })
    };
    let s = decode(with("", 0.0), 4).unwrap();
    assert_eq!(
        (s.analysis.compare, s.analysis.compare_alpha),
        (crate::job::Compare::Threshold, 0.05)
    );
    let s = decode(with("threshold", 0.5), 4).unwrap();
    assert_eq!(
        (s.analysis.compare, s.analysis.compare_alpha),
        (crate::job::Compare::Threshold, 0.5)
    );
    assert_invalid(
        with("baseline", 0.0),
        "release.rollout.analysis.compare",
        "\"baseline\" is not threshold or stable",
    );
    for bad in [-0.01, 0.51, 1.0, f64::NAN, f64::INFINITY] {
        assert_invalid(
            with("stable", bad),
            "release.rollout.analysis.compare_alpha",
            "not a significance above 0 and at most 0.5",
        );
    }
}

#[test]
fn canary_instances_must_fit_in_the_release() {
    let r = |n| rollout(|r| r.canary_instances = n);
    assert_eq!(decode(r(4), 4).unwrap().canary_instances, 4);
    let (field, msg) = invalid_field(decode(r(5), 4));
    assert_eq!(field, "release.rollout.canary_instances");
    assert!(msg.contains("5 is more than release.instances 4"), "{msg}");
}

proptest! {
    #[test]
    fn rollout_decoding_never_panics(
        batch in "[0-9%+ -]{0,6}",
        times in prop::array::uniform6(any::<u32>()),
        weights in prop::collection::vec((0u32..150, any::<u32>(), any::<bool>()), 0..25),
        cpu in any::<f64>(),
        instances in 1u32..10,
        canary in any::<u32>(),
    ) {
        let r = v1::Rollout {
            batch,
            min_healthy_time_ms: times[0],
            healthy_deadline_ms: times[1],
            drain_timeout_ms: times[2],
            preview_ms: times[3],
            scale_down_delay_ms: times[4],
            preview_weight: times[5] % 200,
            steps: weights
                .into_iter()
                .map(|(weight, pause_ms, until_promote)| v1::CanaryStep {
                    weight,
                    pause_ms,
                    until_promote,
                    flag_percent: None,
                })
                .collect(),
            analysis: Some(v1::Analysis {
                max_cpu_percent: cpu,
                interval_ms: times[0],
                ..v1::Analysis::default()
            }),
            canary_instances: canary,
            ..v1::Rollout::default()
        };
        if let Ok(s) = decode(r, instances) {
            prop_assert!(s.steps.len() <= 20);
            prop_assert!(s.steps.windows(2).all(|w| w[0].weight <= w[1].weight));
            prop_assert!(s.canary_instances >= 1 && s.canary_instances <= instances);
            prop_assert!(s.drain_timeout <= Duration::from_secs(86_400));
            prop_assert!(s.analysis.max_cpu_percent.is_none_or(|c| c.is_finite() && c > 0.0));
        }
    }
}

// Through admission.

fn with_strategy(id: &str, strategy: v1::Strategy, rollout: Option<v1::Rollout>) -> v1::Job {
    let mut j = job(id);
    let r = j.release.as_mut().unwrap();
    r.strategy = strategy as i32;
    r.rollout = rollout;
    j
}

/// An admission whose app `web` has `router`, and promote/abort allowed to deployers.
fn fx_router(router: RouterConfig) -> Fx {
    let keys = keys();
    let mut p = policy(&keys, 0);
    let web = web_mut(&mut p);
    web.listen = match router {
        RouterConfig::None => None,
        _ => Some("127.0.0.1:8080".parse().unwrap()),
    };
    web.router = router;
    let deployer: BTreeSet<String> = ["deployer".to_owned()].into();
    web.allow.insert(Action::Promote, deployer.clone());
    web.allow.insert(Action::Abort, deployer);
    fx_policy(keys, p)
}

#[test]
fn a_rolling_deploy_is_admitted_with_its_rollout() {
    let fx = fx_router(RouterConfig::FrontDoor);
    let j = with_strategy(
        "r1",
        v1::Strategy::Rolling,
        Some(rollout(|r| r.batch = "50%".to_owned())),
    );
    let bytes = j.encode_to_vec();
    let v = new_job(fx.by_deployer(&bytes));
    let r = v.spec.release.unwrap();
    assert_eq!(r.strategy, StrategyKind::Rolling);
    assert_eq!(r.rollout.batch, BatchSize::Percent(50));
    assert_eq!(r.rollout.drain_timeout, Duration::from_secs(30));
}

#[test]
fn an_invalid_rollout_is_rejected_naming_the_field() {
    let fx = fx_router(RouterConfig::FrontDoor);
    let j = with_strategy(
        "r1",
        v1::Strategy::Rolling,
        Some(rollout(|r| r.batch = "0".to_owned())),
    );
    let e = fx.reject(&j);
    assert!(e.to_string().contains("release.rollout.batch"), "{e}");
}

#[test]
fn strategies_other_than_hot_need_a_router() {
    let fx = fx_router(RouterConfig::None);
    for (s, kind) in [
        (v1::Strategy::Rolling, StrategyKind::Rolling),
        (v1::Strategy::BlueGreen, StrategyKind::BlueGreen),
        (v1::Strategy::Canary, StrategyKind::Canary),
    ] {
        let e = fx.reject(&with_strategy("s1", s, None));
        assert!(
            matches!(&e, AdmissionError::StrategyNeedsRouter { app, strategy }
                if app == "web" && *strategy == kind),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains("listen") && msg.contains(kind.as_str()),
            "{msg}"
        );
        assert_eq!(
            crate::server::status::code(&e),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            crate::server::status::reason_code(&e),
            "strategy_needs_router"
        );
    }
    // Hot needs none.
    let bytes = with_strategy("h1", v1::Strategy::Hot, None).encode_to_vec();
    new_job(fx.by_deployer(&bytes));
}

#[test]
fn nginx_is_a_router_too() {
    let fx = fx_router(RouterConfig::Nginx {
        upstream_file: "/etc/nginx/gantry/web.conf".into(),
        reload_command: vec!["nginx".into(), "-s".into(), "reload".into()],
        check_command: None,
        pid_file: None,
    });
    let bytes = with_strategy("b1", v1::Strategy::BlueGreen, None).encode_to_vec();
    new_job(fx.by_deployer(&bytes));
}

#[test]
fn blue_green_and_canary_instances_must_fit_max_instances() {
    let fx = fx_router(RouterConfig::FrontDoor);
    for s in [v1::Strategy::BlueGreen, v1::Strategy::Canary] {
        let mut j = with_strategy("b1", s, None);
        j.release.as_mut().unwrap().instances = 5;
        let e = fx.reject(&j);
        assert_invalid_field(&e, "release.instances");
    }
}

fn control(id: &str, action: v1::Action) -> v1::Job {
    let mut j = job(id);
    j.action = action as i32;
    j.release = None;
    j
}

#[test]
fn promote_and_abort_are_admitted_while_a_rollout_runs() {
    let fx = fx_router(RouterConfig::FrontDoor);
    let busy = Apps::busy();
    for (id, a, want) in [
        ("p1", v1::Action::Promote, Action::Promote),
        ("a1", v1::Action::Abort, Action::Abort),
    ] {
        let bytes = control(id, a).encode_to_vec();
        let v = new_job(fx.by_deployer_with(&bytes, &busy));
        assert_eq!(v.spec.action, want);
        // Resubmitting the same bytes is a duplicate, not a second promote.
        assert!(matches!(
            fx.by_deployer_with(&bytes, &busy),
            Ok(Admitted::Duplicate(_))
        ));
    }
    // Other actions are still refused while busy.
    let bytes = control("s1", v1::Action::Restart).encode_to_vec();
    let e = fx.by_deployer_with(&bytes, &busy).unwrap_err().error;
    assert!(matches!(e, AdmissionError::AppBusy { .. }), "{e:?}");
}

#[test]
fn promote_and_abort_without_a_rollout_are_refused() {
    let fx = fx_router(RouterConfig::FrontDoor);
    for (id, a, want) in [
        ("p1", v1::Action::Promote, Action::Promote),
        ("a1", v1::Action::Abort, Action::Abort),
    ] {
        let bytes = control(id, a).encode_to_vec();
        let e = fx.by_deployer(&bytes).unwrap_err().error;
        assert!(
            matches!(&e, AdmissionError::NoRolloutInProgress { app, action }
                if app == "web" && *action == want),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!("{} on app web: no rollout is in progress", want.as_str())
        );
        assert_eq!(
            crate::server::status::code(&e),
            tonic::Code::FailedPrecondition
        );
        assert_eq!(
            crate::server::status::reason_code(&e),
            "no_rollout_in_progress"
        );
        // Not recorded: the same job is admitted once a rollout runs.
        let busy = Apps::busy();
        new_job(fx.by_deployer_with(&bytes, &busy));
    }
}

#[test]
fn promote_and_abort_still_need_their_role() {
    // The base policy allows neither promote nor abort to anybody.
    let fx = fx();
    let busy = Apps::busy();
    for a in [v1::Action::Promote, v1::Action::Abort] {
        let bytes = control("p1", a).encode_to_vec();
        let e = fx.by_deployer_with(&bytes, &busy).unwrap_err().error;
        assert!(matches!(e, AdmissionError::MissingRole { .. }), "{e:?}");
    }
}
