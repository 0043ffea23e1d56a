//! `compare = "stable"`: a canary's error rate and latency judged against the stable cohort's
//! in the same window, by the one-sided tests of [`super::compare`], instead of against fixed
//! limits.
//!
//! Each test needs the job's minimum sample count (`min_samples`, else the rule of three of
//! the threshold check: 3000 responses for the error rate at the default `max_error_rate`,
//! 60 for latency) on **both** sides before it says anything; until then it is no data and
//! `no_data` applies. With enough samples a p-value under `compare_alpha` fails the canary,
//! anything else passes.

use std::fmt;
use std::time::Duration;

use serde_json::json;

use super::compare::{self, TestResult};
use super::signals::{Metric, Outcome, Verdict, error_rate, p95_bound_ms};
use crate::job::{AnalysisSpec, P95_SLOW_SHARE};
use crate::traffic::http_stats::{Histogram, HttpStats};

/// Which test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Test {
    /// On the shares of 5xx responses.
    TwoProportion,
    /// On the latency histograms.
    MannWhitney,
}

impl Test {
    /// As the audit entry names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Test::TwoProportion => "two_proportion_z",
            Test::MannWhitney => "mann_whitney_u",
        }
    }
}

/// One cohort's numbers in a comparison.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Side {
    /// Responses.
    pub samples: u64,
    /// 5xx responses (error rate); 0 for latency.
    pub bad: u64,
    /// The error rate, or an upper bound of the p95 in milliseconds (as the threshold
    /// check's value).
    pub value: Option<f64>,
    /// Latency: the mean in milliseconds.
    pub mean_ms: Option<f64>,
}

impl Side {
    fn to_json(self) -> serde_json::Value {
        json!({
            "samples": self.samples,
            "bad": self.bad,
            "value": self.value,
            "mean_ms": self.mean_ms,
        })
    }
}

/// How a canary compared with the stable cohort.
#[derive(Debug, Clone, PartialEq)]
pub struct Against {
    /// The test.
    pub test: Test,
    /// Its result; `None` while a side has no responses.
    pub result: Option<TestResult>,
    /// The significance a p-value must be under to fail.
    pub alpha: f64,
    /// The canary's numbers.
    pub canary: Side,
    /// The stable cohort's.
    pub stable: Side,
}

/// The error-rate and latency verdicts of `canary` against `stable` (both cohorts' counters
/// over `elapsed`).
pub fn judge(
    canary: &HttpStats,
    stable: &HttpStats,
    spec: &AnalysisSpec,
    elapsed: Duration,
) -> [Verdict; 2] {
    let alpha = spec.compare_alpha;
    let min = spec.min_samples_for(spec.max_error_rate);
    let side = |w: &HttpStats| Side {
        samples: w.responses.finals(),
        bad: w.responses.server_error,
        value: error_rate(w),
        mean_ms: None,
    };
    let (c, s) = (side(canary), side(stable));
    let errors = verdict(
        Metric::ErrorRate,
        Against {
            test: Test::TwoProportion,
            result: compare::two_proportion_greater(c.bad, c.samples, s.bad, s.samples),
            alpha,
            canary: c,
            stable: s,
        },
        min,
        elapsed,
    );

    let min = spec.min_samples_for(P95_SLOW_SHARE);
    let side = |h: &Histogram, w: &HttpStats| Side {
        samples: h.count,
        bad: 0,
        #[allow(clippy::cast_precision_loss)]
        value: p95_bound_ms(w).map(|ms| ms as f64),
        #[allow(clippy::cast_precision_loss)]
        mean_ms: (h.count > 0).then(|| h.sum_us as f64 / h.count as f64 / 1000.0),
    };
    let (c, s) = (side(&canary.latency, canary), side(&stable.latency, stable));
    let (cb, sb) = common_buckets(&canary.latency, &stable.latency);
    let latency = verdict(
        Metric::Latency,
        Against {
            test: Test::MannWhitney,
            result: compare::mann_whitney_greater(&cb, &sb),
            alpha,
            canary: c,
            stable: s,
        },
        min,
        elapsed,
    );
    [errors, latency]
}

fn verdict(metric: Metric, against: Against, min: u64, elapsed: Duration) -> Verdict {
    let enough = against.canary.samples >= min && against.stable.samples >= min;
    let outcome = match against.result {
        Some(r) if enough && r.p_value < against.alpha => Outcome::Fail,
        Some(_) if enough => Outcome::Pass,
        _ => Outcome::NoData,
    };
    Verdict {
        metric,
        outcome,
        window: elapsed,
        samples: against.canary.samples,
        bad: against.canary.bad,
        min_samples: min,
        allowed: against.alpha,
        threshold: against.alpha,
        value: against.canary.value,
        against: Some(against),
    }
}

