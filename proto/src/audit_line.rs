//! One audit entry as a line for people, the format both `gantry-agent audit tail` and
//! `gantry audit tail` print, so that an operator reads the same line from either:
//! `ts  #seq  event  key=value ...`, fields in line order, `prev` left out, signatures and key
//! ids shortened.

use serde::Deserialize;
use serde::de::{MapAccess, Visitor};
use serde_json::Value;

/// An entry's fields in the order of the line.
struct Ordered(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Ordered {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Ordered;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Ordered, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                Ok(Ordered(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// One line for people. A line that is not a JSON object is shown as is, marked.
///
/// `2026-11-26T12:00:01.123Z  #42  job.accepted  job=deploy-1 app=web action=deploy`
pub fn format_human(line: &str) -> String {
    let Ok(Ordered(fields)) = serde_json::from_str::<Ordered>(line) else {
        return format!("(not an audit entry)  {line}");
    };
    let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
        None => "?".to_owned(),
    };
    let mut out = format!(
        "{}  #{}  {}",
        text(get("ts")),
        text(get("seq")),
        text(get("event"))
    );
    let mut first = true;
    for (key, value) in &fields {
        if matches!(key.as_str(), "seq" | "ts" | "prev" | "event") {
            continue;
        }
        out.push_str(if first { "  " } else { " " });
        first = false;
        out.push_str(key);
        out.push('=');
        match value {
            Value::String(s)
                if matches!(key.as_str(), "sig" | "key_id") && s.chars().count() > 16 =>
            {
                out.extend(s.chars().take(16));
                out.push('…');
            }
            Value::String(s)
                if !s.is_empty()
                    && !s
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '"') =>
            {
                out.push_str(s);
            }
            other => out.push_str(&other.to_string()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::audit_chain::GENESIS_PREV;

    /// The same cases as the agent's own test of its tail (`agent/src/audit/tests.rs`).
    #[test]
    fn one_readable_line_in_field_order() {
        let line = format!(
            r#"{{"seq":42,"ts":"2026-11-26T12:00:01.123Z","prev":"{GENESIS_PREV}","event":"job.accepted","job":"deploy-1","app":"web","action":"deploy","version":"1.1.0","strategy":"hot"}}"#
        );
        assert_eq!(
            format_human(&line),
            "2026-11-26T12:00:01.123Z  #42  job.accepted  job=deploy-1 app=web action=deploy version=1.1.0 strategy=hot"
        );
        let line = format!(
            r#"{{"seq":1,"ts":"T","prev":"{GENESIS_PREV}","event":"job.rejected","reason":"bad signature","keys":["a","b"],"n":3}}"#
        );
        assert_eq!(
            format_human(&line),
            r#"T  #1  job.rejected  reason="bad signature" keys=["a","b"] n=3"#
        );
        assert_eq!(format_human("garbage"), "(not an audit entry)  garbage");
    }

    proptest! {
        #[test]
        fn never_panics(line in any::<String>()) {
            let _ = format_human(&line);
        }
    }
}
