//! What `status` shows: apps, their instances and router backends, recent jobs.

use super::Executor;
use crate::artifact::Releases;
use crate::error::lock;
use crate::job::{Action, AppName, JobId, StrategyKind};
use crate::progress::Outcome;
use crate::supervisor::{Instance, InstanceState};
use crate::traffic::Router;

/// A finished job, for `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobSummary {
    /// Job id.
    pub job_id: JobId,
    /// App.
    pub app: AppName,
    /// Action.
    pub action: Action,
    /// Release version, if the job named one.
    pub version: Option<semver::Version>,
    /// How it ended.
    pub outcome: Outcome,
    /// Why.
    pub reason: String,
    /// When, Unix ms.
    pub finished_ms: i64,
}

/// A point-in-time view of one app, for `status`.
#[derive(Debug, Clone, PartialEq)]
pub struct AppStatus {
    /// The app.
    pub name: AppName,
    /// The current release.
    pub current: Option<semver::Version>,
    /// The release before it.
    pub previous: Option<semver::Version>,
    /// The job running on it.
    pub active_job: Option<JobId>,
    /// `(index, pid, port, version, state, restarts)` of each instance.
    pub instances: Vec<InstanceStatus>,
    /// Releases on disk.
    pub releases_on_disk: Vec<semver::Version>,
    /// The strategy the current release was deployed with.
    pub strategy: Option<StrategyKind>,
    /// The serving slot, for apps with a router.
    pub active_slot: Option<crate::state::Slot>,
    /// What the rollout in progress is doing; empty when none runs.
    pub rollout: String,
    /// The app's public address (front door or nginx).
    pub listen: Option<std::net::SocketAddr>,
    /// The router's backends with their weights and counters.
    pub backends: Vec<BackendStatus>,
    /// The release notes of the current release, as its signed job carried them.
    pub notes: String,
    /// The golden signals per cohort.
    pub signals: Vec<super::signals::CohortSignals>,
}

/// One backend of the app's router, for status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendStatus {
    /// Its id in the route table.
    pub id: String,
    /// Where it listens.
    pub addr: String,
    /// Its weight.
    pub weight: u32,
    /// Draining (no new connections).
    pub draining: bool,
    /// Counters from the front door (zero for nginx, which has none).
    pub active: u64,
    /// Connections since the front door started.
    pub total: u64,
    /// Failed connection attempts.
    pub connect_errors: u64,
    /// Bytes client → backend.
    pub bytes_in: u64,
    /// Bytes backend → client.
    pub bytes_out: u64,
    /// The cohort its HTTP counters are summed into (`stable`, `canary`, `preview`).
    pub cohort: String,
}

/// One instance in a status answer.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceStatus {
    /// Index.
    pub index: u32,
    /// Process id.
    pub pid: u32,
    /// Port.
    pub port: u16,
    /// Release.
    pub version: semver::Version,
    /// "running", "crashed", "crash-loop", "stopped", "starting".
    pub state: String,
    /// Restarts so far.
    pub restarts: u32,
    /// Its slot, for apps with a router.
    pub slot: Option<crate::state::Slot>,
}

