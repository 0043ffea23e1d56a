//! Admission of a signed flag set: the checks, in order, that decide whether it replaces the
//! set in force for its app. Pure: the caller gives the policy, the set in force and the time.
//!
//! 1. size, then signatures over the **raw** bytes (`PAE(FLAGS_PAYLOAD_TYPE, bytes)`), as for a
//!    job and with the same rules (distinct keys, hints only);
//! 2. protobuf decoding and fields; the app is configured and has `[apps.NAME.flags]`;
//! 3. this agent is targeted (`agent_ids`, or every one of `labels`); the validity window;
//!    the signing keys are valid now;
//! 4. replay: the bytes in force are answered as unchanged, bytes admitted before are
//!    refused, and so is a version not above the one in force;
//! 5. the definition parses, every targeting rule compiles;
//! 6. roles: a key with a role of `allow` may change anything; a key with a role of
//!    `kill_switch` only what [`gantry_flags::check_kill_switch`] allows, with no quorum.

use std::collections::{BTreeMap, BTreeSet};

use gantry_flags::{Changes, FlagSet};
use gantry_policy::admission::{SignatureIn, policy as keys};
use gantry_policy::config::{AppPolicy, FlagsPolicy, Limits, Policy, TrustedKey};
use gantry_policy::job::{AppName, Sha256Hex};
use gantry_proto::envelope::verify_flags;
use gantry_proto::v1;
use prost::Message;

use super::FlagsError;
use super::store::InForce;

/// The largest `SignedFlags.flags` admitted.
pub const MAX_FLAGS_BYTES: usize = 1024 * 1024;

/// A flag set that passed admission.
#[derive(Debug)]
pub struct Admitted {
    /// The decoded document.
    pub doc: v1::FlagSet,
    /// Its definition, parsed.
    pub set: FlagSet,
    /// The app.
    pub app: AppName,
    /// SHA-256 of the signed bytes.
    pub digest: Sha256Hex,
    /// Names of the valid signing keys, in policy order.
    pub signer_names: Vec<String>,
    /// Their key ids.
    pub signer_ids: Vec<String>,
    /// Whether it was admitted under a kill-switch role only.
    pub kill_switch: bool,
    /// The flags it adds, changes and removes against the set in force.
    pub changes: Changes,
}

/// What admission decided.
#[derive(Debug)]
pub enum Verdict {
    /// The exact bytes in force: nothing to do.
    Unchanged,
    /// A new set to put in force.
    New(Box<Admitted>),
}

/// What admission needs to know about this agent.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// The policy (keys, apps).
    pub policy: &'a Policy,
    /// The limits (validity window, clock skew).
    pub limits: &'a Limits,
    /// This agent's id.
    pub agent_id: &'a str,
    /// This agent's labels.
    pub labels: &'a BTreeMap<String, String>,
}

/// The app named by a document that decoded, for the refusal's audit entry.
pub fn claimed_app(bytes: &[u8]) -> Option<(String, u64)> {
    v1::FlagSet::decode(bytes).ok().map(|d| (d.app, d.version))
}

