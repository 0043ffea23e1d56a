//! The canary strategy: start a few canary instances in the idle slot and move traffic to
//! them in weighted steps, each held for its pause (or until a signed promote) while an
//! analysis watches health probes, crashes, the front door's connection errors, the
//! processes' CPU and memory, with a front door in HTTP mode the canary cohort's error
//! rate and p95 latency ([`crate::health::signals`]; with `compare = "stable"` its error rate
//! and latency against the stable cohort's in the same window, [`crate::health::versus`]),
//! and the job's Prometheus checks ([`crate::health::prometheus`]). Any threshold crossed, or
//! a signed abort, sets the canary's weight to 0, stops it, and ends the job rolled back with the
//! measured reason (a breached signal's numbers go in an `analysis.failed` entry). A hold
//! that ends before the signals have enough samples follows `no_data`: pause (the default:
//! wait for data, or a promote or abort), fail, or pass. After the last step the new release
//! is scaled to its full count and takes all traffic.

use std::time::Duration;

use tokio::time::Instant;

use super::shift::{self, CANARY, STABLE, Weights, serve_only, share};
use super::steps::{
    install_within, record_release, refuse_pending_controls, start_instances, stop_ports,
    wait_healthy_ports, within,
};
use super::{JobCtx, Refused, StrategyError, Unhealthy};
use crate::app::AppRuntime;
use crate::app::slots::ports_in;
use crate::error::reason;
use crate::flags::split::CanaryFlag;
use crate::health::analysis::Resources;
use crate::health::prometheus::{self, PromVerdict};
use crate::health::signals::{self, Outcome, Verdict};
use crate::health::versus;
use crate::job::{Action, AnalysisSpec, Compare, NoData, ReleaseSpec};
use crate::progress::Ended;
use crate::supervisor::InstanceState;
use crate::traffic::http_stats::HttpStats;

