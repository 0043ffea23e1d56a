//! `[apps.<name>.flags]`: the OFREP endpoint's address (loopback only: the flags are for the
//! host's own instances), the roles that may change the flag set or only switch flags off,
//! the quorum of `allow` keys a set needs, and the lifecycle age.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::Problems;
use crate::config::raw::RawFlags;
use crate::config::{FLAGS_ROLE, FlagsPolicy, KILL_SWITCH_ROLE, TrustedKey};

/// Flags older than this are due for removal by default (the CD model's 30 to 90 days).
const DEFAULT_REMOVE_AFTER: Duration = Duration::from_secs(90 * 24 * 3600);

/// Checks one app's flags section against the policy's `keys`; `None` when it is absent (or,
/// with a problem recorded, invalid).
pub(super) fn validate_flags(
    p: &mut Problems,
    at: &str,
    raw: Option<&RawFlags>,
    keys: &[TrustedKey],
) -> Option<FlagsPolicy> {
    let raw = raw?;
    let before = p.list.len();
    let entry = format!("{at}.flags.listen");
    let listen = match raw.listen.trim().parse::<SocketAddr>() {
        Ok(a) if a.ip().is_loopback() => Some(a),
        Ok(a) => {
            p.add(
                &entry,
                format!("{a} is not a loopback address: flags are served to this host's apps only"),
            );
            None
        }
        Err(e) => {
            p.add(&entry, format!("{:?} is not an IP:port: {e}", raw.listen));
            None
        }
    };
    let roles = |given: &Option<Vec<String>>, default: &str| -> BTreeSet<String> {
        match given {
            Some(list) => list.iter().cloned().collect(),
            None => BTreeSet::from([default.to_owned()]),
        }
        .into_iter()
        .filter(|r| !r.is_empty())
        .collect()
    };
    let allow = roles(&raw.allow, FLAGS_ROLE);
    let kill_switch = roles(&raw.kill_switch, KILL_SWITCH_ROLE);
    let remove_after = match &raw.remove_after {
        Some(v) => p.duration(&format!("{at}.flags.remove_after"), v, false),
        None => DEFAULT_REMOVE_AFTER,
    };
    let approvals = raw.approvals.unwrap_or(1);
    check_quorum(p, &format!("{at}.flags.approvals"), approvals, &allow, keys);
    match listen {
        Some(listen) if p.list.len() == before => Some(FlagsPolicy {
            listen,
            allow,
            kill_switch,
            remove_after,
            approvals,
        }),
        _ => None,
    }
}

/// A quorum of 0 would admit an unsigned change; one of 2 or more above the unrevoked keys
/// that hold an `allow` role would admit none (a quorum of 1 with no such key yet is the
/// default, and stays valid: the kill switch still works, and keys are added later).
fn check_quorum(
    p: &mut Problems,
    entry: &str,
    approvals: u32,
    allow: &BTreeSet<String>,
    keys: &[TrustedKey],
) {
    if approvals == 0 {
        p.add(entry, "must be 1 or more");
        return;
    }
    let holders = keys
        .iter()
        .filter(|k| !k.revoked && !k.roles.is_disjoint(allow))
        .count();
    if approvals > 1 && usize::try_from(approvals).is_ok_and(|n| n > holders) {
        p.add(
            entry,
            format!(
                "{approvals} signature(s) required but only {holders} unrevoked key(s) hold role {}: \
                 no flag change could ever be admitted (the kill switch still could)",
                allow.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        );
    }
}
