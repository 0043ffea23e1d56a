//! Resolution reasons and error codes for the flag shapes flagd defines.

#![allow(
    clippy::unwrap_used,
    reason = "test code: an unwrap that fails is a failed test, and its message says why"
)]

use gantry_flags::{ErrorCode, FlagSet, Reason, ValueType, changes, check_kill_switch};
use serde_json::json;

fn set(v: serde_json::Value) -> FlagSet {
    FlagSet::from_value(&v).unwrap()
}

#[test]
fn reasons_follow_openfeature_as_flagd_reports_them() {
    let s = set(json!({
        "flags": {
            "static": {"state": "ENABLED", "defaultVariant": "on", "variants": {"on": true, "off": false}},
            "off": {"state": "DISABLED", "defaultVariant": "on", "variants": {"on": true}},
            "targeted": {"state": "ENABLED", "defaultVariant": "off", "variants": {"on": true, "off": false},
                "targeting": {"if": [{"ends_with": [{"var": "email"}, "@corp.io"]}, "on", null]}},
            "bad-variant": {"state": "ENABLED", "defaultVariant": "off", "variants": {"off": false},
                "targeting": {"if": [true, "missing"]}},
            "no-default": {"state": "ENABLED", "variants": {"on": true}, "targeting": {"if": [false, "on"]}},
            "broken": {"state": "ENABLED", "defaultVariant": "off", "variants": {"off": false},
                "targeting": {"regex": ["a"]}},
            "throws": {"state": "ENABLED", "defaultVariant": "off", "variants": {"off": false, "on": true},
                "targeting": {"if": [{">": [{"var": "o"}, 1]}, "on"]}},
        },
        "$evaluators": {}
    }));
    let ctx = json!({"targetingKey": "u1", "email": "a@corp.io", "o": {"x": 1}});
    let r = s.evaluate("static", &ctx, 0);
    assert_eq!(
        (r.reason, r.variant.as_deref(), r.value),
        (Reason::Static, Some("on"), Some(&json!(true)))
    );
    assert_eq!(s.evaluate("off", &ctx, 0).reason, Reason::Disabled);
    let r = s.evaluate("targeted", &ctx, 0);
    assert_eq!(
        (r.reason, r.variant.as_deref()),
        (Reason::TargetingMatch, Some("on"))
    );
    let r = s.evaluate("targeted", &json!({"email": "a@else.io"}), 0);
    assert_eq!(
        (r.reason, r.variant.as_deref()),
        (Reason::Default, Some("off"))
    );
    let code = |k: &str| s.evaluate(k, &ctx, 0).error.map(|e| e.0);
    assert_eq!(code("bad-variant"), Some(ErrorCode::General));
    assert_eq!(code("broken"), Some(ErrorCode::ParseError));
    assert_eq!(code("throws"), Some(ErrorCode::General));
    assert_eq!(code("nope"), Some(ErrorCode::FlagNotFound));
    let r = s.evaluate("no-default", &ctx, 0);
    assert_eq!((r.reason, r.value), (Reason::Default, None));
    let r = s.evaluate_typed("static", &ctx, 0, ValueType::String);
    assert_eq!(r.error.map(|e| e.0), Some(ErrorCode::TypeMismatch));
    assert_eq!(s.problems().len(), 1);
    // Bulk: enabled flags with a value only.
    let all: Vec<&str> = s.evaluate_all(&ctx, 0).iter().map(|(k, _)| *k).collect();
    assert_eq!(all, vec!["static", "targeted"]);
}

#[test]
fn evaluators_are_referenced_with_ref() {
    let s = set(json!({
        "flags": {"f": {"state": "ENABLED", "defaultVariant": "off", "variants": {"on": 1, "off": 0},
            "targeting": {"if": [{"$ref": "staff"}, "on"]}}},
        "$evaluators": {"staff": {"ends_with": [{"var": "email"}, "@corp.io"]}}
    }));
    assert_eq!(
        s.evaluate("f", &json!({"email": "x@corp.io"}), 0)
            .variant
            .as_deref(),
        Some("on")
    );
    assert_eq!(
        s.evaluate("f", &json!({"email": "x@else.io"}), 0)
            .variant
            .as_deref(),
        Some("off")
    );
}

#[test]
fn definitions_flagd_refuses_do_not_parse() {
    for bad in [
        json!({"flags": {"f": {"state": "ON", "variants": {"a": 1}}}}),
        json!({"flags": {"f": {"state": "ENABLED", "defaultVariant": "b", "variants": {"a": 1}}}}),
        json!({"flags": {"f": {"state": "ENABLED"}}}),
        json!([1]),
    ] {
        assert!(FlagSet::from_value(&bad).is_err(), "{bad}");
    }
    assert!(FlagSet::parse(b"{not json").is_err());
}

#[test]
fn a_kill_switch_may_only_switch_flags_off() {
    let flag = |state: &str, targeting: serde_json::Value| json!({"state": state, "defaultVariant": "off", "variants": {"on": true, "off": false}, "targeting": targeting});
    let rule = json!({"fractional": [["on", 10], ["off", 90]]});
    let old = set(
        json!({"flags": {"a": flag("ENABLED", rule.clone()), "b": flag("DISABLED", json!({}))}}),
    );
    let disable = set(
        json!({"flags": {"a": flag("DISABLED", rule.clone()), "b": flag("DISABLED", json!({}))}}),
    );
    let to_default =
        set(json!({"flags": {"a": flag("ENABLED", json!({})), "b": flag("DISABLED", json!({}))}}));
    let ramp_up = set(
        json!({"flags": {"a": flag("ENABLED", json!({"fractional": [["on", 50], ["off", 50]]})), "b": flag("DISABLED", json!({}))}}),
    );
    let enable_b = set(
        json!({"flags": {"a": flag("ENABLED", rule.clone()), "b": flag("ENABLED", json!({}))}}),
    );
    let add = set(
        json!({"flags": {"a": flag("ENABLED", rule.clone()), "b": flag("DISABLED", json!({})), "c": flag("ENABLED", json!({}))}}),
    );
    assert_eq!(check_kill_switch(&old, &disable), Ok(()));
    assert_eq!(check_kill_switch(&old, &to_default), Ok(()));
    assert!(check_kill_switch(&old, &ramp_up).is_err());
    assert!(check_kill_switch(&old, &enable_b).is_err());
    assert!(check_kill_switch(&old, &add).is_err());
    let c = changes(&old, &add);
    assert_eq!(
        (c.added, c.changed, c.removed),
        (vec!["c".to_string()], vec![], vec![])
    );
}
