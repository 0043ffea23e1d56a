//! The content-addressed store: uploads in chunks, refused uploads leave nothing, leftovers.

use super::*;

// ---------------------------------------------------------------------------------------------
// Store

fn store() -> (tempfile::TempDir, ArtifactStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(&dir.path().join("artifacts"), 1000).unwrap();
    (dir, store)
}

fn objects(dir: &tempfile::TempDir) -> Vec<String> {
    names(&dir.path().join("artifacts/sha256"))
}

#[test]
fn upload_in_chunks_is_stored_under_its_digest() {
    let (dir, store) = store();
    let data = b"release bytes".repeat(10);
    let digest = Sha256Hex::of(&data);
    assert!(!store.contains(&digest, data.len() as u64));
    let mut up = store.begin_upload(&digest, data.len() as u64).unwrap();
    for chunk in data.chunks(7) {
        up.write(chunk).unwrap();
    }
    up.finish().unwrap();
    assert!(store.contains(&digest, data.len() as u64));
    assert!(
        !store.contains(&digest, data.len() as u64 + 1),
        "size is part of contains"
    );
    assert_eq!(fs::read(store.path_of(&digest)).unwrap(), data);
    assert_eq!(mode_of(&store.path_of(&digest)), 0o600);
    assert_eq!(objects(&dir), [digest.as_str()]);
}

#[test]
fn oversize_upload_is_refused_and_leaves_nothing() {
    let (dir, store) = store();
    let digest = Sha256Hex::of(b"0123456789");
    let mut up = store.begin_upload(&digest, 10).unwrap();
    up.write(b"01234").unwrap();
    let err = up.write(b"567890").unwrap_err();
    assert!(
        matches!(&err, ArtifactError::Oversize { declared: 10, .. }),
        "{err:?}"
    );
    assert!(matches!(
        up.write(b"x"),
        Err(ArtifactError::UploadFailed { .. })
    ));
    assert!(matches!(
        up.finish(),
        Err(ArtifactError::UploadFailed { .. })
    ));
    assert_eq!(objects(&dir), Vec::<String>::new());
}

