//! What a job does to its app's flag set around the strategy: a deploy or a rollback records
//! the set that went with the release it replaces; a rollback that asks for it (`restore_flags`) re-checks
//! that set before anything changes, and puts it back once the release is healthy again.

use crate::app::AppRuntime;
use crate::error::reason;
use crate::flags::Flags;
use crate::job::Action;
use crate::progress::{Ended, Outcome};
use crate::strategy::{self, JobCtx};

/// Runs the job, with the flag bookkeeping of the module docs.
pub(super) async fn run(app: &mut AppRuntime, ctx: &JobCtx, flags: &Flags) -> Ended {
    use super::converge_then_run;
    let spec = &ctx.job.spec;
    if matches!(spec.action, Action::Deploy | Action::Rollback)
        && let Some(current) = app.state.current.clone()
        && let Err(e) = flags.remember_release(&spec.app, &current)
    {
        return Ended::failed(format!(
            "cannot record the flag set that went with release {current}, so nothing was changed: {}",
            reason(&e)
        ));
    }
    match spec.action {
        Action::Rollback if spec.restore_flags => {
            let target = match strategy::rollback_target(app, ctx) {
                Ok(target) => target,
                Err(ended) => return ended,
            };
            let prepared = match flags.prepare_restore(&spec.app, &target, crate::clock::unix_now())
            {
                Ok(prepared) => prepared,
                Err(e) => {
                    return Ended::failed(format!(
                        "the flag set of release {target} cannot be restored, so nothing was changed: {}",
                        reason(&e)
                    ));
                }
            };
            let ended = converge_then_run(app, ctx).await;
            if ended.outcome != Outcome::Succeeded {
                return ended;
            }
            match flags
                .restore(prepared, spec.id.as_str(), crate::clock::unix_now())
                .await
            {
                Ok(version) => Ended::succeeded(format!(
                    "{}; flag set version {version} of release {target} is in force",
                    ended.reason
                )),
                Err(e) => Ended::failed(format!(
                    "{}, but its flag set was not restored: {}",
                    ended.reason,
                    reason(&e)
                )),
            }
        }
        _ => converge_then_run(app, ctx).await,
    }
}
