//! Deploy strategies and the steps they share: install a release, start a set of instances,
//! wait until they are healthy, stop a set, and switch `current`.
//!
//! Every step is recorded in the audit log *before* it is taken ([`JobCtx::step`]), so the log
//! never claims less than happened. Rollback steps use [`JobCtx::note`], which never fails the
//! restore of service because of the log.

mod blue_green;
mod canary;
pub mod ctx;
mod hot;
mod judge;
mod rolling;
pub mod shift;
pub mod steps;
mod watch;
pub mod why;

pub use ctx::JobCtx;
pub use rolling::converge;
pub use why::{Refused, Unhealthy};

use std::time::Duration;

use crate::app::AppRuntime;
use crate::app::front_door;
use crate::app::slots::NoPort;
use crate::artifact::ArtifactError;
use crate::audit::AuditError;
use crate::error::reason;
use crate::job::{Action, StrategyKind};
use crate::progress::Ended;
use crate::state::StateError;
use crate::supervisor::SupervisorError;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StrategyError {
    /// The step could not be recorded, so it was not taken.
    #[error("audit log unavailable")]
    Audit(#[from] AuditError),
    /// Installing the release failed.
    #[error("cannot install the release")]
    Install(#[from] ArtifactError),
    /// An instance could not be started or stopped.
    #[error("instance process")]
    Supervisor(#[from] SupervisorError),
    /// The app's state could not be persisted.
    #[error("cannot persist the app's state")]
    State(#[from] StateError),
    /// An instance did not become healthy.
    #[error("{0}")]
    Unhealthy(Box<Unhealthy>),
    /// The job's progress deadline passed.
    #[error("progress deadline of {} exceeded", humantime::format_duration(*.0))]
    Deadline(Duration),
    /// The job cannot be carried out as asked.
    #[error("{0}")]
    Refused(Refused),
    /// The router refused a route table or did not confirm it.
    #[error("traffic routing failed")]
    Traffic(#[from] crate::traffic::TrafficError),
    /// The app's port range has no port for an instance.
    #[error(transparent)]
    NoPort(#[from] NoPort),
    /// A signed abort job stopped the rollout.
    #[error("aborted by job {0}")]
    Aborted(String),
    /// A canary step could not split its flag (the change could not be recorded).
    #[error("cannot split the canary's flag")]
    Flags(#[from] crate::flags::FlagsError),
}

// By hand, not `#[from]`: the reason is the whole message, not a cause to chain after it.
impl From<Unhealthy> for StrategyError {
    fn from(why: Unhealthy) -> Self {
        Self::Unhealthy(Box::new(why))
    }
}

impl From<Refused> for StrategyError {
    fn from(why: Refused) -> Self {
        Self::Refused(why)
    }
}

/// Runs the job's action on its app.
pub async fn run(app: &mut AppRuntime, ctx: &JobCtx) -> Ended {
    let spec = &ctx.job.spec;
    let stopped_front_door = app
        .front_door
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .is_none();
    if matches!(
        spec.action,
        Action::Deploy | Action::Rollback | Action::Restart
    ) {
        // Starting instances again ends a stop, also for a restarted agent.
        app.state.stopped = false;
    }
    if spec.action != Action::Stop && stopped_front_door {
        // Started again after a stop job (or a failed start); a no-op without one. A front
        // door that cannot start fails the job at once, with the cause.
        let started = front_door::ensure_front_door(app, &ctx.audit, ctx.backoff).await;
        if let Err(e) = started {
            return Ended::failed(reason(&e));
        }
        if let Err(e) = app.persist() {
            return Ended::failed(reason(&e));
        }
    }
    match spec.action {
        Action::Deploy => match &spec.release {
            Some(release) => {
                let ended = match release.strategy {
                    StrategyKind::Hot => hot::deploy(app, ctx, release).await,
                    StrategyKind::Rolling => rolling::deploy(app, ctx, release).await,
                    StrategyKind::BlueGreen => blue_green::deploy(app, ctx, release).await,
                    StrategyKind::Canary => canary::deploy(app, ctx, release).await,
                };
                // Each deploy may unpack one more release; keep releases_kept, whatever
                // the strategy.
                if ended.outcome == crate::progress::Outcome::Succeeded {
                    steps::prune(app, ctx).await;
                }
                ended
            }
            None => Ended::failed("a deploy job must carry a release".to_owned()),
        },
        // With a router, a rollback never leaves the app without a healthy backend.
        Action::Rollback if app.router().is_some() => blue_green::rollback(app, ctx).await,
        Action::Rollback => hot::rollback(app, ctx).await,
        // Behind a router, one instance at a time out of rotation; else all at once.
        Action::Restart if app.router().is_some() => rolling::restart(app, ctx).await,
        Action::Restart => hot::restart(app, ctx).await,
        Action::Stop => match steps::stop_all(app, ctx).await {
            Ok(()) => Ended::succeeded("all instances stopped".to_owned()),
            Err(e) => Ended::failed(reason(&e)),
        },
        Action::Promote | Action::Abort => Ended::failed(format!(
            "there is no paused rollout of app {} to {}",
            spec.app, spec.action
        )),
    }
}

/// The release a rollback returns to: the job's target version, else the app's previous
/// release.
///
/// # Errors
///
/// The failed outcome to end the job with when the app has no previous release.
pub fn rollback_target(app: &AppRuntime, ctx: &JobCtx) -> Result<semver::Version, Ended> {
    ctx.job
        .spec
        .target_version
        .clone()
        .or_else(|| app.state.previous.clone())
        .ok_or_else(|| {
            Ended::failed(format!(
                "app {} has no previous release to roll back to",
                app.policy.name
            ))
        })
}