impl Executor {
    /// What runs where, for `status`.
    pub async fn status(&self, only: Option<&AppName>) -> Vec<AppStatus> {
        let mut out = Vec::new();
        for (name, shared) in &self.inner.shared {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let Some(policy) = self.inner.config.policy.apps.get(name) else {
                continue;
            };
            let active_job = lock(&self.inner.busy).get(name).cloned();
            let running = active_job.is_some();
            // From the last persisted snapshot: a running job holds the app's lock.
            let (state, instances) = lock(&shared.snapshot).clone();
            let has_router = policy.router.is_some();
            let instances: Vec<InstanceStatus> = instances
                .iter()
                .map(|i| instance_status(i, has_router))
                .collect();
            let members = members(shared.router.as_deref(), &instances);
            let releases_on_disk =
                Releases::new(&self.inner.config.data_dir.join("apps").join(name.as_str()))
                    .on_disk()
                    .unwrap_or_default();
            out.push(AppStatus {
                name: name.clone(),
                current: state.current.clone(),
                previous: state.previous.clone(),
                active_job,
                instances,
                releases_on_disk,
                strategy: state
                    .current
                    .as_ref()
                    .and_then(|v| state.spec_of(v))
                    .map(|r| r.strategy),
                notes: state
                    .current
                    .as_ref()
                    .and_then(|v| state.spec_of(v))
                    .map(|r| r.notes.clone())
                    .unwrap_or_default(),
                active_slot: has_router.then_some(state.active_slot),
                // Only while a job runs: the text of a rollout that ended is history.
                rollout: if running {
                    lock(&shared.rollout).clone()
                } else {
                    String::new()
                },
                listen: policy.listen,
                signals: super::signals::signals_of(
                    &self.inner.signals,
                    name,
                    shared
                        .router
                        .as_deref()
                        .and_then(|r| r.stats().ok())
                        .as_ref(),
                    &members,
                    // The front door stamps its start with the wall clock.
                    u64::try_from(crate::clock::now_ms()).unwrap_or(0),
                ),
                // A stopped app routes nothing, whatever its last table says.
                backends: if state.stopped {
                    Vec::new()
                } else {
                    backends(shared.router.as_deref())
                },
            });
        }
        out
    }

    /// Each app's front door counters (apps whose router keeps none, or whose stats cannot be
    /// read now, are left out), for `/metrics`.
    pub fn router_stats(&self) -> Vec<(AppName, crate::traffic::Stats)> {
        self.inner
            .shared
            .iter()
            .filter_map(|(name, shared)| {
                let stats = shared.router.as_deref()?.stats().ok()?;
                Some((name.clone(), stats))
            })
            .collect()
    }

    /// Recently finished jobs, newest first.
    pub fn recent_jobs(&self) -> Vec<JobSummary> {
        lock(&self.inner.recent).iter().cloned().collect()
    }
}

/// The running instances with their cohort in the router's current table (`stable` when it
/// names none, or without a router).
fn members(
    router: Option<&dyn Router>,
    instances: &[InstanceStatus],
) -> Vec<super::signals::Member> {
    let table = router.and_then(|r| r.current().ok().flatten());
    instances
        .iter()
        .filter(|i| i.pid != 0 && i.state != "stopped")
        .map(|i| super::signals::Member {
            pid: i.pid,
            cohort: table
                .as_ref()
                .and_then(|t| t.backends.iter().find(|b| b.addr.port() == i.port))
                .and_then(|b| b.cohort.clone())
                .unwrap_or_else(|| crate::strategy::shift::STABLE.to_owned()),
        })
        .collect()
}

/// The router's current table joined with its counters.
fn backends(router: Option<&dyn Router>) -> Vec<BackendStatus> {
    let Some(router) = router else {
        return Vec::new();
    };
    let Ok(Some(table)) = router.current() else {
        return Vec::new();
    };
    let stats = router.stats().ok();
    table
        .backends
        .iter()
        .map(|b| {
            let counters = stats
                .as_ref()
                .and_then(|s| s.backends.get(&b.id))
                .cloned()
                .unwrap_or_default();
            BackendStatus {
                id: b.id.clone(),
                addr: b.addr.to_string(),
                weight: b.weight,
                draining: b.draining,
                active: counters.active,
                total: counters.total,
                connect_errors: counters.connect_errors,
                bytes_in: counters.bytes_in,
                bytes_out: counters.bytes_out,
                cohort: b.cohort().to_owned(),
            }
        })
        .collect()
}

fn instance_status(instance: &Instance, has_router: bool) -> InstanceStatus {
    let record = instance.record();
    let (state, restarts) = match &*instance.state().borrow() {
        InstanceState::Starting => ("starting".to_owned(), 0),
        InstanceState::Running { restarts, .. } => ("running".to_owned(), *restarts),
        InstanceState::Exited { restarts, .. } => ("crashed".to_owned(), *restarts),
        InstanceState::CrashLoop { restarts, .. } => ("crash-loop".to_owned(), *restarts),
        InstanceState::Stopped => ("stopped".to_owned(), 0),
    };
    InstanceStatus {
        index: record.index,
        pid: record.pid,
        port: record.port,
        version: record.version,
        state,
        restarts,
        slot: has_router.then_some(record.slot),
    }
}
