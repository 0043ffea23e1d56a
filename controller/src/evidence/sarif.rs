//! SARIF 2.1.0: a scanner's findings counted by severity.
//!
//! A finding's severity is, in this order: a numeric `security-severity` (CVSS-like, as GitHub
//! code scanning reads it) on the result's or its rule's `properties` (>= 9 critical, >= 7
//! high, >= 4 medium, else low); a textual `issue_severity` or `severity` property (bandit
//! writes `HIGH`, `MEDIUM`, `LOW`); else the SARIF `level` of the result or of its rule's
//! default configuration (`error` high, `warning` medium, `note`/`none` low; absent means
//! `warning`, as the spec says). Suppressed results do not count.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{EvidenceError, Report};

const FORMAT: &str = "SARIF";

/// Findings per severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Findings {
    /// Critical.
    pub critical: u64,
    /// High.
    pub high: u64,
    /// Medium.
    pub medium: u64,
    /// Low (and informational).
    pub low: u64,
}

#[derive(Debug, Deserialize)]
struct Log {
    version: String,
    runs: Vec<Run>,
}

#[derive(Debug, Deserialize)]
struct Run {
    #[serde(default)]
    tool: Option<Tool>,
    #[serde(default)]
    results: Vec<SarifResult>,
}

#[derive(Debug, Deserialize)]
struct Tool {
    driver: Driver,
}

#[derive(Debug, Deserialize)]
struct Driver {
    #[serde(default)]
    rules: Vec<Rule>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    #[serde(default)]
    id: String,
    #[serde(default)]
    properties: BTreeMap<String, Value>,
    #[serde(default)]
    default_configuration: Option<Configuration>,
}

#[derive(Debug, Deserialize)]
struct Configuration {
    #[serde(default)]
    level: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SarifResult {
    #[serde(default)]
    rule_id: Option<String>,
    #[serde(default)]
    rule_index: Option<usize>,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    properties: BTreeMap<String, Value>,
    #[serde(default)]
    suppressions: Vec<Value>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Severity {
    Critical,
    High,
    Medium,
    Low,
}

fn from_score(score: f64) -> Severity {
    if score >= 9.0 {
        Severity::Critical
    } else if score >= 7.0 {
        Severity::High
    } else if score >= 4.0 {
        Severity::Medium
    } else {
        Severity::Low
    }
}

fn from_properties(props: &BTreeMap<String, Value>) -> Option<Severity> {
    if let Some(v) = props.get("security-severity") {
        let score = match v {
            Value::String(s) => s.trim().parse::<f64>().ok(),
            Value::Number(n) => n.as_f64(),
            _ => None,
        };
        if let Some(s) = score {
            return Some(from_score(s));
        }
    }
    let text = ["issue_severity", "severity"]
        .iter()
        .find_map(|k| props.get(*k).and_then(Value::as_str))?;
    match text.to_ascii_lowercase().as_str() {
        "critical" => Some(Severity::Critical),
        "high" | "error" => Some(Severity::High),
        "medium" | "moderate" | "warning" => Some(Severity::Medium),
        "low" | "info" | "informational" | "note" | "undefined" => Some(Severity::Low),
        _ => None,
    }
}

fn from_level(level: &str) -> Severity {
    match level {
        "error" => Severity::High,
        "note" | "none" => Severity::Low,
        // "warning", and anything else, as the spec's default.
        _ => Severity::Medium,
    }
}

/// Parses a SARIF log and counts its unsuppressed findings by severity.
///
/// # Errors
///
/// [`EvidenceError::Parse`] when it is not SARIF 2.1.0 JSON.
pub fn parse(report: &Report) -> Result<Findings, EvidenceError> {
    let log: Log =
        serde_json::from_str(&report.text).map_err(|e| report.invalid(FORMAT, e.to_string()))?;
    if log.version != "2.1.0" {
        return Err(report.invalid(FORMAT, format!("version {:?} is not 2.1.0", log.version)));
    }
    let mut f = Findings::default();
    for run in &log.runs {
        let rules = run.tool.as_ref().map_or(&[][..], |t| &t.driver.rules[..]);
        for r in run.results.iter().filter(|r| r.suppressions.is_empty()) {
            let rule = r.rule_index.and_then(|i| rules.get(i)).or_else(|| {
                r.rule_id
                    .as_ref()
                    .and_then(|id| rules.iter().find(|x| &x.id == id))
            });
            let severity = from_properties(&r.properties)
                .or_else(|| rule.and_then(|x| from_properties(&x.properties)))
                .unwrap_or_else(|| {
                    let level = r.level.as_deref().or_else(|| {
                        rule.and_then(|x| x.default_configuration.as_ref())
                            .and_then(|c| c.level.as_deref())
                    });
                    from_level(level.unwrap_or("warning"))
                });
            match severity {
                Severity::Critical => f.critical += 1,
                Severity::High => f.high += 1,
                Severity::Medium => f.medium += 1,
                Severity::Low => f.low += 1,
            }
        }
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(text: &str) -> Report {
        Report {
            path: "scan.sarif".into(),
            text: text.to_owned(),
        }
    }

    #[test]
    fn severities_come_from_scores_properties_then_levels() {
        let sarif = r#"{"version":"2.1.0","runs":[{"tool":{"driver":{"name":"x","rules":[
            {"id":"R1","properties":{"security-severity":"9.8"}},
            {"id":"R2","defaultConfiguration":{"level":"error"}}]}},
          "results":[
            {"ruleId":"R1","message":{"text":"a"}},
            {"ruleIndex":1,"message":{"text":"b"}},
            {"ruleId":"B101","level":"warning","properties":{"issue_severity":"HIGH"}},
            {"level":"note","message":{"text":"c"}},
            {"message":{"text":"d"}},
            {"level":"error","suppressions":[{"kind":"inSource"}]}]}]}"#;
        let f = parse(&report(sarif)).unwrap();
        assert_eq!(
            f,
            Findings {
                critical: 1,
                high: 2,
                medium: 1,
                low: 1
            }
        );
    }

    #[test]
    fn another_version_or_not_json_is_refused() {
        assert!(parse(&report(r#"{"version":"1.0.0","runs":[]}"#)).is_err());
        assert!(parse(&report("<xml/>")).is_err());
    }
}
