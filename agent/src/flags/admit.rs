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
//! 6. roles: keys with a role of `allow` may change anything, when at least the app's
//!    `approvals` distinct ones signed; a key with a role of `kill_switch` only what
//!    [`gantry_flags::check_kill_switch`] allows, with no quorum. Short of the quorum, `allow`
//!    signers may still do what the kill switch may; more is [`FlagsError::QuorumNotMet`].

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
    judge(host, bytes, sigs, now, in_force, Fresh::Push)
}

/// Judges a set admitted before, for a rollback to put back in force over `current`: every
/// check of [`admit`] except the validity window and the replay rules of step 4 (the signed
/// rollback job is what asks for it now). The keys must still be trusted and valid, the
/// agent targeted, and the roles and quorum hold against `current` as for a new set.
///
/// # Errors
///
/// The first [`FlagsError`] in the order of [`admit`].
pub fn readmit(
    host: Host<'_>,
    signed: &v1::SignedFlags,
    now: i64,
    current: Option<&InForce>,
) -> Result<Box<Admitted>, FlagsError> {
    let sigs = SignatureIn::all_of(&signed.signatures);
    let current = current.cloned();
    match judge(
        host,
        &signed.flags,
        &sigs,
        now,
        |_| current.clone(),
        Fresh::Restore,
    )? {
        Verdict::New(a) => Ok(a),
        // The restore path never answers unchanged (only a push compares digests).
        Verdict::Unchanged => Err(FlagsError::Malformed {
            detail: "the set to restore is the one in force".into(),
        }),
    }
}

/// Whether the set is pushed now or restored from the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    Push,
    Restore,
}

