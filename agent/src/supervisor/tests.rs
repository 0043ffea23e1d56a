//! Supervisor tests with real processes.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::sync::watch;

use super::adopt::{group_alive, is_alive, read_stat};
use super::*;

const WAIT: Duration = Duration::from_secs(15);

fn current_user() -> RunAs {
    RunAs::CurrentUser {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    }
}

/// A world-traversable temp dir with `release/` and a spec running `command` there.
fn setup(command: &[&str]) -> (TempDir, InstanceSpec) {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let release = dir.path().join("release");
    fs::create_dir(&release).unwrap();
    fs::set_permissions(&release, fs::Permissions::from_mode(0o777)).unwrap();
    let spec = InstanceSpec {
        app: AppName::new("web").unwrap(),
        version: semver::Version::new(1, 2, 3),
        index: 0,
        port: 18000,
        slot: crate::state::Slot::Blue,
        release_dir: release,
        command: command.iter().map(|s| s.to_string()).collect(),
        env: BTreeMap::from([("GREETING".to_owned(), "hello world".to_owned())]),
        run_as: current_user(),
        log_dir: dir.path().join("logs"),
        stop_timeout: Duration::from_secs(10),
        role: Role::Instance,
    };
    (dir, spec)
}

fn slow_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(60),
        crash_loop_after: 5,
        window: Duration::from_secs(60),
    }
}

/// Waits (with a deadline) until the state satisfies `pred`; returns it.
async fn wait_state(
    rx: &mut watch::Receiver<InstanceState>,
    pred: impl FnMut(&InstanceState) -> bool,
) -> InstanceState {
    tokio::time::timeout(WAIT, rx.wait_for(pred))
        .await
        .expect("state not reached in time")
        .expect("instance no longer supervised")
        .clone()
}

/// Polls `cond` every 20 ms until it holds; panics after [`WAIT`].
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn read_log(spec: &InstanceSpec) -> String {
    fs::read_to_string(log_path(spec)).unwrap_or_default()
}

fn pid_alive(pid: u32) -> bool {
    read_stat(pid).unwrap().is_some_and(|s| !s.is_dead())
}

fn kill_group(pid: u32) {
    let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
}

#[tokio::test]
async fn environment_is_exactly_the_documented_set() {
    let (_dir, mut spec) = setup(&["/usr/bin/env"]);
    spec.env.insert("PORT".to_owned(), "1".to_owned()); // the agent's PORT wins
    let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
    wait_state(&mut inst.state(), |s| {
        matches!(s, InstanceState::Exited { .. })
    })
    .await;
    let log = read_log(&spec);
    let mut lines: Vec<&str> = log.lines().collect();
    lines.sort_unstable();
    let home = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .unwrap()
        .map(|u| u.dir.display().to_string())
        .unwrap_or_else(|| "/".to_owned());
    let home_line = format!("HOME={home}");
    let mut expected = vec![
        "GANTRY_APP=web",
        "GANTRY_INSTANCE=0",
        "GANTRY_VERSION=1.2.3",
        "GREETING=hello world",
        &home_line,
        "PATH=/usr/local/bin:/usr/bin:/bin",
        "PORT=18000",
    ];
    expected.sort_unstable();
    assert_eq!(lines, expected);
    inst.stop().await.unwrap();
}

#[tokio::test]
async fn runs_in_release_dir_with_relative_argv0_own_session_and_only_std_fds() {
    // An agent started with a signal ignored (`nohup`, `cmd &`) must not pass that on. SIGUSR2
    // is used nowhere else in this crate, so ignoring it here disturbs no other test.
    ignore_sigusr2(true);
    let (_dir, spec) = setup(&["bin/run.sh", "arg one"]);
    let bin = spec.release_dir.join("bin");
    fs::create_dir(&bin).unwrap();
    fs::write(
        bin.join("run.sh"),
        "#!/bin/sh\necho \"started $1\"\nexec sleep 300\n",
    )
    .unwrap();
    fs::set_permissions(bin.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
    let pid = inst.record().pid;
    wait_until("log output", || read_log(&spec).contains("started arg one")).await;
    wait_until("exec of sleep", || {
        fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    })
    .await;

    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, spec.release_dir.canonicalize().unwrap());
    // Session and group leader of its own: field 6 (session) and 5 (pgrp) equal the pid.
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 1..]
        .split_whitespace()
        .collect();
    assert_eq!(
        (fields[2], fields[3]),
        (pid.to_string().as_str(), pid.to_string().as_str())
    );
    // stdin is /dev/null, stdout and stderr the log; nothing else of the agent leaks in.
    let mut fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    fds.sort();
    assert_eq!(fds, ["0", "1", "2"]);
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/fd/0")).unwrap(),
        Path::new("/dev/null")
    );
    assert_eq!(
        fs::read_link(format!("/proc/{pid}/fd/2")).unwrap(),
        log_path(&spec)
    );
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    ignore_sigusr2(false);
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    // Every standard signal (1 to 31) at its default action and none blocked, though the
    // agent ignores SIGUSR2.
    let mask = |field: &str| {
        let line = status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        u64::from_str_radix(line.trim(), 16).unwrap()
    };
    assert_eq!(mask("SigIgn:") & 0x7fff_ffff, 0, "{status}");
    assert_eq!(mask("SigBlk:"), 0, "{status}");
    inst.stop().await.unwrap();
}

