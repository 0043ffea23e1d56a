//! Verdicts on the golden signals a front door in HTTP mode counts: the error rate (5xx
//! responses) and the 95th percentile latency of one cohort, over a window.
//!
//! Both are shares of bad responses (5xx; slower than the threshold) against a share allowed
//! (`max_error_rate`; 5% for a p95), judged by one explicit rule:
//!
//! * **fail** as soon as `bad > allowed × max(n, min)`: with at least `min` samples the
//!   observed share is above the limit; with fewer, the share would still be above it at
//!   `min` samples even if every response still to come were good, so waiting cannot change
//!   the verdict;
//! * **pass** once `n >= min` and it has not failed;
//! * otherwise **no data** (not enough samples to say either).
//!
//! `min` is the job's `min_samples`, or by default the rule of three, `ceil(3 / allowed)`:
//! 0 bad responses in n bound the true share below 3/n with 95% confidence, so 0 errors
//! prove an error rate under 0.1% only after 3000 responses, and 0 slow ones a p95 under its
//! threshold after 60.

use std::fmt;
use std::time::Duration;

use serde_json::json;

use super::versus::Against;
use crate::job::{AnalysisSpec, P95_SLOW_SHARE};
use crate::traffic::http_stats::HttpStats;

/// Which signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Share of final responses that were 5xx.
    ErrorRate,
    /// Share of responses slower than the p95 threshold.
    P95Latency,
    /// The latency distribution against the stable cohort's ([`super::versus`]).
    Latency,
}

impl Metric {
    /// `error_rate` or `p95_latency`, as the audit entry names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::ErrorRate => "error_rate",
            Metric::P95Latency => "p95_latency",
            Metric::Latency => "latency",
        }
    }
}

/// What a metric says about the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Enough samples, under the limit.
    Pass,
    /// Above the limit (see the module docs for when that is certain).
    Fail,
    /// Too few samples to say.
    NoData,
}

/// One metric's verdict with the numbers behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The metric.
    pub metric: Metric,
    /// Pass, fail or no data.
    pub outcome: Outcome,
    /// How long the window is.
    pub window: Duration,
    /// Responses in the window.
    pub samples: u64,
    /// Of which bad (5xx; slower than the threshold).
    pub bad: u64,
    /// Samples needed before it may pass.
    pub min_samples: u64,
    /// The share of bad ones allowed.
    pub allowed: f64,
    /// The error-rate limit (a share) or the p95 threshold (milliseconds).
    pub threshold: f64,
    /// The measured value: the error rate (a share), or an upper bound of the p95 in
    /// milliseconds (the edge of the histogram bucket holding it; `None` above the last edge
    /// or without samples).
    pub value: Option<f64>,
    /// With `compare = "stable"`: the test against the stable cohort, which decides the
    /// outcome (`threshold` and `allowed` are then its significance).
    pub against: Option<Against>,
}

impl Verdict {
    /// The audit entry's `verdict` object.
    pub fn to_json(&self) -> serde_json::Value {
        if let Some(against) = &self.against {
            let mut out = serde_json::Map::new();
            out.insert("metric".into(), self.metric.as_str().into());
            out.insert("outcome".into(), self.outcome_str().into());
            out.insert("window_ms".into(), self.window_ms().into());
            out.insert("min_samples".into(), self.min_samples.into());
            against.json_into(&mut out);
            return serde_json::Value::Object(out);
        }
        json!({
            "metric": self.metric.as_str(),
            "outcome": self.outcome_str(),
            "window_ms": self.window_ms(),
            "samples": self.samples,
            "bad": self.bad,
            "min_samples": self.min_samples,
            "threshold": self.threshold,
            "value": self.value,
        })
    }

