//! Each refused case against real files in temp dirs. The suite runs as root here, so ownership
//! cases chown to `nobody`; they are skipped (with a message) when not running as root.

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};

use super::*;

fn me() -> u32 {
    nix::unistd::geteuid().as_raw()
}

fn file(dir: &Path, name: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    fs::write(&path, "x").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn dir(parent: &Path, name: &str, mode: u32) -> PathBuf {
    let path = parent.join(name);
    fs::create_dir(&path).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
    path
}

fn one(path: &Path, what: Guarded) -> Problem {
    let mut found = inspect(path, what, me()).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    found.remove(0)
}

/// `nobody`'s uid when running as root (ownership tests need to chown), else `None`.
fn nobody_if_root(test: &str) -> Option<u32> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED {test}: chown to another user needs root");
        return None;
    }
    let user = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    Some(user.uid.as_raw())
}

#[test]
fn safe_modes_pass() {
    let tmp = tempfile::tempdir().unwrap();
    for (path, what) in [
        (file(tmp.path(), "tls.key", 0o600), Guarded::PrivateKey),
        (file(tmp.path(), "audit.key", 0o400), Guarded::PrivateKey),
        (file(tmp.path(), "agent.toml", 0o644), Guarded::Config),
        (file(tmp.path(), "ro.toml", 0o440), Guarded::Config),
        (dir(tmp.path(), "data", 0o711), Guarded::DataDir),
        (dir(tmp.path(), "data2", 0o700), Guarded::DataDir),
    ] {
        assert_eq!(
            inspect(&path, what, me()).unwrap(),
            vec![],
            "{}",
            path.display()
        );
    }
}

#[test]
fn a_missing_path_is_left_to_the_step_that_uses_it() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("data");
    assert!(
        inspect(&missing, Guarded::DataDir, me())
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_key_readable_by_group_or_others_is_refused_with_path_mode_owner_and_fix() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in [0o644, 0o640, 0o604, 0o660, 0o610] {
        let path = file(tmp.path(), &format!("k{mode:o}.key"), mode);
        let p = one(&path, Guarded::PrivateKey);
        assert_eq!(p.issue, Issue::Mode);
        assert_eq!(p.mode, mode);
        let msg = p.to_string();
        let shown = path.display().to_string();
        assert!(
            msg.starts_with(&format!("private key {shown} is accessible to")),
            "{msg}"
        );
        assert!(msg.contains(&format!("mode {mode:04o}")), "{msg}");
        assert!(msg.contains(&format!("owner {}", user_name(me()))), "{msg}");
        assert!(msg.ends_with(&format!("run `chmod 600 {shown}`")), "{msg}");
    }
}

#[test]
fn a_group_or_world_writable_config_is_refused_but_readable_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let path = file(tmp.path(), "agent.toml", 0o664);
    let msg = one(&path, Guarded::Config).to_string();
    assert!(
        msg.contains("config file") && msg.contains("writable by its group"),
        "{msg}"
    );
    assert!(msg.contains("mode 0664"), "{msg}");
    assert!(
        msg.contains(&format!("chmod 600 {}", path.display())),
        "{msg}"
    );

    let path = file(tmp.path(), "world.toml", 0o646);
    let msg = one(&path, Guarded::Config).to_string();
    assert!(
        msg.contains("writable by others") && msg.contains("mode 0646"),
        "{msg}"
    );
}

#[test]
fn a_group_or_world_writable_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for mode in [0o777, 0o1777, 0o770, 0o713] {
        let path = dir(tmp.path(), &format!("d{mode:o}"), mode);
        let p = one(&path, Guarded::DataDir);
        assert_eq!(p.issue, Issue::Mode);
        let msg = p.to_string();
        assert!(msg.starts_with("data directory "), "{msg}");
        assert!(msg.contains(&format!("mode {mode:04o}")), "{msg}");
        assert!(
            msg.contains(&format!("chmod 711 {}", path.display())),
            "{msg}"
        );
    }
}

#[test]
fn symlinks_are_refused_for_keys_config_and_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let real_key = file(tmp.path(), "real.key", 0o600);
    let real_toml = file(tmp.path(), "real.toml", 0o600);
    let real_dir = dir(tmp.path(), "real-data", 0o700);
    for (real, what) in [
        (real_key, Guarded::PrivateKey),
        (real_toml, Guarded::Config),
        (real_dir, Guarded::DataDir),
    ] {
        let link = tmp
            .path()
            .join(format!("link-{}", what.label().replace(' ', "-")));
        symlink(&real, &link).unwrap();
        let p = one(&link, what);
        assert_eq!(
            p.issue,
            Issue::Symlink {
                target: real.clone()
            }
        );
        let msg = p.to_string();
        assert!(
            msg.contains(&format!(
                "{} is a symlink to {}",
                link.display(),
                real.display()
            )),
            "{msg}"
        );
        assert!(msg.contains("name the real path"), "{msg}");
    }
}

#[test]
fn a_dangling_symlink_is_refused_too() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("agent.key");
    symlink(tmp.path().join("nowhere"), &link).unwrap();
    assert!(matches!(
        one(&link, Guarded::PrivateKey).issue,
        Issue::Symlink { .. }
    ));
}

