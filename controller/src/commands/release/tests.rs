//! Release notes drafted from a repository the test makes with the `git` binary.

use std::process::Command;

use super::*;

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Test",
            "-c",
            "user.email=test@example.invalid",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn commit(dir: &Path, message: &str) {
    git(dir, &["commit", "--allow-empty", "-q", "-m", message]);
}

#[test]
fn notes_from_a_range_fall_into_the_cd_models_sections() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q"]);
    commit(d, "chore: initial");
    git(d, &["tag", "v1.1.0"]);
    commit(d, "feat(auth): log in with OAuth2 providers");
    commit(d, "fix: crash when uploading large files (#234)");
    commit(d, "perf(search): 50% faster queries");
    commit(
        d,
        "feat(api)!: remove /old-api\n\nBREAKING CHANGE: /old-api is gone, use /v2/api",
    );
    commit(d, "fix(security): escape user names in the admin page");
    commit(
        d,
        "deprecate: the XML export\n\nKnown-Issue: exports over 2 GiB time out",
    );
    commit(d, "docs: typo");
    commit(d, "Update stuff");

    let commits = commits(d, "v1.1.0", "HEAD").unwrap();
    assert_eq!(commits.len(), 8);
    let mut items = Vec::new();
    let mut skipped = 0;
    for c in &commits {
        match classify(c) {
            Some(i) => items.extend(i),
            None => skipped += 1,
        }
    }
    assert_eq!(skipped, 1);
    let notes = render("1.2.0", &items);
    let no_hashes: String = notes
        .lines()
        .map(|l| match l.rfind(" (") {
            Some(i) if l.starts_with("- ") && l.ends_with(')') => l[..i].to_owned(),
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert_eq!(
        no_hashes,
        "# Release v1.2.0\n\
         \n## New Features\n\
         - **auth:** log in with OAuth2 providers\n\
         \n## Enhancements\n\
         - **search:** 50% faster queries\n\
         \n## Bug Fixes\n\
         - crash when uploading large files (#234)\n\
         \n## Breaking Changes\n\
         - /old-api is gone, use /v2/api\n\
         \n## Security\n\
         - **security:** escape user names in the admin page\n\
         \n## Deprecations\n\
         - the XML export\n\
         \n## Known Issues\n\
         - exports over 2 GiB time out"
    );
    // A breaking feature is listed once, under Breaking Changes.
    assert!(!notes.contains("**api:** remove /old-api"), "{notes}");
}

#[test]
fn a_bad_ref_is_an_error_naming_the_range() {
    let dir = tempfile::tempdir().unwrap();
    git(dir.path(), &["init", "-q"]);
    commit(dir.path(), "feat: one");
    let e = commits(dir.path(), "v9.9.9", "HEAD").unwrap_err();
    assert!(
        e.to_string().starts_with("git log v9.9.9..HEAD failed: "),
        "{e}"
    );
}

#[test]
fn headers_that_are_not_conventional_are_left_out() {
    let c = |s: &str| Commit {
        hash: "abc".to_owned(),
        subject: s.to_owned(),
        body: String::new(),
    };
    assert!(classify(&c("Merge branch 'x'")).is_none());
    assert!(classify(&c("feat:")).is_none());
    assert!(classify(&c("fe at: x")).is_none());
    assert_eq!(classify(&c("test: more")), Some(Vec::new()));
}
