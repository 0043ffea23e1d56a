//! Runs admitted jobs: one at a time per app, each through its strategy, publishing events to
//! watchers and recording every step and the outcome in the audit log.
//!
//! The executor owns the apps' runtime state (`AppRuntime`: state file, releases, live
//! instances). A job locks its app for its whole run; admission sees whether an app is busy
//! through [`AppView`] without waiting for that lock. How each job ended goes to the
//! [`Ledger`].

mod recovery;
pub mod signals;
mod status;
mod with_flags;

pub use status::{AppStatus, BackendStatus, InstanceStatus, JobSummary};
// Re-exported for the server, which streams them.
pub use crate::progress::{EventKind, JobEvent, JobHandle, Outcome};

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::app::{AppRuntime, AppShared, AppView, Control};
use crate::artifact::{ArtifactStore, Releases, UnpackLimits};
use crate::audit::{AuditLog, Entry, HeldAppend};
use crate::clock::{Clock, now_ms};
use crate::config::Config;
use crate::error::{lock, reason};
use crate::job::{Action, AppName, JobId, StrategyKind, VerifiedJob};
use crate::ledger::Ledger;
use crate::progress::Ended;
use crate::state::AppState;
use crate::strategy::{self, JobCtx};
use crate::supervisor::Backoff;

/// How long a promote or abort job waits for the rollout to take it.
const CONTROL_WAIT: Duration = Duration::from_secs(30);

/// How many finished jobs keep their full event history in memory (for `watch`).
const FINISHED_KEPT: usize = 256;

/// How many finished jobs `status` lists.
const RECENT_JOBS: usize = 32;

/// Why the executor could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// An app directory or state file could not be prepared.
    #[error("cannot prepare app {app}")]
    Prepare {
        /// The app.
        app: AppName,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Another job holds the app.
    #[error("app {app} is busy with job {job}")]
    Busy {
        /// The app.
        app: AppName,
        /// The job running on it.
        job: JobId,
    },
}

/// An app's current and previous release, kept for admission to read without the app's lock.
#[derive(Debug, Clone, Default)]
struct Versions {
    current: Option<semver::Version>,
    previous: Option<semver::Version>,
}

impl Versions {
    fn of(state: &AppState) -> Self {
        Self {
            current: state.current.clone(),
            previous: state.previous.clone(),
        }
    }
}

struct Inner {
    config: Arc<Config>,
    audit: AuditLog,
    ledger: Arc<Ledger>,
    store: Arc<ArtifactStore>,
    apps: BTreeMap<AppName, Arc<tokio::sync::Mutex<AppRuntime>>>,
    controls: BTreeMap<AppName, mpsc::Sender<Control>>,
    shared: BTreeMap<AppName, Arc<AppShared>>,
    busy: Mutex<BTreeMap<AppName, JobId>>,
    /// Each app's current and previous release, as its state last recorded them.
    current: Mutex<BTreeMap<AppName, Versions>>,
    jobs: Mutex<HashMap<JobId, Arc<JobHandle>>>,
    /// Finished jobs still in `jobs`, oldest first; older ones are answered from the ledger, so memory does not grow with every job the agent ever ran.
    finished: Mutex<VecDeque<JobId>>,
    recent: Mutex<VecDeque<JobSummary>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
    clock: Arc<dyn Clock>,
    /// What `status` shows of the golden signals ([`signals`]).
    signals: Mutex<signals::Sampler>,
    /// The apps' flag sets ([`with_flags`]).
    flags: crate::flags::Flags,
}

/// Runs jobs. Cheap to clone.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("apps", &self.inner.apps.keys())
            .finish()
    }
}

/// The restart policy for instances.
pub fn default_backoff() -> Backoff {
    Backoff {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(10),
        crash_loop_after: 5,
        window: Duration::from_secs(60),
    }
}

impl Executor {
    /// Marks the app busy with this job, so admission refuses others until it ends.
    ///
    /// # Errors
    ///
    /// [`ExecutorError::Busy`] naming the job that holds the app.
    pub fn reserve(&self, app: &AppName, job: &JobId) -> Result<(), ExecutorError> {
        let mut busy = lock(&self.inner.busy);
        if let Some(holder) = busy.get(app) {
            return Err(ExecutorError::Busy {
                app: app.clone(),
                job: holder.clone(),
            });
        }
        busy.insert(app.clone(), job.clone());
        Ok(())
    }

