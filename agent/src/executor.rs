//! Runs admitted jobs: one at a time per app, each through its strategy, publishing events to
//! watchers and recording every step and the outcome in the audit log.
//!
//! The executor owns the apps' runtime state (`AppRuntime`: state file, releases, live
//! instances). A job locks its app for its whole run; admission sees whether an app is busy
//! through [`AppView`] without waiting for that lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admission::{Admission, AppView};
use crate::artifact::{ArtifactStore, Releases, UnpackLimits};
use crate::audit::{AuditLog, CheckpointLine, Entry, HeldAppend};
use crate::config::{AppPolicy, Config};
use crate::job::{Action, AppName, JobId, StrategyKind, VerifiedJob};
use crate::state::{AppState, StateError};
use crate::strategy::{self, JobCtx, StrategyOutcome};
use crate::supervisor::{Backoff, Instance, InstanceState};
use crate::traffic::Router;

/// How long a promote or abort job waits for the rollout to take it.
const CONTROL_WAIT: Duration = Duration::from_secs(30);

/// How many finished jobs keep their full event history in memory (for `watch`).
const FINISHED_KEPT: usize = 256;

/// How many finished jobs `status` lists.
const RECENT_JOBS: usize = 32;

/// How a job ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything asked was done and is healthy.
    Succeeded,
    /// It failed and could not be rolled back (or there was nothing to roll back to).
    Failed,
    /// It failed and the previous release is serving again.
    RolledBack,
    /// The agent stopped or crashed while it ran.
    Interrupted,
}

impl Outcome {
    /// The name used in the audit log, the replay store and `--json` output.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Succeeded => "succeeded",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Interrupted => "interrupted",
        }
    }

    /// Parses [`Outcome::as_str`].
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Succeeded,
            Outcome::Failed,
            Outcome::RolledBack,
            Outcome::Interrupted,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// What happened in a job, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// Admission passed; the job will run.
    Accepted {
        /// The job it is.
        job: Arc<VerifiedJob>,
    },
    /// Progress.
    Step {
        /// Machine-readable step name (`instance.started`, `health.passed`, ...).
        step: String,
        /// Readable detail.
        message: String,
        /// Units done.
        done: u32,
        /// Units in all (0 when unknown).
        total: u32,
    },
    /// The job ended.
    Finished {
        /// How.
        outcome: Outcome,
        /// Why, readable.
        reason: String,
        /// The checkpoint written after the job's final entry.
        checkpoint: Option<CheckpointLine>,
    },
}

/// One event of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobEvent {
    /// The job.
    pub job_id: JobId,
    /// 1, 2, 3 ... within the job.
    pub seq: u64,
    /// Unix milliseconds.
    pub ts_ms: i64,
    /// What happened.
    pub kind: EventKind,
}

/// A job's event history and live feed.
#[derive(Debug)]
pub struct JobHandle {
    id: JobId,
    history: Mutex<Vec<JobEvent>>,
    feed: broadcast::Sender<JobEvent>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub use crate::clock::now_ms;

impl JobHandle {
    fn new(id: JobId) -> Self {
        // Watchers that fall further behind re-read the history (see server::follow_job).
        let (feed, _) = broadcast::channel(32);
        Self {
            id,
            history: Mutex::new(Vec::new()),
            feed,
        }
    }

    /// The job's id.
    pub fn id(&self) -> &JobId {
        &self.id
    }

    /// Publishes an event to the history and to live watchers.
    pub fn publish(&self, kind: EventKind) {
        let mut history = lock(&self.history);
        let event = JobEvent {
            job_id: self.id.clone(),
            seq: history.len() as u64 + 1,
            ts_ms: now_ms(),
            kind,
        };
        history.push(event.clone());
        // No receivers is fine: nobody is watching right now.
        let _ = self.feed.send(event);
    }

    /// Everything so far plus a receiver for what follows, with nothing lost in between.
    pub fn subscribe(&self) -> (Vec<JobEvent>, broadcast::Receiver<JobEvent>) {
        let history = lock(&self.history);
        (history.clone(), self.feed.subscribe())
    }