#[test]
fn the_wrong_file_type_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = dir(tmp.path(), "agent.key", 0o700);
    assert_eq!(one(&d, Guarded::PrivateKey).issue, Issue::WrongType);
    let f = file(tmp.path(), "data", 0o600);
    let msg = one(&f, Guarded::DataDir).to_string();
    assert!(msg.contains("is not a directory"), "{msg}");
}

#[test]
fn files_owned_by_another_user_are_refused() {
    let Some(nobody) = nobody_if_root("files_owned_by_another_user_are_refused") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let key = file(tmp.path(), "agent.key", 0o600);
    let toml = file(tmp.path(), "agent.toml", 0o644);
    let data = dir(tmp.path(), "data", 0o711);
    for (path, what) in [
        (key, Guarded::PrivateKey),
        (toml, Guarded::Config),
        (data, Guarded::DataDir),
    ] {
        std::os::unix::fs::lchown(&path, Some(nobody), None).unwrap();
        let p = one(&path, what);
        assert_eq!(p.issue, Issue::Owner { agent_uid: me() });
        assert_eq!(p.uid, nobody);
        let msg = p.to_string();
        assert!(
            msg.contains(&format!("is owned by nobody (uid {nobody})")),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("chown {} {}", chown_name(me()), path.display())),
            "{msg}"
        );
    }
}

#[test]
fn root_owned_files_are_trusted_by_an_unprivileged_agent() {
    if nobody_if_root("root_owned_files_are_trusted_by_an_unprivileged_agent").is_none() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let toml = file(tmp.path(), "agent.toml", 0o644);
    // Owned by root (we are root), checked for an agent running as uid 1234.
    assert!(inspect(&toml, Guarded::Config, 1234).unwrap().is_empty());
}

#[test]
fn a_bad_owner_and_a_bad_mode_are_both_reported() {
    let Some(nobody) = nobody_if_root("a_bad_owner_and_a_bad_mode_are_both_reported") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let key = file(tmp.path(), "agent.key", 0o644);
    std::os::unix::fs::lchown(&key, Some(nobody), None).unwrap();
    let found = inspect(&key, Guarded::PrivateKey, me()).unwrap();
    let issues: Vec<_> = found.iter().map(|p| p.issue.clone()).collect();
    assert_eq!(issues, vec![Issue::Owner { agent_uid: me() }, Issue::Mode]);
}

#[test]
fn unsafe_lists_every_problem_on_its_own_line() {
    let tmp = tempfile::tempdir().unwrap();
    let a = file(tmp.path(), "a.key", 0o644);
    let b = file(tmp.path(), "agent.toml", 0o666);
    let mut found = inspect(&a, Guarded::PrivateKey, me()).unwrap();
    found.extend(inspect(&b, Guarded::Config, me()).unwrap());
    let msg = FsGuardError::Unsafe(found).to_string();
    assert_eq!(msg.lines().count(), 3, "{msg}");
    assert!(msg.starts_with("refusing to start:"), "{msg}");
    assert!(msg.contains(&a.display().to_string()) && msg.contains(&b.display().to_string()));
}

/// Security review I7/J8: the trust anchors (CA certificate, trusted public keys) and the
/// directories holding guarded files are guarded like the config: no group/other write, no
/// symlink, owned by the agent's user or root.
#[test]
fn i7_j8_trust_anchors_and_their_directories_refuse_writes_and_links() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, what) in [("ca.pem", Guarded::CaCert), ("ci.pub", Guarded::TrustedKey)] {
        assert!(
            inspect(&file(tmp.path(), name, 0o644), what, me())
                .unwrap()
                .is_empty()
        );
        let p = one(&file(tmp.path(), &format!("w-{name}"), 0o664), what);
        assert_eq!(p.issue, Issue::Mode);
        let msg = p.to_string();
        assert!(msg.starts_with(what.label()), "{msg}");
        assert!(msg.contains("writable by its group (mode 0664"), "{msg}");
        assert!(msg.contains("run `chmod 644"), "{msg}");
        let link = tmp.path().join(format!("l-{name}"));
        symlink(tmp.path().join(name), &link).unwrap();
        assert!(matches!(one(&link, what).issue, Issue::Symlink { .. }));
    }
    assert!(
        inspect(&dir(tmp.path(), "keys", 0o755), Guarded::Directory, me())
            .unwrap()
            .is_empty()
    );
    let shared = dir(tmp.path(), "shared", 0o775);
    assert!(
        one(&shared, Guarded::Directory)
            .to_string()
            .contains("run `chmod 755")
    );
    let world = dir(tmp.path(), "world", 0o1777);
    let msg = one(&world, Guarded::Directory).to_string();
    assert!(msg.contains("anyone may replace what it holds"), "{msg}");
    assert!(!msg.contains("chmod"), "{msg}");
    let file_not_dir = file(tmp.path(), "not-a-dir", 0o644);
    assert_eq!(
        one(&file_not_dir, Guarded::Directory).issue,
        Issue::WrongType
    );
}