/// Deploys `release` as a canary, step by step.
pub async fn deploy(app: &mut AppRuntime, ctx: &JobCtx, release: &ReleaseSpec) -> Ended {
    let deadline = Instant::now() + release.progress_deadline;
    if let Some(failed) = install_within(app, ctx, release, deadline).await {
        return failed;
    }
    let stable_slot = app.state.active_slot;
    let canary_slot = stable_slot.other();
    let stable = ports_in(app, stable_slot);
    let leftovers = ports_in(app, canary_slot);
    if let Err(e) = stop_ports(app, ctx, &leftovers).await {
        return Ended::failed(reason(&e));
    }
    app.state.standby = None;
    let rollout = &release.rollout;
    let canaries = rollout.canary_instances.clamp(1, release.instances.max(1));
    // A fleet ring may hold the flag below 100%.
    let flag_limit = rollout.flag_limit.unwrap_or(100).min(100);
    let forward = async {
        app.shared
            .set_rollout(format!("canary {}: starting", release.version));
        let canary = start_instances(app, ctx, release, canary_slot, 0..canaries).await?;
        wait_healthy_ports(app, ctx, release, &canary).await?;
        let versus_stable = rollout.analysis.compare == Compare::Stable;
        if versus_stable && stable.is_empty() {
            ctx.note(
                "analysis.thresholds",
                "compare = stable, but no stable release runs: the canary's error rate and \
                 latency are judged against max_error_rate and max_p95_latency",
            )
            .await;
        }
        let mut analysis = Analysis::new(
            app,
            &canary,
            rollout.analysis.clone(),
            versus_stable && !stable.is_empty(),
        );
        let steps = rollout.steps.len();
        for (n, step) in rollout.steps.iter().enumerate() {
            let weight = if stable.is_empty() {
                100
            } else {
                step.weight.min(100)
            };
            let mut weights = Weights::new();
            share(&mut weights, &stable, 100 - weight);
            share(&mut weights, &canary, weight);
            let label = format!("canary {weight}% (step {}/{steps})", n + 1);
            app.shared
                .set_rollout(format!("canary {}: {label}", release.version));
            shift::apply(app, ctx, &weights, &label).await?;
            if let (Some(flag), Some(percent)) = (&ctx.canary_flag, step.flag_percent) {
                split_flag(ctx, flag, percent.min(flag_limit), &label).await?;
            }
            ctx.step_of(
                "canary.step",
                label.clone(),
                u32::try_from(n + 1).unwrap_or(u32::MAX),
                u32::try_from(steps).unwrap_or(u32::MAX),
            )
            .await?;
            hold(app, ctx, release, &mut analysis, step.pause, &label).await?;
            let passed = format!("{label}: {}", analysis.summary());
            match analysis.prom_json() {
                Some(verdicts) => {
                    ctx.step_with("analysis.passed", passed, "prometheus", verdicts)
                        .await?;
                }
                None => ctx.step("analysis.passed", passed).await?,
            }
        }
        app.shared
            .set_rollout(format!("canary {}: promoting", release.version));
        let rest =
            start_instances(app, ctx, release, canary_slot, canaries..release.instances).await?;
        wait_healthy_ports(app, ctx, release, &rest).await?;
        let all = ports_in(app, canary_slot);
        serve_only(app, ctx, &all, "promote the canary").await?;
        if let Some(flag) = &ctx.canary_flag {
            split_flag(ctx, flag, flag_limit, "promoted").await?;
        }
        // The stable release still runs: a watch failure returns all traffic to it.
        super::watch::watch(app, ctx, release, &all, CANARY).await?;
        Ok::<(), StrategyError>(())
    };
    let result = within(deadline, release.progress_deadline, forward).await;
    refuse_pending_controls(app);
    let failure = match result {
        Ok(()) => {
            shift::wait_drained(app, ctx, &stable).await;
            if let Err(e) = stop_ports(app, ctx, &stable).await {
                ctx.note("instances.stop_failed", reason(&e)).await;
            }
            return match record_release(app, &release.version, canary_slot) {
                Ok(()) => Ended::succeeded(format!(
                    "canary {} promoted: {} instance(s) serve all traffic",
                    release.version, release.instances
                )),
                Err(e) => Ended::failed(reason(&e)),
            };
        }
        Err(failure) => failure,
    };
    ctx.note("canary.aborted", format!("{failure}; canary weight to 0"))
        .await;
    if !stable.is_empty()
        && let Err(e) = serve_only(app, ctx, &stable, "canary weight 0").await
    {
        return Ended::failed(format!(
            "{failure}; restoring the stable backends failed: {}",
            reason(&e)
        ));
    }
    if let Some(flag) = &ctx.canary_flag {
        flag.end(&format!("canary aborted: {failure}")).await;
    }
    let canary = ports_in(app, canary_slot);
    if let Err(e) = stop_ports(app, ctx, &canary).await {
        ctx.note("instances.stop_failed", reason(&e)).await;
    }
    // Service is restored either way; a state file that could not be written is said in the
    // job's record (the executor tries again when the job ends).
    if let Err(e) = app.persist() {
        ctx.note("state.persist_failed", reason(&e)).await;
    }
    match app.state.current.clone() {
        Some(v) if !stable.is_empty() => {
            Ended::rolled_back(format!("canary aborted: {failure}; {v} serves all traffic"))
        }
        _ => Ended::failed(format!("canary aborted: {failure}")),
    }
}

/// Serves the canary flag's variant to `percent` percent of users for the step `label`; says
/// so in the job's events when a kill switch keeps the flag off.
async fn split_flag(
    ctx: &JobCtx,
    flag: &CanaryFlag,
    percent: u32,
    label: &str,
) -> Result<(), StrategyError> {
    let key = flag.flag();
    let message = if flag.set(percent, label).await? {
        format!("{label}: flag {key} serves its canary variant to {percent}% of users")
    } else {
        format!(
            "{label}: flag {key} no longer allows a split in the set in force (switched off?): \
             {percent}% is recorded, not served"
        )
    };
    ctx.note("canary.flag", message).await;
    Ok(())
}

