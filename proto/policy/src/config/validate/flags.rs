//! `[apps.<name>.flags]`: the OFREP endpoint's address (loopback only: the flags are for the
//! host's own instances), the roles that may change the flag set or only switch flags off,
//! and the lifecycle age.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use super::Problems;
use crate::config::raw::RawFlags;
use crate::config::{FLAGS_ROLE, FlagsPolicy, KILL_SWITCH_ROLE};

/// Flags older than this are due for removal by default (the CD model's 30 to 90 days).
const DEFAULT_REMOVE_AFTER: Duration = Duration::from_secs(90 * 24 * 3600);

/// Checks one app's flags section; `None` when it is absent (or, with a problem recorded,
/// invalid).
pub(super) fn validate_flags(
    p: &mut Problems,
    at: &str,
    raw: Option<&RawFlags>,
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
    match listen {
        Some(listen) if p.list.len() == before => Some(FlagsPolicy {
            listen,
            allow,
            kill_switch,
            remove_after,
        }),
        _ => None,
    }
}
