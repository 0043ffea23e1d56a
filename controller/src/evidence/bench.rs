//! A benchmark comparison: each benchmark's baseline and current measurement (lower is
//! better, any one unit per benchmark, e.g. nanoseconds per iteration), as JSON:
//!
//! ```json
//! {"benchmarks": [{"name": "parse", "baseline": 1200.0, "current": 1236.0}]}
//! ```
//!
//! A benchmark harness's own output (criterion's `estimates.json`, `critcmp --export`) is
//! turned into this with a few lines of `jq`; docs/releases.md shows one.

use serde::Deserialize;

use super::{EvidenceError, Report};

const FORMAT: &str = "benchmark comparison JSON";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Comparison {
    benchmarks: Vec<Bench>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Bench {
    name: String,
    baseline: f64,
    current: f64,
}

/// The worst regression among the benchmarks.
#[derive(Debug, Clone, PartialEq)]
pub struct Regression {
    /// How many benchmarks were compared.
    pub benchmarks: usize,
    /// The benchmark that regressed most.
    pub worst: String,
    /// Its regression in percent of the baseline (negative: it got faster).
    pub percent: f64,
}

/// Parses a comparison and finds the worst regression.
///
/// # Errors
///
/// [`EvidenceError::Parse`] for bad JSON, no benchmark, or a baseline that is not positive.
pub fn parse(report: &Report) -> Result<Regression, EvidenceError> {
    let c: Comparison =
        serde_json::from_str(&report.text).map_err(|e| report.invalid(FORMAT, e.to_string()))?;
    let mut worst: Option<Regression> = None;
    for b in &c.benchmarks {
        if !(b.baseline.is_finite()
            && b.baseline > 0.0
            && b.current.is_finite()
            && b.current >= 0.0)
        {
            return Err(report.invalid(
                FORMAT,
                format!(
                    "benchmark {:?}: baseline must be > 0 and current >= 0",
                    b.name
                ),
            ));
        }
        let percent = (b.current - b.baseline) * 100.0 / b.baseline;
        if worst.as_ref().is_none_or(|w| percent > w.percent) {
            worst = Some(Regression {
                benchmarks: c.benchmarks.len(),
                worst: b.name.clone(),
                percent,
            });
        }
    }
    worst.ok_or_else(|| report.invalid(FORMAT, "no benchmark"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_regression_is_found() {
        let r = parse(&Report {
            path: "bench.json".into(),
            text: r#"{"benchmarks":[{"name":"a","baseline":100,"current":90},
                      {"name":"b","baseline":200,"current":212}]}"#
                .to_owned(),
        })
        .unwrap();
        assert_eq!(r.worst, "b");
        assert!((r.percent - 6.0).abs() < 1e-9);
    }
}
