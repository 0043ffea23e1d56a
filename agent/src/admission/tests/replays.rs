//! The replay store: duplicates, replays across restarts, recorded outcomes.

use super::*;

#[test]
fn replay_with_same_bytes_is_a_duplicate() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let sigs = [sign(&fx.keys.deployer, &bytes)];
    new_job(fx.admit(&bytes, &sigs));
    match fx.admit(&bytes, &sigs) {
        Ok(Admitted::Duplicate(rec)) => {
            assert_eq!(rec.job_id.as_str(), "j1");
            assert_eq!(rec.digest, Sha256Hex::of(&bytes));
            assert_eq!(rec.standing, Standing::Admitted);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn replay_with_other_bytes_is_refused() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    new_job(fx.by_deployer(&bytes));
    let mut other = job("j1");
    other.reason = "second try".into();
    let e = fx.reject(&other);
    assert!(
        matches!(&e, AdmissionError::Replayed { job_id } if job_id == "j1"),
        "{e:?}"
    );
}

#[test]
fn replay_after_restart() {
    let fx = fx();
    let bytes = job("j1").encode_to_vec();
    let sigs = [sign(&fx.keys.deployer, &bytes)];
    new_job(fx.admit(&bytes, &sigs));
    fx.adm
        .ledger()
        .finish(&JobId::new("j1").unwrap(), Ended::succeeded("healthy"))
        .unwrap();

    let restarted = open(policy(&fx.keys, 0), fx.dir.path()).unwrap();
    match restarted.admit(&bytes, &sigs, NOW, &Apps::default()) {
        Ok(Admitted::Duplicate(rec)) => {
            assert_eq!(
                rec.standing,
                Standing::Finished(Ended::succeeded("healthy"))
            );
        }
        other => panic!("{other:?}"),
    }
    let mut other = job("j1");
    other.reason = "again".into();
    let other = other.encode_to_vec();
    let e = restarted
        .admit(
            &other,
            &[sign(&fx.keys.deployer, &other)],
            NOW,
            &Apps::default(),
        )
        .unwrap_err()
        .error;
    assert!(matches!(e, AdmissionError::Replayed { .. }), "{e:?}");
}

#[test]
fn concurrent_double_submission_admits_once() {
    let fx = fx();
    let adm = Arc::new(fx.adm);
    for round in 0..20 {
        let bytes = job(&format!("j{round}")).encode_to_vec();
        let sigs = vec![sign(&fx.keys.deployer, &bytes)];
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let (adm, bytes, sigs, barrier) =
                    (adm.clone(), bytes.clone(), sigs.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    // The app reports busy only once a job was recorded, as the executor would.
                    let apps = Apps::default();
                    adm.admit(&bytes, &sigs, NOW, &apps)
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let new = results
            .iter()
            .filter(|r| matches!(r, Ok(Admitted::New(_))))
            .count();
        let dup = results
            .iter()
            .filter(|r| matches!(r, Ok(Admitted::Duplicate(_))))
            .count();
        assert_eq!((new, dup), (1, 1), "round {round}: {results:?}");
    }
}

#[test]
fn a_corrupt_replay_record_stops_startup() {
    let fx = fx();
    let jobs = fx.dir.path().join("jobs");
    std::fs::write(jobs.join("j9.json"), b"{oops").unwrap();
    let e = open(policy(&fx.keys, 0), fx.dir.path()).unwrap_err();
    assert!(matches!(e, LedgerError::Load { .. }), "{e:?}");
    assert!(e.to_string().contains("j9.json"), "{e}");
}