/// Per-bucket (not cumulative) counts of `a` and `b` on the edges both have (where either
/// histogram's count is exact), plus the bucket above the last.
fn common_buckets(a: &Histogram, b: &Histogram) -> (Vec<u64>, Vec<u64>) {
    let edges: Vec<u64> = a.le_ms.iter().copied().filter(|e| b.has_edge(*e)).collect();
    let per_bucket = |h: &Histogram| {
        let mut below = 0;
        let mut out = Vec::with_capacity(edges.len() + 1);
        for e in &edges {
            let at_most = h.at_most(*e).max(below);
            out.push(at_most - below);
            below = at_most;
        }
        out.push(h.count.saturating_sub(below));
        out
    };
    (per_bucket(a), per_bucket(b))
}

impl Against {
    /// The audit entry's `verdict` object (besides metric, outcome and window).
    pub fn json_into(&self, out: &mut serde_json::Map<String, serde_json::Value>) {
        out.insert("compare".into(), "stable".into());
        out.insert("test".into(), self.test.as_str().into());
        let statistic = match self.test {
            Test::TwoProportion => "z",
            Test::MannWhitney => "u",
        };
        out.insert(
            statistic.into(),
            json!(self.result.map(|r| r.statistic).filter(|v| v.is_finite())),
        );
        out.insert(
            "z".into(),
            json!(self.result.map(|r| r.z).filter(|v| v.is_finite())),
        );
        out.insert("p_value".into(), json!(self.result.map(|r| r.p_value)));
        out.insert("alpha".into(), json!(self.alpha));
        out.insert("canary".into(), self.canary.to_json());
        out.insert("stable".into(), self.stable.to_json());
    }

    /// The sentence of a [`Verdict`] with this comparison.
    pub fn fmt_verdict(&self, v: &Verdict, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let window = format!("{:.1} s", v.window.as_secs_f64());
        let (c, s) = (&self.canary, &self.stable);
        match self.test {
            Test::TwoProportion => write!(
                f,
                "error rate {:.2}% against the stable cohort's {:.2}% ({} of {} vs {} of {} \
                 responses 5xx in {window})",
                c.value.unwrap_or(0.0) * 100.0,
                s.value.unwrap_or(0.0) * 100.0,
                c.bad,
                c.samples,
                s.bad,
                s.samples
            )?,
            Test::MannWhitney => write!(
                f,
                "latency {} against the stable cohort's {} ({} vs {} responses in {window})",
                latency_text(c),
                latency_text(s),
                c.samples,
                s.samples
            )?,
        }
        match self.result {
            Some(r) => {
                let test = match self.test {
                    Test::TwoProportion => format!("two-proportion z-test z = {:.2}", r.z),
                    Test::MannWhitney if r.z.is_finite() => {
                        format!("Mann-Whitney U = {:.1}, z = {:.2}", r.statistic, r.z)
                    }
                    Test::MannWhitney => {
                        format!("Mann-Whitney U = {:.1}, all tied", r.statistic)
                    }
                };
                let cmp = if r.p_value < self.alpha { "<" } else { ">=" };
                write!(
                    f,
                    ": {test}, one-sided p = {} {cmp} alpha {}",
                    p_text(r.p_value),
                    self.alpha
                )?;
            }
            None => f.write_str(": not tested yet")?,
        }
        write!(f, "; {} samples needed on each side", v.min_samples)
    }
}

fn latency_text(side: &Side) -> String {
    match (side.value, side.mean_ms) {
        (Some(p95), Some(mean)) => format!("p95 at most {p95:.0} ms, mean {mean:.0} ms"),
        (None, Some(mean)) => format!("p95 above the largest bucket, mean {mean:.0} ms"),
        _ => "unknown".to_owned(),
    }
}

