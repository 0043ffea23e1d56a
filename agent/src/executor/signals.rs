//! The golden signals `status` shows per app and cohort: the front door's HTTP counters over
//! the last minute (requests, responses, 5xx, error rate, p95 latency) and the cohort's
//! instances' CPU and memory.
//!
//! A sampler task keeps ([`crate::health::sampler`]), every [`SAMPLE_EVERY`], each app's cohort counters and its
//! instances' CPU and memory (CPU needs two readings of a process, so it cannot be measured
//! at the moment `status` asks). `status` subtracts the oldest sample still within
//! [`WINDOW`] from the counters it reads now; before the first sample, or after the front
//! door was restarted, the window starts with the front door.

use std::collections::BTreeMap;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use super::Inner;
use crate::error::lock;
use crate::health::sampler::{Counters, Processes, Usage};
use crate::job::AppName;
use crate::traffic::Stats;
use crate::traffic::http_stats::HttpStats;

/// How often the sampler reads the counters.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How far back `status` looks.
pub const WINDOW: Duration = Duration::from_secs(60);

/// One cohort's signals, for `status`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CohortSignals {
    /// `stable`, `canary` or `preview`.
    pub cohort: String,
    /// What the HTTP counters cover (zero without a front door in HTTP mode).
    pub window: Duration,
    /// The counters over `window`.
    pub http: HttpStats,
    /// Instances in the cohort.
    pub instances: u32,
    /// Their CPU, percent of one core, summed.
    pub cpu_percent: f64,
    /// Their resident memory, summed.
    pub memory_bytes: u64,
}

impl CohortSignals {
    /// The 5xx share of the final responses; `None` without responses.
    pub fn error_rate(&self) -> Option<f64> {
        let n = self.http.responses.finals();
        #[allow(clippy::cast_precision_loss)]
        (n > 0).then(|| self.http.responses.server_error as f64 / n as f64)
    }
}

/// The executor's readings of the front doors over the window and the latest CPU and memory
/// of each instance process.
#[derive(Debug)]
pub struct Sampler {
    counters: Counters,
    processes: Processes,
    usage: BTreeMap<u32, Usage>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self {
            counters: Counters::new(WINDOW),
            processes: Processes::default(),
            usage: BTreeMap::new(),
        }
    }
}

impl Sampler {
    /// Reads CPU and memory of `pids`.
    fn measure(&mut self, pids: &[u32]) {
        self.usage = self.processes.measure(pids);
    }
}

/// One instance, as the signals need it: its process and its cohort.
#[derive(Debug, Clone)]
pub struct Member {
    /// Its process.
    pub pid: u32,
    /// Its cohort (`stable` without a router).
    pub cohort: String,
}

/// The signals of one app: per cohort that has instances or HTTP counters.
pub fn signals_of(
    sampler: &Mutex<Sampler>,
    app: &AppName,
    stats: Option<&Stats>,
    members: &[Member],
    now_ms: u64,
) -> Vec<CohortSignals> {
    let sampler = lock(sampler);
    let now = Instant::now();
    let mut out: BTreeMap<String, CohortSignals> = BTreeMap::new();
    if let Some(stats) = stats.filter(|s| s.is_http()) {
        let base = sampler
            .counters
            .oldest(app, stats.pid, now, WINDOW + SAMPLE_EVERY);
        let window = match base {
            Some(b) => now.duration_since(b.at),
            None => Duration::from_millis(now_ms.saturating_sub(stats.started_at_ms)),
        };
        for (cohort, counters) in &stats.cohorts {
            let earlier = base
                .and_then(|b| b.cohorts.get(cohort))
                .cloned()
                .unwrap_or_default();
            out.insert(
                cohort.clone(),
                CohortSignals {
                    cohort: cohort.clone(),
                    window,
                    http: counters.minus(&earlier),
                    ..CohortSignals::default()
                },
            );
        }
    }
    for m in members {
        let entry = out
            .entry(m.cohort.clone())
            .or_insert_with(|| CohortSignals {
                cohort: m.cohort.clone(),
                ..CohortSignals::default()
            });
        entry.instances += 1;
        if let Some(usage) = sampler.usage.get(&m.pid) {
            entry.cpu_percent += f64::from(usage.cpu_percent);
            entry.memory_bytes += usage.memory_bytes;
        }
    }
    // A cohort the front door once counted but that has no instance and no traffic in the
    // window (an earlier canary) says nothing about now.
    out.into_values()
        .filter(|c| c.instances > 0 || c.http.requests > 0)
        .collect()
}

