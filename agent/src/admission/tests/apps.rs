//! Checks against the app's current state: unconfigured, busy, downgrade, rollback target.

use super::*;

#[test]
fn downgrade() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let apps = Apps::at(semver::Version::new(2, 0, 0));
    let e = fx.by_deployer_with(&bytes, &apps).unwrap_err().error;
    assert!(
        matches!(&e, AdmissionError::Downgrade { current, requested }
            if *current == semver::Version::new(2, 0, 0) && *requested == semver::Version::new(1, 2, 0)),
        "{e:?}"
    );
    // Redeploying the current version or going up is fine.
    let apps = Apps::at(semver::Version::new(1, 2, 0));
    new_job(fx.by_deployer_with(&bytes, &apps));
}

fn rollback_to(id: &str, version: &str) -> v1::Job {
    let mut j = job(id);
    j.action = v1::Action::Rollback as i32;
    j.release = Some(v1::Release {
        version: version.to_owned(),
        ..v1::Release::default()
    });
    j
}

#[test]
fn rollback_target_missing() {
    let fx = fx();
    let e = fx.reject(&rollback_to("j1", "1.0.0"));
    assert!(
        matches!(&e, AdmissionError::RollbackTargetMissing { version } if *version == semver::Version::new(1, 0, 0)),
        "{e:?}"
    );
    let bytes = rollback_to("j2", "1.0.0").encode_to_vec();
    let apps = Apps {
        on_disk: vec![semver::Version::new(1, 0, 0)],
        ..Apps::default()
    };
    let v = new_job(fx.by_deployer_with(&bytes, &apps));
    assert_eq!(v.spec.target_version, Some(semver::Version::new(1, 0, 0)));
    assert_eq!(v.spec.release, None);
    // A rollback without a version goes to the previous release: nothing to check here.
    let mut j = job("j3");
    j.action = v1::Action::Rollback as i32;
    j.release = None;
    let bytes = j.encode_to_vec();
    let v = new_job(fx.by_deployer(&bytes));
    assert_eq!(v.spec.target_version, None);
}

#[test]
fn unconfigured_app() {
    let fx = fx();
    let mut j = job("j1");
    j.app = "api".into();
    let e = fx.reject(&j);
    assert!(
        matches!(&e, AdmissionError::AppNotConfigured { app } if app == "api"),
        "{e:?}"
    );
}

#[test]
fn busy_app() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let apps = Apps::busy();
    let e = fx.by_deployer_with(&bytes, &apps).unwrap_err().error;
    assert!(
        matches!(&e, AdmissionError::AppBusy { app, job_id } if app == "web" && job_id == "web-running-1"),
        "{e:?}"
    );
    // The refusal says which job holds the app and how to follow or end it.
    let says = e.to_string();
    for words in [
        "job web-running-1",
        "gantry job watch web-running-1",
        "gantry abort --app web",
    ] {
        assert!(says.contains(words), "{says:?} does not say {words:?}");
    }
    // Refused jobs are not recorded: the same job is admitted once the app is free.
    new_job(fx.by_deployer(&bytes));
}
