//! Start-up and recovery: load every app, adopt the instances a previous run left, restart
//! the missing ones, record unfinished jobs as interrupted, converge apps an interrupted job
//! left between two releases, and stop a blue-green standby once its delay has passed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{Executor, ExecutorError, Inner, Versions, default_backoff};
use crate::app::{AppRuntime, AppShared, front_door, slots};
use crate::artifact::{ArtifactStore, Releases};
use crate::audit::{AuditLog, Entry};
use crate::clock::now_ms;
use crate::config::Config;
use crate::error::reason;
use crate::job::{Action, AppName, JobId, VerifiedJob};
use crate::ledger::Ledger;
use crate::progress::{Ended, JobHandle, Outcome};
use crate::state::{AppState, InstanceRecord};
use crate::strategy::{self, steps};
use crate::supervisor::{Backoff, Instance};

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
        ledger: Arc<Ledger>,
        store: Arc<ArtifactStore>,
        tasks: TaskTracker,
        shutdown: CancellationToken,
        flags: crate::flags::Flags,
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
            let state = AppState::load(&dir, |port| slots::slot_by_port(policy, port))
                .map_err(|e| prepare(Box::new(e)))?;
            let front_door = Arc::new(Mutex::new(None));
            let router = front_door::make_router(policy, &dir, Arc::clone(&front_door));
            let (control_tx, control) = mpsc::channel(8);
            let app_shared = Arc::new(AppShared {
                rollout: Mutex::new(String::new()),
                router,
                snapshot: Mutex::new((AppState::default(), Vec::new())),
                stale: Mutex::new(crate::app::Stale::default()),
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
            crate::artifact::store::log_leftover_removal(
                &format!("an interrupted state write of app {name}"),
                crate::state::remove_temp_leftovers(&AppState::path(&runtime.dir)),
            );
            adopt(&mut runtime, &audit, default_backoff()).await;
            // Not fatal: the other apps still start, and the first job for this one tries
            // again and fails with this cause. A stopped app gets no front door until a job
            // starts it again.
            if !runtime.state.stopped
                && let Err(e) =
                    front_door::ensure_front_door(&mut runtime, &audit, default_backoff()).await
            {
                tracing::error!(app = %name, "{}", reason(&e));
            }
            controls.insert(name.clone(), control_tx);
            shared.insert(name.clone(), app_shared);
            if let Some(job) = runtime.state.active_job.take() {
                interrupted(&audit, &ledger, &job, name).await;
                if runtime.router().is_some() {
                    to_converge.push(name.clone());
                }
            }
            runtime.persist().map_err(|e| prepare(Box::new(e)))?;
            current.insert(name.clone(), Versions::of(&runtime.state));
            apps.insert(name.clone(), Arc::new(tokio::sync::Mutex::new(runtime)));
        }
        for record in ledger.unfinished() {
            interrupted(&audit, &ledger, &record.job_id, &record.app).await;
        }
        let executor = Executor {
            inner: Arc::new(Inner {
                config,
                audit,
                ledger,
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
                clock: crate::clock::system(),
                signals: Mutex::new(super::signals::Sampler::default()),
                flags,
            }),
        };
        // Not on the task tracker: it persists nothing, and shutdown's drain must not wait
        // for it. It ends with the executor (it holds only a weak reference) or the runtime.
        tokio::spawn(super::signals::run(Arc::downgrade(&executor.inner)));
        for (name, app) in &executor.inner.apps {
            if app.lock().await.state.standby.is_some() {
                executor.schedule_scale_down(name.clone());
            }
        }
        for name in to_converge {
            executor.converge(name, "converge after an interrupted job".to_owned());
        }
        Ok(executor)
    }

    /// Brings every instance of `app` back to its current release in the background: after a
    /// job was interrupted on an app with a router, or after a job left a failed route-table
    /// or state write behind (a full disk). Recorded as `recovery.started` and
    /// `recovery.succeeded` / `recovery.failed`, with its steps. While a failed write is not
    /// made good it tries again, 1 s after the first failure and then at most every 10 s,
    /// until the agent stops; an app busy with a job meanwhile is converged by that job.
    pub(super) fn converge(&self, app: AppName, why: String) {
        let this = self.clone();
        let token = self.inner.shutdown.clone();
        self.inner.tasks.spawn(async move {
            let mut wait = Duration::from_secs(1);
            loop {
                let attempt = this.converge_once(&app, &why).await;
                let stale = this.inner.shared.get(&app).and_then(|s| s.stale());
                if attempt == Attempt::Busy || stale.is_none() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = token.cancelled() => return,
                }
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        });
    }

    /// One convergence, holding the app; [`Attempt::Busy`] when a job holds it.
    async fn converge_once(&self, app: &AppName, why: &str) -> Attempt {
        let id = format!("recover-{app}-{}", now_ms());
        let Ok(id) = JobId::new(&id) else {
            return Attempt::Busy;
        };
        if self.reserve(app, &id).is_err() {
            return Attempt::Busy;
        }
        let app = app.clone();
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
                restore_flags: false,
                reason: why.to_owned(),
            },
            digest: crate::job::Sha256Hex::of(id.as_str().as_bytes()),
            signers: Vec::new(),
        });
        let handle = Arc::new(JobHandle::new(id));
        let this = self.clone();
        let span = tracing::info_span!("recovery", app = %app);
        async move {
            let audit = &this.inner.audit;
            let started = Entry::new("recovery.started")
                .with("job_id", json!(job.spec.id))
                .with("app", json!(app))
                .with("reason", json!(job.spec.reason));
            if let Err(e) = audit.append(started).await {
                tracing::error!("cannot record recovery.started: {}", reason(&e));
            }
            let ended = match this.inner.apps.get(&app) {
                Some(runtime) => {
                    let mut runtime = runtime.lock().await;
                    let mut ctx = this.job_ctx(&job, &handle);
                    ctx.drain_timeout = interrupted_drain_timeout(&runtime);
                    let ended = strategy::converge(&mut runtime, &ctx).await;
                    if let Err(e) = runtime.persist() {
                        tracing::error!("cannot persist app state: {}", reason(&e));
                    }
                    ended
                }
                None => Ended::failed("app is gone"),
            };
            let event = match ended.outcome {
                Outcome::Succeeded => "recovery.succeeded",
                Outcome::RolledBack | Outcome::Failed | Outcome::Interrupted => "recovery.failed",
            };
            let why = ended.reason;
            let entry = Entry::new(event)
                .with("job_id", json!(job.spec.id))
                .with("app", json!(app))
                .with("reason", json!(why));
            if let Err(e) = audit.append_held(entry).await {
                tracing::error!("cannot record {event}: {}", reason(&e));
            }
            this.release(&app);
            Attempt::Ran
        }
        .instrument(span)
        .await
    }

    /// Stops the standby slot of a blue-green app once its scale-down delay has passed,
    /// unless a later job changed it.
    pub(super) fn schedule_scale_down(&self, name: AppName) {
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
            let ports = slots::ports_in(&app, standby.slot);
            let (stop, keep): (Vec<_>, Vec<_>) = app
                .instances
                .drain(..)
                .partition(|i| ports.contains(&i.record().port));
            app.instances = keep;
            for instance in stop {
                if let Err(e) = instance.stop().await {
                    tracing::warn!("cannot stop a standby instance: {}", reason(&e));
                }
            }
            app.state.standby = None;
            if let Err(e) = app.persist() {
                tracing::error!("cannot persist app state: {}", reason(&e));
            }
            let entry = Entry::new("standby.stopped")
                .with("app", json!(app.policy.name))
                .with("slot", json!(standby.slot.as_str()))
                .with("version", json!(standby.version.to_string()));
            if let Err(e) = audit.append(entry).await {
                tracing::error!("cannot record standby.stopped: {}", reason(&e));
            }
        });
    }
}