/// Holds a step for `pause` (or until promote when `None`), analysing at every interval and
/// obeying promote (end the hold) and abort (fail) jobs.
async fn hold(
    app: &mut AppRuntime,
    ctx: &JobCtx,
    release: &ReleaseSpec,
    analysis: &mut Analysis,
    pause: Option<Duration>,
    label: &str,
) -> Result<(), StrategyError> {
    let end = pause.map(|p| Instant::now() + p);
    if end.is_none() {
        let message = format!(
            "waiting for promote: run gantry promote --app {} (or gantry abort)",
            app.policy.name
        );
        app.shared
            .set_rollout(format!("canary {}: {message}", release.version));
        ctx.step("rollout.paused", message).await?;
    }
    let mut waiting_for_data = false;
    loop {
        analysis.check(app, ctx, release).await?;
        let now = Instant::now();
        let over = end.is_some_and(|e| now >= e);
        if over {
            let missing = analysis.missing_data();
            if missing.is_empty() {
                if waiting_for_data {
                    ctx.step(
                        "analysis.resumed",
                        format!("{label}: enough samples now, going on"),
                    )
                    .await?;
                }
                return Ok(());
            }
            let missing = missing.join("; ");
            match analysis.spec.no_data {
                NoData::Pass => {
                    ctx.step(
                        "analysis.no_data",
                        format!("{label}: going on without a verdict (no_data = pass): {missing}"),
                    )
                    .await?;
                    return Ok(());
                }
                NoData::Fail => {
                    return Err(Unhealthy::CanaryNoData { missing }.into());
                }
                NoData::Pause if !waiting_for_data => {
                    waiting_for_data = true;
                    let message = format!(
                        "{label} paused: not enough data to judge the canary: {missing}. It goes \
                         on by itself once there is enough; or run gantry promote --app {app_name} \
                         (or gantry abort)",
                        app_name = app.policy.name
                    );
                    app.shared
                        .set_rollout(format!("canary {}: {message}", release.version));
                    ctx.step("rollout.paused", message).await?;
                }
                NoData::Pause => {}
            }
        }
        let tick = analysis.spec.interval;
        let wake = match end {
            Some(e) if !over => e.min(now + tick),
            _ => now + tick,
        };
        tokio::select! {
            () = tokio::time::sleep_until(wake) => {}
            control = app.control.recv() => match control {
                Some(c) if c.action == Action::Promote => {
                    let _ = c.reply.send(Ok(format!(
                        "promoted the canary of {} (job {})", release.version, ctx.job.spec.id
                    )));
                    ctx.step("rollout.promoted", format!("promoted by job {}", c.job_id)).await?;
                    return Ok(());
                }
                Some(c) => {
                    let _ = c.reply.send(Ok(format!(
                        "aborted the canary of {} (job {})", release.version, ctx.job.spec.id
                    )));
                    return Err(StrategyError::Aborted(c.job_id.to_string()));
                }
                None => return Err(Refused::ControlClosed.into()),
            },
        }
    }
}

/// The canary's measurements against the job's thresholds.
struct Analysis {
    spec: AnalysisSpec,
    ports: Vec<u16>,
    probe_failures: u32,
    errors_before: u64,
    resources: Resources,
    /// The canary cohort's HTTP counters (front door in HTTP mode only).
    http: Option<HttpWindow>,
    /// When the analysis started: the Prometheus checks' `{{window}}`.
    since: Instant,
    /// The memory limit in bytes (the smaller of `max_memory_bytes` and `max_memory_share`
    /// of the host's memory), with how a share was worked out, for the breach's text.
    memory_limit: Option<(u64, String)>,
    /// The Prometheus checks' last verdicts.
    prom: Vec<PromVerdict>,
}

/// The window the HTTP signals are judged over: from the analysis's start (before the first
/// step) to now, whole.
struct HttpWindow {
    /// The front door that counted `base`; another one counts from its own start.
    pid: u32,
    base: HttpStats,
    /// With `compare = "stable"`: the stable cohort's counters at the start.
    stable_base: Option<HttpStats>,
    since: Instant,
    last: Option<[Verdict; 2]>,
}

impl Analysis {
    /// With `versus_stable` the HTTP signals are judged against the stable cohort's.
    fn new(app: &AppRuntime, ports: &[u16], spec: AnalysisSpec, versus_stable: bool) -> Self {
        Self {
            ports: ports.to_vec(),
            probe_failures: 0,
            errors_before: shift::connect_errors(app, ports),
            resources: Resources::new(),
            http: shift::http_of(app, CANARY).map(|(pid, base)| HttpWindow {
                pid,
                base,
                stable_base: versus_stable.then(|| {
                    shift::http_of(app, STABLE)
                        .map(|(_, s)| s)
                        .unwrap_or_default()
                }),
                since: Instant::now(),
                last: None,
            }),
            since: Instant::now(),
            prom: Vec::new(),
            memory_limit: memory_limit(&spec, app.policy.limits.max_memory),
            spec,
        }
    }

    /// The Prometheus checks' last verdicts for the audit entry; `None` without a gate.
    fn prom_json(&self) -> Option<serde_json::Value> {
        self.spec.prometheus.as_ref()?;
        Some(self.prom.iter().map(PromVerdict::to_json).collect())
    }

