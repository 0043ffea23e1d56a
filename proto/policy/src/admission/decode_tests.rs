//! The decoder's own checks: the comparison's fields, and which actions restore flags.

use gantry_proto::v1;

use super::{job_spec, rollout};
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
