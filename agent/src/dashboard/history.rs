//! The dashboard's bounded history of samples: per app and cohort, one sample a second for the
//! last [`FINE_LEN`] seconds, and one per [`COARSE_EVERY`] seconds for [`COARSE_LEN`] more
//! steps (four hours) before that.
//!
//! Memory is bounded by constants rather than config: a [`Sample`] is 80 bytes, a series holds
//! at most `FINE_LEN + COARSE_LEN + 1` of them (about 108 KiB), and the history holds at most
//! [`MAX_SERIES`] series (about 10 MiB in the worst case; an agent with a few apps uses a few
//! hundred KiB). Series beyond that are not recorded, and say so once in the log.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

/// Fine samples kept per series: 15 minutes at one a second.
pub const FINE_LEN: usize = 900;
/// Fine samples folded into one coarse sample.
pub const COARSE_EVERY: usize = 30;
/// Coarse samples kept per series: 4 hours at one per 30 s.
pub const COARSE_LEN: usize = 480;
/// Most `(app, cohort)` series kept: 32 apps with their three cohorts.
pub const MAX_SERIES: usize = 96;

/// What the front door and the instances of one cohort did over one interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Sample {
    /// End of the interval, Unix milliseconds.
    pub t_ms: u64,
    /// Length of the interval, milliseconds.
    pub span_ms: u64,
    /// Final responses in the interval (the error rate's denominator).
    pub responses: u64,
    /// Of which 5xx.
    pub errors: u64,
    /// Upper bound of the p95 latency (the edge of the histogram bucket holding it), ms;
    /// `None` without responses or above the last edge.
    pub p95_ms: Option<u64>,
    /// CPU of the cohort's instances, summed, as a share of one core.
    pub cpu: Option<f64>,
    /// Resident memory of the cohort's instances, summed, bytes.
    pub memory: Option<u64>,
}

impl Sample {
    /// The share of responses that were 5xx; `None` without responses.
    pub fn error_rate(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        (self.responses > 0).then(|| self.errors as f64 / self.responses as f64)
    }