    fn summary(&self) -> String {
        let mut s = format!(
            "{} probe failure(s), peak CPU {:.0}%, peak memory {} KiB",
            self.probe_failures,
            self.resources.cpu_max,
            self.resources.memory_max / 1024
        );
        if let Some([errors, latency]) = self.http.as_ref().and_then(|w| w.last.as_ref()) {
            s.push_str(&format!("; {errors}; {latency}"));
        }
        for v in &self.prom {
            s.push_str(&format!("; {v}"));
        }
        s
    }

    /// The HTTP signals that have too few samples for a verdict, said for people.
    fn missing_data(&self) -> Vec<String> {
        let mut out = self.missing_http();
        out.extend(
            self.prom
                .iter()
                .filter(|v| v.outcome == Outcome::NoData)
                .map(ToString::to_string),
        );
        out
    }

    /// [`Analysis::missing_data`] of the front door's signals.
    fn missing_http(&self) -> Vec<String> {
        let Some(verdicts) = self.http.as_ref().and_then(|w| w.last.as_ref()) else {
            return Vec::new();
        };
        let mut out: Vec<String> = verdicts
            .iter()
            .filter(|v| v.outcome == Outcome::NoData)
            .map(Verdict::shortfall)
            .collect();
        if !out.is_empty() && verdicts.iter().all(|v| v.samples == 0) {
            out.push("the canary received no requests through the front door".to_owned());
        }
        out
    }

    /// The canary cohort's error rate and p95 over the window, or with `compare = "stable"`
    /// its error rate and latency against the stable cohort's; Err on a breach, recorded
    /// with its numbers.
    async fn check_http(&mut self, app: &AppRuntime, ctx: &JobCtx) -> Result<(), StrategyError> {
        let Some(window) = &mut self.http else {
            return Ok(());
        };
        let Some((pid, now)) = shift::http_of(app, CANARY) else {
            return Ok(());
        };
        let stable_now = match window.stable_base {
            Some(_) => match shift::http_of(app, STABLE) {
                Some((_, s)) => Some(s),
                None => return Ok(()),
            },
            None => None,
        };
        if pid != window.pid {
            window.pid = pid;
            window.base = HttpStats::default();
            if let Some(base) = &mut window.stable_base {
                *base = HttpStats::default();
            }
        }
        let canary = now.minus(&window.base);
        let elapsed = window.since.elapsed();
        let verdicts = match (&window.stable_base, stable_now) {
            (Some(base), Some(stable)) => {
                versus::judge(&canary, &stable.minus(base), &self.spec, elapsed)
            }
            _ => signals::judge(&canary, &self.spec, elapsed),
        };
        if let Some(breach) = verdicts.iter().find(|v| v.outcome == Outcome::Fail) {
            let why = Unhealthy::CanarySignal(breach.clone());
            return Err(ctx.breached("analysis.failed", why, breach.to_json()).await);
        }
        window.last = Some(verdicts);
        Ok(())
    }

    /// The job's Prometheus checks on the canary cohort over the analysis so far; Err on the
    /// first that fails, recorded with the query as sent and its value.
    async fn check_prom(&mut self, app: &AppRuntime, ctx: &JobCtx) -> Result<(), StrategyError> {
        let Some(gate) = &self.spec.prometheus else {
            return Ok(());
        };
        let verdicts =
            prometheus::judge(gate, app.policy.name.as_str(), CANARY, self.since.elapsed()).await;
        if let Some(breach) = verdicts.iter().find(|v| v.outcome == Outcome::Fail) {
            let why = Unhealthy::CanaryProm(breach.clone());
            return Err(ctx.breached("analysis.failed", why, breach.to_json()).await);
        }
        self.prom = verdicts;
        Ok(())
    }

