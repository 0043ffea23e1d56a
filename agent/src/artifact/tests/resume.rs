//! Resumable uploads: a partial kept across a break (and a restart), resumed only at the byte
//! the store holds, re-hashed, verified at the end, counted in the quota and collected.

use super::*;

fn open(dir: &tempfile::TempDir) -> ArtifactStore {
    ArtifactStore::open(&dir.path().join("artifacts"), 1000).unwrap()
}

fn data() -> Vec<u8> {
    (0..=255u8).cycle().take(900).collect()
}

/// Uploads the first `n` bytes of `data` and breaks off.
fn break_off(store: &ArtifactStore, data: &[u8], n: usize) -> Sha256Hex {
    let digest = Sha256Hex::of(data);
    let mut up = store.begin_upload(&digest, data.len() as u64).unwrap();
    up.write(&data[..n]).unwrap();
    drop(up);
    digest
}

fn partials(dir: &tempfile::TempDir) -> Vec<String> {
    names(&dir.path().join("artifacts/partial"))
}

#[test]
fn a_resume_at_the_held_offset_after_a_restart_completes_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let data = data();
    let digest = break_off(&open(&dir), &data, 400);
    // A restart: the store opened again still holds the partial, and start-up hygiene keeps it.
    let store = open(&dir);
    assert_eq!(store.remove_leftovers().unwrap(), Vec::<PathBuf>::new());
    assert_eq!(store.held(&digest), 400);
    let mut up = store.begin_upload_at(&digest, 900, 400).unwrap();
    assert_eq!(up.resumed_from(), 400);
    assert_eq!(up.written(), 400);
    for chunk in data[400..].chunks(64) {
        up.write(chunk).unwrap();
    }
    up.finish().unwrap();
    assert!(store.contains(&digest, 900));
    assert_eq!(fs::read(store.path_of(&digest)).unwrap(), data);
    assert_eq!(store.held(&digest), 0);
    assert!(partials(&dir).is_empty(), "{:?}", partials(&dir));
}

#[test]
fn a_resume_at_another_offset_is_refused_naming_both_and_keeps_the_partial() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = data();
    let digest = break_off(&store, &data, 400);
    for offset in [399, 401, 900] {
        let err = store.begin_upload_at(&digest, 900, offset).unwrap_err();
        assert!(
            matches!(err, ArtifactError::ResumeMismatch { offset: o, held: 400, .. } if o == offset),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "upload of sha256:{digest} resumes at byte {offset} but the agent holds 400; \
                 resume at byte 400 or start again at byte 0"
            )
        );
    }
    let err = store.begin_upload_at(&digest, 900, 901).unwrap_err();
    assert!(
        matches!(
            err,
            ArtifactError::ResumePastEnd {
                offset: 901,
                size: 900,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("past its declared size"), "{err}");
    assert_eq!(
        store.held(&digest),
        400,
        "a refused resume keeps the partial"
    );
    // Nothing held: any offset but 0 is refused.
    let other = Sha256Hex::of(b"other");
    let err = store.begin_upload_at(&other, 5, 2).unwrap_err();
    assert!(
        matches!(err, ArtifactError::ResumeMismatch { held: 0, .. }),
        "{err:?}"
    );
}

#[test]
fn offset_zero_restarts_from_the_first_byte() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = data();
    let digest = break_off(&store, &data, 400);
    let mut up = store.begin_upload_at(&digest, 900, 0).unwrap();
    assert_eq!(up.resumed_from(), 0);
    assert_eq!(up.written(), 0);
    up.write(&data).unwrap();
    up.finish().unwrap();
    assert_eq!(fs::read(store.path_of(&digest)).unwrap(), data);
    assert!(partials(&dir).is_empty());
}

#[test]
fn a_corrupt_partial_fails_verification_and_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = data();
    let digest = break_off(&store, &data, 400);
    // Damage on disk (or a lying earlier client): same length, other bytes.
    let mut held = fs::read(store.partial_of(&digest)).unwrap();
    held[17] ^= 0xff;
    fs::write(store.partial_of(&digest), &held).unwrap();
    let mut up = store.begin_upload_at(&digest, 900, 400).unwrap();
    up.write(&data[400..]).unwrap();
    let err = up.finish().unwrap_err();
    assert!(
        matches!(&err, ArtifactError::DigestMismatch { expected, .. } if *expected == digest),
        "{err:?}"
    );
    assert!(!store.contains(&digest, 900));
    assert_eq!(objects_of(&dir), Vec::<String>::new());
    assert!(partials(&dir).is_empty(), "the corrupt partial is gone");
    assert_eq!(store.held(&digest), 0);
}

fn objects_of(dir: &tempfile::TempDir) -> Vec<String> {
    names(&dir.path().join("artifacts/sha256"))
}

#[test]
fn a_resume_that_sends_past_the_declared_size_is_refused_and_drops_the_partial() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = data();
    let digest = break_off(&store, &data, 400);
    let mut up = store.begin_upload_at(&digest, 900, 400).unwrap();
    up.write(&data[400..899]).unwrap();
    let err = up.write(b"xy").unwrap_err();
    assert!(
        matches!(err, ArtifactError::Oversize { declared: 900, .. }),
        "{err:?}"
    );
    drop(up);
    assert!(partials(&dir).is_empty());
}