    /// `self` and the later `next` as one sample over both intervals: counts add up, the
    /// p95 bound is the larger one (if each part has 95% of its responses at or under its
    /// bound, the union has 95% at or under the larger: still an upper bound), CPU is the
    /// time-weighted mean and memory the peak.
    fn merge(&self, next: &Sample) -> Sample {
        let span = self.span_ms + next.span_ms;
        let cpu = match (self.cpu, next.cpu) {
            (Some(a), Some(b)) if span > 0 => {
                #[allow(clippy::cast_precision_loss)]
                let (wa, wb, w) = (self.span_ms as f64, next.span_ms as f64, span as f64);
                Some((a * wa + b * wb) / w)
            }
            (a, b) => b.or(a),
        };
        Sample {
            t_ms: next.t_ms,
            span_ms: span,
            responses: self.responses + next.responses,
            errors: self.errors + next.errors,
            p95_ms: match (self.p95_ms, next.p95_ms) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            cpu,
            memory: match (self.memory, next.memory) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// One cohort's samples, oldest first.
#[derive(Debug, Default)]
pub struct Series {
    fine: VecDeque<Sample>,
    coarse: VecDeque<Sample>,
    /// Fine samples folded so far into the next coarse one, and how many.
    pending: Option<(Sample, usize)>,
}

impl Series {
    /// Records a sample (expected after the previous one).
    pub fn push(&mut self, sample: Sample) {
        if self.fine.len() == FINE_LEN {
            self.fine.pop_front();
        }
        self.fine.push_back(sample);
        let (folded, n) = match self.pending.take() {
            Some((acc, n)) => (acc.merge(&sample), n + 1),
            None => (sample, 1),
        };
        if n == COARSE_EVERY {
            if self.coarse.len() == COARSE_LEN {
                self.coarse.pop_front();
            }
            self.coarse.push_back(folded);
        } else {
            self.pending = Some((folded, n));
        }
    }

    /// Every sample since `since_ms` (exclusive), oldest first: coarse ones up to where the
    /// fine ones begin, then the fine ones.
    pub fn since(&self, since_ms: u64) -> Vec<Sample> {
        let fine_from = self.fine.front().map_or(u64::MAX, |s| s.t_ms);
        self.coarse
            .iter()
            .filter(|s| s.t_ms < fine_from)
            .chain(&self.fine)
            .filter(|s| s.t_ms > since_ms)
            .copied()
            .collect()
    }

    /// The latest sample.
    pub fn last(&self) -> Option<&Sample> {
        self.fine.back()
    }

    /// Samples held (fine, coarse and the one being folded).
    pub fn held(&self) -> usize {
        self.fine.len() + self.coarse.len() + usize::from(self.pending.is_some())
    }
}

/// Every app's series, per cohort.
#[derive(Debug, Default)]
pub struct History {
    series: BTreeMap<(String, String), Series>,
    /// Whether a series was refused for [`MAX_SERIES`] (logged once).
    full_warned: bool,
}

impl History {
    /// Records `sample` for `app`'s `cohort`; a new series past [`MAX_SERIES`] is dropped.
    pub fn push(&mut self, app: &str, cohort: &str, sample: Sample) {
        let key = (app.to_owned(), cohort.to_owned());
        if !self.series.contains_key(&key) && self.series.len() >= MAX_SERIES {
            if !self.full_warned {
                self.full_warned = true;
                tracing::warn!(
                    "the dashboard keeps at most {MAX_SERIES} app and cohort series; {app}/{cohort} is not recorded"
                );
            }
            return;
        }
        self.series.entry(key).or_default().push(sample);
    }

    /// `app`'s cohorts with their samples since `since_ms`.
    pub fn of_app(&self, app: &str, since_ms: u64) -> BTreeMap<String, Vec<Sample>> {
        self.series
            .iter()
            .filter(|((a, _), _)| a == app)
            .map(|((_, c), s)| (c.clone(), s.since(since_ms)))
            .collect()
    }

    /// `app`'s cohorts with their latest sample.
    pub fn latest(&self, app: &str) -> BTreeMap<String, Sample> {
        self.series
            .iter()
            .filter(|((a, _), _)| a == app)
            .filter_map(|((_, c), s)| Some((c.clone(), *s.last()?)))
            .collect()
    }

    /// Drops the series of apps no longer configured.
    pub fn retain_apps(&mut self, apps: &[String]) {
        self.series.retain(|(a, _), _| apps.contains(a));
    }

    /// Series held.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: u64, responses: u64, errors: u64, p95: u64, memory: u64) -> Sample {
        Sample {
            t_ms: t * 1000,
            span_ms: 1000,
            responses,
            errors,
            p95_ms: Some(p95),
            cpu: Some(0.5),
            memory: Some(memory),
        }
    }

    #[test]
    fn a_sample_is_80_bytes_so_the_bound_in_the_docs_holds() {
        assert_eq!(std::mem::size_of::<Sample>(), 80);
    }

    #[test]
    fn a_series_never_holds_more_than_its_bound() {
        let mut s = Series::default();
        let n = (FINE_LEN + COARSE_EVERY * (COARSE_LEN + 10)) as u64;
        for t in 1..=n {
            s.push(sample(t, 10, 0, 50, 1));
            assert!(s.held() <= FINE_LEN + COARSE_LEN + 1);
        }
        assert_eq!(s.fine.len(), FINE_LEN);
        assert_eq!(s.coarse.len(), COARSE_LEN);
        // The oldest coarse samples went first: of the n / 30 folded, the last 480 stay.
        let folded = n / COARSE_EVERY as u64;
        let first_kept = folded - COARSE_LEN as u64 + 1;
        let oldest = s.coarse.front().unwrap();
        assert_eq!(oldest.t_ms, first_kept * COARSE_EVERY as u64 * 1000);
    }

    #[test]
    fn coarse_samples_fold_counts_peaks_and_mean_cpu() {
        let mut s = Series::default();
        for t in 1..=COARSE_EVERY as u64 {
            let mut x = sample(t, 100, u64::from(t == 3), if t == 7 { 500 } else { 25 }, t);
            x.cpu = Some(if t <= 15 { 1.0 } else { 0.0 });
            s.push(x);
        }
        assert_eq!(s.coarse.len(), 1);
        let c = s.coarse[0];
        assert_eq!(c.t_ms, COARSE_EVERY as u64 * 1000);
        assert_eq!(c.span_ms, COARSE_EVERY as u64 * 1000);
        assert_eq!((c.responses, c.errors), (3000, 1));
        assert_eq!(
            c.p95_ms,
            Some(500),
            "the largest bound stays an upper bound"
        );
        assert_eq!(c.memory, Some(COARSE_EVERY as u64), "the peak");
        assert!((c.cpu.unwrap() - 0.5).abs() < 1e-9, "{c:?}");
        assert!((c.error_rate().unwrap() - 1.0 / 3000.0).abs() < 1e-12);
        // An interval without responses has no rate and no p95, and folds without them.
        let empty = Sample {
            responses: 0,
            errors: 0,
            p95_ms: None,
            ..sample(99, 0, 0, 0, 0)
        };
        assert_eq!(empty.error_rate(), None);
        assert_eq!(empty.merge(&sample(100, 1, 0, 10, 2)).p95_ms, Some(10));
    }

    #[test]
    fn since_gives_coarse_history_then_fine_without_overlap() {
        let mut s = Series::default();
        let n = (FINE_LEN + COARSE_EVERY * 4) as u64;
        for t in 1..=n {
            s.push(sample(t, 1, 0, 5, 1));
        }
        let all = s.since(0);
        assert!(all.windows(2).all(|w| w[0].t_ms < w[1].t_ms), "ascending");
        let first_fine = (n - FINE_LEN as u64 + 1) * 1000;
        let coarse: Vec<_> = all.iter().filter(|x| x.t_ms < first_fine).collect();
        assert_eq!(coarse.len(), 4);
        assert!(
            coarse
                .iter()
                .all(|x| x.span_ms == COARSE_EVERY as u64 * 1000)
        );
        assert_eq!(all.len(), 4 + FINE_LEN);
        let recent = s.since((n - 3) * 1000);
        assert_eq!(recent.len(), 3);
        assert_eq!(s.last().unwrap().t_ms, n * 1000);
    }

    #[test]
    fn the_history_refuses_series_past_its_bound_and_forgets_removed_apps() {
        let mut h = History::default();
        for i in 0..MAX_SERIES + 5 {
            h.push(&format!("app{i}"), "stable", sample(1, 1, 0, 5, 1));
        }
        assert_eq!(h.len(), MAX_SERIES);
        assert!(h.of_app(&format!("app{}", MAX_SERIES + 1), 0).is_empty());
        // A known series still records.
        h.push("app0", "stable", sample(2, 1, 0, 5, 1));
        assert_eq!(h.of_app("app0", 0)["stable"].len(), 2);
        assert_eq!(h.latest("app0")["stable"].t_ms, 2000);
        h.retain_apps(&["app0".to_owned()]);
        assert_eq!(h.len(), 1);
        assert!(!h.is_empty());
    }
}
