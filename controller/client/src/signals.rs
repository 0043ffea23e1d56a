//! An agent's golden signals (its `Status`'s [`CohortSignals`]) as JSON, the same for
//! `gantry status --json`, `gantry rollout status --json` and the service's dashboard.

use gantry_proto::v1::CohortSignals;
use serde_json::json;

/// The signals as JSON: the wire's fields, `error_rate` and `p95_latency_ms` `null` when
/// there is no such value.
pub fn signals_json(signals: &[CohortSignals]) -> serde_json::Value {
    signals
        .iter()
        .map(|c| {
            json!({
                "cohort": c.cohort,
                "window_ms": c.window_ms,
                "requests": c.requests,
                "responses": c.responses,
                "errors": c.errors,
                "error_rate": (c.responses > 0).then_some(c.error_rate),
                "p95_latency_ms": (c.p95_latency_ms > 0).then_some(c.p95_latency_ms),
                "p95_above_last_edge": c.p95_above_last_edge,
                "instances": c.instances,
                "cpu_percent": c.cpu_percent,
                "memory_bytes": c.memory_bytes,
            })
        })
        .collect()
}