    /// One round of analysis; Err names the threshold crossed and the measured value.
    async fn check(
        &mut self,
        app: &AppRuntime,
        ctx: &JobCtx,
        release: &ReleaseSpec,
    ) -> Result<(), StrategyError> {
        let fail = |why: Unhealthy| Err(StrategyError::from(why));
        let mut pids = Vec::new();
        for instance in app
            .instances
            .iter()
            .filter(|i| self.ports.contains(&i.record().port))
        {
            let record = instance.record();
            let restarts = match &*instance.state().borrow() {
                InstanceState::Running { restarts, .. } => *restarts,
                InstanceState::Exited { restarts, .. }
                | InstanceState::CrashLoop { restarts, .. } => (*restarts).max(1),
                InstanceState::Starting => 0,
                InstanceState::Stopped => u32::MAX,
            };
            if restarts > self.spec.max_restarts {
                return fail(Unhealthy::CanaryRestarts {
                    index: record.index,
                    restarts,
                    limit: self.spec.max_restarts,
                });
            }
            let dir = app.releases.dir_of(&record.version);
            let probe = crate::health::probe_once(
                &release.health.probe,
                record.port,
                &dir,
                release.health.timeout,
                &app.policy.run_as,
            )
            .await;
            if probe.is_err() {
                self.probe_failures += 1;
            }
            pids.push(record.pid);
        }
        if self.probe_failures > self.spec.max_probe_failures {
            return fail(Unhealthy::CanaryProbes {
                failures: self.probe_failures,
                limit: self.spec.max_probe_failures,
            });
        }
        let errors = shift::connect_errors(app, &self.ports).saturating_sub(self.errors_before);
        if errors > self.spec.max_conn_errors {
            return fail(Unhealthy::CanaryConnErrors {
                errors,
                limit: self.spec.max_conn_errors,
            });
        }
        let (memory, how) = match &self.memory_limit {
            Some((bytes, how)) => (Some(*bytes), how.as_str()),
            None => (None, ""),
        };
        self.resources
            .check(&pids, self.spec.max_cpu_percent, memory)
            .map_err(|breach| Unhealthy::Resources {
                breach,
                how: how.to_owned(),
            })?;
        self.check_http(app, ctx).await?;
        self.check_prom(app, ctx).await
    }
}

/// The memory limit of `spec` in bytes: the smaller of `max_memory_bytes` and
/// `max_memory_share` of the instance's own limit (the app's `limits.max_memory`) or, without
/// one, of the host's total memory, with the share's arithmetic for the breach's text ("" for
/// a size).
fn memory_limit(spec: &AnalysisSpec, instance_limit: Option<u64>) -> Option<(u64, String)> {
    let share = spec.max_memory_share.map(|share| {
        let (whole, of) = match instance_limit {
            Some(limit) => (limit, "the instance's limit (limits.max_memory) of"),
            None => {
                let mut system = sysinfo::System::new();
                system.refresh_memory();
                (system.total_memory(), "the host's")
            }
        };
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let bytes = (whole as f64 * share) as u64;
        (
            bytes,
            format!(" = {}% of {of} {whole} bytes of memory", share * 100.0),
        )
    });
    match (spec.max_memory_bytes, share) {
        (Some(bytes), Some(s)) if bytes <= s.0 => Some((bytes, String::new())),
        (_, Some(s)) => Some(s),
        (Some(bytes), None) => Some((bytes, String::new())),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_memory_share_is_of_the_host_and_the_smaller_limit_wins() {
        let mut spec = AnalysisSpec::default();
        assert_eq!(memory_limit(&spec, None), None);
        spec.max_memory_bytes = Some(1 << 20);
        assert_eq!(memory_limit(&spec, None), Some((1 << 20, String::new())));
        spec.max_memory_share = Some(1.0);
        assert_eq!(
            memory_limit(&spec, None).unwrap().0,
            1 << 20,
            "1 MiB is less than the host"
        );
        spec.max_memory_bytes = None;
        spec.max_memory_share = Some(0.5);
        let (bytes, how) = memory_limit(&spec, None).unwrap();
        let mut system = sysinfo::System::new();
        system.refresh_memory();
        assert_eq!(bytes, system.total_memory() / 2);
        assert!(how.starts_with(" = 50% of the host's "), "{how}");
        spec.max_memory_bytes = Some(u64::MAX);
        assert_eq!(memory_limit(&spec, None).unwrap().0, bytes);
    }

    #[test]
    fn a_memory_share_is_of_the_instances_limit_when_the_app_sets_one() {
        let spec = AnalysisSpec {
            max_memory_share: Some(0.8),
            ..AnalysisSpec::default()
        };
        assert_eq!(
            memory_limit(&spec, Some(1000 << 20)),
            Some((
                838_860_800,
                " = 80% of the instance's limit (limits.max_memory) of 1048576000 bytes of memory"
                    .to_owned()
            ))
        );
        // A size below the share still wins.
        let both = AnalysisSpec {
            max_memory_bytes: Some(1 << 20),
            ..spec
        };
        assert_eq!(memory_limit(&both, Some(1000 << 20)).unwrap().0, 1 << 20);
    }
}
