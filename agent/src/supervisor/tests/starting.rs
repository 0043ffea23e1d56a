//! What an instance starts with: environment, directory, file descriptors, log, and spawn
//! errors.

use super::*;

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
    // stdin is /dev/null, stdout and stderr the log; nothing else of the agent leaks in. The
    // kernel names the process `sleep` a moment before it closes the shell's close-on-exec
    // descriptors, so the list is awaited (a leaked descriptor never goes and fails the wait).
    let fds = || {
        let mut fds: Vec<String> = fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        fds.sort();
        fds
    };
    wait_until("only the standard descriptors", || fds() == ["0", "1", "2"]).await;
    assert_eq!(fds(), ["0", "1", "2"]);
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

/// The line of `/proc/PID/limits` for `name`, as (soft, hard).
fn proc_limit(pid: u32, name: &str) -> (String, String) {
    let text = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    let mut cells = line[name.len()..].split_whitespace();
    (
        cells.next().unwrap().to_owned(),
        cells.next().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn j9_an_instance_starts_with_its_apps_limits_lowered_to_the_agents_own() {
    let (_dir, mut spec) = setup(&["/bin/sleep", "300"]);
    spec.app = AppName::new("limited").unwrap();
    let (_, agent_nofile) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    spec.limits = Some(limits::InstanceLimits {
        max_open_files: 321,
        max_processes: 77,
        max_memory: Some(3 << 30),
    });
    let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
    let pid = inst.record().pid;
    assert_eq!(
        proc_limit(pid, "Max open files"),
        ("321".to_owned(), "321".to_owned())
    );
    assert_eq!(
        proc_limit(pid, "Max processes"),
        ("77".to_owned(), "77".to_owned())
    );
    let bytes = (3u64 << 30).to_string();
    assert_eq!(proc_limit(pid, "Max address space"), (bytes.clone(), bytes));
    inst.stop().await.unwrap();

    // Above the agent's own hard limit: lowered to it, and the instance still starts.
    spec.limits = Some(limits::InstanceLimits {
        max_open_files: u64::MAX,
        max_processes: 77,
        max_memory: None,
    });
    let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
    let pid = inst.record().pid;
    let hard = agent_nofile.to_string();
    assert_eq!(proc_limit(pid, "Max open files"), (hard.clone(), hard));
    let (_, agent_as) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_AS).unwrap();
    assert_eq!(
        agent_as,
        nix::sys::resource::RLIM_INFINITY,
        "the test runs without one"
    );
    assert_eq!(
        proc_limit(pid, "Max address space"),
        ("unlimited".to_owned(), "unlimited".to_owned()),
        "no max_memory: none of its own"
    );
    inst.stop().await.unwrap();
}

#[tokio::test]
async fn j9_a_front_door_and_an_unregistered_app_keep_the_agents_limits() {
    let (_dir, mut spec) = setup(&["/bin/sleep", "300"]);
    spec.app = AppName::new("front-door-limits").unwrap();
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let agents = (soft.to_string(), hard.to_string());
    let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
    assert_eq!(proc_limit(inst.record().pid, "Max open files"), agents);
    inst.stop().await.unwrap();
    spec.limits = Some(limits::InstanceLimits {
        max_open_files: 99,
        max_processes: 99,
        max_memory: None,
    });
    spec.role = Role::FrontDoor;
    let inst = Instance::spawn(spec.clone(), slow_backoff()).await.unwrap();
    assert_eq!(proc_limit(inst.record().pid, "Max open files"), agents);
    inst.stop().await.unwrap();
}
