//! The feature-flag lines of an app in `gantry-agent policy`: the OFREP address, who may
//! change the flag set and with how many signatures, who may only switch flags off, and the
//! lifecycle age; as text and as JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::FlagsPolicy;

fn roles(list: &std::collections::BTreeSet<String>, empty: &str) -> String {
    if list.is_empty() {
        empty.to_owned()
    } else {
        list.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// The `feature flags:` block of an app (empty when the app serves none).
pub(super) fn text(flags: Option<&FlagsPolicy>) -> String {
    let mut out = String::new();
    let Some(f) = flags else {
        return out;
    };
    out.push_str("  feature flags:\n");
    let _ = writeln!(out, "    ofrep           http://{}", f.listen);
    let _ = writeln!(
        out,
        "    change          {} signature(s) by distinct keys with role {}",
        f.approvals,
        roles(&f.allow, "(nobody)")
    );
    let _ = writeln!(
        out,
        "    kill switch     one signature by a key with role {} (no quorum)",
        roles(&f.kill_switch, "(nobody)")
    );
    let _ = writeln!(
        out,
        "    remove after    {}",
        humantime::format_duration(f.remove_after)
    );
    out
}

/// The `flags` member of an app's JSON.
pub(super) fn json(flags: Option<&FlagsPolicy>) -> Value {
    flags.map_or(Value::Null, |f| {
        json!({
            "listen": f.listen.to_string(),
            "allow": f.allow,
            "approvals": f.approvals,
            "kill_switch": f.kill_switch,
            "remove_after_secs": f.remove_after.as_secs(),
        })
    })
}
