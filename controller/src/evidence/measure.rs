//! Measured numbers against thresholds: one gate result each, with every value and the
//! threshold it was held to, ready to print and to sign.

use std::collections::BTreeMap;
use std::fmt;

use gantry_policy::environment::GateKind;
use gantry_proto::attest::{GateResult, Verdict};

use super::bench::Regression;
use super::coverage::LineCoverage;
use super::junit::TestCounts;
use super::sarif::Findings;
use super::thresholds::Thresholds;

/// How a value is compared with its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound {
    /// `value >= limit`.
    AtLeast,
    /// `value <= limit`.
    AtMost,
    /// `value < limit`.
    Below,
}

/// One value held to one threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The value's name, e.g. `line_percent`.
    pub name: &'static str,
    /// The measured value (rounded to two decimals).
    pub value: f64,
    /// The comparison.
    pub bound: Bound,
    /// The threshold.
    pub limit: f64,
}

impl Check {
    fn new(name: &'static str, value: f64, bound: Bound, limit: f64) -> Check {
        Check {
            name,
            value: round2(value),
            bound,
            limit,
        }
    }

    /// Whether the value meets the threshold.
    pub fn passed(&self) -> bool {
        match self.bound {
            Bound::AtLeast => self.value >= self.limit,
            Bound::AtMost => self.value <= self.limit,
            Bound::Below => self.value < self.limit,
        }
    }

    /// `>= 80`, as the statement records the threshold.
    pub fn threshold(&self) -> String {
        let op = match self.bound {
            Bound::AtLeast => ">=",
            Bound::AtMost => "<=",
            Bound::Below => "<",
        };
        format!("{op} {}", num(self.limit))
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} (needs {})",
            self.name,
            num(self.value),
            self.threshold()
        )
    }
}

/// A gate measured: its checks, the values shown beside them, and where they came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Gate {
    /// Which gate.
    pub kind: GateKind,
    /// The values held to thresholds.
    pub checks: Vec<Check>,
    /// Values recorded for context only (counts).
    pub context: Vec<(&'static str, f64)>,
    /// The report (`name (sha256:...)`).
    pub source: String,
}

impl Gate {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| !c.passed())
    }

    /// The gate as the statement lists it.
    pub fn result(&self) -> GateResult {
        let mut measured = BTreeMap::new();
        let mut thresholds = BTreeMap::new();
        for c in &self.checks {
            measured.insert(c.name.to_owned(), c.value);
            thresholds.insert(c.name.to_owned(), c.threshold());
        }
        for (name, v) in &self.context {
            measured.insert((*name).to_owned(), *v);
        }
        GateResult {
            name: self.kind.as_str().to_owned(),
            result: if self.passed() {
                Verdict::Passed
            } else {
                Verdict::Failed
            },
            measured,
            thresholds,
            source: self.source.clone(),
        }
    }
}

/// The tests gate: the pass rate of the cases that ran.
pub fn tests(c: &TestCounts, t: &Thresholds, source: String) -> Gate {
    Gate {
        kind: GateKind::Tests,
        checks: vec![
            Check::new(
                "pass_rate_percent",
                c.pass_rate_percent(),
                Bound::AtLeast,
                t.tests.min_pass_rate_percent,
            ),
            // A report of only skipped cases proves nothing.
            Check::new("tests_run", c.executed() as f64, Bound::AtLeast, 1.0),
        ],
        context: vec![
            ("tests_total", c.total as f64),
            ("tests_failed", c.failed as f64),
            ("tests_skipped", c.skipped as f64),
        ],
        source,
    }
}

/// The coverage gate: lines covered.
pub fn coverage(c: &LineCoverage, t: &Thresholds, source: String) -> Gate {
    Gate {
        kind: GateKind::Coverage,
        checks: vec![Check::new(
            "line_percent",
            c.percent(),
            Bound::AtLeast,
            t.coverage.min_line_percent,
        )],
        context: vec![("lines_covered", c.covered), ("lines_valid", c.valid)],
        source,
    }
}

/// The security gate: critical and high findings.
pub fn security(f: &Findings, t: &Thresholds, source: String) -> Gate {
    Gate {
        kind: GateKind::Security,
        checks: vec![
            Check::new(
                "critical",
                f.critical as f64,
                Bound::AtMost,
                t.security.max_critical as f64,
            ),
            Check::new(
                "high",
                f.high as f64,
                Bound::AtMost,
                t.security.max_high as f64,
            ),
        ],
        context: vec![("medium", f.medium as f64), ("low", f.low as f64)],
        source,
    }
}

/// The performance gate: the worst regression against the baseline.
pub fn performance(r: &Regression, t: &Thresholds, source: String) -> Gate {
    Gate {
        kind: GateKind::Performance,
        checks: vec![Check::new(
            "regression_percent",
            r.percent,
            Bound::Below,
            t.performance.max_regression_percent,
        )],
        context: vec![("benchmarks", r.benchmarks as f64)],
        source: format!("{source}, worst: {}", r.worst),
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// A number as people read it: `80`, `72.5`, `3.14`.
pub fn num(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_default_threshold_passes_at_its_edge_and_fails_past_it() {
        let t = Thresholds::default();
        let all = TestCounts {
            total: 10,
            failed: 0,
            skipped: 0,
        };
        assert!(tests(&all, &t, String::new()).passed());
        let one_failed = TestCounts { failed: 1, ..all };
        let g = tests(&one_failed, &t, String::new());
        assert_eq!(
            g.failures().map(ToString::to_string).collect::<Vec<_>>(),
            ["pass_rate_percent 90 (needs >= 100)"]
        );
        let at_80 = LineCoverage {
            covered: 80.0,
            valid: 100.0,
        };
        assert!(coverage(&at_80, &t, String::new()).passed());
        let below = LineCoverage {
            covered: 799.0,
            valid: 1000.0,
        };
        assert_eq!(
            coverage(&below, &t, String::new())
                .failures()
                .next()
                .unwrap()
                .to_string(),
            "line_percent 79.9 (needs >= 80)"
        );
        let high = Findings {
            high: 1,
            ..Findings::default()
        };
        assert_eq!(
            security(&high, &t, String::new())
                .failures()
                .next()
                .unwrap()
                .to_string(),
            "high 1 (needs <= 0)"
        );
        let five = Regression {
            benchmarks: 1,
            worst: "a".to_owned(),
            percent: 5.0,
        };
        assert!(!performance(&five, &t, String::new()).passed());
        let under = Regression {
            percent: 4.99,
            ..five
        };
        assert!(performance(&under, &t, String::new()).passed());
    }

    #[test]
    fn the_statement_lists_values_and_thresholds() {
        let g = coverage(
            &LineCoverage {
                covered: 85.0,
                valid: 100.0,
            },
            &Thresholds::default(),
            "lcov.info".to_owned(),
        );
        let r = g.result();
        assert_eq!(r.result, Verdict::Passed);
        assert_eq!(r.measured["line_percent"], 85.0);
        assert_eq!(r.thresholds["line_percent"], ">= 80");
        assert_eq!(r.measured["lines_valid"], 100.0);
    }
}