#[allow(unsafe_code)]
fn ignore_sigusr2(ignore: bool) {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, sigaction};
    let handler = if ignore {
        SigHandler::SigIgn
    } else {
        SigHandler::SigDfl
    };
    // SAFETY: SIG_IGN / SIG_DFL install no handler code.
    unsafe {
        sigaction(
            Signal::SIGUSR2,
            &SigAction::new(handler, SaFlags::empty(), SigSet::empty()),
        )
    }
    .unwrap();
}

#[tokio::test]
async fn log_gets_stdout_and_stderr_appended_with_private_modes() {
    let (_dir, spec) = setup(&["sh", "-c", "echo to-stdout; echo to-stderr >&2"]);
    for run in 1..=2 {
        let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
        wait_state(&mut inst.state(), |s| {
            matches!(s, InstanceState::Exited { .. })
        })
        .await;
        let log = read_log(&spec);
        assert_eq!(log.matches("to-stdout").count(), run, "{log}");
        assert_eq!(log.matches("to-stderr").count(), run, "{log}");
        inst.stop().await.unwrap();
    }
    assert_eq!(log_path(&spec), spec.log_dir.join("1.2.3-0.log"));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&spec.log_dir), 0o750);
    assert_eq!(mode(&log_path(&spec)), 0o640);
}

#[tokio::test]
async fn spawn_errors_name_the_program() {
    let (_dir, spec) = setup(&["bin/missing"]);
    let err = Instance::spawn(spec, slow_backoff()).await.unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("cannot start app web instance 0 in "),
        "{msg}"
    );
    assert!(
        msg.ends_with("/release/bin/missing: No such file or directory (os error 2)"),
        "{msg}"
    );
    let (_dir, spec) = setup(&[]);
    let err = Instance::spawn(spec, slow_backoff()).await.unwrap_err();
    assert_eq!(err.to_string(), "app web instance 0: the command is empty");
}

#[tokio::test]
async fn stop_sends_term_and_process_that_obeys_stops_quickly() {
    let (_dir, spec) = setup(&["sleep", "300"]);
    let inst = Instance::spawn(spec, slow_backoff()).await.unwrap();
    let pid = inst.record().pid;
    let started = Instant::now();
    inst.stop().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(*inst.state().borrow(), InstanceState::Stopped);
    assert!(!pid_alive(pid));
    // Stopping again is fine.
    inst.stop().await.unwrap();
}

#[tokio::test]
async fn stop_kills_the_whole_group_after_the_timeout_when_term_is_ignored() {
    let script = "trap '' TERM; sleep 300 & echo $! > grandchild.pid; wait; wait";
    let (_dir, mut spec) = setup(&["sh", "-c", script]);
    spec.stop_timeout = Duration::from_millis(700);
    let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
    let pid = inst.record().pid;
    let pid_file = spec.release_dir.join("grandchild.pid");
    wait_until("grandchild pid", || {
        fs::read_to_string(&pid_file).is_ok_and(|s| s.trim().parse::<u32>().is_ok())
    })
    .await;
    let grandchild: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(grandchild));

    let started = Instant::now();
    inst.stop().await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= spec.stop_timeout,
        "SIGKILL came before the stop timeout: {took:?}"
    );
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert_eq!(*inst.state().borrow(), InstanceState::Stopped);
    assert!(!pid_alive(pid));
    assert!(!pid_alive(grandchild), "grandchild survived");
    assert!(!group_alive(pid as i32));
}

#[tokio::test]
async fn crash_is_restarted_with_a_new_pid() {
    let script = "if [ -e crashed ]; then exec sleep 300; else touch crashed; exit 7; fi";
    let (_dir, spec) = setup(&["sh", "-c", script]);
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        ..slow_backoff()
    };
    let inst = Instance::spawn(spec, backoff).await.unwrap();
    let first = inst.record();
    let mut rx = inst.state();
    let state = wait_state(&mut rx, |s| {
        matches!(s, InstanceState::Running { restarts: 1, .. })
    })
    .await;
    let second = inst.record();
    assert_eq!(
        state,
        InstanceState::Running {
            pid: second.pid,
            restarts: 1
        }
    );
    assert_ne!(first.pid, second.pid);
    assert!(is_alive(second.pid, second.start_time));
    inst.stop().await.unwrap();
}

