//! Telling systemd how the agent is doing (`Type=notify`): `READY=1` once the audit log is
//! open, state is recovered and the listener is bound; `STOPPING=1` when the drain starts;
//! and, with `WatchdogSec=`, a `WATCHDOG=1` ping at half the interval from the async runtime,
//! so a wedged runtime gets the agent restarted (its instances keep serving).
//!
//! Without `NOTIFY_SOCKET` (not run by systemd) every call does nothing. A failed send is
//! logged, never fatal: the agent works the same without a service manager listening.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

fn send(what: &str, states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("cannot tell the service manager {what}: {e}");
    }
}

/// `READY=1` with a status line naming the address.
pub fn ready(status: &str) {
    send(
        "the agent is ready",
        &[NotifyState::Ready, NotifyState::Status(status)],
    );
}

/// `STOPPING=1` with a status line saying why.
pub fn stopping(status: &str) {
    send(
        "the agent is stopping",
        &[NotifyState::Stopping, NotifyState::Status(status)],
    );
}

/// Pings the watchdog at half its interval until `stop` is cancelled; `None` when the service
/// manager asked for no watchdog.
pub fn spawn_watchdog(stop: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
    let interval = sd_notify::watchdog_enabled()?;
    let period = (interval / 2).max(Duration::from_millis(10));
    tracing::info!("watchdog enabled: pinging every {period:?}");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => send("the agent is alive", &[NotifyState::Watchdog]),
            }
        }
    }))
}
