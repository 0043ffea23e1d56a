//! Sampling what the signals are computed from: the front door's cumulative counters per
//! cohort, kept over time so that a window is the difference of two readings of the same
//! front door ([`Counters`]), and the CPU and resident memory of processes ([`Processes`]).
//! `status` (through the executor), the dashboard and the canary's resource analysis all
//! sample through these.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::job::AppName;
use crate::traffic::Stats;
use crate::traffic::http_stats::HttpStats;

/// One process's use at a reading.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Percent of one core since the previous reading of the same [`Processes`].
    pub cpu_percent: f32,
    /// Resident memory in bytes.
    pub memory_bytes: u64,
}

/// Reads CPU and memory of processes. CPU needs two readings of a process, so one
/// `Processes` is kept and read again: the CPU is the use since its last reading.
#[derive(Default)]
pub struct Processes {
    system: Option<System>,
}

impl std::fmt::Debug for Processes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Processes").finish_non_exhaustive()
    }
}

impl Processes {
    /// The use of each of `pids` that is still there (pid 0, no process, is left out).
    pub fn measure(&mut self, pids: &[u32]) -> BTreeMap<u32, Usage> {
        // Each pid once: with sysinfo 0.37 a pid listed twice is not found after the refresh.
        let unique: BTreeSet<u32> = pids.iter().copied().filter(|p| *p != 0).collect();
        let list: Vec<Pid> = unique.iter().map(|p| Pid::from_u32(*p)).collect();
        let system = self.system.get_or_insert_with(System::new);
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&list),
            true,
            ProcessRefreshKind::nothing().with_cpu().with_memory(),
        );
        unique
            .into_iter()
            .filter_map(|pid| {
                let p = system.process(Pid::from_u32(pid))?;
                Some((
                    pid,
                    Usage {
                        cpu_percent: p.cpu_usage(),
                        memory_bytes: p.memory(),
                    },
                ))
            })
            .collect()
    }
}

/// One reading of an app's front door.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When it was read.
    pub at: Instant,
    /// The front door's process: counters of another one started over.
    pub pid: u32,
    /// Its cumulative counters per cohort.
    pub cohorts: BTreeMap<String, HttpStats>,
}

/// The readings of every app's front door over the last `keep`.
#[derive(Debug)]
pub struct Counters {
    keep: Duration,
    samples: BTreeMap<AppName, VecDeque<Sample>>,
}

impl Counters {
    /// Keeps enough readings for windows up to `keep` (zero: the latest reading only).
    pub fn new(keep: Duration) -> Self {
        Self {
            keep,
            samples: BTreeMap::new(),
        }
    }

    /// Records `stats` of `app` read at `now`, forgetting readings older than `keep` needs.
    pub fn record(&mut self, app: &AppName, stats: &Stats, now: Instant) {
        let kept = self.samples.entry(app.clone()).or_default();
        kept.push_back(Sample {
            at: now,
            pid: stats.pid,
            cohorts: stats.cohorts.clone(),
        });
        // One reading at or beyond `keep` stays, as the base of a full window.
        while kept.len() > 1
            && kept
                .get(1)
                .is_some_and(|s| now.duration_since(s.at) >= self.keep)
        {
            kept.pop_front();
        }
    }

    /// The oldest reading of `app` by front door `pid` no older than `max_age` at `now`.
    pub fn oldest(
        &self,
        app: &AppName,
        pid: u32,
        now: Instant,
        max_age: Duration,
    ) -> Option<&Sample> {
        self.samples
            .get(app)?
            .iter()
            .find(|s| s.pid == pid && now.duration_since(s.at) <= max_age)
    }

    /// The latest reading of `app`, if front door `pid` took it.
    pub fn latest(&self, app: &AppName, pid: u32) -> Option<&Sample> {
        self.samples.get(app)?.back().filter(|s| s.pid == pid)
    }

    /// The readings kept of `app`, oldest first.
    #[cfg(test)]
    pub fn of(&self, app: &AppName) -> Option<&VecDeque<Sample>> {
        self.samples.get(app)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pid: u32) -> Stats {
        Stats {
            pid,
            ..Stats::default()
        }
    }

    #[test]
    fn old_readings_are_forgotten_but_one_beyond_keep_stays() {
        let app = AppName::new("web").unwrap();
        let every = Duration::from_secs(5);
        let mut counters = Counters::new(Duration::from_secs(60));
        let start = Instant::now();
        for i in 0..20 {
            counters.record(&app, &stats(7), start + every * i);
        }
        let kept = counters.of(&app).unwrap();
        let now = start + every * 19;
        assert!(now.duration_since(kept[0].at) >= Duration::from_secs(60));
        assert!(now.duration_since(kept[1].at) < Duration::from_secs(60));
        assert_eq!(kept.len(), 13);
    }

    #[test]
    fn the_latest_reading_counts_only_for_the_same_front_door() {
        let app = AppName::new("web").unwrap();
        let mut counters = Counters::new(Duration::ZERO);
        let now = Instant::now();
        counters.record(&app, &stats(7), now);
        counters.record(&app, &stats(7), now);
        assert_eq!(counters.of(&app).map(VecDeque::len), Some(1));
        assert!(counters.latest(&app, 7).is_some());
        assert!(counters.latest(&app, 8).is_none());
    }

    #[test]
    fn this_process_is_measured_once_however_often_it_is_listed() {
        let me = std::process::id();
        let usage = Processes::default().measure(&[me, me, 0]);
        assert_eq!(usage.len(), 1);
        assert!(usage[&me].memory_bytes > 0);
    }
}