/// Runs the checks of the module docs. `in_force` gives the app's current set by name.
///
/// # Errors
///
/// The first [`FlagsError`] in the order above.
pub fn admit(
    host: Host<'_>,
    bytes: &[u8],
    sigs: &[SignatureIn],
    now: i64,
    in_force: impl Fn(&AppName) -> Option<InForce>,
) -> Result<Verdict, FlagsError> {
    if bytes.len() > MAX_FLAGS_BYTES {
        return Err(FlagsError::TooLarge {
            size: bytes.len(),
            max: MAX_FLAGS_BYTES,
        });
    }
    let signers =
        keys::signers_of(host.policy, verify_flags, bytes, sigs).map_err(FlagsError::Signature)?;
    let doc = v1::FlagSet::decode(bytes).map_err(|e| FlagsError::Malformed {
        detail: e.to_string(),
    })?;
    let app = AppName::new(&doc.app).map_err(|e| FlagsError::InvalidField {
        field: "app",
        problem: e.to_string(),
    })?;
    if doc.version == 0 {
        return Err(FlagsError::InvalidField {
            field: "version",
            problem: "must be 1 or more".into(),
        });
    }
    let app_policy = host
        .policy
        .apps
        .get(&app)
        .ok_or_else(|| FlagsError::AppNotConfigured {
            app: app.to_string(),
        })?;
    let flags = app_policy
        .flags
        .as_ref()
        .ok_or_else(|| FlagsError::FlagsNotEnabled {
            app: app.to_string(),
        })?;
    check_target(&doc, host)?;
    check_window(&doc, now, host.limits)?;
    let (valid, not_valid) = keys::valid_at(&signers.keys, now);
    if valid.is_empty() {
        return Err(FlagsError::Signature(keys::key_not_valid(&not_valid)));
    }

    let digest = Sha256Hex::of(bytes);
    let current = in_force(&app);
    if let Some(cur) = &current {
        if cur.digest == digest.as_str() {
            return Ok(Verdict::Unchanged);
        }
        if let Some(seen) = cur.history.iter().find(|h| h.digest == digest.as_str()) {
            return Err(FlagsError::Replayed {
                version: seen.version,
                current: cur.version,
            });
        }
        if doc.version <= cur.version {
            return Err(FlagsError::OlderVersion {
                version: doc.version,
                current: cur.version,
            });
        }
    }

    let set = FlagSet::parse(&doc.definition_json).map_err(FlagsError::Definition)?;
    if let Some((flag, e)) = set.problems().first() {
        return Err(FlagsError::Targeting {
            flag: (*flag).to_owned(),
            problem: e.to_string(),
        });
    }
    let kill_switch = check_roles(app_policy, flags, &valid, current.as_ref(), &set)?;
    let changes = match &current {
        Some(cur) => gantry_flags::changes(&cur.set, &set),
        None => Changes {
            added: set.flags.keys().cloned().collect(),
            ..Changes::default()
        },
    };
    Ok(Verdict::New(Box::new(Admitted {
        doc,
        set,
        app,
        digest,
        signer_names: valid.iter().map(|k| k.name.clone()).collect(),
        signer_ids: valid.iter().map(|k| k.key_id.to_string()).collect(),
        kill_switch,
        changes,
    })))
}

fn check_target(doc: &v1::FlagSet, host: Host<'_>) -> Result<(), FlagsError> {
    let by_id = doc.agent_ids.iter().any(|a| a == host.agent_id);
    let by_labels = !doc.labels.is_empty()
        && doc
            .labels
            .iter()
            .all(|(k, v)| host.labels.get(k) == Some(v));
    if by_id || by_labels {
        return Ok(());
    }
    Err(FlagsError::WrongAgent {
        agent_id: host.agent_id.to_owned(),
        targets: doc
            .agent_ids
            .iter()
            .cloned()
            .chain(doc.labels.iter().map(|(k, v)| format!("{k}={v}")))
            .collect(),
    })
}

fn check_window(doc: &v1::FlagSet, now: i64, limits: &Limits) -> Result<(), FlagsError> {
    let skew = i128::from(limits.clock_skew.as_secs());
    if i128::from(doc.issued_at) > i128::from(now) + skew {
        return Err(FlagsError::NotYetValid {
            issued_at: doc.issued_at,
            now,
        });
    }
    if doc.expires_at <= now {
        return Err(FlagsError::Expired {
            expires_at: doc.expires_at,
            now,
        });
    }
    let window = i128::from(doc.expires_at) - i128::from(doc.issued_at);
    let max = limits.max_validity.as_secs();
    if window > i128::from(max) {
        return Err(FlagsError::WindowTooLong {
            window_secs: i64::try_from(window).unwrap_or(i64::MAX),
            max_secs: max,
        });
    }
    Ok(())
}

/// Whether the change needs the kill-switch rule: `false` when a signer holds an `allow`
/// role, `true` when only a `kill_switch` role and the change passes the rule.
fn check_roles(
    app: &AppPolicy,
    flags: &FlagsPolicy,
    signers: &[&TrustedKey],
    current: Option<&InForce>,
    set: &FlagSet,
) -> Result<bool, FlagsError> {
    let holds = |roles: &BTreeSet<String>| signers.iter().any(|k| !k.roles.is_disjoint(roles));
    if holds(&flags.allow) {
        return Ok(false);
    }
    if holds(&flags.kill_switch) {
        let Some(cur) = current else {
            return Err(FlagsError::KillSwitchOnly {
                app: app.name.to_string(),
                why: "there is no flag set in force to switch off".into(),
            });
        };
        gantry_flags::check_kill_switch(&cur.set, set).map_err(|e| FlagsError::KillSwitchOnly {
            app: app.name.to_string(),
            why: e.to_string(),
        })?;
        return Ok(true);
    }
    let signer_roles: BTreeSet<String> = signers
        .iter()
        .flat_map(|k| k.roles.iter().cloned())
        .collect();
    Err(FlagsError::MissingRole {
        app: app.name.to_string(),
        needed: flags
            .allow
            .iter()
            .chain(&flags.kill_switch)
            .cloned()
            .collect(),
        signer_roles: signer_roles.into_iter().collect(),
    })
}
