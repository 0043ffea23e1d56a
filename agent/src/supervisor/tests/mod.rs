//! Supervisor tests with real processes: the shared set-up here, the cases by subject in
//! `starting` (what an instance starts with), `lifecycle` (stop, crash, restart, adopt) and
//! `identity` (the app user, capabilities, who may execute what).

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
        limits: None,
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

fn nobody() -> RunAs {
    RunAs::User {
        name: "nobody".to_owned(),
        uid: 65534,
        gid: 65534,
        groups: vec![65534],
        by: crate::config::SwitchedBy::Root,
    }
}

mod identity;
mod lifecycle;
mod starting;
