//! Evaluation rate of a flag with `fractional` targeting, the common percentage rollout.

#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use gantry_flags::FlagSet;
use serde_json::json;

fn fractional(c: &mut Criterion) {
    let set = FlagSet::parse(
        br#"{"flags":{"new-checkout":{"state":"ENABLED","defaultVariant":"off",
            "variants":{"on":true,"off":false},
            "targeting":{"fractional":[["on",25],["off",75]]}}}}"#,
    )
    .expect("the bench's flag set parses");
    let contexts: Vec<_> = (0..1024)
        .map(|i| json!({"targetingKey": format!("user-{i}"), "plan": "pro"}))
        .collect();
    let mut i = 0usize;
    c.bench_function("fractional flag", |b| {
        b.iter(|| {
            i = (i + 1) % contexts.len();
            let r = set.evaluate("new-checkout", &contexts[i], 1_700_000_000);
            std::hint::black_box(r.variant);
        })
    });
}

criterion_group!(benches, fractional);
criterion_main!(benches);