#[tokio::test]
async fn repeated_crashes_back_off_then_crash_loop() {
    let (_dir, spec) = setup(&["sh", "-c", "echo run >> runs; exit 3"]);
    let backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(200),
        crash_loop_after: 3,
        window: Duration::from_secs(60),
    };
    let started = Instant::now();
    let inst = Instance::spawn(spec.clone(), backoff).await.unwrap();
    let state = wait_state(&mut inst.state(), |s| {
        matches!(s, InstanceState::CrashLoop { .. })
    })
    .await;
    // Delays 100 + 200 + 200 (capped) ms before restarts 1..3.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        state,
        InstanceState::CrashLoop {
            restarts: 3,
            last_status: "exited with code 3".to_owned()
        }
    );
    assert_eq!(
        state.to_string(),
        "crash loop after 3 restarts (last: exited with code 3)"
    );
    let runs = fs::read_to_string(spec.release_dir.join("runs")).unwrap();
    assert_eq!(runs.lines().count(), 4);
    inst.stop().await.unwrap();
    assert_eq!(*inst.state().borrow(), InstanceState::Stopped);
}

#[tokio::test]
async fn stop_during_backoff_cancels_the_restart() {
    let (_dir, spec) = setup(&["sh", "-c", "echo run >> runs; exit 1"]);
    let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
    wait_state(&mut inst.state(), |s| {
        matches!(s, InstanceState::Exited { .. })
    })
    .await;
    inst.stop().await.unwrap();
    assert_eq!(*inst.state().borrow(), InstanceState::Stopped);
    assert_eq!(
        fs::read_to_string(spec.release_dir.join("runs")).unwrap(),
        "run\n"
    );
}

#[tokio::test]
async fn dropping_every_handle_leaves_the_process_running() {
    let (_dir, spec) = setup(&["sleep", "300"]);
    let inst = Instance::spawn(spec, slow_backoff()).await.unwrap();
    let record = inst.record();
    let mut rx = inst.state();
    drop(inst);
    // The monitor task ends (and drops the state sender) without touching the process.
    tokio::time::timeout(WAIT, async { while rx.changed().await.is_ok() {} })
        .await
        .unwrap();
    assert!(is_alive(record.pid, record.start_time));
    kill_group(record.pid);
}

#[tokio::test]
async fn detach_leaves_the_process_running_and_adopt_takes_it_back() {
    let (_dir, spec) = setup(&["sleep", "300"]);
    let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
    let record = inst.record();
    inst.detach();
    let err = inst.stop().await.unwrap_err();
    assert!(matches!(err, SupervisorError::Detached { .. }), "{err}");
    assert!(is_alive(record.pid, record.start_time));

    let wrong = InstanceRecord {
        start_time: record.start_time + 1,
        ..record.clone()
    };
    assert!(
        Instance::adopt(spec.clone(), &wrong, slow_backoff())
            .unwrap()
            .is_none()
    );
    let adopted = Instance::adopt(spec, &record, slow_backoff())
        .unwrap()
        .unwrap();
    assert_eq!(adopted.record(), record);
    assert_eq!(
        *adopted.state().borrow(),
        InstanceState::Running {
            pid: record.pid,
            restarts: 0
        }
    );
    adopted.stop().await.unwrap();
    assert!(!pid_alive(record.pid));
    assert_eq!(*adopted.state().borrow(), InstanceState::Stopped);
}

#[tokio::test]
async fn adopt_of_a_gone_pid_is_none() {
    let (_dir, spec) = setup(&["true"]);
    let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
    let record = inst.record();
    wait_state(&mut inst.state(), |s| {
        matches!(s, InstanceState::Exited { .. })
    })
    .await;
    inst.stop().await.unwrap();
    wait_until("reaped", || !pid_alive(record.pid)).await;
    assert!(
        Instance::adopt(spec, &record, slow_backoff())
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn adopted_instance_that_dies_is_noticed_and_restarted() {
    let (_dir, spec) = setup(&["sleep", "300"]);
    let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
    let record = inst.record();
    inst.detach();
    let backoff = Backoff {
        initial: Duration::from_millis(50),
        ..slow_backoff()
    };
    let adopted = Instance::adopt(spec, &record, backoff).unwrap().unwrap();
    let mut rx = adopted.state();
    kill(Pid::from_raw(record.pid as i32), Signal::SIGKILL).unwrap();
    let state = wait_state(&mut rx, |s| {
        matches!(s, InstanceState::Running { restarts: 1, .. })
    })
    .await;
    let new = adopted.record();
    assert_eq!(
        state,
        InstanceState::Running {
            pid: new.pid,
            restarts: 1
        }
    );
    assert_ne!(new.pid, record.pid);
    adopted.stop().await.unwrap();
}

#[tokio::test]
async fn adopt_outside_a_runtime_is_an_error() {
    let (_dir, spec) = setup(&["sleep", "300"]);
    let me = std::process::id();
    let record = InstanceRecord {
        slot: crate::state::Slot::Blue,
        index: 0,
        pid: me,
        start_time: read_stat(me).unwrap().unwrap().start_time,
        port: 18000,
        version: spec.version.clone(),
    };
    let result = std::thread::spawn(move || Instance::adopt(spec, &record, slow_backoff()))
        .join()
        .unwrap();
    assert!(matches!(result, Err(SupervisorError::NoRuntime { .. })));
}

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

fn nobody() -> RunAs {
    RunAs::User {
        name: "nobody".to_owned(),
        uid: 65534,
        gid: 65534,
        groups: vec![65534],
        by: crate::config::SwitchedBy::Root,
    }
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