    /// Whether the job has finished.
    pub fn is_finished(&self) -> bool {
        lock(&self.history)
            .last()
            .is_some_and(|e| matches!(e.kind, EventKind::Finished { .. }))
    }
}

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

/// One app's runtime: its policy, directory, state file, releases and live instances.
#[derive(Debug)]
pub struct AppRuntime {
    /// The app's policy from the config.
    pub policy: AppPolicy,
    /// `<data_dir>/apps/<app>`.
    pub dir: PathBuf,
    /// Its releases on disk.
    pub releases: Releases,
    /// Its persisted state.
    pub state: AppState,
    /// Live instances, by index.
    pub instances: Vec<Instance>,
    /// The front door process, when the built-in front door routes it.
    pub front_door: Arc<Mutex<Option<Instance>>>,
    /// Promote and abort requests for the rollout in progress.
    pub control: mpsc::Receiver<Control>,
    /// What status shows while a job holds the app.
    pub shared: Arc<AppShared>,
}

/// A signed promote or abort, delivered to the rollout that holds the app.
#[derive(Debug)]
pub struct Control {
    /// Promote or abort.
    pub action: Action,
    /// The control job.
    pub job_id: JobId,
    /// The rollout's answer: what it did, or why it could not.
    pub reply: oneshot::Sender<Result<String, String>>,
}

/// Per-app facts readable without the app's lock.
#[derive(Debug, Default)]
pub struct AppShared {
    /// What the rollout in progress is doing, for status.
    pub rollout: Mutex<String>,
    /// The app's router, for status counters.
    pub router: Option<Arc<dyn Router>>,
    /// The app's state and instances as last persisted.
    pub snapshot: Mutex<(AppState, Vec<Instance>)>,
}

impl AppShared {
    /// Sets the rollout description status shows.
    pub fn set_rollout(&self, text: impl Into<String>) {
        *lock(&self.rollout) = text.into();
    }
}

impl AppRuntime {
    /// What routes its connections (front door or nginx), if it has a router.
    pub fn router(&self) -> Option<&Arc<dyn Router>> {
        self.shared.router.as_ref()
    }

