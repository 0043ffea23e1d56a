//! Releases: install, activate `current`, list, prune and remove leftovers.

use super::*;

// ---------------------------------------------------------------------------------------------
// Releases

fn spec(version: &str, tgz: &[u8]) -> ReleaseSpec {
    ReleaseSpec {
        version: semver::Version::parse(version).unwrap(),
        artifact_sha256: Sha256Hex::of(tgz),
        artifact_size: tgz.len() as u64,
        strategy: StrategyKind::Hot,
        instances: 1,
        command: vec!["./bin/server".to_owned()],
        health: HealthSpec {
            probe: Probe::Tcp,
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            healthy_threshold: 1,
            unhealthy_threshold: 3,
            deadline: Duration::from_secs(10),
        },
        env: Default::default(),
        secret_env: Default::default(),
        rollout: Default::default(),
        progress_deadline: Duration::from_secs(60),
        evidence: Vec::new(),
        notes: String::new(),
    }
}

struct App {
    dir: tempfile::TempDir,
    store: ArtifactStore,
    releases: Releases,
}

impl App {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(&dir.path().join("artifacts"), 10 * MIB).unwrap();
        let releases = Releases::new(&dir.path().join("apps/web"));
        Self {
            dir,
            store,
            releases,
        }
    }

    fn upload(&self, tgz: &[u8]) {
        let mut up = self
            .store
            .begin_upload(&Sha256Hex::of(tgz), tgz.len() as u64)
            .unwrap();
        up.write(tgz).unwrap();
        up.finish().unwrap();
    }

    /// Uploads and installs a release whose `VERSION` file holds its version.
    fn install(&self, version: &str) -> PathBuf {
        let tgz = Tar::new().file("VERSION", version.as_bytes()).tgz();
        self.upload(&tgz);
        self.releases
            .install(&self.store, &spec(version, &tgz), &limits())
            .unwrap()
    }
}

fn v(s: &str) -> semver::Version {
    semver::Version::parse(s).unwrap()
}

#[test]
fn install_unpacks_once_and_is_idempotent() {
    let app = App::new();
    let dir = app.install("1.2.3");
    assert_eq!(dir, app.dir.path().join("apps/web/releases/1.2.3"));
    assert_eq!(fs::read(dir.join("VERSION")).unwrap(), b"1.2.3");
    assert_eq!(mode_of(&app.dir.path().join("apps/web")), 0o755);
    assert_eq!(mode_of(&app.dir.path().join("apps/web/releases")), 0o755);
    assert!(app.releases.is_on_disk(&v("1.2.3")));
    fs::write(dir.join("marker"), b"").unwrap();
    assert_eq!(app.install("1.2.3"), dir);
    assert!(
        dir.join("marker").exists(),
        "second install must not touch the release"
    );
}

#[test]
fn install_without_artifact_is_refused() {
    let app = App::new();
    let tgz = Tar::new().file("VERSION", b"1").tgz();
    let err = app
        .releases
        .install(&app.store, &spec("1.0.0", &tgz), &limits())
        .unwrap_err();
    assert!(matches!(&err, ArtifactError::Missing { .. }), "{err:?}");
    assert!(!app.releases.is_on_disk(&v("1.0.0")));
}

