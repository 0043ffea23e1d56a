//! The agent's read-only deploy dashboard, served on the metrics listener (`[metrics] listen`,
//! loopback by default) next to `/metrics`: one page (`GET /dashboard`, its script and style
//! built into the binary) showing per app the error rate, p95 latency, CPU and memory per
//! cohort over time with the deploy events on the same axis, and the audit tail.
//!
//! [`history`] holds the bounded samples, [`sampler`] takes one a second, [`audit_tail`]
//! keeps the public fields of the last audit entries and the deploy events among them, and
//! [`http`] answers the page and its JSON.

pub mod audit_tail;
pub mod history;
pub mod http;
pub mod sampler;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::{AuditError, AuditLog};
use crate::executor::Executor;
use audit_tail::{AuditTail, TAIL_LEN};
use history::{History, Sample};

/// One app as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppSummary {
    /// The app.
    pub name: String,
    /// The current release.
    pub current: Option<String>,
    /// The release before it.
    pub previous: Option<String>,
    /// The job running on it.
    pub active_job: Option<String>,
    /// The strategy the current release was deployed with.
    pub strategy: Option<String>,
    /// What the rollout in progress is doing; empty when none runs.
    pub rollout: String,
    /// The current release's notes, as its signed job carried them; empty without.
    pub notes: String,
    /// The cohorts it has samples for.
    pub cohorts: Vec<String>,
    /// Its instances.
    pub instances: Vec<InstanceSummary>,
}

/// One instance as the dashboard lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InstanceSummary {
    /// Index.
    pub index: u32,
    /// Release.
    pub version: String,
    /// `running`, `starting`, `crashed`, `crash-loop` or `stopped`.
    pub state: String,
    /// The cohort it serves in.
    pub cohort: String,
}

/// What the dashboard shows, shared by the sampler, the audit follower and the HTTP
/// handler. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Dashboard {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    apps: Mutex<Vec<AppSummary>>,
    history: Mutex<History>,
    audit: Mutex<AuditTail>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Dashboard {
    /// Starts sampling `executor` and following `audit` until `stop`; the task ends with
    /// both.
    pub fn start(
        executor: Executor,
        audit: &AuditLog,
        stop: CancellationToken,
    ) -> (Dashboard, JoinHandle<()>) {
        let dashboard = Dashboard::default();
        // Subscribed before the start-up read, so no line falls between the two.
        let lines = audit.subscribe();
        let dir = audit.dir().to_owned();
        let sampling = sampler::run(executor, dashboard.clone(), stop.clone());
        let following = follow_audit(dashboard.clone(), lines, dir, stop);
        let task = tokio::spawn(async move {
            tokio::join!(sampling, following);
        });
        (dashboard, task)
    }

    /// The sampler's round: the apps now and a sample per app and cohort.
    fn record(&self, apps: Vec<AppSummary>, samples: Vec<(String, String, Sample)>) {
        let names: Vec<String> = apps.iter().map(|a| a.name.clone()).collect();
        *lock(&self.inner.apps) = apps;
        let mut history = lock(&self.inner.history);
        for (app, cohort, sample) in samples {
            history.push(&app, &cohort, sample);
        }
        history.retain_apps(&names);
    }

    /// Takes in audit lines.
    fn record_audit(&self, lines: impl IntoIterator<Item = (u64, String)>) {
        let mut tail = lock(&self.inner.audit);
        for (seq, line) in lines {
            tail.record(seq, &line);
        }
    }
}

/// The last [`TAIL_LEN`] lines at or after `from_seq`, read one at a time (the log is never
/// held whole).
fn last_lines(dir: &std::path::Path, from_seq: u64) -> Result<Vec<(u64, String)>, AuditError> {
    let mut kept = VecDeque::with_capacity(TAIL_LEN);
    crate::audit::scan(dir, from_seq, |seq, line| {
        if kept.len() == TAIL_LEN {
            kept.pop_front();
        }
        kept.push_back((seq, String::from_utf8_lossy(line).into_owned()));
        Ok(())
    })?;
    Ok(kept.into())
}

/// Reads the log's tail from `from_seq` on a blocking thread into `dashboard`.
async fn catch_up(dashboard: &Dashboard, dir: &std::path::Path, from_seq: u64) {
    let dir: PathBuf = dir.to_owned();
    match tokio::task::spawn_blocking(move || last_lines(&dir, from_seq)).await {
        Ok(Ok(lines)) => dashboard.record_audit(lines),
        Ok(Err(e)) => tracing::warn!("the dashboard cannot read the audit log: {e}"),
        Err(e) => tracing::warn!("the dashboard's audit read failed: {e}"),
    }
}

/// The audit tail: what the log holds at start, then every line as it is made durable.
async fn follow_audit(
    dashboard: Dashboard,
    mut lines: tokio::sync::broadcast::Receiver<Arc<(u64, String)>>,
    dir: PathBuf,
    stop: CancellationToken,
) {
    catch_up(&dashboard, &dir, 0).await;
    loop {
        let received = tokio::select! {
            () = stop.cancelled() => return,
            received = lines.recv() => received,
        };
        match received {
            Ok(line) => dashboard.record_audit([(line.0, line.1.clone())]),
            Err(RecvError::Lagged(_)) => {
                let from = lock(&dashboard.inner.audit).last_seq() + 1;
                catch_up(&dashboard, &dir, from).await;
            }
            Err(RecvError::Closed) => return,
        }
    }
}