#[test]
fn a_second_upload_of_the_same_digest_is_refused_while_the_first_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let data = data();
    let digest = Sha256Hex::of(&data);
    let mut first = store.begin_upload(&digest, 900).unwrap();
    first.write(&data[..100]).unwrap();
    for offset in [0, 100] {
        let err = store.begin_upload_at(&digest, 900, offset).unwrap_err();
        assert!(
            matches!(&err, ArtifactError::UploadBusy { digest: d } if *d == digest),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!("an upload of sha256:{digest} is already in progress")
        );
    }
    // A clone of the store (the server holds one) sees the same upload in progress.
    assert!(matches!(
        store.clone().begin_upload(&digest, 900),
        Err(ArtifactError::UploadBusy { .. })
    ));
    first.write(&data[100..200]).unwrap();
    drop(first);
    assert_eq!(
        store.held(&digest),
        200,
        "the refused uploads wrote nothing"
    );
    let mut second = store.begin_upload_at(&digest, 900, 200).unwrap();
    second.write(&data[200..]).unwrap();
    second.finish().unwrap();
    assert!(store.contains(&digest, 900));
}

#[test]
fn the_quota_counts_partials_and_a_resume_needs_room_only_for_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).with_quota(1000, 0);
    put_bytes(&store, &[7u8; 100]);
    let data = data();
    let digest = break_off(&store, &data, 600);
    let other = Sha256Hex::of(&[9u8; 400]);
    let err = store.begin_upload(&other, 400).unwrap_err();
    assert!(
        matches!(
            err,
            ArtifactError::StoreFull {
                used: 700,
                quota: 1000,
                ..
            }
        ),
        "{err:?}"
    );
    // 100 stored + the whole 900 of the resumed artifact is exactly the quota.
    let mut up = store.begin_upload_at(&digest, 900, 600).unwrap();
    up.write(&data[600..]).unwrap();
    up.finish().unwrap();
    assert!(store.contains(&digest, 900));
}

fn put_bytes(store: &ArtifactStore, data: &[u8]) {
    let mut up = store
        .begin_upload(&Sha256Hex::of(data), data.len() as u64)
        .unwrap();
    up.write(data).unwrap();
    up.finish().unwrap();
}

fn age(path: &Path, by: Duration) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - by)
        .unwrap();
}

#[test]
fn partials_nobody_resumes_within_the_ttl_are_collected() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let stale = break_off(&store, b"stale partial bytes", 5);
    let fresh = break_off(&store, b"fresh partial bytes", 7);
    let busy_data = b"resuming now";
    let busy = break_off(&store, busy_data, 3);
    let hour = Duration::from_secs(3600);
    age(&store.partial_of(&stale), hour);
    age(&store.partial_of(&busy), hour);
    // Not named by a digest: not a partial, never touched.
    let stray = dir.path().join("artifacts/partial/notadigest");
    fs::write(&stray, b"x").unwrap();
    age(&stray, hour);
    let resuming = store
        .begin_upload_at(&busy, busy_data.len() as u64, 3)
        .unwrap();
    let ttl = Duration::from_secs(600);
    let removed = store
        .collect_partials(ttl, std::time::SystemTime::now())
        .unwrap();
    assert_eq!(removed, [(stale.clone(), 5)]);
    assert_eq!(store.held(&stale), 0);
    assert_eq!(store.held(&fresh), 7);
    assert_eq!(
        store.held(&busy),
        3,
        "the upload in progress keeps its partial"
    );
    assert!(stray.exists());
    drop(resuming);
    // The collection let go of the digests it looked at: the busy one can be resumed again.
    assert!(
        store
            .begin_upload_at(&busy, busy_data.len() as u64, 3)
            .is_ok()
    );
    // Stored artifacts are not partials: collect_partials leaves them, and takes the busy
    // partial now that nobody resumes it (opening it wrote nothing, so it is still old).
    put_bytes(&store, b"stored");
    age(&store.path_of(&Sha256Hex::of(b"stored")), hour);
    assert_eq!(
        store
            .collect_partials(ttl, std::time::SystemTime::now())
            .unwrap(),
        [(busy, 3)]
    );
    assert!(store.contains(&Sha256Hex::of(b"stored"), 6));
}

#[test]
fn a_link_in_place_of_a_partial_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let digest = Sha256Hex::of(b"abcd");
    let target = dir.path().join("outside");
    fs::write(&target, b"keep me").unwrap();
    std::os::unix::fs::symlink(&target, store.partial_of(&digest)).unwrap();
    assert_eq!(store.held(&digest), 0, "a link holds nothing");
    let err = store.begin_upload(&digest, 4).unwrap_err();
    assert!(matches!(err, ArtifactError::Io { .. }), "{err:?}");
    assert_eq!(fs::read(&target).unwrap(), b"keep me");
}

#[test]
fn start_up_removes_old_temp_names_in_the_partial_directory_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let digest = break_off(&store, &data(), 10);
    let temp = dir.path().join("artifacts/partial/.upload-0123");
    fs::write(&temp, b"old").unwrap();
    assert_eq!(store.remove_leftovers().unwrap(), [temp]);
    assert_eq!(partials(&dir), [digest.as_str()]);
}
