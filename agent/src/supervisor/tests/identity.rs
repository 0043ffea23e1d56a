//! The app user and its groups, empty capability sets, and who may execute what.

use super::*;

fn status_field(pid: u32, name: &str) -> String {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test]
async fn runs_as_the_app_user_with_exactly_its_groups() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (_dir, mut spec) = setup(&["sleep", "300"]);
    spec.run_as = RunAs::User {
        name: "nobody".to_owned(),
        uid: 65534,
        gid: 65534,
        groups: vec![65534, 4242],
        by: crate::config::SwitchedBy::Root,
    };
    let inst = Instance::spawn(spec, slow_backoff()).await.unwrap();
    let pid = inst.record().pid;
    assert_eq!(status_field(pid, "Uid"), "65534 65534 65534 65534");
    assert_eq!(status_field(pid, "Gid"), "65534 65534 65534 65534");
    assert_eq!(status_field(pid, "Groups"), "4242 65534");
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    inst.stop().await.unwrap();
}

/// This thread's capability set `name` (`CapPrm`, ...) as a bit set.
fn own_caps(name: &str) -> u64 {
    let status = fs::read_to_string("/proc/thread-self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap();
    u64::from_str_radix(hex.trim(), 16).unwrap()
}

/// J5: an agent holding capabilities in its inheritable set (the unit's ambient ones are there
/// too) hands none of them to an instance.
#[tokio::test(flavor = "current_thread")]
async fn j5_an_instance_starts_with_every_capability_set_empty() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (to put CAP_KILL in the inheritable set)");
        return;
    }
    let (prm, eff) = (own_caps("CapPrm"), own_caps("CapEff"));
    // CAP_KILL, CAP_SETGID, CAP_SETUID; capabilities are per thread, and this test's runtime
    // (and so the fork) is on this thread alone.
    spawn::set_capabilities(eff, prm, 0xe0).unwrap();
    let (_dir, mut spec) = setup(&["sleep", "300"]);
    spec.run_as = nobody();
    let started = Instance::spawn(spec, slow_backoff()).await;
    spawn::set_capabilities(eff, prm, 0).unwrap();
    let inst = started.unwrap();
    let pid = inst.record().pid;
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(status_field(pid, set), "0000000000000000", "{set}");
    }
    assert_eq!(status_field(pid, "NoNewPrivs"), "1");
    inst.stop().await.unwrap();
}

#[tokio::test]
async fn a_failed_identity_switch_is_a_spawn_error() {
    let (_dir, mut spec) = setup(&["sleep", "300"]);
    spec.run_as = if nix::unistd::geteuid().is_root() {
        // More groups than the kernel allows: setgroups fails with EINVAL.
        RunAs::User {
            name: "nobody".to_owned(),
            uid: 65534,
            gid: 65534,
            groups: vec![1; 70_000],
            by: crate::config::SwitchedBy::Root,
        }
    } else {
        // Not root: setgroups fails with EPERM.
        RunAs::User {
            name: "root".to_owned(),
            uid: 0,
            gid: 0,
            groups: vec![0],
            by: crate::config::SwitchedBy::Root,
        }
    };
    let err = Instance::spawn(spec, slow_backoff()).await.unwrap_err();
    let SupervisorError::Spawn { cause: source, .. } = &err else {
        panic!("{err}")
    };
    assert!(
        matches!(
            source.raw_os_error(),
            Some(nix::libc::EINVAL | nix::libc::EPERM)
        ),
        "{source}"
    );
}

#[test]
fn access_follows_owner_then_group_then_other_bits() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    fs::create_dir(&inner).unwrap();
    let nobody = access::Identity::of(&nobody()).unwrap();
    // The temp dir itself is 0700 and owned by whoever runs the test (not nobody).
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let err = access::check_reachable(&nobody, &inner.join("not-yet")).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, access::AccessError::NotSearchable { dir: d, mode: 0o700, .. }
            if *d == fs::canonicalize(dir.path()).unwrap()),
        "{msg}"
    );
    assert!(msg.contains("nobody (uid 65534) cannot search"), "{msg}");
    assert!(msg.contains("must be searchable by that user"), "{msg}");
    // Search for others on the way, but not on the last directory.
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
    fs::set_permissions(&inner, fs::Permissions::from_mode(0o770)).unwrap();
    let err = access::check_reachable(&nobody, &inner).unwrap_err();
    assert!(
        matches!(&err, access::AccessError::NotSearchable { dir: d, .. } if d.ends_with("inner")),
        "{err}"
    );
    fs::set_permissions(&inner, fs::Permissions::from_mode(0o701)).unwrap();
    access::check_reachable(&nobody, &inner.join("later/deeper")).unwrap();
    // The owner's bits decide for the owner, whatever the others get.
    let me = nix::unistd::geteuid().as_raw();
    let owner = access::Identity::of(&RunAs::User {
        name: "me".to_owned(),
        uid: me,
        gid: 4242,
        groups: vec![4242],
        by: crate::config::SwitchedBy::Root,
    });
    if let Some(owner) = owner {
        fs::set_permissions(&inner, fs::Permissions::from_mode(0o077)).unwrap();
        assert!(access::check_reachable(&owner, &inner).is_err());
    }
}

#[test]
fn access_to_a_file_needs_its_execute_bit() {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("app");
    fs::write(&exe, "#!/bin/sh\n").unwrap();
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o750)).unwrap();
    let nobody = access::Identity::of(&nobody()).unwrap();
    let err = access::check_executable(&nobody, &exe).unwrap_err();
    assert!(
        matches!(err, access::AccessError::NotExecutable { mode: 0o750, .. }),
        "{err}"
    );
    fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    access::check_executable(&nobody, &exe).unwrap();
    // Root and the agent's own user need no check.
    assert!(access::Identity::of(&current_user()).is_none());
}

#[tokio::test]
async fn a_program_out_of_the_users_reach_names_the_directory_that_blocks_it() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (dir, mut spec) = setup(&["sleep", "300"]);
    let private = dir.path().join("private");
    fs::create_dir(&private).unwrap();
    fs::copy("/bin/sleep", private.join("sleep")).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    spec.command = vec![
        private.join("sleep").to_string_lossy().into_owned(),
        "300".to_owned(),
    ];
    spec.run_as = nobody();
    let err = Instance::spawn(spec, slow_backoff()).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("Permission denied"), "{msg}");
    assert!(
        msg.contains(&format!(
            "nobody (uid 65534) cannot search {} (mode 0700",
            private.display()
        )),
        "{msg}"
    );
}
