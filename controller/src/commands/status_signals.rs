//! The golden signals in `gantry status`: per app and cohort, the error rate, p95 latency and
//! request count the front door counted over the last minute, and the cohort's CPU and
//! memory; as a table and as JSON.

use std::fmt::Write as _;

use gantry_proto::v1::CohortSignals;

use super::status::{Align, table};
use crate::flags;

pub use gantry_client::signals::signals_json;

/// "0.12%", or `-` without responses.
fn rate_text(c: &CohortSignals) -> String {
    if c.responses == 0 {
        "-".to_owned()
    } else {
        format!("{:.2}%", c.error_rate * 100.0)
    }
}

/// "≤ 50 ms", "> 10 s" above the last edge, `-` without responses.
fn p95_text(c: &CohortSignals) -> String {
    if c.p95_above_last_edge {
        "above the last bucket".to_owned()
    } else if c.p95_latency_ms == 0 {
        "-".to_owned()
    } else {
        format!("<= {} ms", c.p95_latency_ms)
    }
}

/// The SIGNALS table of one app; nothing when it has none.
pub fn signals_table(out: &mut String, signals: &[CohortSignals]) {
    if signals.is_empty() {
        return;
    }
    let http = signals.iter().any(|c| c.window_ms > 0);
    let rows: Vec<Vec<String>> = signals
        .iter()
        .map(|c| {
            let mut row = vec![c.cohort.clone(), c.instances.to_string()];
            if http {
                row.extend([
                    c.requests.to_string(),
                    c.errors.to_string(),
                    rate_text(c),
                    p95_text(c),
                ]);
            }
            row.extend([
                format!("{:.0}%", c.cpu_percent),
                flags::format_bytes(c.memory_bytes),
            ]);
            if http {
                row.push(format!("{:.0}s", c.window_ms as f64 / 1000.0));
            }
            row
        })
        .collect();
    let mut columns = vec![("COHORT", Align::Left), ("INST", Align::Right)];
    if http {
        columns.extend([
            ("REQUESTS", Align::Right),
            ("5XX", Align::Right),
            ("ERROR RATE", Align::Right),
            ("P95", Align::Right),
        ]);
    }
    columns.extend([("CPU", Align::Right), ("MEMORY", Align::Right)]);
    if http {
        columns.push(("OVER", Align::Left));
    }
    let _ = writeln!(out, "  signals");
    table(out, &columns, &rows);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cohort(name: &str, requests: u64, errors: u64, p95: u64) -> CohortSignals {
        CohortSignals {
            cohort: name.to_owned(),
            window_ms: 60_000,
            requests,
            responses: requests,
            errors,
            #[allow(clippy::cast_precision_loss)]
            error_rate: if requests > 0 {
                errors as f64 / requests as f64
            } else {
                0.0
            },
            p95_latency_ms: p95,
            p95_above_last_edge: false,
            instances: 1,
            cpu_percent: 12.4,
            memory_bytes: 5 << 20,
        }
    }

    #[test]
    fn each_cohort_is_a_row_with_its_rate_p95_cpu_and_memory() {
        let mut out = String::new();
        signals_table(
            &mut out,
            &[cohort("canary", 200, 4, 500), cohort("stable", 0, 0, 0)],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "  signals");
        assert!(
            lines[1].contains("COHORT") && lines[1].contains("ERROR RATE"),
            "{out}"
        );
        assert!(
            lines[2].starts_with("  canary")
                && lines[2].contains("2.00%")
                && lines[2].contains("<= 500 ms"),
            "{out}"
        );
        assert!(
            lines[2].contains("12%") && lines[2].contains("5 MiB") && lines[2].ends_with("60s"),
            "{out}"
        );
        assert!(
            lines[3].starts_with("  stable") && lines[3].contains(" - "),
            "{out}"
        );
        let j = signals_json(&[cohort("canary", 200, 4, 500), cohort("stable", 0, 0, 0)]);
        assert_eq!(j[0]["error_rate"], 0.02);
        assert_eq!(j[0]["p95_latency_ms"], 500);
        assert_eq!(j[1]["error_rate"], serde_json::Value::Null);
        assert_eq!(j[1]["p95_latency_ms"], serde_json::Value::Null);
        assert_eq!(j[1]["memory_bytes"], 5 << 20);
    }

    #[test]
    fn without_http_counters_only_cpu_and_memory_show() {
        let mut out = String::new();
        let mut c = cohort("stable", 0, 0, 0);
        c.window_ms = 0;
        signals_table(&mut out, &[c]);
        assert!(
            !out.contains("ERROR RATE") && out.contains("MEMORY"),
            "{out}"
        );
        let mut none = String::new();
        signals_table(&mut none, &[]);
        assert!(none.is_empty());
    }
}
