//! One app's runtime: its policy, directory, state file, releases, live instances and front
//! door, and the facts status reads without the app's lock; [`AppView`], what admission
//! asks about the apps (the executor answers it).
//!
//! * [`slots`]: which instances serve from which slot, and their ports.
//! * [`front_door`]: the app's router and the front door process's own life cycle.
//! * `grant`: write access for the app's user to a directory the agent keeps (an ACL).

pub mod front_door;
mod grant;
pub mod slots;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::error::lock;

use tokio::sync::{mpsc, oneshot};

use crate::artifact::Releases;
use crate::config::AppPolicy;
use crate::job::{Action, AppName, JobId};
use crate::state::{AppState, StateError};
use crate::supervisor::Instance;
use crate::traffic::Router;

/// What admission needs to know about the apps' current state. Defined here, below the
/// executor that implements it and admission that asks it, so neither imports the other.
pub trait AppView: Send + Sync {
    /// The release currently active, if any.
    fn current_version(&self, app: &AppName) -> Option<semver::Version>;
    /// The release before the current one, if any: where a rollback without a target goes.
    fn previous_version(&self, app: &AppName) -> Option<semver::Version>;
    /// Whether a release of this version is on disk (a rollback target).
    fn has_release(&self, app: &AppName, version: &semver::Version) -> bool;
    /// The job running on the app, if any.
    fn busy_with(&self, app: &AppName) -> Option<JobId>;
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
    /// What on disk may not match what the agent last decided for the app.
    pub stale: Mutex<Stale>,
}

/// Writes that failed and were not made good since: while either is set, the route table or
/// the state file may say something else than the agent decided (a full disk mid-rollout),
/// and the executor converges the app before its next job and in the background.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stale {
    /// Why the last route-table change failed; `None` once one succeeded.
    pub routes: Option<String>,
    /// Why the last state write failed; `None` once one succeeded.
    pub state: Option<String>,
}

impl Stale {
    /// Why the app needs converging, when it does.
    pub fn why(&self) -> Option<String> {
        match (&self.routes, &self.state) {
            (None, None) => None,
            (Some(r), None) => Some(r.clone()),
            (None, Some(s)) => Some(s.clone()),
            (Some(r), Some(s)) => Some(format!("{r}; {s}")),
        }
    }
}

impl AppShared {
    /// Sets the rollout description status shows.
    pub fn set_rollout(&self, text: impl Into<String>) {
        *lock(&self.rollout) = text.into();
    }

    /// Records how the last route-table change went.
    pub fn routes_written(&self, failure: Option<String>) {
        lock(&self.stale).routes = failure;
    }

    /// Why the app needs converging, when a failed write was not made good.
    pub fn stale(&self) -> Option<String> {
        lock(&self.stale).why()
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
        let saved = self.state.save(&self.dir);
        lock(&self.shared.stale).state = saved.as_ref().err().map(|e| {
            format!(
                "the state file was not written: {}",
                crate::error::reason(e)
            )
        });
        saved
    }
}
