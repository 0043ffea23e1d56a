//! Stopping an instance: SIGTERM to its process group, SIGKILL after the stop timeout.

use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::time::{sleep, timeout};

use super::SupervisorError;
use super::adopt::group_alive;
use super::monitor::Proc;

/// How long a group may take to disappear after SIGKILL before stop reports an error.
const KILL_GRACE: Duration = Duration::from_secs(5);
/// How often the process group is checked for remaining members.
const GROUP_POLL: Duration = Duration::from_millis(50);

/// Sends `signal` to process group `pgid`; a group that is already gone is not an error.
fn signal_group(pgid: i32, signal: Signal) -> Result<(), SupervisorError> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(SupervisorError::Signal {
            pgid,
            signal: signal.as_str(),
            source,
        }),
    }
}

/// Waits until the leader has exited (reaping it if it is our child) and no live member of
/// its group is left; returns the leader's exit status.
async fn group_gone(proc: &mut Proc) -> String {
    let status = proc.wait().await;
    while group_alive(proc.pgid) {
        sleep(GROUP_POLL).await;
    }
    status
}

/// Stops `proc` and its whole process group: SIGTERM, then SIGKILL if anything of the group is
/// still alive after `stop_timeout`. Returns the leader's exit status.
pub(super) async fn terminate(
    proc: &mut Proc,
    stop_timeout: Duration,
) -> Result<String, SupervisorError> {
    if !proc.check_identity() {
        // The pid no longer names our process: never signal a stranger's group.
        return Ok(proc.wait().await);
    }
    signal_group(proc.pgid, Signal::SIGTERM)?;
    if let Ok(status) = timeout(stop_timeout, group_gone(proc)).await {
        return Ok(status);
    }
    tracing::warn!(
        pid = proc.pid,
        ?stop_timeout,
        "instance ignored SIGTERM; sending SIGKILL"
    );
    signal_group(proc.pgid, Signal::SIGKILL)?;
    timeout(KILL_GRACE, group_gone(proc))
        .await
        .map_err(|_| SupervisorError::StillRunning {
            pid: proc.pid,
            pgid: proc.pgid,
        })
}
