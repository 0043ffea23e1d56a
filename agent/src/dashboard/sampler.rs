//! Once a second, what the dashboard's history records: per app and cohort, the front door's
//! responses, 5xx and p95 bound over the second (the same counters and the same error-rate
//! and p95 functions the canary analysis judges, [`crate::health::signals`]), and the CPU and
//! resident memory of the cohort's instances; plus the apps' current summary.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio_util::sync::CancellationToken;

use super::history::Sample;
use super::{AppSummary, Dashboard, InstanceSummary};
use crate::executor::{AppStatus, Executor};
use crate::health::signals;
use crate::strategy::shift::STABLE;
use crate::traffic::Stats;
use crate::traffic::http_stats::HttpStats;

/// How often a sample is taken.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Samples every [`SAMPLE_EVERY`] into `dashboard` until `stop`.
pub(super) async fn run(executor: Executor, dashboard: Dashboard, stop: CancellationToken) {
    let mut sampler = Sampler::default();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let status = executor.status(None).await;
        let routers: BTreeMap<String, Stats> = executor
            .router_stats()
            .into_iter()
            .map(|(name, stats)| (name.to_string(), stats))
            .collect();
        sampler.sample(&dashboard, &status, &routers, now_ms());
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The counters of the previous sample, to take differences from.
#[derive(Default)]
struct Sampler {
    system: Option<System>,
    /// Per `(app, cohort)`: the front door's pid and its cumulative counters.
    base: HashMap<(String, String), (u32, HttpStats)>,
    last_ms: Option<u64>,
}

/// The cohort of each instance port: the route table's backend at that port, else stable.
fn cohort_of_port(app: &AppStatus) -> HashMap<u16, String> {
    app.backends
        .iter()
        .filter_map(|b| {
            let port = b.addr.parse::<std::net::SocketAddr>().ok()?.port();
            Some((port, b.cohort.clone()))
        })
        .collect()
}

impl Sampler {
    fn sample(
        &mut self,
        dashboard: &Dashboard,
        status: &[AppStatus],
        routers: &BTreeMap<String, Stats>,
        now: u64,
    ) {
        let span = self.last_ms.map_or(1000, |last| now.saturating_sub(last));
        self.last_ms = Some(now);
        let pids: Vec<Pid> = status
            .iter()
            .flat_map(|a| a.instances.iter().map(|i| Pid::from_u32(i.pid)))
            .collect();
        let system = self.system.get_or_insert_with(System::new);
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&pids),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        let mut summaries = Vec::with_capacity(status.len());
        let mut samples = Vec::new();
        for app in status {
            let name = app.name.to_string();
            let ports = cohort_of_port(app);
            let mut resources: BTreeMap<String, (f64, u64)> = BTreeMap::new();
            let mut instances = Vec::with_capacity(app.instances.len());
            for i in &app.instances {
                let cohort = ports
                    .get(&i.port)
                    .cloned()
                    .unwrap_or_else(|| STABLE.to_owned());
                if let Some(p) = system.process(Pid::from_u32(i.pid)) {
                    let r = resources.entry(cohort.clone()).or_default();
                    r.0 += f64::from(p.cpu_usage()) / 100.0;
                    r.1 += p.memory();
                }
                instances.push(InstanceSummary {
                    index: i.index,
                    version: i.version.to_string(),
                    state: i.state.clone(),
                    cohort,
                });
            }
            let router = routers.get(&name);
            let mut cohorts: BTreeSet<String> = resources.keys().cloned().collect();
            if let Some(r) = router {
                cohorts.extend(r.cohorts.keys().cloned());
            }
            for cohort in &cohorts {
                let window = router.and_then(|r| {
                    let now = r.cohorts.get(cohort)?;
                    window(&mut self.base, &name, cohort, r.pid, now)
                });
                let (cpu, memory) = resources
                    .get(cohort)
                    .map_or((None, None), |(c, m)| (Some(*c), Some(*m)));
                let sample = Sample {
                    t_ms: now,
                    span_ms: span,
                    responses: window.as_ref().map_or(0, |w| w.responses.finals()),
                    errors: window.as_ref().map_or(0, |w| w.responses.server_error),
                    p95_ms: window.as_ref().and_then(signals::p95_bound_ms),
                    cpu,
                    memory,
                };
                samples.push((name.clone(), cohort.clone(), sample));
            }
            summaries.push(AppSummary {
                name,
                current: app.current.as_ref().map(ToString::to_string),
                previous: app.previous.as_ref().map(ToString::to_string),
                active_job: app.active_job.as_ref().map(ToString::to_string),
                strategy: app.strategy.map(|s| s.as_str().to_owned()),
                rollout: app.rollout.clone(),
                cohorts: cohorts.into_iter().collect(),
                instances,
            });
        }
        dashboard.record(summaries, samples);
    }
}

/// The counters since the previous sample of the same front door; `None` the first time a
/// cohort is seen or after the front door restarted (its counters started over).
fn window(
    base: &mut HashMap<(String, String), (u32, HttpStats)>,
    app: &str,
    cohort: &str,
    pid: u32,
    now: &HttpStats,
) -> Option<HttpStats> {
    let key = (app.to_owned(), cohort.to_owned());
    match base.insert(key, (pid, now.clone())) {
        Some((p, earlier)) if p == pid => Some(now.minus(&earlier)),
        _ => None,
    }
}