#[test]
fn declared_size_over_store_maximum_is_refused() {
    let (dir, store) = store();
    let err = store.begin_upload(&Sha256Hex::of(b"x"), 1001).unwrap_err();
    assert!(
        matches!(
            &err,
            ArtifactError::TooLarge {
                size: 1001,
                max: 1000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(objects(&dir), Vec::<String>::new());
}

#[test]
fn upload_with_wrong_digest_is_refused_and_leaves_nothing() {
    let (dir, store) = store();
    let expected = Sha256Hex::of(b"good");
    let mut up = store.begin_upload(&expected, 4).unwrap();
    up.write(b"evil").unwrap();
    let err = up.finish().unwrap_err();
    match &err {
        ArtifactError::DigestMismatch {
            expected: e,
            actual,
        } => {
            assert_eq!(e, &expected);
            assert_eq!(actual, &Sha256Hex::of(b"evil"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(expected.as_str()) && msg.contains(Sha256Hex::of(b"evil").as_str()));
    assert!(!store.contains(&expected, 4));
    assert_eq!(objects(&dir), Vec::<String>::new());
}

#[test]
fn short_upload_is_refused() {
    let (dir, store) = store();
    let mut up = store.begin_upload(&Sha256Hex::of(b"abcd"), 4).unwrap();
    up.write(b"abc").unwrap();
    let err = up.finish().unwrap_err();
    assert!(matches!(
        &err,
        ArtifactError::SizeMismatch {
            expected: 4,
            actual: 3,
            ..
        }
    ));
    assert_eq!(objects(&dir), Vec::<String>::new());
}

#[test]
fn a_dropped_upload_keeps_its_partial_for_a_resume() {
    let (dir, store) = store();
    let digest = Sha256Hex::of(b"abcd");
    let mut up = store.begin_upload(&digest, 4).unwrap();
    up.write(b"ab").unwrap();
    let partial = dir.path().join("artifacts/partial").join(digest.as_str());
    assert_eq!(store.partial_of(&digest), partial);
    assert_eq!(mode_of(&partial), 0o600);
    drop(up);
    assert_eq!(objects(&dir), Vec::<String>::new(), "nothing is stored");
    assert_eq!(fs::read(&partial).unwrap(), b"ab");
    assert_eq!(store.held(&digest), 2);
}

#[test]
fn store_remove_leftovers_removes_only_upload_temps_and_never_follows_links() {
    let (dir, store) = store();
    let data = b"kept artifact".to_vec();
    let digest = Sha256Hex::of(&data);
    let mut up = store.begin_upload(&digest, data.len() as u64).unwrap();
    up.write(&data).unwrap();
    up.finish().unwrap();
    let objects_dir = dir.path().join("artifacts/sha256");
    // What a crash leaves: a partial upload; plus a link and a directory under that prefix.
    fs::write(objects_dir.join(".upload-0123456789abcdef"), b"partial").unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"outside").unwrap();
    std::os::unix::fs::symlink(&outside, objects_dir.join(".upload-link")).unwrap();
    fs::create_dir(objects_dir.join(".upload-dir")).unwrap();
    fs::write(objects_dir.join(".upload-dir/f"), b"x").unwrap();
    fs::write(objects_dir.join("other"), b"not a temp").unwrap();

    let mut removed = store.remove_leftovers().unwrap();
    removed.sort();
    assert_eq!(
        removed,
        [
            objects_dir.join(".upload-0123456789abcdef"),
            objects_dir.join(".upload-dir"),
            objects_dir.join(".upload-link"),
        ]
    );
    assert_eq!(objects(&dir), [digest.as_str(), "other"]);
    assert!(store.contains(&digest, data.len() as u64));
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"outside");
    // Nothing left: a second call removes nothing.
    assert_eq!(store.remove_leftovers().unwrap(), Vec::<PathBuf>::new());
}

fn put(store: &ArtifactStore, data: &[u8]) -> Sha256Hex {
    let digest = Sha256Hex::of(data);
    let mut up = store.begin_upload(&digest, data.len() as u64).unwrap();
    up.write(data).unwrap();
    up.finish().unwrap();
    digest
}

#[test]
fn j9_an_upload_past_the_store_quota_is_refused_naming_use_and_quota() {
    let dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(&dir.path().join("artifacts"), 1000)
        .unwrap()
        .with_quota(1500, 0);
    put(&store, &[1u8; 800]);
    // An upload in progress counts too: its bytes are on disk already.
    let second = Sha256Hex::of(&[2u8; 600]);
    let mut pending = store.begin_upload(&second, 600).unwrap();
    pending.write(&[2u8; 100]).unwrap();
    let third = Sha256Hex::of(&[3u8; 650]);
    let Err(err) = store.begin_upload(&third, 650) else {
        panic!("over the quota")
    };
    assert!(
        matches!(
            err,
            ArtifactError::StoreFull {
                used: 900,
                quota: 1500,
                size: 650,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("900 of 1500 bytes are in use"),
        "{err}"
    );
    // A partial that waits for a resume still counts.
    drop(pending);
    let Err(err) = store.begin_upload(&third, 650) else {
        panic!("over the quota")
    };
    assert!(
        matches!(err, ArtifactError::StoreFull { used: 900, .. }),
        "{err:?}"
    );
    // Starting that upload afresh discards its partial.
    drop(store.begin_upload(&second, 600).unwrap());
    assert_eq!(store.held(&second), 0);
    // At the quota exactly is fine.
    let fits = Sha256Hex::of(&[4u8; 700]);
    assert!(store.begin_upload(&fits, 700).is_ok());
}

#[test]
fn j9_an_upload_that_would_leave_less_than_min_free_bytes_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(&dir.path().join("artifacts"), 1000)
        .unwrap()
        .with_quota(u64::MAX, u64::MAX / 2);
    let digest = Sha256Hex::of(b"x");
    let Err(err) = store.begin_upload(&digest, 1) else {
        panic!("the disk is never that free")
    };
    assert!(
        matches!(err, ArtifactError::DiskLow { size: 1, .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("audit.min_free_bytes"), "{err}");
    assert!(
        objects(&dir).is_empty(),
        "nothing is left of the refused upload"
    );
    assert!(
        names(&dir.path().join("artifacts/partial")).is_empty(),
        "no partial is left of the refused upload"
    );
    // With no floor the same upload goes ahead.
    let store = store.with_quota(u64::MAX, 0);
    assert!(store.begin_upload(&digest, 1).is_ok());
}

#[test]
fn j9_collect_removes_only_old_artifacts_no_release_uses() {
    let (dir, store) = store();
    let used = put(&store, b"a release in use");
    let unused_old = put(&store, b"an old unused artifact");
    let unused_new = put(&store, b"a fresh upload, not deployed yet");
    let in_flight = Sha256Hex::of(b"in flight");
    let mut pending = store.begin_upload(&in_flight, 9).unwrap();
    pending.write(b"in").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    for d in [&used, &unused_old] {
        fs::File::options()
            .write(true)
            .open(store.path_of(d))
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
    let keep = std::collections::BTreeSet::from([used.clone()]);
    let ttl = std::time::Duration::from_secs(600);
    let removed = store
        .collect(&keep, ttl, std::time::SystemTime::now())
        .unwrap();
    assert_eq!(removed, [(unused_old.clone(), 22)]);
    let mut left = objects(&dir);
    left.retain(|n| !n.starts_with(".upload-"));
    let mut want = vec![used.to_string(), unused_new.to_string()];
    want.sort();
    left.sort();
    assert_eq!(left, want);
    assert_eq!(
        names(&dir.path().join("artifacts/partial")),
        [in_flight.as_str()],
        "the upload in flight is untouched"
    );
    assert_eq!(store.held(&in_flight), 2);
    // A second pass has nothing left to do.
    assert!(
        store
            .collect(&keep, ttl, std::time::SystemTime::now())
            .unwrap()
            .is_empty()
    );
}

/// Uploads `data` whole as the certificate `by`.
fn put_by(
    store: &ArtifactStore,
    data: &[u8],
    by: &Uploader<'_>,
) -> Result<Sha256Hex, ArtifactError> {
    let digest = Sha256Hex::of(data);
    let mut up = store.begin_upload_by(&digest, data.len() as u64, 0, by)?;
    up.write(data)?;
    up.finish()?;
    Ok(digest)
}

#[test]
fn j9_one_certificate_is_refused_past_its_budget_and_another_still_uploads() {
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        ArtifactStore::open(&dir.path().join("artifacts"), 1000)
            .unwrap()
            .with_quota(10_000, 0)
            .with_client_budget(1000)
    };
    let store = open();
    let none = std::collections::BTreeSet::new();
    let bulk = Uploader {
        fingerprint: "aa11",
        kept: &none,
    };
    let other = Uploader {
        fingerprint: "bb22",
        kept: &none,
    };
    let first = put_by(&store, &[1u8; 400], &bulk).unwrap();
    // A partial upload counts too.
    let second = Sha256Hex::of(&[2u8; 500]);
    let mut pending = store.begin_upload_by(&second, 500, 0, &bulk).unwrap();
    pending.write(&[2u8; 100]).unwrap();
    drop(pending);
    let third = Sha256Hex::of(&[3u8; 501]);
    let Err(err) = store.begin_upload_by(&third, 501, 0, &bulk) else {
        panic!("over the budget")
    };
    assert!(
        matches!(
            &err,
            ArtifactError::ClientBudget { size: 501, held: 500, budget: 1000, fingerprint, .. }
                if fingerprint == "aa11"
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("client certificate aa11")
            && msg.contains("hold 500 of 1000 bytes")
            && msg.contains("limits.max_unused_bytes_per_client"),
        "{msg}"
    );
    assert_eq!(
        store.held(&third),
        0,
        "nothing is left of the refused upload"
    );
    // Up to the budget exactly is fine, and resuming its own partial counts it once.
    drop(
        store
            .begin_upload_by(&Sha256Hex::of(&[4u8; 500]), 500, 0, &bulk)
            .unwrap(),
    );
    let resumed = store.begin_upload_by(&second, 500, 100, &bulk).unwrap();
    drop(resumed);
    // Another certificate has its own budget, whatever the first one holds.
    put_by(&store, &[5u8; 900], &other).unwrap();
    // A restart forgets nobody's share.
    let store = open();
    assert!(matches!(
        store.begin_upload_by(&third, 501, 0, &bulk),
        Err(ArtifactError::ClientBudget { held: 500, .. })
    ));
    // An artifact a kept release uses counts for no certificate.
    let kept = std::collections::BTreeSet::from([first.clone()]);
    let deployed = Uploader {
        fingerprint: "aa11",
        kept: &kept,
    };
    assert!(matches!(
        store.begin_upload_by(&third, 901, 0, &deployed),
        Err(ArtifactError::ClientBudget { held: 100, .. })
    ));
    // A collection prunes the records of what is gone.
    fs::remove_file(store.partial_of(&second)).unwrap();
    fs::remove_file(store.partial_of(&Sha256Hex::of(&[4u8; 500]))).ok();
    store
        .collect(
            &kept,
            std::time::Duration::from_secs(3600),
            std::time::SystemTime::now(),
        )
        .unwrap();
    let records = names(&dir.path().join("artifacts/owners"));
    assert_eq!(records.len(), 2, "{records:?}");
    assert!(records.contains(&first.to_string()), "{records:?}");
    store.begin_upload_by(&third, 501, 0, &deployed).unwrap();
}
