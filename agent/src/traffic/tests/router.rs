//! The agent's side of the front door protocol: stale tables, acknowledgements, signals.

use super::*;

// ---------------------------------------------------------------------------------------------
// The agent's side.

#[tokio::test]
async fn the_router_refuses_stale_and_invalid_tables_and_reports_its_state() {
    let a = backend("a").await;
    let door = Door::start(&table(4, &[("a", a.addr, 1, false)])).await;
    let router = door.router();
    assert_eq!(router.name(), "front-door");
    assert_eq!(router.current().unwrap().unwrap().generation, 4);
    let err = router
        .apply(table(3, &[("a", a.addr, 1, false)]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TrafficError::StaleGeneration {
            requested: 3,
            current: 4,
            ..
        }
    ));
    let err = router
        .apply(table(5, &[("a", a.addr, 0, false)]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TrafficError::InvalidRoutes {
            problem: RouteProblem::NoWeight,
            ..
        }
    ));
    // Reapplying the table in force is idempotent.
    router
        .apply(table(4, &[("a", a.addr, 1, false)]))
        .await
        .unwrap();
    assert_eq!(door.stats().generation, 4);
}

#[tokio::test]
async fn without_a_running_front_door_apply_times_out_with_what_it_saw() {
    let dir = tempfile::tempdir().unwrap();
    let router = FrontDoor::new(
        dir.path().join("routes.json"),
        dir.path().join("stats.json"),
        ReloadVia::signal(|| None),
    )
    .with_ack_timeout(Duration::from_millis(100));
    assert!(router.current().unwrap().is_none());
    assert!(matches!(
        router.stats().unwrap_err(),
        TrafficError::NoStats { .. }
    ));
    let err = router
        .apply(table(1, &[("a", lo(18000), 1, false)]))
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        TrafficError::NotAcknowledged { generation: 1, .. }
    ));
    assert!(err.to_string().contains("not running"), "{err}");
    // The table was written all the same: a front door started now picks it up.
    assert_eq!(router.current().unwrap().unwrap().generation, 1);
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(router.routes_path())
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o644);
}

#[tokio::test]
async fn sighup_goes_only_to_the_process_that_was_started() {
    // Started the way instances are, so SIGHUP has its default action even when this test
    // runs under `nohup`.
    let cwd = std::env::current_dir().unwrap();
    let run_as = crate::config::RunAs::CurrentUser {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    };
    let sleep = ["sleep".to_owned(), "30".to_owned()];
    let mut child = tokio::process::Command::from(
        crate::supervisor::command(&cwd, &sleep, &Default::default(), &run_as).unwrap(),
    )
    .kill_on_drop(true)
    .spawn()
    .unwrap();
    let pid = child.id().unwrap();
    let start_time = crate::traffic::router::start_time_of(pid).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let make = |start_time| {
        FrontDoor::new(
            dir.path().join("routes.json"),
            dir.path().join("stats.json"),
            ReloadVia::signal(move || Some(ProcessId { pid, start_time })),
        )
        .with_ack_timeout(Duration::from_millis(200))
    };
    // A recorded start time that does not match: the pid was reused, never signal it.
    // (Waiting for the stats file comes first, so fake one naming the pid.)
    let stats = Stats {
        pid,
        generation: 0,
        ..Stats::default()
    };
    stats.store(&dir.path().join("stats.json")).unwrap();
    let err = make(start_time + 1)
        .apply(table(1, &[("a", lo(18000), 1, false)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TrafficError::NotAcknowledged { .. }),
        "{err:?}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "a stranger was signalled"
    );
    // The right start time: SIGHUP is delivered (and kills `sleep`, which has no handler).
    let err = make(start_time)
        .apply(table(2, &[("a", lo(18000), 1, false)]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TrafficError::NotAcknowledged { .. }),
        "{err:?}"
    );
    let status = tokio::time::timeout(DEADLINE, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(1)
    );
}
