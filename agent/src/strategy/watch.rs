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

use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use super::shift;
use super::steps::probe_targets;
use super::{JobCtx, StrategyError};
use crate::app::AppRuntime;
use crate::error::reason;
use crate::health::prometheus::{self, PromVerdict};
use crate::health::signals::{self, Outcome};
use crate::health::watch::stays_healthy;
use crate::job::{NoData, ReleaseSpec};
use crate::traffic::http_stats::HttpStats;

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
    let http = shift::http_of(app, cohort);
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
    let signals = judge_signals(app, ctx, release, period, cohort, http, &WATCH);
    tokio::pin!(signals);
    let mut signals_done = None;
    loop {
        tokio::select! {
            joined = checks.join_next() => {
                let Some(joined) = joined else { break };
                let (index, port, result) = joined.map_err(|e| {
                    StrategyError::Unhealthy(format!("watch task failed: {e}"))
                })?;
                if let Err(e) = result {
                    let why = format!(
                        "instance {index} (port {port}) failed {:.1} s into the watch: {}",
                        started.elapsed().as_secs_f64(),
                        reason(&e)
                    );
                    ctx.note("watch.failed", why.clone()).await;
                    return Err(StrategyError::Unhealthy(why));
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

/// Where [`judge_signals`] runs: the step a failure records and how its text says when.
#[derive(Debug)]
pub(super) struct Phase {
    /// The `job.step` of a failure.
    pub failed: &'static str,
    /// "during the watch".
    pub during: &'static str,
    /// "at the end of the watch".
    pub end: &'static str,
}

/// The post-deploy watch.
pub(super) const WATCH: Phase = Phase {
    failed: "watch.failed",
    during: "during the watch",
    end: "at the end of the watch",
};

/// A blue-green preview.
pub(super) const PREVIEW: Phase = Phase {
    failed: "preview.failed",
    during: "during the preview",
    end: "at the end of the preview",
};

/// What the signals check besides probes, for a `*.started` step: "" or ", error rate and
/// p95 latency" and so on.
pub(super) fn signals_text(http: bool, release: &ReleaseSpec) -> &'static str {
    match (http, release.rollout.analysis.prometheus.is_some()) {
        (true, true) => ", error rate, p95 latency and the Prometheus checks",
        (true, false) => ", error rate and p95 latency",
        (false, true) => ", the Prometheus checks",
        (false, false) => "",
    }
}

/// The cohort's error rate and p95 (counted from `base`, taken before it got traffic), and
/// the Prometheus checks, at every analysis interval for `period`; a breach is recorded as
/// `phase.failed`. Ok with the Prometheus checks that had no value at the end.
///
/// # Errors
///
/// [`StrategyError::Unhealthy`] with the breached signal's verdict.
pub(super) async fn judge_signals(
    app: &AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    period: Duration,
    cohort: &str,
    mut base: Option<(u32, HttpStats)>,
    phase: &Phase,
) -> Result<Vec<PromVerdict>, StrategyError> {
    let spec = &release.rollout.analysis;
    if base.is_none() && spec.prometheus.is_none() {
        return Ok(Vec::new());
    }
    let started = Instant::now();
    let end = started + period;
    let mut last: Vec<PromVerdict> = Vec::new();
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        tokio::time::sleep_until(end.min(now + spec.interval)).await;
        if let Some((pid, base)) = &mut base
            && let Some((now_pid, counters)) = shift::http_of(app, cohort)
        {
            if now_pid != *pid {
                *pid = now_pid;
                *base = HttpStats::default();
            }
            let verdicts = signals::judge(&counters.minus(base), spec, started.elapsed());
            if let Some(breach) = verdicts.iter().find(|v| v.outcome == Outcome::Fail) {
                let text = format!("{} {}: {breach}", release.version, phase.during);
                ctx.note_with(phase.failed, text.clone(), "verdict", breach.to_json())
                    .await;
                return Err(StrategyError::Unhealthy(text));
            }
        }
        if let Some(gate) = &spec.prometheus {
            let verdicts =
                prometheus::judge(gate, app.policy.name.as_str(), cohort, started.elapsed()).await;
            if let Some(breach) = verdicts.iter().find(|v| v.outcome == Outcome::Fail) {
                let text = format!("{} {}: {breach}", release.version, phase.during);
                ctx.note_with(phase.failed, text.clone(), "verdict", breach.to_json())
                    .await;
                return Err(StrategyError::Unhealthy(text));
            }
            last = verdicts;
        }
    }
    let unanswered: Vec<PromVerdict> = last
        .into_iter()
        .filter(|v| v.outcome == Outcome::NoData)
        .collect();
    if spec.no_data == NoData::Fail
        && let Some(first) = unanswered.first()
    {
        let text = format!(
            "{} {} (no_data = fail): {first}",
            release.version, phase.end
        );
        ctx.note_with(phase.failed, text.clone(), "verdict", first.to_json())
            .await;
        return Err(StrategyError::Unhealthy(text));
    }
    Ok(unanswered)
}