    /// Releases a reservation made by [`Executor::reserve`] for a job that will not run.
    pub fn release(&self, app: &AppName) {
        lock(&self.inner.busy).remove(app);
    }

    /// The handle of a job this agent run knows.
    pub fn job(&self, id: &str) -> Option<Arc<JobHandle>> {
        let id = JobId::new(id).ok()?;
        lock(&self.inner.jobs).get(&id).cloned()
    }

    /// Starts a reserved, accepted job in the background and returns its handle.
    pub fn spawn(&self, job: VerifiedJob) -> Arc<JobHandle> {
        let handle = Arc::new(JobHandle::new(job.spec.id.clone()));
        let job = Arc::new(job);
        handle.publish(EventKind::Accepted {
            job: Arc::clone(&job),
        });
        lock(&self.inner.jobs).insert(job.spec.id.clone(), Arc::clone(&handle));
        let this = self.clone();
        let h = Arc::clone(&handle);
        let span = tracing::info_span!("job", job_id = %job.spec.id, app = %job.spec.app);
        if matches!(job.spec.action, Action::Promote | Action::Abort) {
            self.inner
                .tasks
                .spawn(async move { this.run_control(job, h).await }.instrument(span));
        } else {
            self.inner
                .tasks
                .spawn(async move { this.run(job, h).await }.instrument(span));
        }
        handle
    }

    async fn run(&self, job: Arc<VerifiedJob>, handle: Arc<JobHandle>) {
        let spec = &job.spec;
        let mut stale = None;
        let (outcome, reason) = match self.inner.apps.get(&spec.app) {
            None => (
                Outcome::Failed,
                format!("app {} is not configured", spec.app),
            ),
            Some(app) => {
                let mut app = app.lock().await;
                app.state.active_job = Some(spec.id.clone());
                if let Err(e) = app.persist() {
                    tracing::error!("cannot record the active job: {e}");
                }
                let mut ctx = self.job_ctx(&job, &handle);
                // A job without a release (restart, rollback, stop) drains with the drain
                // timeout the current release was deployed with.
                ctx.drain_timeout = app
                    .state
                    .current
                    .as_ref()
                    .and_then(|v| app.state.drain_timeout_of(v));
                let (ended, shut_down) = tokio::select! {
                    r = with_flags::run(&mut app, &mut ctx, &self.inner.flags) => (r, false),
                    () = self.inner.shutdown.cancelled() => (Ended::interrupted(
                        "the agent shut down while the job ran"), true),
                };
                // Cut off by a graceful stop, the app is left as a crash would leave it: the
                // job stays active in its state, so the next start converges the app (its
                // final entry is written now, and not again then).
                if !shut_down {
                    app.state.active_job = None;
                }
                if let Err(e) = app.persist() {
                    tracing::error!("cannot persist app state: {e}");
                }
                lock(&self.inner.current).insert(spec.app.clone(), Versions::of(&app.state));
                if !shut_down {
                    stale = app.shared.stale();
                }
                (ended.outcome, ended.reason)
            }
        };
        self.finish(&job, &handle, outcome, reason).await;
        // Once the job's reservation is released: the convergence takes the app itself.
        if let Some(why) = stale {
            tracing::warn!(
                "app {} is left with a failed write ({why}); converging it in the background",
                spec.app
            );
            self.converge(
                spec.app.clone(),
                format!("converge after a failed write: {why}"),
            );
        }
    }

    fn job_ctx(&self, job: &Arc<VerifiedJob>, handle: &Arc<JobHandle>) -> JobCtx {
        JobCtx {
            job: Arc::clone(job),
            handle: Arc::clone(handle),
            audit: self.inner.audit.clone(),
            store: Arc::clone(&self.inner.store),
            unpack_limits: UnpackLimits {
                max_total_bytes: self.inner.config.limits.max_unpacked_bytes,
                max_entries: 100_000,
            },
            releases_kept: self.inner.config.limits.releases_kept,
            backoff: default_backoff(),
            clock: Arc::clone(&self.inner.clock),
            drain_timeout: None,
            canary_flag: None,
        }
    }

