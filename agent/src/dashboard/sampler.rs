//! Once a second, what the dashboard's history records: per app and cohort, the front door's
//! responses, 5xx and p95 bound over the second (the same counters and the same error-rate
//! and p95 functions the canary analysis judges, [`crate::health::signals`]), and the CPU and
//! resident memory of the cohort's instances; plus the apps' current summary. The readings go
//! through [`crate::health::sampler`], as `status`'s do.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use super::history::Sample;
use super::{AppSummary, Dashboard, InstanceSummary};
use crate::executor::{AppStatus, Executor};
use crate::health::sampler::{Counters, Processes};
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
struct Sampler {
    processes: Processes,
    /// Each app's front door at the previous sample.
    counters: Counters,
    last_ms: Option<u64>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            processes: Processes::default(),
            counters: Counters::new(Duration::ZERO),
            last_ms: None,
        }
    }
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
        let pids: Vec<u32> = status
            .iter()
            .flat_map(|a| a.instances.iter().map(|i| i.pid))
            .collect();
        let usage = self.processes.measure(&pids);
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
                if let Some(u) = usage.get(&i.pid) {
                    let r = resources.entry(cohort.clone()).or_default();
                    r.0 += f64::from(u.cpu_percent) / 100.0;
                    r.1 += u.memory_bytes;
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
            // `None` the first time a cohort is seen or after the front door restarted (its
            // counters started over).
            let previous = router.and_then(|r| self.counters.latest(&app.name, r.pid));
            for cohort in &cohorts {
                let window: Option<HttpStats> = router.and_then(|r| {
                    let earlier = previous?.cohorts.get(cohort)?;
                    Some(r.cohorts.get(cohort)?.minus(earlier))
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
            if let Some(r) = router {
                self.counters.record(&app.name, r, Instant::now());
            }
            summaries.push(AppSummary {
                name,
                current: app.current.as_ref().map(ToString::to_string),
                previous: app.previous.as_ref().map(ToString::to_string),
                active_job: app.active_job.as_ref().map(ToString::to_string),
                strategy: app.strategy.map(|s| s.as_str().to_owned()),
                rollout: app.rollout.clone(),
                notes: app.notes.clone(),
                cohorts: cohorts.into_iter().collect(),
                instances,
            });
        }
        dashboard.record(summaries, samples);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dashboard::lock;
    use crate::executor::{BackendStatus, InstanceStatus};
    use crate::job::AppName;

    /// `ok` 2xx, `errors` 5xx, `slow` of them all over 200 ms.
    fn counters(ok: u64, errors: u64, slow: u64) -> HttpStats {
        HttpStats::sampled(ok, errors, ok + errors - slow)
    }

    fn app(canary_pid: u32) -> AppStatus {
        let instance = |index, pid, port, version: &str| InstanceStatus {
            index,
            pid,
            port,
            version: version.parse().unwrap(),
            state: "running".to_owned(),
            restarts: 0,
            slot: None,
        };
        let backend = |port, cohort: &str| BackendStatus {
            id: format!("b{port}"),
            addr: format!("127.0.0.1:{port}"),
            weight: 1,
            draining: false,
            active: 0,
            total: 0,
            connect_errors: 0,
            bytes_in: 0,
            bytes_out: 0,
            cohort: cohort.to_owned(),
        };
        AppStatus {
            name: AppName::new("web").unwrap(),
            current: Some("1.0.0".parse().unwrap()),
            previous: None,
            active_job: Some(crate::job::JobId::new("j1").unwrap()),
            instances: vec![
                instance(0, std::process::id(), 9001, "1.0.0"),
                instance(1, canary_pid, 9002, "2.0.0"),
            ],
            releases_on_disk: Vec::new(),
            strategy: None,
            active_slot: None,
            rollout: "canary 50%".to_owned(),
            listen: None,
            backends: vec![backend(9001, "stable"), backend(9002, "canary")],
            notes: String::new(),
            signals: Vec::new(),
        }
    }

    fn router(pid: u32, stable: HttpStats, canary: HttpStats) -> BTreeMap<String, Stats> {
        let stats = Stats {
            pid,
            cohorts: [("stable".to_owned(), stable), ("canary".to_owned(), canary)]
                .into_iter()
                .collect(),
            ..Stats::default()
        };
        [("web".to_owned(), stats)].into_iter().collect()
    }

    #[test]
    fn samples_are_the_differences_of_the_front_doors_counters_per_cohort() {
        let d = Dashboard::default();
        let mut s = Sampler::default();
        let me = std::process::id();
        s.sample(
            &d,
            &[app(me)],
            &router(7, counters(100, 0, 0), counters(10, 0, 0)),
            1_000,
        );
        s.sample(
            &d,
            &[app(me)],
            &router(7, counters(190, 10, 10), counters(60, 0, 0)),
            2_000,
        );
        let series = lock(&d.inner.history).of_app("web", 0);
        let stable = &series["stable"];
        // The first sample only sets the base: nothing is counted from before the agent looked.
        assert_eq!(
            (stable[0].responses, stable[0].errors, stable[0].p95_ms),
            (0, 0, None)
        );
        let second = stable[1];
        assert_eq!((second.responses, second.errors), (100, 10));
        assert_eq!(second.span_ms, 1_000);
        // 10 of 100 slower than 200 ms: the p95 is in the 500 ms bucket, as the analysis says.
        let window = counters(190, 10, 10).minus(&counters(100, 0, 0));
        assert_eq!(second.p95_ms, signals::p95_bound_ms(&window));
        assert_eq!(second.p95_ms, Some(500));
        assert!(
            (second.error_rate().unwrap() - signals::error_rate(&window).unwrap()).abs() < 1e-12
        );
        assert_eq!(series["canary"][1].responses, 50);
        // This process stands in for both instances: its memory is measured in each cohort.
        assert!(second.memory.is_some_and(|m| m > 0), "{second:?}");
        assert!(series["canary"][1].memory.is_some_and(|m| m > 0));
        let apps = lock(&d.inner.apps).clone();
        assert_eq!(apps[0].cohorts, ["canary", "stable"]);
        assert_eq!(apps[0].instances[1].cohort, "canary");
        assert_eq!(apps[0].active_job.as_deref(), Some("j1"));

        // A restarted front door (new pid) counts from zero: that sample sets a new base.
        s.sample(
            &d,
            &[app(me)],
            &router(8, counters(5, 0, 0), counters(5, 0, 0)),
            3_000,
        );
        s.sample(
            &d,
            &[app(me)],
            &router(8, counters(25, 0, 0), counters(5, 0, 0)),
            4_000,
        );
        let stable = &lock(&d.inner.history).of_app("web", 2_000)["stable"];
        assert_eq!(stable[0].responses, 0);
        assert_eq!(stable[1].responses, 20);
    }
}
