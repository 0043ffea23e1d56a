//! Stop, crash and restart with back-off, detach and adopt.

use super::*;

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