fn judge(
    host: Host<'_>,
    bytes: &[u8],
    sigs: &[SignatureIn],
    now: i64,
    in_force: impl Fn(&AppName) -> Option<InForce>,
    fresh: Fresh,
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
    if fresh == Fresh::Push {
        check_window(&doc, now, host.limits)?;
    }
    let (valid, not_valid) = keys::valid_at(&signers.keys, now);
    if valid.is_empty() {
        return Err(FlagsError::Signature(keys::key_not_valid(&not_valid)));
    }

    let digest = Sha256Hex::of(bytes);
    let current = in_force(&app);
    if let Some(cur) = current.as_ref().filter(|_| fresh == Fresh::Push) {
        if cur.digest == digest.as_str() {
            return Ok(Verdict::Unchanged);
        }
        if let Some(seen) = cur.history.iter().find(|h| h.digest == digest.as_str()) {
            return Err(FlagsError::Replayed {
                version: seen.version,
                current: cur.version,
            });
        }
        if doc.version <= cur.floor() {
            return Err(FlagsError::OlderVersion {
                version: doc.version,
                current: cur.floor(),
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

/// Whether the change needs the kill-switch rule: `false` when `approvals` distinct signers
/// hold an `allow` role, `true` when the signers are short of that quorum (or hold only a
/// `kill_switch` role) and the change passes the kill-switch rule.
fn check_roles(
    app: &AppPolicy,
    flags: &FlagsPolicy,
    signers: &[&TrustedKey],
    current: Option<&InForce>,
    set: &FlagSet,
) -> Result<bool, FlagsError> {
    let holders = |roles: &BTreeSet<String>| {
        signers
            .iter()
            .filter(|k| !k.roles.is_disjoint(roles))
            .map(|k| k.name.clone())
            .collect::<Vec<_>>()
    };
    let allowed = holders(&flags.allow);
    let got = u32::try_from(allowed.len()).unwrap_or(u32::MAX);
    if got >= flags.approvals.max(1) {
        return Ok(false);
    }
    // Short of the quorum, a key with an `allow` role may still do what a kill-switch key may.
    if !allowed.is_empty() || !holders(&flags.kill_switch).is_empty() {
        let kill = match current {
            None => Err("there is no flag set in force to switch off".to_owned()),
            Some(cur) => gantry_flags::check_kill_switch(&cur.set, set).map_err(|e| e.to_string()),
        };
        return match kill {
            Ok(()) => Ok(true),
            Err(_) if !allowed.is_empty() => Err(FlagsError::QuorumNotMet {
                app: app.name.to_string(),
                needed: flags.approvals,
                got,
                signers: allowed,
            }),
            Err(why) => Err(FlagsError::KillSwitchOnly {
                app: app.name.to_string(),
                why,
            }),
        };
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

#[cfg(test)]
mod tests {
    //! The roles and the quorum of `[apps.NAME.flags]`, each refusal asserted exactly.

    use std::time::Duration;

    use gantry_policy::config::{FrontDoorMode, RouterConfig};
    use gantry_proto::envelope::sign_flags;
    use gantry_proto::keys::SigningKey;

    use super::*;
    use crate::admission::tests as admission_tests;

    const NOW: i64 = 1_800_000_000;
    const OFF: &str = r#"{"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"}}}"#;
    const ON: &str = r#"{"flags":{"f":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}"#;
    const DISABLED: &str = r#"{"flags":{"f":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"on"}}}"#;

    struct Fx {
        keys: Vec<(String, SigningKey)>,
        policy: Policy,
        limits: Limits,
        labels: BTreeMap<String, String>,
    }

    /// Keys `flags-a`, `flags-b` (role flags), `kill` (role kill-switch), `deployer`; the
    /// app web wants `approvals` flags signatures.
    fn fx(approvals: u32) -> Fx {
        let roles = [
            ("flags-a", "flags"),
            ("flags-b", "flags"),
            ("kill", "kill-switch"),
            ("deployer", "deployer"),
        ];
        let keys: Vec<(String, SigningKey)> = roles
            .iter()
            .map(|(n, _)| ((*n).to_owned(), SigningKey::generate().unwrap()))
            .collect();
        let trusted = keys
            .iter()
            .zip(roles)
            .map(|((name, k), (_, role))| admission_tests::trusted(name, k, &[role]))
            .collect();
        let web = AppName::new("web").unwrap();
        let app = AppPolicy {
            name: web.clone(),
            user: "nobody".into(),
            run_as: gantry_policy::config::RunAs::CurrentUser {
                uid: 65534,
                gid: 65534,
            },
            ports: 18000..=18009,
            max_instances: 4,
            stop_timeout: Duration::from_secs(10),
            approvals: 0,
            deployer_may_approve: false,
            dispatch: BTreeSet::new(),
            listen: None,
            router: RouterConfig::None,
            front_door_mode: FrontDoorMode::Tcp,
            hold_timeout: gantry_policy::config::DEFAULT_HOLD_TIMEOUT,
            allow: BTreeMap::new(),
            flags: Some(FlagsPolicy {
                listen: "127.0.0.1:18500".parse().unwrap(),
                allow: BTreeSet::from(["flags".to_owned()]),
                kill_switch: BTreeSet::from(["kill-switch".to_owned()]),
                remove_after: Duration::from_secs(86_400),
                approvals,
            }),
            limits: Default::default(),
        };
        Fx {
            keys,
            policy: Policy {
                keys: trusted,
                apps: BTreeMap::from([(web, app)]),
                environments: Default::default(),
            },
            limits: admission_tests::limits(),
            labels: BTreeMap::new(),
        }
    }

    fn doc(version: u64, definition: &str) -> Vec<u8> {
        v1::FlagSet {
            app: "web".into(),
            version,
            issued_at: NOW,
            expires_at: NOW + 600,
            agent_ids: vec!["agent-1".into()],
            labels: Default::default(),
            definition_json: definition.as_bytes().to_vec(),
            reason: String::new(),
        }
        .encode_to_vec()
    }

    impl Fx {
        fn sigs(&self, bytes: &[u8], by: &[&str]) -> Vec<SignatureIn> {
            by.iter()
                .map(|name| {
                    let (_, k) = self.keys.iter().find(|(n, _)| n == name).unwrap();
                    let s = sign_flags(k, bytes);
                    SignatureIn {
                        key_id_hint: s.key_id,
                        sig: s.sig,
                    }
                })
                .collect()
        }

        /// Admits `definition` at `version` signed `by`, over `current` (a version 1 of it).
        fn push(
            &self,
            current: Option<&str>,
            definition: &str,
            by: &[&str],
        ) -> Result<Verdict, FlagsError> {
            let host = Host {
                policy: &self.policy,
                limits: &self.limits,
                agent_id: "agent-1",
                labels: &self.labels,
            };
            let in_force = current.map(|def| InForce {
                version: 1,
                digest: Sha256Hex::of(&doc(1, def)).to_string(),
                signed: v1::SignedFlags::default(),
                set: FlagSet::parse(def.as_bytes()).unwrap(),
                signers: vec![],
                admitted_at: NOW - 60,
                ages: BTreeMap::new(),
                history: vec![],
                floor: 1,
                releases: BTreeMap::new(),
                splits: BTreeMap::new(),
            });
            let bytes = doc(2, definition);
            admit(host, &bytes, &self.sigs(&bytes, by), NOW, |_| {
                in_force.clone()
            })
        }
    }

    impl Fx {
        /// `definition` as version `version`, valid from `issued_at` for 10 minutes, signed
        /// `by`, as the archive keeps it.
        fn signed(
            &self,
            version: u64,
            issued_at: i64,
            definition: &str,
            by: &[&str],
        ) -> v1::SignedFlags {
            let mut d = v1::FlagSet::decode(doc(version, definition).as_slice()).unwrap();
            d.issued_at = issued_at;
            d.expires_at = issued_at + 600;
            let bytes = d.encode_to_vec();
            v1::SignedFlags {
                signatures: self
                    .sigs(&bytes, by)
                    .into_iter()
                    .map(|s| v1::Signature {
                        key_id: s.key_id_hint,
                        sig: s.sig,
                    })
                    .collect(),
                flags: bytes,
            }
        }

        /// Re-judges `signed` for a restore over a version 5 of `current`.
        fn readmit(
            &self,
            signed: &v1::SignedFlags,
            current: &str,
        ) -> Result<Box<Admitted>, FlagsError> {
            let host = Host {
                policy: &self.policy,
                limits: &self.limits,
                agent_id: "agent-1",
                labels: &self.labels,
            };
            let cur = InForce {
                version: 5,
                digest: Sha256Hex::of(&doc(5, current)).to_string(),
                signed: v1::SignedFlags::default(),
                set: FlagSet::parse(current.as_bytes()).unwrap(),
                signers: vec![],
                admitted_at: NOW - 60,
                ages: BTreeMap::new(),
                // The set to restore was admitted and replaced before.
                history: vec![],
                floor: 5,
                releases: BTreeMap::new(),
                splits: BTreeMap::new(),
            };
            readmit(host, signed, NOW, Some(&cur))
        }
    }

    #[test]
    fn a_restored_set_may_be_older_and_past_its_window_but_its_keys_must_still_count() {
        let f = fx(1);
        // Version 2, signed a day ago: a push of it would be refused as expired and older.
        let old = f.signed(2, NOW - 86_400, ON, &["flags-a"]);
        let host_push = |bytes: &[u8], sigs: &[SignatureIn]| {
            let host = Host {
                policy: &f.policy,
                limits: &f.limits,
                agent_id: "agent-1",
                labels: &f.labels,
            };
            admit(host, bytes, sigs, NOW, |_| None)
        };
        let sigs = SignatureIn::all_of(&old.signatures);
        assert!(matches!(
            host_push(&old.flags, &sigs),
            Err(FlagsError::Expired { .. })
        ));
        let a = f.readmit(&old, OFF).unwrap();
        assert_eq!(a.doc.version, 2);
        assert_eq!(a.signer_names, ["flags-a"]);
        assert_eq!(a.changes.changed, ["f"]);
        assert!(!a.kill_switch);

        // Signed by a key with no flags role: refused as a push would be.
        let by_deployer = f.signed(2, NOW - 86_400, ON, &["deployer"]);
        assert!(matches!(
            f.readmit(&by_deployer, OFF),
            Err(FlagsError::MissingRole { .. })
        ));
        // A kill-switch key's set that would turn the flag on over what is in force.
        let by_kill = f.signed(2, NOW - 86_400, ON, &["kill"]);
        assert!(matches!(
            f.readmit(&by_kill, OFF),
            Err(FlagsError::KillSwitchOnly { .. })
        ));
        // Bytes altered in the archive: no signature counts.
        let mut tampered = old.clone();
        if let Some(b) = tampered.flags.last_mut() {
            *b ^= 1;
        }
        assert!(matches!(
            f.readmit(&tampered, OFF),
            Err(FlagsError::Signature(_))
        ));
        // A key the policy does not trust (another fixture's key of the same name).
        let fresh = fx(1);
        let untrusted = fresh.signed(2, NOW - 86_400, ON, &["flags-a"]);
        assert!(matches!(
            f.readmit(&untrusted, OFF),
            Err(FlagsError::Signature(_))
        ));
        // Under a quorum of two, one signature is not enough to bring it back either.
        let q = fx(2);
        let one = q.signed(2, NOW - 86_400, ON, &["flags-a"]);
        assert!(matches!(
            q.readmit(&one, OFF),
            Err(FlagsError::QuorumNotMet { .. })
        ));
    }

    fn admitted(v: Result<Verdict, FlagsError>) -> Box<Admitted> {
        match v {
            Ok(Verdict::New(a)) => a,
            other => panic!("not admitted: {other:?}"),
        }
    }

    #[test]
    fn one_flags_signature_suffices_by_default() {
        let f = fx(1);
        let a = admitted(f.push(Some(OFF), ON, &["flags-a"]));
        assert!(!a.kill_switch);
        assert_eq!(a.signer_names, ["flags-a"]);
    }

    #[test]
    fn a_quorum_of_two_refuses_one_flags_signature_naming_it() {
        let f = fx(2);
        let e = f.push(Some(OFF), ON, &["flags-a"]).unwrap_err();
        assert!(
            matches!(&e, FlagsError::QuorumNotMet { needed: 2, got: 1, signers, .. } if signers == &["flags-a"]),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "changing the flags of web needs 2 signature(s) by distinct keys with a flags role, \
             has 1 (flags-a)"
        );
    }

    #[test]
    fn a_quorum_of_two_admits_two_distinct_flags_keys() {
        let f = fx(2);
        let a = admitted(f.push(Some(OFF), ON, &["flags-a", "flags-b"]));
        assert!(!a.kill_switch);
        assert_eq!(a.signer_names, ["flags-a", "flags-b"]);
    }

    #[test]
    fn the_same_flags_key_twice_is_not_a_quorum() {
        let f = fx(2);
        let e = f.push(Some(OFF), ON, &["flags-a", "flags-a"]).unwrap_err();
        // The signature rules count a key once.
        assert!(
            matches!(&e, FlagsError::QuorumNotMet { got: 1, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn a_signer_without_a_flags_role_does_not_count_towards_the_quorum() {
        let f = fx(2);
        let e = f.push(Some(OFF), ON, &["flags-a", "deployer"]).unwrap_err();
        assert!(
            matches!(&e, FlagsError::QuorumNotMet { got: 1, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn the_kill_switch_needs_no_quorum() {
        let f = fx(2);
        let a = admitted(f.push(Some(ON), DISABLED, &["kill"]));
        assert!(a.kill_switch);
        // A flags key alone may do what the kill switch may, under a quorum too.
        let a = admitted(f.push(Some(ON), DISABLED, &["flags-a"]));
        assert!(a.kill_switch);
    }

    #[test]
    fn a_kill_switch_key_still_may_not_turn_a_flag_on_under_a_quorum() {
        let f = fx(2);
        let e = f.push(Some(OFF), ON, &["kill"]).unwrap_err();
        assert!(matches!(&e, FlagsError::KillSwitchOnly { .. }), "{e:?}");
        // With one flags key, the refusal names the quorum it is short of.
        let e = f.push(Some(OFF), ON, &["kill", "flags-a"]).unwrap_err();
        assert!(
            matches!(&e, FlagsError::QuorumNotMet { got: 1, .. }),
            "{e:?}"
        );
    }

    #[test]
    fn no_flags_role_is_still_a_missing_role() {
        let f = fx(2);
        let e = f.push(Some(OFF), ON, &["deployer"]).unwrap_err();
        assert!(matches!(&e, FlagsError::MissingRole { .. }), "{e:?}");
    }
}