/// Samples every app every [`SAMPLE_EVERY`] until the executor's jobs are interrupted or it
/// is dropped.
pub(super) async fn run(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let token = strong.shutdown.clone();
        sample(&strong);
        drop(strong);
        tokio::select! {
            () = tokio::time::sleep(SAMPLE_EVERY) => {}
            () = token.cancelled() => return,
        }
    }
}

fn sample(inner: &Inner) {
    let now = Instant::now();
    let mut pids = Vec::new();
    let mut readings = Vec::new();
    for (name, shared) in &inner.shared {
        let (_, instances) = lock(&shared.snapshot).clone();
        pids.extend(instances.iter().map(|i| i.record().pid).filter(|p| *p != 0));
        if let Some(stats) = shared.router.as_deref().and_then(|r| r.stats().ok())
            && stats.is_http()
        {
            readings.push((name.clone(), stats));
        }
    }
    let mut sampler = lock(&inner.signals);
    for (name, stats) in &readings {
        sampler.counters.record(name, stats, now);
    }
    sampler.measure(&pids);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traffic::http_stats::StatusClasses;

    fn stats(pid: u32, ok: u64, errors: u64) -> Stats {
        let mut s = Stats {
            pid,
            mode: "http".to_owned(),
            started_at_ms: 1_000,
            ..Stats::default()
        };
        s.cohorts.insert(
            "canary".to_owned(),
            HttpStats {
                requests: ok + errors,
                responses: StatusClasses {
                    success: ok,
                    server_error: errors,
                    ..StatusClasses::default()
                },
                ..HttpStats::default()
            },
        );
        s
    }

    #[test]
    fn the_counters_are_those_since_the_oldest_sample_of_the_same_front_door() {
        let app = AppName::new("web").unwrap();
        let sampler = Mutex::new(Sampler::default());
        let member = |cohort: &str| Member {
            pid: 0,
            cohort: cohort.to_owned(),
        };
        // No sample yet: since the front door started.
        let s = signals_of(
            &sampler,
            &app,
            Some(&stats(7, 90, 10)),
            &[member("canary")],
            61_000,
        );
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].window, Duration::from_secs(60));
        assert_eq!(s[0].http.requests, 100);
        assert_eq!(s[0].error_rate(), Some(0.1));
        assert_eq!(s[0].instances, 1);
        lock(&sampler)
            .counters
            .record(&app, &stats(7, 80, 0), Instant::now());
        let s = signals_of(&sampler, &app, Some(&stats(7, 90, 10)), &[], 61_000);
        assert_eq!(
            (s[0].http.requests, s[0].http.responses.server_error),
            (20, 10)
        );
        assert_eq!(s[0].error_rate(), Some(0.5));
        assert!(s[0].window < Duration::from_secs(1), "{:?}", s[0].window);
        // Another front door counts from its own start.
        let s = signals_of(&sampler, &app, Some(&stats(8, 5, 0)), &[], 61_000);
        assert_eq!(s[0].http.requests, 5);
        // A cohort without instances or traffic is left out; instances without a front door
        // in HTTP mode still show.
        let s = signals_of(
            &sampler,
            &app,
            Some(&stats(7, 80, 0)),
            &[member("stable")],
            61_000,
        );
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].cohort.as_str(), s[0].instances), ("stable", 1));
        assert_eq!(s[0].error_rate(), None);
        let s = signals_of(&sampler, &app, None, &[member("stable")], 61_000);
        assert_eq!((s[0].window, s[0].instances), (Duration::ZERO, 1));
    }
}