/// How one convergence attempt went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Attempt {
    /// It ran (its outcome is in the audit log).
    Ran,
    /// A job holds the app; that job converges it first.
    Busy,
}

async fn interrupted(audit: &AuditLog, ledger: &Ledger, job: &JobId, app: &AppName) {
    if ledger
        .get(job.as_str())
        .is_some_and(|r| matches!(r.standing, crate::ledger::Standing::Finished(_)))
    {
        // A graceful stop ended it already (job.interrupted is in the log): one final entry.
        return;
    }
    let reason = "the agent stopped while the job ran; instances were adopted as found";
    let entry = Entry::new("job.interrupted")
        .with("job_id", json!(job))
        .with("app", json!(app))
        .with("reason", json!(reason));
    if let Err(e) = audit.append(entry).await {
        tracing::error!(%job, "cannot record the interrupted job: {e}");
    }
    if let Err(e) = ledger.finish(job, Ended::interrupted(reason)) {
        tracing::error!(%job, "cannot record the interrupted job's outcome: {e}");
    }
}

/// The drain timeout the convergence honours: the one of the newest release with instances
/// running that is not `current` (the deploy that was interrupted), else `current`'s own.
fn interrupted_drain_timeout(app: &AppRuntime) -> Option<std::time::Duration> {
    let current = app.state.current.as_ref();
    let interrupted = app
        .instances
        .iter()
        .map(|i| i.record().version)
        .filter(|v| Some(v) != current)
        .max();
    interrupted
        .as_ref()
        .or(current)
        .and_then(|v| app.state.drain_timeout_of(v))
}

