//! What a job does to its app's flag set around the strategy: a deploy or a rollback records
//! the set that went with the release it replaces; a rollback that asks for it (`restore_flags`) re-checks
//! that set before anything changes, and puts it back once the release is healthy again; a
//! successful rollback drops the canary splits the replaced release kept; a canary with
//! `canary_flag` checks the flag before anything changes, and keeps its last split once it
//! succeeds (or puts back what was served before when it fails).

use crate::app::AppRuntime;
use crate::error::reason;
use crate::flags::Flags;
use crate::job::Action;
use crate::progress::{Ended, Outcome};
use crate::strategy::{self, JobCtx};

/// Runs the job, with the flag bookkeeping of the module docs.
pub(super) async fn run(app: &mut AppRuntime, ctx: &mut JobCtx, flags: &Flags) -> Ended {
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
    let replaced = app.state.current.clone();
    let ended = match spec.action {
        Action::Deploy => return with_canary_flag(app, ctx, flags).await,
        Action::Rollback => rollback(app, ctx, flags).await,
        _ => return converge_then_run(app, ctx).await,
    };
    // Back on an earlier release: what that release's canaries left in the flags goes too.
    if ended.outcome == Outcome::Succeeded
        && let Some(replaced) = replaced
        && app.state.current.as_ref() != Some(&replaced)
    {
        return match flags
            .drop_splits_of(&spec.app, &replaced, spec.id.as_str())
            .await
        {
            Ok(dropped) if dropped.is_empty() => ended,
            Ok(dropped) => Ended::succeeded(format!(
                "{}; the canary split of flag(s) {} that went with release {replaced} ended",
                ended.reason,
                dropped.join(", ")
            )),
            Err(e) => Ended::failed(format!(
                "{}, but the canary splits of release {replaced} still apply: {}",
                ended.reason,
                reason(&e)
            )),
        };
    }
    ended
}

/// A deploy; with `canary_flag`, the flag is checked first and handed to the canary's steps.
async fn with_canary_flag(app: &mut AppRuntime, ctx: &mut JobCtx, flags: &Flags) -> Ended {
    use super::converge_then_run;
    let spec = &ctx.job.spec;
    let Some((release, flag)) = spec
        .release
        .as_ref()
        .and_then(|r| r.rollout.canary_flag.as_deref().map(|f| (r, f)))
    else {
        return converge_then_run(app, ctx).await;
    };
    let handle = match flags.canary_flag(&spec.app, flag, spec.id.as_str(), &release.version) {
        Ok(handle) => handle,
        Err(e) => {
            return Ended::failed(format!(
                "the canary cannot release flag {flag:?}, so nothing was changed: {}",
                reason(&e)
            ));
        }
    };
    ctx.canary_flag = Some(handle.clone());
    let ended = converge_then_run(app, ctx).await;
    if ended.outcome != Outcome::Succeeded {
        handle
            .end(&format!("the canary ended: {}", ended.reason))
            .await;
        return ended;
    }
    match handle.keep().await {
        Ok(()) => ended,
        Err(e) => Ended::failed(format!(
            "{}, but the split of flag {flag:?} is not stored (served until the agent restarts): {}",
            ended.reason,
            reason(&e)
        )),
    }
}

/// A rollback, restoring the flag set of its target release when the job says so.
async fn rollback(app: &mut AppRuntime, ctx: &JobCtx, flags: &Flags) -> Ended {
    use super::converge_then_run;
    let spec = &ctx.job.spec;
    if !spec.restore_flags {
        return converge_then_run(app, ctx).await;
    }
    let target = match strategy::rollback_target(app, ctx) {
        Ok(target) => target,
        Err(ended) => return ended,
    };
    let prepared = match flags.prepare_restore(&spec.app, &target, crate::clock::unix_now()) {
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
