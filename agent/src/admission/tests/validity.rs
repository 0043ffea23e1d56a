//! The agent a job names and its validity window.

use super::*;

#[test]
fn wrong_agent() {
    let fx = fx();
    let mut j = job("j1");
    j.agent_id = "agent-2".into();
    let e = fx.reject(&j);
    assert!(
        matches!(&e, AdmissionError::WrongAgent { expected, found } if expected == AGENT && found == "agent-2"),
        "{e:?}"
    );
}

#[test]
fn empty_agent() {
    let fx = fx();
    let mut j = job("j1");
    j.agent_id.clear();
    let e = fx.reject(&j);
    assert!(
        matches!(&e, AdmissionError::WrongAgent { found, .. } if found.is_empty()),
        "{e:?}"
    );
}

#[test]
fn expired() {
    let fx = fx();
    let mut j = job("j1");
    j.expires_at = NOW;
    let e = fx.reject(&j);
    assert!(
        matches!(
            e,
            AdmissionError::Expired {
                expires_at: NOW,
                now: NOW
            }
        ),
        "{e:?}"
    );
}

#[test]
fn not_yet_valid() {
    let fx = fx();
    let mut j = job("j1");
    j.not_before = NOW + 31;
    let e = fx.reject(&j);
    assert!(
        matches!(e, AdmissionError::NotYetValid { not_before, now: NOW } if not_before == NOW + 31),
        "{e:?}"
    );
    // Within the clock skew it is admitted.
    j.not_before = NOW + 30;
    let bytes = j.encode_to_vec();
    new_job(fx.by_deployer(&bytes));
}

#[test]
fn window_over_max() {
    let fx = fx();
    let mut j = job("j1");
    j.not_before = NOW - 10;
    j.expires_at = NOW + 3591;
    let e = fx.reject(&j);
    assert!(
        matches!(
            e,
            AdmissionError::WindowTooLong {
                window_secs: 3601,
                max_secs: 3600
            }
        ),
        "{e:?}"
    );
    // Exactly the maximum is admitted: the limit is inclusive.
    j.expires_at = NOW + 3590;
    new_job(fx.by_deployer(&j.encode_to_vec()));
}

#[test]
fn hostile_times_do_not_overflow() {
    let fx = fx();
    let mut j = job("j1");
    j.not_before = i64::MIN;
    j.expires_at = i64::MAX;
    let e = fx.reject(&j);
    assert!(matches!(e, AdmissionError::WindowTooLong { .. }), "{e:?}");
    j.not_before = i64::MAX;
    let e = fx.reject(&j);
    assert!(matches!(e, AdmissionError::NotYetValid { .. }), "{e:?}");
}

proptest! {
    #[test]
    fn window_check_never_panics(nb in any::<i64>(), ex in any::<i64>(), now in any::<i64>()) {
        let mut spec = decode::job_spec(&job("j1")).unwrap();
        spec.not_before = nb;
        spec.expires_at = ex;
        let _ = window::check_window(&spec, now, &limits());
    }
}