/// Adopts the instances a previous agent run left running; restarts those of the current
/// release that are gone. Called once per app at start, before any job.
async fn adopt(app: &mut AppRuntime, audit: &AuditLog, backoff: Backoff) {
    let records = std::mem::take(&mut app.state.instances);
    for record in records {
        let Some(release) = app.state.spec_of(&record.version).cloned() else {
            tracing::warn!(
                pid = record.pid,
                "no spec for release {}; not adopting",
                record.version
            );
            continue;
        };
        let spec = steps::instance_spec(app, &release, record.index, record.port, record.slot);
        match Instance::adopt(spec, &record, backoff) {
            Ok(Some(instance)) => {
                record_entry(audit, "instance.adopted", app, &record).await;
                app.instances.push(instance);
            }
            Ok(None) => record_entry(audit, "instance.lost", app, &record).await,
            Err(e) => {
                tracing::error!(pid = record.pid, "cannot adopt instance: {}", reason(&e));
                record_entry(audit, "instance.lost", app, &record).await;
            }
        }
    }
    if app.state.stopped {
        // Stopped by a job: nothing to bring back.
        return;
    }
    let Some(current) = app.state.current.clone() else {
        return;
    };
    let Some(release) = app.state.spec_of(&current).cloned() else {
        return;
    };
    for index in 0..release.instances {
        if app.instances.iter().any(|i| i.record().index == index) {
            continue;
        }
        let Ok(port) = steps::port_for(app, index) else {
            continue;
        };
        let slot = app.state.active_slot;
        match Instance::spawn(
            steps::instance_spec(app, &release, index, port, slot),
            backoff,
        )
        .await
        {
            Ok(instance) => {
                record_entry(audit, "instance.restarted", app, &instance.record()).await;
                app.instances.push(instance);
            }
            Err(e) => tracing::error!(
                index,
                "cannot restart instance of {current}: {}",
                reason(&e)
            ),
        }
    }
}

async fn record_entry(
    audit: &AuditLog,
    event: &'static str,
    app: &AppRuntime,
    record: &InstanceRecord,
) {
    let entry = Entry::new(event)
        .with("app", json!(app.policy.name))
        .with("index", json!(record.index))
        .with("pid", json!(record.pid))
        .with("port", json!(record.port))
        .with("version", json!(record.version.to_string()));
    if let Err(e) = audit.append(entry).await {
        tracing::error!("cannot record {event}: {}", reason(&e));
    }
}
