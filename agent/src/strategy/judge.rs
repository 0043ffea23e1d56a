//! Judging a new release's signals over a period: the front door's HTTP counters of a cohort
//! or of single backends (error rate and p95, as [`crate::health::signals`] judges them) and
//! the job's Prometheus checks, at every analysis interval. The post-deploy watch, the
//! blue-green preview and each rolling batch's analysis run it beside their health probes;
//! too few samples by the end is no failure there (the release passed its health checks), a
//! Prometheus check still without a value is returned (and fails with `no_data = fail`).

use std::time::Duration;

use tokio::time::Instant;

use super::shift;
use super::{JobCtx, StrategyError, Unhealthy};
use crate::app::AppRuntime;
use crate::health::prometheus::{self, PromVerdict};
use crate::health::signals::{self, Outcome};
use crate::job::{NoData, ReleaseSpec};
use crate::traffic::http_stats::HttpStats;

/// Where [`judge_signals`] runs: the step a failure records and how its text says when.
#[derive(Debug)]
pub struct Phase {
    /// The `job.step` of a failure.
    pub failed: &'static str,
    /// "during the watch".
    pub during: &'static str,
    /// "at the end of the watch".
    pub end: &'static str,
}

/// The post-deploy watch.
pub const WATCH: Phase = Phase {
    failed: "watch.failed",
    during: "during the watch",
    end: "at the end of the watch",
};

/// A blue-green preview.
pub const PREVIEW: Phase = Phase {
    failed: "preview.failed",
    during: "during the preview",
    end: "at the end of the preview",
};

/// A rolling batch's analysis.
pub const BATCH: Phase = Phase {
    failed: "batch.failed",
    during: "during its batch analysis",
    end: "at the end of its batch analysis",
};

/// What the signals check besides probes, for a `*.started` step: "" or ", error rate and
/// p95 latency" and so on.
pub fn signals_text(http: bool, release: &ReleaseSpec) -> &'static str {
    match (http, release.rollout.analysis.prometheus.is_some()) {
        (true, true) => ", error rate, p95 latency and the Prometheus checks",
        (true, false) => ", error rate and p95 latency",
        (false, true) => ", the Prometheus checks",
        (false, false) => "",
    }
}

/// HTTP counters judged over a period: a cohort's or one backend's, counted from `base`.
#[derive(Debug)]
pub struct Window {
    /// A cohort (`None`: a backend).
    cohort: Option<String>,
    /// The backend id.
    backend: Option<String>,
    /// The front door that counted `base`; another one counts from its own start.
    pid: u32,
    base: HttpStats,
}

impl Window {
    /// `cohort`'s counters from now; `None` unless a front door counts in HTTP mode.
    pub fn cohort(app: &AppRuntime, cohort: &str) -> Option<Window> {
        let (pid, base) = shift::http_of(app, cohort)?;
        Some(Window {
            cohort: Some(cohort.to_owned()),
            backend: None,
            pid,
            base,
        })
    }

    /// Backend `id`'s counters from now; `None` unless a front door counts in HTTP mode.
    pub fn backend(app: &AppRuntime, id: String) -> Option<Window> {
        let (pid, base) = shift::http_of_backend(app, &id)?;
        Some(Window {
            cohort: None,
            backend: Some(id),
            pid,
            base,
        })
    }

    /// The counters since `base`; `None` when the stats cannot be read.
    fn since_base(&mut self, app: &AppRuntime) -> Option<HttpStats> {
        let (pid, now) = match (&self.cohort, &self.backend) {
            (Some(c), _) => shift::http_of(app, c)?,
            (None, Some(id)) => shift::http_of_backend(app, id)?,
            (None, None) => return None,
        };
        if pid != self.pid {
            self.pid = pid;
            self.base = HttpStats::default();
        }
        Some(now.minus(&self.base))
    }

    /// "" for a cohort, "backend ID " for a backend.
    fn label(&self) -> String {
        self.backend
            .as_ref()
            .map_or_else(String::new, |id| format!("backend {id} "))
    }
}

/// The `windows`' error rate and p95 and the Prometheus checks (on `cohort`) at every
/// analysis interval for `period`; a breach is recorded as `phase.failed`. Ok with the
/// Prometheus checks that had no value at the end.
///
/// # Errors
///
/// [`StrategyError::Unhealthy`] with the breached signal's verdict.
pub async fn judge_signals(
    app: &AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    period: Duration,
    cohort: &str,
    mut windows: Vec<Window>,
    phase: &Phase,
) -> Result<Vec<PromVerdict>, StrategyError> {
    let spec = &release.rollout.analysis;
    if windows.is_empty() && spec.prometheus.is_none() {
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
        for window in &mut windows {
            let Some(counters) = window.since_base(app) else {
                continue;
            };
            let verdicts = signals::judge(&counters, spec, started.elapsed());
            if let Some(breach) = verdicts.iter().find(|v| v.outcome == Outcome::Fail) {
                let why = Unhealthy::Signal {
                    version: release.version.clone(),
                    window: window.label(),
                    during: phase.during,
                    breach: breach.clone(),
                };
                return Err(ctx.breached(phase.failed, why, breach.to_json()).await);
            }
        }
        if let Some(gate) = &spec.prometheus {
            let verdicts =
                prometheus::judge(gate, app.policy.name.as_str(), cohort, started.elapsed()).await;
            if let Some(breach) = verdicts.iter().find(|v| v.outcome == Outcome::Fail) {
                let why = Unhealthy::Prom {
                    version: release.version.clone(),
                    during: phase.during,
                    breach: breach.clone(),
                };
                return Err(ctx.breached(phase.failed, why, breach.to_json()).await);
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
        let why = Unhealthy::PromNoData {
            version: release.version.clone(),
            end: phase.end,
            first: first.clone(),
        };
        return Err(ctx.breached(phase.failed, why, first.to_json()).await);
    }
    Ok(unanswered)
}
