//! One shutdown source for the whole agent: SIGTERM or SIGINT cancel a token that every task
//! watches; a task tracker lets `run` wait, with a bound, for in-flight work to persist itself.

use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long in-flight work gets to reach a safe point after the shutdown signal.
pub const GRACE: Duration = Duration::from_secs(10);

/// The agent's shutdown trigger and the tasks that must finish before it exits.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    /// A new, untriggered shutdown.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token tasks select on.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Tracks tasks that must finish (or persist their state) before exit.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Triggers shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// Installs the SIGTERM and SIGINT handlers now, so a signal that arrives at any point
    /// after this (during start-up included) is a clean shutdown rather than the default
    /// death. Await [`Signals::wait`] to act on it.
    ///
    /// # Errors
    ///
    /// When signal handlers cannot be installed.
    pub fn install_signals(&self) -> std::io::Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            token: self.token.clone(),
        })
    }

    /// Waits for tracked tasks, at most `grace`. Returns false when the grace period ran out.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(grace, self.tasks.wait()).await.is_ok()
    }
}

/// Installed SIGTERM/SIGINT handlers; see [`Shutdown::install_signals`].
#[derive(Debug)]
pub struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    token: CancellationToken,
}

impl Signals {
    /// Resolves on SIGTERM or SIGINT (or when shutdown is triggered otherwise), then
    /// triggers shutdown. Returns what caused it.
    pub async fn wait(mut self) -> &'static str {
        let name = tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
            () = self.token.cancelled() => "shutdown requested",
        };
        self.token.cancel();
        name
    }
}