    /// Delivers a promote or abort job to the rollout holding its app.
    async fn run_control(&self, job: Arc<VerifiedJob>, handle: Arc<JobHandle>) {
        let spec = &job.spec;
        let (reply, answer) = oneshot::channel();
        let control = Control {
            action: spec.action,
            job_id: spec.id.clone(),
            reply,
        };
        let sent = match self.inner.controls.get(&spec.app) {
            Some(tx) => tx.try_send(control).is_ok(),
            None => false,
        };
        let (outcome, reason) = if !sent {
            (
                Outcome::Failed,
                format!(
                    "no rollout of app {} can take a {} now",
                    spec.app, spec.action
                ),
            )
        } else {
            match tokio::time::timeout(CONTROL_WAIT, answer).await {
                Ok(Ok(Ok(done))) => (Outcome::Succeeded, done),
                Ok(Ok(Err(why))) => (Outcome::Failed, why),
                Ok(Err(_)) | Err(_) => (
                    Outcome::Failed,
                    format!(
                        "the rollout of app {} did not take the {} (it is not paused at a step that waits)",
                        spec.app, spec.action
                    ),
                ),
            }
        };
        // Control jobs never reserved the app: the rollout they act on holds it.
        self.finish_inner(&job, &handle, outcome, reason, false)
            .await;
    }

    async fn finish(
        &self,
        job: &VerifiedJob,
        handle: &JobHandle,
        outcome: Outcome,
        reason: String,
    ) {
        self.finish_inner(job, handle, outcome, reason, true).await;
        let standby = match self.inner.apps.get(&job.spec.app) {
            Some(app) => app.lock().await.state.standby.is_some(),
            None => false,
        };
        if standby && outcome == Outcome::Succeeded {
            self.schedule_scale_down(job.spec.app.clone());
        }
        if outcome == Outcome::Succeeded && job.spec.action == Action::Deploy {
            self.collect_artifacts().await;
        }
    }

