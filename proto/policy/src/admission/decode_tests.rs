//! The decoder's own checks: the comparison's fields, which actions restore flags, and the
//! flag a canary releases.

use gantry_proto::v1;

use super::{MAX_FLAG_KEY, job_spec, release, rollout};
use crate::admission::AdmissionError;
use crate::job::{Compare, DEFAULT_COMPARE_ALPHA};

fn with(compare: &str, alpha: f64) -> v1::Rollout {
    v1::Rollout {
        analysis: Some(v1::Analysis {
            compare: compare.to_owned(),
            compare_alpha: alpha,
            ..v1::Analysis::default()
        }),
        ..v1::Rollout::default()
    }
}

#[test]
fn compare_defaults_to_thresholds_at_the_default_significance() {
    let spec = rollout(Some(&with("", 0.0)), 2).unwrap().analysis;
    assert_eq!(spec.compare, Compare::Threshold);
    assert!((spec.compare_alpha - DEFAULT_COMPARE_ALPHA).abs() < f64::EPSILON);
    // -0.0 is the default too.
    let spec = rollout(Some(&with("stable", -0.0)), 2).unwrap().analysis;
    assert_eq!(spec.compare, Compare::Stable);
    assert!((spec.compare_alpha - DEFAULT_COMPARE_ALPHA).abs() < f64::EPSILON);
}

#[test]
fn a_significance_above_0_and_at_most_one_half_is_taken_as_given() {
    for alpha in [1e-9, 0.01, 0.3, 0.5] {
        let spec = rollout(Some(&with("stable", alpha)), 2).unwrap().analysis;
        assert!((spec.compare_alpha - alpha).abs() < f64::EPSILON, "{alpha}");
    }
}

#[test]
fn a_significance_outside_0_to_one_half_or_an_unknown_comparison_is_refused_by_field() {
    for alpha in [-0.1, -1e-9, 0.500_001, 1.0, f64::NAN, f64::INFINITY] {
        match rollout(Some(&with("stable", alpha)), 2) {
            Err(AdmissionError::InvalidJob {
                field,
                problem: reason,
            }) => {
                assert_eq!(field, "release.rollout.analysis.compare_alpha", "{alpha}");
                assert!(
                    reason.contains("is not a significance above 0 and at most 0.5"),
                    "{alpha}: {reason}"
                );
            }
            other => panic!("{alpha}: {other:?}"),
        }
    }
    match rollout(Some(&with("median", 0.0)), 2) {
        Err(AdmissionError::InvalidJob {
            field,
            problem: reason,
        }) => {
            assert_eq!(field, "release.rollout.analysis.compare");
            assert_eq!(reason, "\"median\" is not threshold or stable");
        }
        other => panic!("{other:?}"),
    }
}

fn action_job(action: v1::Action, restore_flags: bool) -> v1::Job {
    v1::Job {
        job_id: "j-1".into(),
        agent_id: "agent-1".into(),
        app: "web".into(),
        action: action.into(),
        issued_at: 100,
        not_before: 100,
        expires_at: 200,
        restore_flags,
        ..v1::Job::default()
    }
}

#[test]
fn only_a_rollback_may_restore_flags() {
    let spec = job_spec(&action_job(v1::Action::Rollback, true)).unwrap();
    assert!(spec.restore_flags);
    assert!(
        !job_spec(&action_job(v1::Action::Rollback, false))
            .unwrap()
            .restore_flags
    );
    for action in [v1::Action::Restart, v1::Action::Stop, v1::Action::Promote] {
        assert!(!job_spec(&action_job(action, false)).unwrap().restore_flags);
        match job_spec(&action_job(action, true)) {
            Err(AdmissionError::InvalidJob { field, problem }) => {
                assert_eq!(field, "restore_flags", "{action:?}");
                assert!(
                    problem.starts_with("only a rollback restores flags, not a "),
                    "{action:?}: {problem}"
                );
            }
            other => panic!("{action:?}: {other:?}"),
        }
    }
}

fn steps(given: &[(u32, Option<u32>)]) -> Vec<v1::CanaryStep> {
    given
        .iter()
        .map(|&(weight, flag_percent)| v1::CanaryStep {
            weight,
            pause_ms: 1000,
            until_promote: false,
            flag_percent,
        })
        .collect()
}

fn with_flag(flag: &str, given: &[(u32, Option<u32>)]) -> v1::Rollout {
    v1::Rollout {
        canary_flag: flag.to_owned(),
        steps: steps(given),
        ..v1::Rollout::default()
    }
}

