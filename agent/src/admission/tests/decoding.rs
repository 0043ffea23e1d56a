//! Decoding the job: fields, names, sizes, malformed bytes.

use super::*;

#[test]
fn unknown_action_value() {
    let fx = fx();
    let mut j = job("j1");
    j.action = 99;
    let e = fx.reject(&j);
    assert_invalid_field(&e, "action");
    j.action = 0;
    let e = fx.reject(&j);
    assert_invalid_field(&e, "action");
}

#[test]
fn app_names_that_escape_paths() {
    let fx = fx();
    for bad in [
        "../web",
        "web/../../etc",
        "/etc",
        "a/b",
        "web\0",
        "-web",
        ".",
        "",
    ] {
        let mut j = job("j1");
        j.app = bad.to_owned();
        let bytes = j.encode_to_vec();
        let rej = fx.by_deployer(&bytes).unwrap_err();
        assert!(
            matches!(&rej.error, AdmissionError::InvalidJob { field, .. } if field == "app"),
            "{bad:?}: {:?}",
            rej.error
        );
        // The rejection still names what was claimed, for the audit entry.
        assert_eq!(rej.app.as_deref(), Some(bad));
        assert_eq!(rej.job_id.as_deref(), Some("j1"));
    }
}

#[test]
fn job_ids_that_escape_paths() {
    let fx = fx();
    for bad in ["../x", "a/b", ".hidden", "", "x\0"] {
        let mut j = job(bad);
        j.app = "web".into();
        let e = fx.reject(&j);
        assert!(
            matches!(&e, AdmissionError::InvalidJob { field, .. } if field == "job_id"),
            "{bad:?}: {e:?}"
        );
    }
}

#[test]
fn invalid_version() {
    let fx = fx();
    let mut j = job("j1");
    if let Some(r) = j.release.as_mut() {
        r.version = "1.2".into();
    }
    let e = fx.reject(&j);
    assert!(
        matches!(&e, AdmissionError::InvalidVersion { version, .. } if version == "1.2"),
        "{e:?}"
    );
}

#[test]
fn env_may_not_override_what_the_agent_sets() {
    let fx = fx();
    for bad in ["PORT", "GANTRY_APP", "1X", "A=B", ""] {
        let mut j = job("j1");
        if let Some(r) = j.release.as_mut() {
            r.env.insert(bad.to_owned(), "x".into());
        }
        let e = fx.reject(&j);
        assert!(
            matches!(&e, AdmissionError::InvalidJob { field, .. } if field == "release.env"),
            "{bad:?}: {e:?}"
        );
    }
}

#[test]
fn a_deploy_needs_a_complete_release() {
    let fx = fx();
    type Breaker = fn(&mut v1::Release);
    let cases: [(&str, Breaker); 5] = [
        ("release.instances", |r| r.instances = 0),
        ("release.command", |r| r.command.clear()),
        ("release.artifact_sha256", |r| {
            r.artifact_sha256 = "AB".repeat(32)
        }),
        ("release.health", |r| r.health = None),
        ("release.health.probe", |r| {
            r.health = Some(v1::HealthCheck::default())
        }),
    ];
    for (field, break_it) in cases {
        let mut j = job("j1");
        if let Some(r) = j.release.as_mut() {
            break_it(r);
        }
        let e = fx.reject(&j);
        assert!(
            matches!(&e, AdmissionError::InvalidJob { field: f, .. } if f == field),
            "{field}: {e:?}"
        );
    }
    let mut j = job("j1");
    j.release = None;
    let e = fx.reject(&j);
    assert_invalid_field(&e, "release");
}

#[test]
fn more_instances_than_the_app_may_run() {
    let fx = fx();
    let mut j = job("j1");
    if let Some(r) = j.release.as_mut() {
        r.instances = 5;
    }
    let e = fx.reject(&j);
    assert!(
        matches!(&e, AdmissionError::InvalidJob { field, problem } if field == "release.instances" && problem.contains("max_instances 4")),
        "{e:?}"
    );
}

/// A job whose encoding is exactly `len` bytes.
fn job_of_len(id: &str, len: usize) -> Vec<u8> {
    let mut j = job(id);
    j.reason.clear();
    let base = j.encode_to_vec().len();
    for pad in 0..len {
        j.reason = "x".repeat(pad);
        let bytes = j.encode_to_vec();
        if bytes.len() == len {
            return bytes;
        }
        assert!(
            bytes.len() < len || pad == 0,
            "cannot hit {len} from {base}"
        );
    }
    panic!("cannot build a job of {len} bytes");
}

#[test]
fn size_at_limit_minus_one_limit_and_limit_plus_one() {
    let fx = fx();
    let max = limits().max_job_bytes;
    for (id, len) in [("ja", max - 1), ("jb", max)] {
        let bytes = job_of_len(id, len);
        new_job(fx.by_deployer(&bytes));
    }
    let bytes = job_of_len("jc", max + 1);
    let e = fx.by_deployer(&bytes).unwrap_err().error;
    assert!(
        matches!(e, AdmissionError::TooLarge { size, max: m } if size == max + 1 && m == max),
        "{e:?}"
    );
}

#[test]
fn malformed_protobuf_signed_garbage() {
    let fx = fx();
    let bytes = vec![0xff; 12];
    let rej = fx.by_deployer(&bytes).unwrap_err();
    assert!(
        matches!(rej.error, AdmissionError::Malformed { .. }),
        "{:?}",
        rej.error
    );
    assert_eq!(rej.job_id, None);
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(job) = decode::decode_job(&bytes) {
            let _ = decode::job_spec(&job);
        }
    }

    #[test]
    fn decode_of_mutated_jobs_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut bytes = job("j1").encode_to_vec();
        for (i, b) in flips {
            let at = i.index(bytes.len());
            bytes[at] = b;
        }
        if let Ok(job) = decode::decode_job(&bytes) {
            let _ = decode::job_spec(&job);
        }
    }
}

#[test]
fn secret_env_names_are_decoded_and_must_be_env_keys() {
    let fx = fx();
    let mut j = job("j1");
    let r = j.release.as_mut().unwrap();
    r.env.insert("DB_PASSWORD".to_owned(), "s3cret".to_owned());
    r.secret_env = vec!["DB_PASSWORD".to_owned()];
    let bytes = j.encode_to_vec();
    let v = new_job(fx.by_deployer(&bytes));
    let release = v.spec.release.unwrap();
    assert_eq!(
        release.secret_env.iter().collect::<Vec<_>>(),
        ["DB_PASSWORD"]
    );
    assert!(!format!("{release:?}").contains("s3cret"));

    let mut j = job("j2");
    j.release.as_mut().unwrap().secret_env = vec!["NOT_IN_ENV".to_owned()];
    let e = fx.reject(&j);
    assert_eq!(
        e.to_string(),
        "invalid job: release.secret_env \"NOT_IN_ENV\" is not a key of release.env"
    );
}