    fn outcome_str(&self) -> &'static str {
        match self.outcome {
            Outcome::Pass => "pass",
            Outcome::Fail => "fail",
            Outcome::NoData => "no_data",
        }
    }

    fn window_ms(&self) -> u64 {
        u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX)
    }

    /// What a verdict without enough samples still needs, for people ("error rate has 10 of
    /// the 3000 responses it needs").
    pub fn shortfall(&self) -> String {
        let name = self.metric.as_str().replace('_', " ");
        match &self.against {
            Some(a) => format!(
                "{name} against the stable cohort has {} canary and {} stable responses of \
                 the {} it needs on each side",
                a.canary.samples, a.stable.samples, self.min_samples
            ),
            None => format!(
                "{name} has {} of the {} responses it needs",
                self.samples, self.min_samples
            ),
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(against) = &self.against {
            return against.fmt_verdict(self, f);
        }
        let window = format!("{:.1} s", self.window.as_secs_f64());
        match self.metric {
            Metric::ErrorRate => write!(
                f,
                "error rate {:.2}% ({} of {} responses 5xx in {window}; limit {}%, {} samples needed)",
                self.value.unwrap_or(0.0) * 100.0,
                self.bad,
                self.samples,
                self.threshold * 100.0,
                self.min_samples
            ),
            Metric::P95Latency | Metric::Latency => {
                let p95 = match self.value {
                    Some(ms) => format!("p95 latency at most {ms:.0} ms"),
                    None if self.samples == 0 => "p95 latency unknown".to_owned(),
                    None => "p95 latency above the largest bucket".to_owned(),
                };
                write!(
                    f,
                    "{p95} ({} of {} responses slower than {:.0} ms in {window}; limit {:.0} ms, \
                     {} samples needed)",
                    self.bad, self.samples, self.threshold, self.threshold, self.min_samples
                )
            }
        }
    }
}

/// The rule of the module docs.
fn outcome(bad: u64, samples: u64, min: u64, allowed: f64) -> Outcome {
    #[allow(clippy::cast_precision_loss)]
    let (bad_f, n_f) = (bad as f64, samples.max(min) as f64);
    if bad_f > allowed * n_f {
        Outcome::Fail
    } else if samples >= min {
        Outcome::Pass
    } else {
        Outcome::NoData
    }
}

/// The share of `window`'s final responses that were 5xx; `None` without responses.
pub fn error_rate(window: &HttpStats) -> Option<f64> {
    let samples = window.responses.finals();
    #[allow(clippy::cast_precision_loss)]
    (samples > 0).then(|| window.responses.server_error as f64 / samples as f64)
}

/// An upper bound of `window`'s p95 latency in milliseconds: the edge of the histogram bucket
/// holding it; `None` without responses or above the last edge.
pub fn p95_bound_ms(window: &HttpStats) -> Option<u64> {
    window.latency.quantile_bound_ms(0.95)
}