fn refused_field(r: &v1::Rollout) -> (String, String) {
    match rollout(Some(r), 2) {
        Err(AdmissionError::InvalidJob { field, problem }) => (field, problem),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_canary_flag_follows_the_step_weights_unless_a_step_gives_its_own_percent() {
    let spec = rollout(
        Some(&with_flag("new-checkout", &[(10, None), (50, Some(50))])),
        2,
    )
    .unwrap();
    assert_eq!(spec.canary_flag.as_deref(), Some("new-checkout"));
    let percents: Vec<_> = spec.steps.iter().map(|s| s.flag_percent).collect();
    assert_eq!(percents, [Some(10), Some(50)]);
    // Its own percent may be below, equal to or above the weight; equal steps are allowed.
    let spec = rollout(
        Some(&with_flag(
            "f",
            &[(10, Some(0)), (20, Some(0)), (30, Some(100))],
        )),
        2,
    )
    .unwrap();
    let percents: Vec<_> = spec.steps.iter().map(|s| s.flag_percent).collect();
    assert_eq!(percents, [Some(0), Some(0), Some(100)]);
    // The default steps take their weights.
    let spec = rollout(Some(&with_flag("f", &[])), 2).unwrap();
    let percents: Vec<_> = spec.steps.iter().map(|s| s.flag_percent).collect();
    assert_eq!(percents, [Some(10), Some(50), Some(100)]);
    // Without a flag, no step has a percent.
    let spec = rollout(Some(&with_flag("", &[(10, None), (60, None)])), 2).unwrap();
    assert_eq!(spec.canary_flag, None);
    assert!(spec.steps.iter().all(|s| s.flag_percent.is_none()));
}

#[test]
fn a_flag_percent_above_100_decreasing_or_without_a_flag_is_refused_by_step() {
    let (field, problem) = refused_field(&with_flag("f", &[(10, None), (20, Some(101))]));
    assert_eq!(field, "release.rollout.steps[1].flag_percent");
    assert_eq!(problem, "101 is more than 100 (percent)");
    let (field, problem) = refused_field(&with_flag("f", &[(10, Some(30)), (20, None)]));
    assert_eq!(field, "release.rollout.steps[1].flag_percent");
    assert!(
        problem.starts_with("20 is less than the previous step's 30:"),
        "{problem}"
    );
    let (field, problem) = refused_field(&with_flag("", &[(10, None), (20, Some(5))]));
    assert_eq!(field, "release.rollout.steps[1].flag_percent");
    assert_eq!(
        problem,
        "needs release.rollout.canary_flag (the flag it sets)"
    );
}

#[test]
fn a_canary_flag_key_is_at_most_256_bytes_without_control_characters() {
    let longest = "k".repeat(MAX_FLAG_KEY);
    let spec = rollout(Some(&with_flag(&longest, &[])), 2).unwrap();
    assert_eq!(spec.canary_flag.as_deref(), Some(longest.as_str()));
    let (field, problem) = refused_field(&with_flag(&"k".repeat(MAX_FLAG_KEY + 1), &[]));
    assert_eq!(field, "release.rollout.canary_flag");
    assert_eq!(problem, "is 257 bytes, more than the maximum of 256");
    let (field, problem) = refused_field(&with_flag("new\ncheckout", &[]));
    assert_eq!(field, "release.rollout.canary_flag");
    assert_eq!(problem, "\"new\\ncheckout\" holds a control character");
}

fn release_with(strategy: v1::Strategy, flag: &str) -> v1::Release {
    v1::Release {
        version: "1.0.0".into(),
        artifact_sha256: "a".repeat(64),
        artifact_size: 1,
        strategy: strategy.into(),
        instances: 2,
        command: vec!["./app".into()],
        health: Some(v1::HealthCheck {
            probe: Some(v1::health_check::Probe::Tcp(v1::TcpProbe {})),
            ..v1::HealthCheck::default()
        }),
        rollout: Some(with_flag(flag, &[])),
        ..v1::Release::default()
    }
}

#[test]
fn only_a_canary_may_release_a_flag() {
    let spec = release(&release_with(v1::Strategy::Canary, "f")).unwrap();
    assert_eq!(spec.rollout.canary_flag.as_deref(), Some("f"));
    for (strategy, name) in [
        (v1::Strategy::Hot, "hot"),
        (v1::Strategy::Rolling, "rolling"),
        (v1::Strategy::BlueGreen, "blue-green"),
    ] {
        assert!(release(&release_with(strategy, "")).is_ok(), "{name}");
        match release(&release_with(strategy, "f")) {
            Err(AdmissionError::InvalidJob { field, problem }) => {
                assert_eq!(field, "release.rollout.canary_flag");
                assert_eq!(problem, format!("is for the canary strategy, not {name}"));
            }
            other => panic!("{name}: {other:?}"),
        }
    }
}

#[test]
fn a_manual_promote_turns_the_automatic_promotion_off() {
    let manual = v1::Rollout {
        manual_promote: true,
        ..v1::Rollout::default()
    };
    assert!(!rollout(Some(&manual), 2).unwrap().auto_promote);
    assert!(
        rollout(Some(&v1::Rollout::default()), 2)
            .unwrap()
            .auto_promote
    );
    assert!(rollout(None, 2).unwrap().auto_promote);
}
