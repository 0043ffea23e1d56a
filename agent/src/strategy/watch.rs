//! The post-deploy watch (`watch`, a rollout parameter of every strategy): once a deploy has
//! done everything else, the new release is still watched for a while before the job calls it
//! healthy. Its instances must keep running without a restart and keep passing their health
//! probe (`unhealthy_threshold` failures in a row fail it), and with a front door in HTTP mode
//! the new release's cohort's error rate and p95 latency must stay under the job's analysis limits
//! (judged as canary analysis judges them; too few samples by the end is no failure here: the
//! release already passed its deploy). The job's Prometheus checks run at every analysis
//! interval too: a value that fails its condition fails the watch; a check still without a
//! value at the end is said in `watch.passed`, or fails the watch with `no_data = fail`. A
//! failure is returned for the strategy's way back.

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::judge::{WATCH, Window, judge_signals, signals_text};
use super::steps::probe_targets;
use super::{JobCtx, StrategyError, Unhealthy};
use crate::app::AppRuntime;
use crate::error::reason;
use crate::health::watch::stays_healthy;
use crate::job::ReleaseSpec;

/// Watches the instances on `ports` (the new release, whose backends are in `cohort`) for the
/// job's `watch` period; no-op when it is zero.
///
/// # Errors
///
/// [`StrategyError::Unhealthy`] naming the instance or the signal that failed, and when.
pub async fn watch(
    app: &AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    ports: &[u16],
    cohort: &str,
) -> Result<(), StrategyError> {
    let period = release.rollout.watch;
    if period.is_zero() {
        return Ok(());
    }
    let http = Window::cohort(app, cohort);
    ctx.step(
        "watch.started",
        format!(
            "watching {} for {}: health probes and restarts{}",
            release.version,
            humantime::format_duration(period),
            signals_text(http.is_some(), release)
        ),
    )
    .await?;
    let started = Instant::now();
    let mut checks = JoinSet::new();
    for target in probe_targets(app, ports) {
        let health = release.health.clone();
        checks.spawn(async move {
            let mut state = target.state.clone();
            let result = stays_healthy(&mut state, &health, &target, period).await;
            (target.index, target.port, result)
        });
    }
    let signals = judge_signals(
        app,
        ctx,
        release,
        period,
        cohort,
        http.into_iter().collect(),
        &WATCH,
    );
    tokio::pin!(signals);
    let mut signals_done = None;
    loop {
        tokio::select! {
            joined = checks.join_next() => {
                let Some(joined) = joined else { break };
                let (index, port, result) = joined.map_err(|e| Unhealthy::Task {
                    task: "watch",
                    error: e.to_string(),
                })?;
                if let Err(e) = result {
                    let why = Unhealthy::Watch {
                        index,
                        port,
                        secs: started.elapsed().as_secs_f64(),
                        why: reason(&e),
                    };
                    ctx.note("watch.failed", why.to_string()).await;
                    return Err(why.into());
                }
            }
            result = &mut signals, if signals_done.is_none() => {
                signals_done = Some(result?);
            }
        }
    }
    let unanswered = match signals_done {
        Some(unanswered) => unanswered,
        None => signals.await?,
    };
    let mut passed = format!(
        "{} stayed healthy for {}",
        release.version,
        humantime::format_duration(period)
    );
    for v in &unanswered {
        passed.push_str(&format!("; no verdict: {v}"));
    }
    ctx.step("watch.passed", passed).await?;
    Ok(())
}