/// The error-rate and p95 verdicts of `window` (a cohort's counters over `elapsed`).
pub fn judge(window: &HttpStats, spec: &AnalysisSpec, elapsed: Duration) -> [Verdict; 2] {
    let samples = window.responses.finals();
    let bad = window.responses.server_error;
    let allowed = spec.max_error_rate;
    let min = spec.min_samples_for(allowed);
    let rate = error_rate(window);
    let errors = Verdict {
        metric: Metric::ErrorRate,
        outcome: outcome(bad, samples, min, allowed),
        window: elapsed,
        samples,
        bad,
        min_samples: min,
        allowed,
        threshold: allowed,
        value: rate,
        against: None,
    };

    let limit_ms = u64::try_from(spec.max_p95_latency.as_millis()).unwrap_or(u64::MAX);
    let h = &window.latency;
    // Without an edge at the threshold the count at the edge below it is used: slow ones are
    // then over-counted, never missed (the agent puts the edge in every route table it writes).
    let slow = h.count.saturating_sub(h.at_most(limit_ms));
    let min = spec.min_samples_for(P95_SLOW_SHARE);
    #[allow(clippy::cast_precision_loss)]
    let p95 = p95_bound_ms(window).map(|ms| ms as f64);
    #[allow(clippy::cast_precision_loss)]
    let latency = Verdict {
        metric: Metric::P95Latency,
        outcome: outcome(slow, h.count, min, P95_SLOW_SHARE),
        window: elapsed,
        samples: h.count,
        bad: slow,
        min_samples: min,
        allowed: P95_SLOW_SHARE,
        threshold: limit_ms as f64,
        value: p95,
        against: None,
    };
    [errors, latency]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ok` fast 2xx, `errors` 5xx, `slow` of them all over 250 ms.
    fn window(ok: u64, errors: u64, slow: u64) -> HttpStats {
        HttpStats::sampled(ok, errors, ok + errors - slow)
    }

    fn spec() -> AnalysisSpec {
        AnalysisSpec::default()
    }

    const S: Duration = Duration::from_secs(5);

    #[test]
    fn the_rule_of_three_sets_the_default_sample_counts() {
        let s = spec();
        assert_eq!(s.min_samples_for(0.001), 3000);
        assert_eq!(s.min_samples_for(P95_SLOW_SHARE), 60);
        let fixed = AnalysisSpec {
            min_samples: Some(100),
            ..spec()
        };
        assert_eq!(fixed.min_samples_for(0.001), 100);
    }

    #[test]
    fn no_errors_pass_only_with_enough_samples() {
        let [e, l] = judge(&window(2999, 0, 0), &spec(), S);
        assert_eq!((e.outcome, l.outcome), (Outcome::NoData, Outcome::Pass));
        let [e, _] = judge(&window(3000, 0, 0), &spec(), S);
        assert_eq!(e.outcome, Outcome::Pass);
        let [e, l] = judge(&HttpStats::default(), &spec(), S);
        assert_eq!((e.outcome, l.outcome), (Outcome::NoData, Outcome::NoData));
        assert!(e.to_string().contains("0 of 0 responses"), "{e}");
    }

    #[test]
    fn errors_fail_early_only_when_more_samples_cannot_save_the_verdict() {
        // 3 errors are 0.1% of 3000: the limit is not exceeded, so still no data at 200.
        let [e, _] = judge(&window(197, 3, 0), &spec(), S);
        assert_eq!(e.outcome, Outcome::NoData);
        // The 4th is over the limit whatever comes next.
        let [e, _] = judge(&window(196, 4, 0), &spec(), S);
        assert_eq!(e.outcome, Outcome::Fail);
        assert_eq!((e.samples, e.bad, e.min_samples), (200, 4, 3000));
        assert_eq!(e.value, Some(0.02));
        let text = e.to_string();
        assert!(
            text.contains("error rate 2.00% (4 of 200 responses 5xx"),
            "{text}"
        );
        assert_eq!(e.to_json()["metric"], "error_rate");
        assert_eq!(e.to_json()["window_ms"], 5000);
        // Past the minimum the observed share decides.
        let [e, _] = judge(&window(3996, 4, 0), &spec(), S);
        assert_eq!(e.outcome, Outcome::Pass);
        let [e, _] = judge(&window(3994, 6, 0), &spec(), S);
        assert_eq!(e.outcome, Outcome::Fail);
    }

    #[test]
    fn slow_responses_fail_the_p95_and_name_its_bucket() {
        let [_, l] = judge(&window(100, 0, 6), &spec(), S);
        assert_eq!(l.outcome, Outcome::Fail, "6% are slower than 200 ms");
        let [_, l] = judge(&window(100, 0, 4), &spec(), S);
        assert_eq!(l.outcome, Outcome::Pass, "4% are");
        assert_eq!(l.value, Some(100.0));
        let [_, l] = judge(&window(30, 0, 3), &spec(), S);
        assert_eq!(l.outcome, Outcome::NoData, "3 slow of 60 would still pass");
        let [_, l] = judge(&window(10, 0, 10), &spec(), S);
        assert_eq!((l.outcome, l.value), (Outcome::Fail, Some(500.0)));
        assert!(
            l.to_string()
                .starts_with("p95 latency at most 500 ms (10 of 10 responses slower than 200 ms"),
            "{l}"
        );
    }
}
