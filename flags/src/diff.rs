//! What changes from one flag set to the next: the flags added, changed and removed (for the
//! audit log), and whether the change only switches flags off (what a `kill-switch` key may
//! sign).
//!
//! A kill switch may, per flag, set `state` to `DISABLED`, or drop the flag's `targeting`
//! so that it serves its default variant; nothing else: no flag added or removed, no
//! variant, default variant, metadata, `$evaluators` or set metadata changed, no disabled
//! flag enabled again.

use serde_json::{Map, Value};

use crate::definition::{FlagSet, State, Targeting};

/// The flags that differ between two sets, by key, each list sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// In the new set only.
    pub added: Vec<String>,
    /// In both, with different definitions.
    pub changed: Vec<String>,
    /// In the old set only.
    pub removed: Vec<String>,
}

impl Changes {
    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

/// The flags added, changed and removed from `old` to `new` (a flag whose definition, as
/// written, differs; or all flags when `$evaluators` differ, since their rules may use them).
pub fn changes(old: &FlagSet, new: &FlagSet) -> Changes {
    let evaluators_differ = old.evaluators != new.evaluators;
    let mut c = Changes::default();
    for (k, f) in &new.flags {
        match old.flags.get(k) {
            None => c.added.push(k.clone()),
            Some(o) if o.raw != f.raw || (evaluators_differ && uses_refs(&f.raw)) => {
                c.changed.push(k.clone());
            }
            Some(_) => {}
        }
    }
    c.removed = old
        .flags
        .keys()
        .filter(|k| !new.flags.contains_key(*k))
        .cloned()
        .collect();
    c
}

fn uses_refs(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.contains_key("$ref") || m.values().any(uses_refs),
        Value::Array(a) => a.iter().any(uses_refs),
        _ => false,
    }
}

/// Why a change is more than a kill switch may sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAKillSwitch {
    /// A flag is added.
    #[error("adds flag {0:?}")]
    Added(String),
    /// A flag is removed.
    #[error("removes flag {0:?}")]
    Removed(String),
    /// A disabled flag is enabled.
    #[error("enables flag {0:?}")]
    Enabled(String),
    /// A flag's targeting changes other than by being dropped.
    #[error("changes the targeting of flag {0:?}")]
    Targeting(String),
    /// A flag's variants, default variant or metadata change.
    #[error("changes the variants, default variant or metadata of flag {0:?}")]
    Definition(String),
    /// `$evaluators` or the set's metadata change.
    #[error("changes $evaluators or the flag set's metadata")]
    SetLevel,
}

/// Checks that `new` differs from `old` only by switching flags off.
///
/// # Errors
///
/// The first [`NotAKillSwitch`] found, in key order.
pub fn check_kill_switch(old: &FlagSet, new: &FlagSet) -> Result<(), NotAKillSwitch> {
    if old.evaluators != new.evaluators || old.metadata != new.metadata {
        return Err(NotAKillSwitch::SetLevel);
    }
    if let Some(k) = new.flags.keys().find(|k| !old.flags.contains_key(*k)) {
        return Err(NotAKillSwitch::Added(k.clone()));
    }
    for (k, o) in &old.flags {
        let Some(n) = new.flags.get(k) else {
            return Err(NotAKillSwitch::Removed(k.clone()));
        };
        if o.raw == n.raw {
            continue;
        }
        if strip(&o.raw) != strip(&n.raw) {
            return Err(NotAKillSwitch::Definition(k.clone()));
        }
        if o.state == State::Disabled && n.state == State::Enabled {
            return Err(NotAKillSwitch::Enabled(k.clone()));
        }
        let targeting_dropped = matches!(n.targeting, Targeting::None);
        let targeting_same = o.raw.get("targeting") == n.raw.get("targeting");
        if !(targeting_same || targeting_dropped) {
            return Err(NotAKillSwitch::Targeting(k.clone()));
        }
    }
    Ok(())
}

/// A flag's definition without `state` and `targeting`.
fn strip(raw: &Value) -> Map<String, Value> {
    let mut m = raw.as_object().cloned().unwrap_or_default();
    m.remove("state");
    m.remove("targeting");
    m
}