    /// The digests of the artifacts the kept releases of every app were unpacked from.
    pub fn kept_artifacts(&self) -> std::collections::BTreeSet<crate::job::Sha256Hex> {
        self.inner
            .shared
            .values()
            .flat_map(|shared| {
                let snapshot = lock(&shared.snapshot);
                snapshot
                    .0
                    .releases
                    .values()
                    .map(|spec| spec.artifact_sha256.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Removes artifacts that no kept release of any app uses, once they are older than
    /// `limits.unused_artifact_ttl`, and records what went (`artifacts.collected`). Run after
    /// each successful deploy, when pruning may have freed some.
    async fn collect_artifacts(&self) {
        let keep = self.kept_artifacts();
        let ttl = self.inner.config.limits.unused_artifact_ttl;
        let store = Arc::clone(&self.inner.store);
        let collected = tokio::task::spawn_blocking(move || {
            let now = std::time::SystemTime::now();
            crate::artifact::store::log_partial_collection(store.collect_partials(ttl, now));
            store.collect(&keep, ttl, now)
        })
        .await;
        let removed = match collected {
            Ok(Ok(removed)) if removed.is_empty() => return,
            Ok(Ok(removed)) => removed,
            Ok(Err(e)) => {
                tracing::warn!("cannot collect unused artifacts: {}", reason(&e));
                return;
            }
            Err(e) => {
                tracing::warn!("the artifact collection did not finish: {e}");
                return;
            }
        };
        let bytes: u64 = removed.iter().map(|(_, size)| size).sum();
        let digests: Vec<String> = removed.iter().map(|(d, _)| d.to_string()).collect();
        tracing::info!(
            "removed {} unused artifact(s), {bytes} bytes: {}",
            digests.len(),
            digests.join(", ")
        );
        let entry = Entry::new("artifacts.collected")
            .with("sha256", json!(digests))
            .with("bytes", json!(bytes));
        if let Err(e) = self.inner.audit.append(entry).await {
            tracing::error!("cannot record artifacts.collected: {}", reason(&e));
        }
    }

    async fn finish_inner(
        &self,
        job: &VerifiedJob,
        handle: &JobHandle,
        outcome: Outcome,
        reason: String,
        holds_app: bool,
    ) {
        let spec = &job.spec;
        let event = match outcome {
            Outcome::Succeeded => "job.succeeded",
            Outcome::Failed => "job.failed",
            Outcome::RolledBack => "job.rolled_back",
            Outcome::Interrupted => "job.interrupted",
        };
        let entry = Entry::new(event)
            .with("job_id", json!(spec.id))
            .with("app", json!(spec.app))
            .with("action", json!(spec.action.as_str()))
            .with("reason", json!(reason));
        // The job is over whatever the log says: when the disk is full the final entry is held
        // in memory and written, chained in order, once the log is writable again.
        match self.inner.audit.append_held(entry).await {
            Ok(HeldAppend::Written(_)) => {}
            Ok(HeldAppend::Held { cause, .. }) => {
                tracing::warn!("the end of the job is held for the audit log: {cause}");
            }
            Err(e) => tracing::error!("cannot record the end of the job in the audit log: {e}"),
        }
        let ended = Ended {
            outcome,
            reason: reason.clone(),
        };
        if let Err(e) = self.inner.ledger.finish(&spec.id, ended) {
            tracing::error!("cannot record the outcome in the replay store: {e}");
        }
        let checkpoint = match self.inner.audit.checkpoint().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!("cannot write the job's audit checkpoint: {e}");
                self.inner.audit.latest_checkpoint()
            }
        };
        let version = spec
            .release
            .as_ref()
            .map(|r| r.version.clone())
            .or(spec.target_version.clone());
        {
            let mut recent = lock(&self.inner.recent);
            recent.push_front(JobSummary {
                job_id: spec.id.clone(),
                app: spec.app.clone(),
                action: spec.action,
                version,
                outcome,
                reason: reason.clone(),
                finished_ms: now_ms(),
            });
            recent.truncate(RECENT_JOBS);
        }
        tracing::info!(outcome = outcome.as_str(), %reason, "job finished");
        crate::metrics::global().job_finished(outcome.as_str());
        if holds_app {
            lock(&self.inner.busy).remove(&spec.app);
        }
        handle.publish(EventKind::Finished {
            outcome,
            reason,
            checkpoint,
        });
        let mut finished = lock(&self.inner.finished);
        finished.push_back(spec.id.clone());
        while finished.len() > FINISHED_KEPT {
            if let Some(old) = finished.pop_front() {
                lock(&self.inner.jobs).remove(&old);
            }
        }
    }

    /// Leaves every instance running and stops supervising them (agent shutdown).
    pub async fn detach_all(&self) {
        for app in self.inner.apps.values() {
            let app = app.lock().await;
            for instance in &app.instances {
                instance.detach();
            }
        }
    }
}

impl AppView for Executor {
    fn current_version(&self, app: &AppName) -> Option<semver::Version> {
        lock(&self.inner.current)
            .get(app)
            .and_then(|v| v.current.clone())
    }

    fn previous_version(&self, app: &AppName) -> Option<semver::Version> {
        lock(&self.inner.current)
            .get(app)
            .and_then(|v| v.previous.clone())
    }

    fn has_release(&self, app: &AppName, version: &semver::Version) -> bool {
        self.inner.apps.contains_key(app)
            && Releases::new(&self.inner.config.data_dir.join("apps").join(app.as_str()))
                .is_on_disk(version)
    }

    fn busy_with(&self, app: &AppName) -> Option<JobId> {
        lock(&self.inner.busy).get(app).cloned()
    }
}

/// The strategy a job runs, for the audit entry of its acceptance.
pub fn strategy_of(job: &VerifiedJob) -> Option<StrategyKind> {
    job.spec.release.as_ref().map(|r| r.strategy)
}

/// Runs the job's strategy, first bringing the app back to its current release when an
/// earlier job left a failed route-table or state write behind (its table may still send
/// traffic to a failed canary, its state may name instances that are gone).
async fn converge_then_run(app: &mut AppRuntime, ctx: &JobCtx) -> Ended {
    if let Some(why) = app.shared.stale() {
        ctx.note("app.converging", format!("first, converge the app: {why}"))
            .await;
        let converged = strategy::converge(app, ctx).await;
        if converged.outcome != Outcome::Succeeded {
            return Ended::failed(format!(
                "the app could not be brought back to its current release first: {}",
                converged.reason
            ));
        }
        if let Err(e) = app.persist() {
            return Ended::failed(format!(
                "the app was converged but its state could not be written: {}",
                reason(&e)
            ));
        }
    }
    strategy::run(app, ctx).await
}