/// 4 decimals, or 3 significant digits below 0.001.
fn p_text(p: f64) -> String {
    if p >= 0.001 {
        format!("{p:.4}")
    } else {
        format!("{p:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::Compare;

    /// `ok` 2xx and `errors` 5xx, `fast` of them in 0-100 ms and the others in 200-500 ms.
    fn window(ok: u64, errors: u64, fast: u64) -> HttpStats {
        HttpStats::sampled(ok, errors, fast)
    }

    fn spec(min: u64) -> AnalysisSpec {
        AnalysisSpec {
            compare: Compare::Stable,
            min_samples: Some(min),
            ..AnalysisSpec::default()
        }
    }

    const S: Duration = Duration::from_secs(5);

    #[test]
    fn a_canary_with_more_errors_than_stable_fails_naming_the_test() {
        let [e, l] = judge(&window(294, 6, 300), &window(300, 0, 300), &spec(300), S);
        assert_eq!(e.outcome, Outcome::Fail);
        assert_eq!(l.outcome, Outcome::Pass, "{l}");
        let text = e.to_string();
        assert!(
            text.starts_with(
                "error rate 2.00% against the stable cohort's 0.00% (6 of 300 vs 0 of 300 \
                 responses 5xx in 5.0 s): two-proportion z-test z = 2.46, one-sided p = 0.0069 \
                 < alpha 0.05; 300 samples needed on each side"
            ),
            "{text}"
        );
        let json = e.to_json();
        assert_eq!(json["metric"], "error_rate");
        assert_eq!(json["outcome"], "fail");
        assert_eq!(json["compare"], "stable");
        assert_eq!(json["test"], "two_proportion_z");
        assert_eq!(json["alpha"], 0.05);
        assert_eq!(json["canary"]["bad"], 6);
        assert_eq!(json["stable"]["samples"], 300);
        assert!((json["p_value"].as_f64().unwrap() - 0.006_911_5).abs() < 1e-6);
        assert!((json["z"].as_f64().unwrap() - 2.461_83).abs() < 1e-5);
    }

    #[test]
    fn the_same_behaviour_passes_even_when_both_are_slow() {
        // Both 300 ms: the p95 threshold check would fail both; the comparison does not.
        let [e, l] = judge(&window(400, 0, 0), &window(500, 0, 0), &spec(300), S);
        assert_eq!((e.outcome, l.outcome), (Outcome::Pass, Outcome::Pass));
        assert!(
            l.to_string().contains(
                "latency p95 at most 500 ms, mean 300 ms against the stable cohort's p95 at \
                 most 500 ms, mean 300 ms (400 vs 500 responses in 5.0 s): Mann-Whitney U = \
                 100000.0, all tied, one-sided p = 1.0000 >= alpha 0.05"
            ),
            "{l}"
        );
        // A 2% error rate on both sides is no difference either.
        let [e, _] = judge(&window(490, 10, 500), &window(980, 20, 1000), &spec(300), S);
        assert_eq!(e.outcome, Outcome::Pass, "{e}");
    }

    #[test]
    fn a_slower_canary_fails_the_mann_whitney_test() {
        // 40 of 100 canary responses slow against 20 of 100 stable ones.
        let [_, l] = judge(&window(100, 0, 60), &window(100, 0, 80), &spec(60), S);
        assert_eq!(l.outcome, Outcome::Fail, "{l}");
        // By hand: U = 60·40 + 40·(80 + 20/2) = 6000 (plus nothing in the empty bucket);
        // mean 5000; ties 140 and 60: Σ(t³ − t) = 2,743,860 + 215,940 = 2,959,800;
        // σ² = 10000/12 · (201 − 2,959,800/39,800) = 105,527.64; z = 999.5/324.85 = 3.0768.
        let json = l.to_json();
        assert_eq!(json["metric"], "latency");
        assert_eq!(json["test"], "mann_whitney_u");
        assert_eq!(json["u"], 6000.0);
        assert!(
            (json["z"].as_f64().unwrap() - 3.0768).abs() < 1e-3,
            "{json}"
        );
        assert_eq!(json["canary"]["mean_ms"], 150.0);
        assert_eq!(json["stable"]["mean_ms"], 100.0);
        // The other way round it passes: one-sided.
        let [_, l] = judge(&window(100, 0, 80), &window(100, 0, 60), &spec(60), S);
        assert_eq!(l.outcome, Outcome::Pass, "{l}");
    }

    #[test]
    fn no_verdict_without_enough_samples_on_both_sides() {
        // A clear difference, but the stable cohort has 299 of the 300 responses needed.
        let [e, _] = judge(&window(250, 50, 300), &window(299, 0, 299), &spec(300), S);
        assert_eq!(e.outcome, Outcome::NoData, "{e}");
        assert!(
            e.to_string().ends_with("300 samples needed on each side"),
            "{e}"
        );
        // Without a stable response nothing is tested.
        let [e, l] = judge(&window(300, 0, 300), &HttpStats::default(), &spec(1), S);
        assert_eq!((e.outcome, l.outcome), (Outcome::NoData, Outcome::NoData));
        assert!(e.to_string().contains(": not tested yet;"), "{e}");
        assert_eq!(e.to_json()["p_value"], serde_json::Value::Null);
        // The default minimum for errors is the rule of three on max_error_rate.
        let [e, l] = judge(
            &window(2000, 0, 2000),
            &window(2000, 0, 2000),
            &AnalysisSpec {
                compare: Compare::Stable,
                ..AnalysisSpec::default()
            },
            S,
        );
        assert_eq!((e.min_samples, e.outcome), (3000, Outcome::NoData));
        assert_eq!((l.min_samples, l.outcome), (60, Outcome::Pass));
    }

    #[test]
    fn buckets_are_compared_on_the_edges_both_histograms_have() {
        let a = Histogram {
            le_ms: vec![10, 100, 200],
            counts: vec![1, 3, 6, 7],
            sum_us: 0,
            count: 7,
        };
        let b = Histogram {
            le_ms: vec![100, 150, 200],
            counts: vec![2, 2, 4, 5],
            sum_us: 0,
            count: 5,
        };
        assert_eq!(common_buckets(&a, &b), (vec![3, 3, 1], vec![2, 2, 1]));
    }
}