    /// Records the live instances in the state and persists it.
    ///
    /// # Errors
    ///
    /// [`StateError`] when the state file cannot be written.
    pub fn persist(&mut self) -> Result<(), StateError> {
        self.state.instances = self.instances.iter().map(Instance::record).collect();
        *lock(&self.shared.snapshot) = (self.state.clone(), self.instances.clone());
        self.state.save(&self.dir)
    }
}

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

struct Inner {
    config: Arc<Config>,
    audit: AuditLog,
    admission: Arc<Admission>,
    store: Arc<ArtifactStore>,
    apps: BTreeMap<AppName, Arc<tokio::sync::Mutex<AppRuntime>>>,
    controls: BTreeMap<AppName, mpsc::Sender<Control>>,
    shared: BTreeMap<AppName, Arc<AppShared>>,
    busy: Mutex<BTreeMap<AppName, JobId>>,
    current: Mutex<BTreeMap<AppName, Option<semver::Version>>>,
    jobs: Mutex<HashMap<JobId, Arc<JobHandle>>>,
    /// Finished jobs still in `jobs`, oldest first; older ones are answered from the replay
    /// store, so memory does not grow with every job the agent ever ran.
    finished: Mutex<VecDeque<JobId>>,
    recent: Mutex<VecDeque<JobSummary>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
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
    /// Loads every configured app, adopts its instances that are still running (pid and
    /// start time must match), restarts the current release's instances that are gone, and
    /// records jobs that a previous run left unfinished as interrupted.
    ///
    /// # Errors
    ///
    /// [`ExecutorError::Prepare`] when an app's directory or state cannot be prepared.
    pub async fn start(
        config: Arc<Config>,
        audit: AuditLog,
        admission: Arc<Admission>,
        store: Arc<ArtifactStore>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Executor, ExecutorError> {
        let mut apps = BTreeMap::new();
        let mut current = BTreeMap::new();
        let mut controls = BTreeMap::new();
        let mut shared = BTreeMap::new();
        let mut to_converge = Vec::new();
        for (name, policy) in &config.policy.apps {
            let prepare = |e: Box<dyn std::error::Error + Send + Sync>| ExecutorError::Prepare {
                app: name.clone(),
                source: e,
            };
            let dir = config.data_dir.join("apps").join(name.as_str());
            crate::state::create_dir_mode(&dir, 0o755).map_err(|e| prepare(Box::new(e)))?;
            let state = AppState::load(&dir).map_err(|e| prepare(Box::new(e)))?;
            let front_door = Arc::new(Mutex::new(None));
            let router = strategy::routing::make_router(policy, &dir, Arc::clone(&front_door));
            let (control_tx, control) = mpsc::channel(8);
            let app_shared = Arc::new(AppShared {
                rollout: Mutex::new(String::new()),
                router,
                snapshot: Mutex::new((AppState::default(), Vec::new())),
            });
            let mut runtime = AppRuntime {
                policy: policy.clone(),
                releases: Releases::new(&dir),
                dir,
                state,
                instances: Vec::new(),
                front_door,
                control,
                shared: Arc::clone(&app_shared),
            };
            // No job runs yet: partial unpacks and temp `current` links a crash left are
            // never reused. A failure is only logged (hygiene, not safety) and does not stop
            // start-up.
            crate::artifact::store::log_leftover_removal(
                &format!("an interrupted unpack, prune or release switch of app {name}"),
                runtime.releases.remove_leftovers(),
            );
            strategy::adopt(&mut runtime, &audit, default_backoff()).await;
            // Not fatal: the other apps still start, and the first job for this one tries
            // again and fails with this cause.
            if let Err(e) =
                strategy::routing::ensure_front_door(&mut runtime, &audit, default_backoff()).await
            {
                tracing::error!(app = %name, "{}", crate::error::reason(&e));
            }
            controls.insert(name.clone(), control_tx);
            shared.insert(name.clone(), app_shared);
            if let Some(job) = runtime.state.active_job.take() {
                interrupted(&audit, &admission, &job, name).await;
                if runtime.router().is_some() {
                    to_converge.push(name.clone());
                }
            }
            runtime.persist().map_err(|e| prepare(Box::new(e)))?;
            current.insert(name.clone(), runtime.state.current.clone());
            apps.insert(name.clone(), Arc::new(tokio::sync::Mutex::new(runtime)));
        }
        for record in admission.unfinished() {
            interrupted(&audit, &admission, &record.job_id, &record.app).await;
        }
        let executor = Executor {
            inner: Arc::new(Inner {
                config,
                audit,
                admission,
                store,
                apps,
                controls,
                shared,
                busy: Mutex::new(BTreeMap::new()),
                current: Mutex::new(current),
                jobs: Mutex::new(HashMap::new()),
                finished: Mutex::new(VecDeque::new()),
                recent: Mutex::new(VecDeque::new()),
                tasks,
                shutdown,
            }),
        };
        for (name, app) in &executor.inner.apps {
            if app.lock().await.state.standby.is_some() {
                executor.schedule_scale_down(name.clone());
            }
        }
        for name in to_converge {
            executor.converge(name);
        }
        Ok(executor)
    }

    /// After a job was interrupted on an app with a router, brings every instance back to the
    /// app's current release in the background (the app is busy meanwhile). Recorded as
    /// `recovery.started` and `recovery.succeeded` / `recovery.failed`, with its steps.
    fn converge(&self, app: AppName) {
        let id = format!("recover-{app}-{}", now_ms());
        let Ok(id) = JobId::new(&id) else { return };
        if self.reserve(&app, &id).is_err() {
            return;
        }
        let job = Arc::new(VerifiedJob {
            spec: crate::job::JobSpec {
                id: id.clone(),
                agent_id: self.inner.config.agent_id.clone(),
                app: app.clone(),
                action: Action::Restart,
                issued_at: 0,
                not_before: 0,
                expires_at: 0,
                release: None,
                target_version: None,
                reason: "converge after an interrupted job".to_owned(),
            },
            digest: crate::job::Sha256Hex::of(id.as_str().as_bytes()),
            signers: Vec::new(),
        });
        let handle = Arc::new(JobHandle::new(id));
        let this = self.clone();
        let span = tracing::info_span!("recovery", app = %app);
        self.inner.tasks.spawn(
            async move {
                let audit = &this.inner.audit;
                let started = Entry::new("recovery.started")
                    .with("job_id", json!(job.spec.id))
                    .with("app", json!(app))
                    .with("reason", json!(job.spec.reason));
                if let Err(e) = audit.append(started).await {
                    tracing::error!(
                        "cannot record recovery.started: {}",
                        crate::error::reason(&e)
                    );
                }
                let outcome = match this.inner.apps.get(&app) {
                    Some(runtime) => {
                        let mut runtime = runtime.lock().await;
                        let ctx = this.job_ctx(&job, &handle);
                        let outcome = strategy::converge(&mut runtime, &ctx).await;
                        if let Err(e) = runtime.persist() {
                            tracing::error!(
                                "cannot persist app state: {}",
                                crate::error::reason(&e)
                            );
                        }
                        outcome
                    }
                    None => strategy::StrategyOutcome::Failed("app is gone".to_owned()),
                };
                let (event, why) = match outcome {
                    strategy::StrategyOutcome::Succeeded(r) => ("recovery.succeeded", r),
                    strategy::StrategyOutcome::RolledBack(r)
                    | strategy::StrategyOutcome::Failed(r)
                    | strategy::StrategyOutcome::Interrupted(r) => ("recovery.failed", r),
                };
                let entry = Entry::new(event)
                    .with("job_id", json!(job.spec.id))
                    .with("app", json!(app))
                    .with("reason", json!(why));
                if let Err(e) = audit.append_held(entry).await {
                    tracing::error!("cannot record {event}: {}", crate::error::reason(&e));
                }
                this.release(&app);
            }
            .instrument(span),
        );
    }

    /// Stops the standby slot of a blue-green app once its scale-down delay has passed,
    /// unless a later job changed it.
    fn schedule_scale_down(&self, name: AppName) {
        let Some(app) = self.inner.apps.get(&name).cloned() else {
            return;
        };
        let audit = self.inner.audit.clone();
        let token = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            let Some(standby) = app.lock().await.state.standby.clone() else {
                return;
            };
            let wait = u64::try_from(standby.until_ms - now_ms()).unwrap_or(0);
            tokio::select! {
                () = tokio::time::sleep(Duration::from_millis(wait)) => {}
                () = token.cancelled() => return,
            }
            let mut app = app.lock().await;
            if app.state.standby.as_ref() != Some(&standby) {
                return;
            }
            let ports = strategy::routing::ports_in(&app, standby.slot);
            let (stop, keep): (Vec<_>, Vec<_>) = app
                .instances
                .drain(..)
                .partition(|i| ports.contains(&i.record().port));
            app.instances = keep;
            for instance in stop {
                if let Err(e) = instance.stop().await {
                    tracing::warn!(
                        "cannot stop a standby instance: {}",
                        crate::error::reason(&e)
                    );
                }
            }
            app.state.standby = None;
            if let Err(e) = app.persist() {
                tracing::error!("cannot persist app state: {}", crate::error::reason(&e));
            }
            let entry = Entry::new("standby.stopped")
                .with("app", json!(app.policy.name))
                .with("slot", json!(standby.slot.as_str()))
                .with("version", json!(standby.version.to_string()));
            if let Err(e) = audit.append(entry).await {
                tracing::error!(
                    "cannot record standby.stopped: {}",
                    crate::error::reason(&e)
                );
            }
        });
    }

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
                let ctx = self.job_ctx(&job, &handle);
                let result = tokio::select! {
                    r = strategy::run(&mut app, &ctx) => r,
                    () = self.inner.shutdown.cancelled() => StrategyOutcome::Interrupted(
                        "the agent shut down while the job ran".to_owned()),
                };
                app.state.active_job = None;
                if let Err(e) = app.persist() {
                    tracing::error!("cannot persist app state: {e}");
                }
                lock(&self.inner.current).insert(spec.app.clone(), app.state.current.clone());
                match result {
                    StrategyOutcome::Succeeded(r) => (Outcome::Succeeded, r),
                    StrategyOutcome::RolledBack(r) => (Outcome::RolledBack, r),
                    StrategyOutcome::Failed(r) => (Outcome::Failed, r),
                    StrategyOutcome::Interrupted(r) => (Outcome::Interrupted, r),
                }
            }
        };
        self.finish(&job, &handle, outcome, reason).await;
    }

    fn job_ctx(&self, job: &Arc<VerifiedJob>, handle: &Arc<JobHandle>) -> JobCtx {
        JobCtx {
            job: Arc::clone(job),
            handle: Arc::clone(handle),
            audit: self.inner.audit.clone(),
            store: Arc::clone(&self.inner.store),
            unpack_limits: UnpackLimits {
                max_total_bytes: self
                    .inner
                    .config
                    .limits
                    .max_artifact_bytes
                    .saturating_mul(8),
                max_entries: 100_000,
            },
            releases_kept: self.inner.config.limits.releases_kept,
            backoff: default_backoff(),
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
        if let Err(e) = self
            .inner
            .admission
            .record_outcome(&spec.id, outcome.as_str(), &reason)
        {
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
            // From the last persisted snapshot: a running job holds the app's lock.
            let (state, instances) = lock(&shared.snapshot).clone();
            let has_router = policy.router.is_some();
            let slot_of = |port: u16| {
                let offset = u32::from(port.saturating_sub(*policy.ports.start()));
                if offset >= policy.max_instances {
                    crate::state::Slot::Green
                } else {
                    crate::state::Slot::Blue
                }
            };
            let instances = instances
                .iter()
                .map(|i| {
                    let mut s = instance_status(i);
                    s.slot = has_router.then(|| slot_of(s.port));
                    s
                })
                .collect();
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
                active_slot: has_router.then_some(state.active_slot),
                rollout: lock(&shared.rollout).clone(),
                listen: policy.listen,
                backends: backends(shared.router.as_deref()),
            });
        }
        out
    }

    /// Recently finished jobs, newest first.
    pub fn recent_jobs(&self) -> Vec<JobSummary> {
        lock(&self.inner.recent).iter().cloned().collect()
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
            }
        })
        .collect()
}

