//! The task that watches one instance: waits for exit, restarts with backoff, stops, detaches.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep, sleep_until};

use super::adopt::{POLL_INTERVAL, is_alive};
use super::backoff::RestartHistory;
use super::{InstanceState, Shared, SupervisorError, spawn, stop};

/// Requests from [`super::Instance`] handles.
#[derive(Debug)]
pub(super) enum Control {
    /// Stop the instance and answer when it is gone.
    Stop(oneshot::Sender<Result<(), SupervisorError>>),
    /// Stop supervising; leave the process running.
    Detach,
}

enum Kind {
    /// Our child: `wait()` gives its exit status.
    Child(tokio::process::Child),
    /// Not our child (adopted after an agent restart): polled through /proc.
    Adopted,
}

/// One running (or exited, not yet noticed) process of an instance.
pub(super) struct Proc {
    kind: Kind,
    pub(super) pid: u32,
    pub(super) start_time: u64,
    pub(super) pgid: i32,
    exited: Option<String>,
}

/// A readable exit status of a process: "exited with code 1", "killed by signal 9 (SIGKILL)".
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with code {code}");
    }
    match status.signal() {
        Some(sig) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by signal {sig} ({})", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        None => format!("ended ({status})"),
    }
}

impl Proc {
    pub(super) fn child(spawned: spawn::Spawned) -> Self {
        let pgid = i32::try_from(spawned.pid).unwrap_or(i32::MAX);
        Self {
            kind: Kind::Child(spawned.child),
            pid: spawned.pid,
            start_time: spawned.start_time,
            pgid,
            exited: None,
        }
    }

    pub(super) fn adopted(pid: u32, start_time: u64, pgid: i32) -> Self {
        Self {
            kind: Kind::Adopted,
            pid,
            start_time,
            pgid,
            exited: None,
        }
    }

    /// Does `pid` still name this process (so signalling its group is safe)?
    pub(super) fn check_identity(&self) -> bool {
        match self.kind {
            // Not reaped yet: the pid cannot have been reused.
            Kind::Child(_) => self.exited.is_none(),
            Kind::Adopted => self.exited.is_none() && is_alive(self.pid, self.start_time),
        }
    }

    /// Waits for the process to exit and describes how. Cancel safe and idempotent.
    pub(super) async fn wait(&mut self) -> String {
        if let Some(status) = &self.exited {
            return status.clone();
        }
        let status = match &mut self.kind {
            Kind::Child(child) => match child.wait().await {
                Ok(status) => describe(status),
                Err(e) => {
                    poll_until_gone(self.pid, self.start_time).await;
                    format!("exited (status unknown: wait failed: {e})")
                }
            },
            Kind::Adopted => {
                poll_until_gone(self.pid, self.start_time).await;
                "exited (status unknown: adopted process)".to_owned()
            }
        };
        self.exited = Some(status.clone());
        status
    }
}

async fn poll_until_gone(pid: u32, start_time: u64) {
    while is_alive(pid, start_time) {
        sleep(POLL_INTERVAL).await;
    }
}

enum Phase {
    Running(Box<Proc>),
    BackingOff { until: Instant },
    Idle,
}

/// Supervises the instance until it is detached or every handle is dropped.
pub(super) async fn run(
    shared: Arc<Shared>,
    proc: Proc,
    mut control: mpsc::UnboundedReceiver<Control>,
) {
    let mut history = RestartHistory::default();
    let mut restarts: u32 = 0;
    let mut phase = Phase::Running(Box::new(proc));
    loop {
        phase = match phase {
            Phase::Running(mut proc) => tokio::select! {
                status = proc.wait() => {
                    tracing::warn!(app = %shared.spec.app, index = shared.spec.index, pid = proc.pid, %status, "instance exited");
                    shared.publish(InstanceState::Exited { status: status.clone(), restarts });
                    after_exit(&shared, &mut history, restarts, status)
                }
                cmd = control.recv() => match cmd {
                    Some(Control::Stop(reply)) => {
                        let result = stop::terminate(&mut proc, shared.spec.stop_timeout).await;
                        if result.is_ok() {
                            shared.publish(InstanceState::Stopped);
                            let _ = reply.send(Ok(()));
                            Phase::Idle
                        } else {
                            let _ = reply.send(result.map(drop));
                            Phase::Running(proc)
                        }
                    }
                    // Dropping `proc` leaves the process running; tokio reaps it if it exits.
                    Some(Control::Detach) | None => return,
                },
            },
            Phase::BackingOff { until } => tokio::select! {
                () = sleep_until(until) => {
                    history.push(Instant::now());
                    restarts = restarts.saturating_add(1);
                    match spawn::spawn(&shared.spec) {
                        Ok(spawned) => {
                            let proc = Proc::child(spawned);
                            shared.set_current(proc.pid, proc.start_time);
                            shared.publish(InstanceState::Running { pid: proc.pid, restarts });
                            Phase::Running(Box::new(proc))
                        }
                        Err(e) => {
                            let status = format!("restart failed: {}", crate::error::reason(&e));
                            tracing::warn!(app = %shared.spec.app, index = shared.spec.index, %status, "instance restart failed");
                            shared.publish(InstanceState::Exited { status: status.clone(), restarts });
                            after_exit(&shared, &mut history, restarts, status)
                        }
                    }
                }
                cmd = control.recv() => match cmd {
                    Some(Control::Stop(reply)) => {
                        shared.publish(InstanceState::Stopped);
                        let _ = reply.send(Ok(()));
                        Phase::Idle
                    }
                    Some(Control::Detach) | None => return,
                },
            },
            Phase::Idle => match control.recv().await {
                Some(Control::Stop(reply)) => {
                    if matches!(*shared.state.borrow(), InstanceState::CrashLoop { .. }) {
                        shared.publish(InstanceState::Stopped);
                    }
                    let _ = reply.send(Ok(()));
                    Phase::Idle
                }
                Some(Control::Detach) | None => return,
            },
        };
    }
}

/// After an exit: back off and restart, or give up when the restarts within the window are
/// used up.
fn after_exit(
    shared: &Shared,
    history: &mut RestartHistory,
    restarts: u32,
    status: String,
) -> Phase {
    let backoff = shared.backoff;
    let recent = history.recent(Instant::now(), backoff.window);
    if recent >= backoff.crash_loop_after {
        tracing::error!(app = %shared.spec.app, index = shared.spec.index, restarts, %status, "instance is crash-looping; not restarting");
        shared.publish(InstanceState::CrashLoop {
            restarts,
            last_status: status,
        });
        return Phase::Idle;
    }
    Phase::BackingOff {
        until: Instant::now() + backoff.delay(recent),
    }
}