#[test]
fn install_of_hostile_archive_leaves_nothing() {
    let app = App::new();
    let tgz = Tar::new().file("ok", b"1").symlink("l", "/etc").tgz();
    app.upload(&tgz);
    let err = app
        .releases
        .install(&app.store, &spec("2.0.0", &tgz), &limits())
        .unwrap_err();
    assert!(
        matches!(
            &err,
            ArtifactError::Unpack {
                source: UnpackError::SymlinkEscape { .. },
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(names(&app.releases.releases_dir()), Vec::<String>::new());
}

#[test]
fn activate_switches_current_atomically_with_a_relative_link() {
    let app = App::new();
    assert_eq!(app.releases.current(), None);
    app.install("1.0.0");
    app.install("1.1.0");
    let err = app.releases.activate(&v("9.9.9")).unwrap_err();
    assert!(matches!(&err, ArtifactError::NotOnDisk { .. }), "{err:?}");
    app.releases.activate(&v("1.0.0")).unwrap();
    assert_eq!(app.releases.current(), Some(v("1.0.0")));
    app.releases.activate(&v("1.1.0")).unwrap();
    assert_eq!(app.releases.current(), Some(v("1.1.0")));
    let app_dir = app.dir.path().join("apps/web");
    assert_eq!(
        fs::read_link(app_dir.join("current")).unwrap(),
        Path::new("releases/1.1.0")
    );
    assert_eq!(fs::read(app_dir.join("current/VERSION")).unwrap(), b"1.1.0");
    assert_eq!(
        names(&app_dir),
        ["current", "release-digests", "releases"],
        "no temp link left"
    );
}

#[test]
fn on_disk_lists_only_canonical_versions_sorted() {
    let app = App::new();
    for ver in ["1.10.0", "1.2.0", "1.2.0-rc.1"] {
        app.install(ver);
    }
    let rel = app.releases.releases_dir();
    fs::create_dir(rel.join(".unpack-3.0.0-abc")).unwrap();
    fs::create_dir(rel.join("01.0.0")).unwrap();
    fs::write(rel.join("4.0.0"), b"a file, not a release").unwrap();
    assert_eq!(
        app.releases.on_disk().unwrap(),
        [v("1.2.0-rc.1"), v("1.2.0"), v("1.10.0")]
    );
}

#[test]
fn prune_keeps_newest_and_never_deletes_protected_or_current() {
    let app = App::new();
    for ver in ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0"] {
        app.install(ver);
    }
    app.releases.activate(&v("1.1.0")).unwrap();
    // 6 on disk, keep 3: delete 3 of the oldest, skipping current (1.1.0) and 1.0.0.
    let removed = app.releases.prune(3, &[v("1.0.0")]).unwrap();
    assert_eq!(removed, [v("1.2.0"), v("1.3.0"), v("1.4.0")]);
    assert_eq!(
        app.releases.on_disk().unwrap(),
        [v("1.0.0"), v("1.1.0"), v("1.5.0")]
    );
    assert_eq!(
        names(&app.releases.releases_dir()),
        ["1.0.0", "1.1.0", "1.5.0"]
    );
    // Nothing left to prune without touching protected ones.
    assert_eq!(
        app.releases.prune(1, &[v("1.0.0"), v("1.5.0")]).unwrap(),
        Vec::new()
    );
    assert_eq!(app.releases.current(), Some(v("1.1.0")));
}

#[test]
fn releases_remove_leftovers_removes_partial_unpacks_and_temp_links_only() {
    let app = App::new();
    app.install("1.0.0");
    app.install("1.1.0");
    app.releases.activate(&v("1.1.0")).unwrap();
    let app_dir = app.dir.path().join("apps/web");
    let rel = app.releases.releases_dir();
    // What a crash leaves: a partial unpack (with content), a temp `current` link.
    fs::create_dir_all(rel.join(".unpack-2.0.0-0123456789abcdef/bin")).unwrap();
    fs::write(rel.join(".unpack-2.0.0-0123456789abcdef/bin/server"), b"x").unwrap();
    // ... and a release half deleted by a prune.
    fs::create_dir_all(rel.join(".prune-0.9.0-0123456789abcdef/bin")).unwrap();
    std::os::unix::fs::symlink(
        "releases/1.0.0",
        app_dir.join("current.tmp-0123456789abcdef"),
    )
    .unwrap();
    // A link named like a partial unpack, pointing at a directory outside: the link goes, the
    // directory and its file stay.
    let outside = app.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"outside").unwrap();
    std::os::unix::fs::symlink(&outside, rel.join(".unpack-x")).unwrap();
    // Not leftovers: other files, and prefixes in the wrong directory.
    fs::write(rel.join("notes"), b"keep").unwrap();
    fs::write(rel.join("current.tmp-elsewhere"), b"keep").unwrap();
    fs::write(app_dir.join(".unpack-elsewhere"), b"keep").unwrap();
    fs::write(app_dir.join("state.json"), b"{}").unwrap();

    let mut removed = app.releases.remove_leftovers().unwrap();
    removed.sort();
    assert_eq!(
        removed,
        [
            app_dir.join("current.tmp-0123456789abcdef"),
            rel.join(".prune-0.9.0-0123456789abcdef"),
            rel.join(".unpack-2.0.0-0123456789abcdef"),
            rel.join(".unpack-x"),
        ]
    );
    assert_eq!(
        names(&rel),
        ["1.0.0", "1.1.0", "current.tmp-elsewhere", "notes"]
    );
    assert_eq!(
        names(&app_dir),
        [
            ".unpack-elsewhere",
            "current",
            "release-digests",
            "releases",
            "state.json"
        ]
    );
    assert_eq!(app.releases.current(), Some(v("1.1.0")));
    assert_eq!(fs::read(app_dir.join("current/VERSION")).unwrap(), b"1.1.0");
    assert_eq!(fs::read(rel.join("1.0.0/VERSION")).unwrap(), b"1.0.0");
    assert_eq!(fs::read(outside.join("keep")).unwrap(), b"outside");
    assert_eq!(
        app.releases.remove_leftovers().unwrap(),
        Vec::<PathBuf>::new()
    );
}

#[test]
fn releases_remove_leftovers_of_an_app_never_installed_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let missing = Releases::new(&dir.path().join("apps/none"));
    assert_eq!(missing.remove_leftovers().unwrap(), Vec::<PathBuf>::new());
    let empty_app = dir.path().join("apps/empty");
    fs::create_dir_all(&empty_app).unwrap();
    assert_eq!(
        Releases::new(&empty_app).remove_leftovers().unwrap(),
        Vec::<PathBuf>::new()
    );
    assert_eq!(names(&empty_app), Vec::<String>::new());
}

#[test]
fn remove_leftovers_error_names_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    let app_dir = dir.path().join("apps/web");
    fs::create_dir_all(&app_dir).unwrap();
    // `releases` is a file: listing it fails, and the error says which path.
    fs::write(app_dir.join("releases"), b"not a directory").unwrap();
    let err = Releases::new(&app_dir).remove_leftovers().unwrap_err();
    assert!(
        matches!(&err, ArtifactError::Io { op: "list", path, .. } if *path == app_dir.join("releases")),
        "{err:?}"
    );
    assert!(err.to_string().contains("apps/web/releases"), "{err}");
}