fn instance_status(instance: &Instance) -> InstanceStatus {
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
        slot: None,
    }
}

async fn interrupted(audit: &AuditLog, admission: &Admission, job: &JobId, app: &AppName) {
    let reason = "the agent stopped while the job ran; instances were adopted as found";
    let entry = Entry::new("job.interrupted")
        .with("job_id", json!(job))
        .with("app", json!(app))
        .with("reason", json!(reason));
    if let Err(e) = audit.append(entry).await {
        tracing::error!(%job, "cannot record the interrupted job: {e}");
    }
    if let Err(e) = admission.record_outcome(job, Outcome::Interrupted.as_str(), reason) {
        tracing::error!(%job, "cannot record the interrupted job's outcome: {e}");
    }
}

impl AppView for Executor {
    fn current_version(&self, app: &AppName) -> Option<semver::Version> {
        lock(&self.inner.current).get(app).cloned().flatten()
    }

    fn has_release(&self, app: &AppName, version: &semver::Version) -> bool {
        self.inner.apps.contains_key(app)
            && Releases::new(&self.inner.config.data_dir.join("apps").join(app.as_str()))
                .is_on_disk(version)
    }

    fn is_busy(&self, app: &AppName) -> bool {
        lock(&self.inner.busy).contains_key(app)
    }
}

/// The strategy a job runs, for the audit entry of its acceptance.
pub fn strategy_of(job: &VerifiedJob) -> Option<StrategyKind> {
    job.spec.release.as_ref().map(|r| r.strategy)
}
