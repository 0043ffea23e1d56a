//! Canary splits: what is served with splits applied ([`served`]), which kept splits a new set
//! drops ([`kept_after`], [`forget_dropped`]), and the canary's handle over a real [`Flags`]
//! (signed sets pushed through admission, an audit log and a store in a temp dir).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use gantry_flags::{FlagSet, Reason};
use gantry_policy::admission::SignatureIn;
use gantry_proto::envelope::sign_flags;
use gantry_proto::keys::SigningKey;
use gantry_proto::v1;
use prost::Message;
use serde_json::Value;
use tokio::sync::watch;

use super::*;
use crate::audit::{AuditLog, AuditOptions};
use crate::config::{
    AppPolicy, AuditSettings, Config, FlagsPolicy, FrontDoorMode, Policy, RouterConfig, RunAs,
    TlsConfig,
};

const NOW: i64 = 1_800_000_000;
const AGENT: &str = "agent-1";

/// `checkout` and `banner` allow a split; `plain` names no canary variant; `dark` is switched
/// off. `checkout` has a targeting rule of its own, which a split replaces.
const V1: &str = r#"{"flags":{
    "checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
        "targeting":{"if":[{"==":[{"var":"email"},"a@corp.io"]},"on"]},
        "metadata":{"canaryVariant":"on"}},
    "banner":{"state":"ENABLED","variants":{"new":"N","old":"O"},"defaultVariant":"old",
        "metadata":{"canaryVariant":"new"}},
    "plain":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"},
    "dark":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
        "metadata":{"canaryVariant":"on"}}}}"#;

/// V1 with `checkout`'s own targeting gone (changed); `banner` as in V1.
const V2: &str = r#"{"flags":{
    "checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
        "metadata":{"canaryVariant":"on"}},
    "banner":{"state":"ENABLED","variants":{"new":"N","old":"O"},"defaultVariant":"old",
        "metadata":{"canaryVariant":"new"}}}}"#;

/// V2 without `banner` (removed), `checkout` as in V2.
const V3: &str = r#"{"flags":{
    "checkout":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
        "metadata":{"canaryVariant":"on"}}}}"#;

/// V2 without `checkout` (removed), `banner` as in V2.
const V2_WITHOUT_CHECKOUT: &str = r#"{"flags":{
    "banner":{"state":"ENABLED","variants":{"new":"N","old":"O"},"defaultVariant":"old",
        "metadata":{"canaryVariant":"new"}}}}"#;

/// V1 with `checkout` switched off (a kill switch); the other flags as in V1.
const V1_KILLED: &str = r#"{"flags":{
    "checkout":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
        "targeting":{"if":[{"==":[{"var":"email"},"a@corp.io"]},"on"]},
        "metadata":{"canaryVariant":"on"}},
    "banner":{"state":"ENABLED","variants":{"new":"N","old":"O"},"defaultVariant":"old",
        "metadata":{"canaryVariant":"new"}},
    "plain":{"state":"ENABLED","variants":{"on":true,"off":false},"defaultVariant":"off"},
    "dark":{"state":"DISABLED","variants":{"on":true,"off":false},"defaultVariant":"off",
        "metadata":{"canaryVariant":"on"}}}}"#;

fn split(percent: u32, job: &str, release: &str) -> Split {
    Split {
        percent,
        job_id: job.to_owned(),
        release: release.to_owned(),
    }
}

fn splits(of: &[(&str, Split)]) -> BTreeMap<String, Split> {
    of.iter()
        .map(|(k, s)| ((*k).to_owned(), s.clone()))
        .collect()
}

/// `definition` in force as version 1, with `kept` splits stored with it.
fn in_force(definition: &str, kept: BTreeMap<String, Split>) -> InForce {
    InForce {
        version: 1,
        digest: Sha256Hex::of(definition.as_bytes()).to_string(),
        signed: v1::SignedFlags::default(),
        set: FlagSet::parse(definition.as_bytes()).unwrap(),
        signers: vec!["flags-a".into()],
        admitted_at: NOW,
        ages: BTreeMap::new(),
        history: vec![],
        floor: 1,
        releases: BTreeMap::new(),
        splits: kept,
    }
}

fn targeting(set: &FlagSet, flag: &str) -> Value {
    set.flags[flag]
        .raw
        .get("targeting")
        .cloned()
        .unwrap_or(Value::Null)
}

/// How many of `users` targeting keys get `checkout` on, and whether the user a@corp.io that
/// the flag's own rule turns on gets it without a targeting key.
fn checkout_on(set: &FlagSet, users: u32) -> (usize, bool) {
    let on = (0..users)
        .filter(|u| {
            let ctx = json!({"targetingKey": format!("user-{u}")});
            set.evaluate("checkout", &ctx, NOW).value == Some(&json!(true))
        })
        .count();
    let staff = set
        .evaluate("checkout", &json!({"email": "a@corp.io"}), NOW)
        .value
        == Some(&json!(true));
    (on, staff)
}

#[test]
fn without_splits_the_signed_set_is_served_as_it_is() {
    let f = in_force(V1, BTreeMap::new());
    let s = served(&f, &BTreeMap::new());
    assert_eq!((s.version, s.digest.as_str()), (1, f.digest.as_str()));
    for flag in ["checkout", "banner", "plain", "dark"] {
        assert_eq!(s.set.flags[flag].raw, f.set.flags[flag].raw, "{flag}");
    }
    assert_eq!(checkout_on(&s.set, 200), (0, true));
    // A split of a flag the set does not have changes nothing either.
    let s = served(&f, &splits(&[("gone", split(50, "j1", "1.1.0"))]));
    assert_eq!(s.digest, f.digest);
    assert_eq!(s.set.flags.len(), 4);
}

#[test]
fn a_split_of_a_flag_that_allows_it_serves_the_fractional_rule_under_a_new_digest() {
    let f = in_force(V1, BTreeMap::new());
    let at = |p: u32| served(&f, &splits(&[("checkout", split(p, "j1", "1.1.0"))]));
    let (twenty, fifty) = (at(20), at(50));
    assert_eq!(
        targeting(&twenty.set, "checkout"),
        json!({"fractional": [["on", 20], ["off", 80]]})
    );
    assert_eq!(
        targeting(&fifty.set, "checkout"),
        json!({"fractional": [["on", 50], ["off", 50]]})
    );
    // Users see the share, and the flag's own rule no longer applies.
    let (on, staff) = checkout_on(&twenty.set, 1000);
    assert!((150..=250).contains(&on), "{on} of 1000 at 20%");
    assert!(!staff);
    // The other flags are served as signed.
    assert_eq!(twenty.set.flags["banner"].raw, f.set.flags["banner"].raw);
    // Each split has its own digest (the ETag changes), stable for the same split.
    assert_ne!(twenty.digest, f.digest);
    assert_ne!(fifty.digest, f.digest);
    assert_ne!(twenty.digest, fifty.digest);
    assert_eq!(at(20).digest, twenty.digest);
    assert_eq!(twenty.digest.len(), 64);
    assert_eq!(twenty.version, 1);
}

#[test]
fn a_split_of_a_disabled_flag_or_of_one_without_a_canary_variant_is_not_applied() {
    let f = in_force(V1, BTreeMap::new());
    let s = served(
        &f,
        &splits(&[
            ("dark", split(50, "j1", "1.1.0")),
            ("plain", split(50, "j1", "1.1.0")),
        ]),
    );
    assert_eq!(s.digest, f.digest);
    assert_eq!(targeting(&s.set, "dark"), Value::Null);
    assert_eq!(targeting(&s.set, "plain"), Value::Null);
    let r = s.set.evaluate("dark", &json!({"targetingKey": "u"}), NOW);
    assert_eq!((r.reason, r.value), (Reason::Disabled, None));
    // The kill switch wins over a split the canary kept.
    let killed = in_force(V1_KILLED, BTreeMap::new());
    let s = served(&killed, &splits(&[("checkout", split(100, "j1", "1.1.0"))]));
    assert_eq!(s.digest, killed.digest);
    assert_eq!(checkout_on(&s.set, 100), (0, false));
    let r = s
        .set
        .evaluate("checkout", &json!({"targetingKey": "u"}), NOW);
    assert_eq!(r.reason, Reason::Disabled);
}

#[test]
fn a_new_set_keeps_only_the_splits_of_flags_it_leaves_alone() {
    let kept = splits(&[
        ("checkout", split(100, "j1", "1.1.0")),
        ("banner", split(100, "j2", "1.2.0")),
        ("plain", split(100, "j3", "1.3.0")),
    ]);
    let previous = in_force(V1, kept);
    let after = kept_after(&previous, &["checkout".into()], &["banner".into()]);
    assert_eq!(after, splits(&[("plain", split(100, "j3", "1.3.0"))]));
    assert_eq!(kept_after(&previous, &[], &[]), previous.splits);
    // A split kept for a flag the set in force does not have goes with any new set.
    let orphan = in_force(V1, splits(&[("gone", split(100, "j4", "1.4.0"))]));
    assert!(kept_after(&orphan, &[], &[]).is_empty());
}

#[test]
fn forgetting_dropped_splits_leaves_a_running_canary_split_of_the_same_flag() {
    let previous = in_force(
        V1,
        splits(&[
            ("checkout", split(100, "j1", "1.1.0")),
            ("banner", split(100, "j2", "1.2.0")),
            ("plain", split(100, "j3", "1.3.0")),
        ]),
    );
    let (tx, _) = watch::channel(None);
    let mut entry = AppFlags {
        policy: flags_policy(),
        in_force: Some(previous.clone()),
        // The kept checkout and plain splits, and a running canary (job j9) at 30% of banner.
        splits: splits(&[
            ("checkout", split(100, "j1", "1.1.0")),
            ("banner", split(30, "j9", "1.4.0")),
            ("plain", split(100, "j3", "1.3.0")),
        ]),
        tx,
    };
    // The new set changes checkout and banner.
    let kept = splits(&[("plain", split(100, "j3", "1.3.0"))]);
    let dropped = forget_dropped(&mut entry, &previous, &kept);
    assert_eq!(dropped, ["banner", "checkout"]);
    assert_eq!(
        entry.splits,
        splits(&[
            ("banner", split(30, "j9", "1.4.0")),
            ("plain", split(100, "j3", "1.3.0")),
        ])
    );
}

fn flags_policy() -> FlagsPolicy {
    FlagsPolicy {
        listen: "127.0.0.1:0".parse().unwrap(),
        allow: BTreeSet::from(["flags".to_owned()]),
        kill_switch: BTreeSet::from(["kill-switch".to_owned()]),
        remove_after: Duration::from_secs(86_400),
        approvals: 1,
    }
}

fn app(name: &str, flags: Option<FlagsPolicy>) -> (AppName, AppPolicy) {
    let n = AppName::new(name).unwrap();
    let p = AppPolicy {
        name: n.clone(),
        user: "nobody".into(),
        run_as: RunAs::CurrentUser {
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
        hold_timeout: crate::config::DEFAULT_HOLD_TIMEOUT,
        allow: BTreeMap::new(),
        flags,
        limits: Default::default(),
    };
    (n, p)
}

/// web serves flags signed by `flags-a`; api serves none.
fn config(data_dir: &Path, key: &SigningKey) -> Config {
    let policy = Policy {
        keys: vec![crate::admission::tests::trusted("flags-a", key, &["flags"])],
        apps: BTreeMap::from([app("web", Some(flags_policy())), app("api", None)]),
        environments: Default::default(),
    };
    Config {
        path: data_dir.join("agent.toml"),
        digest: Sha256Hex::of(b"config"),
        agent_id: AGENT.to_owned(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        controller: None,
        data_dir: data_dir.to_owned(),
        placement: Default::default(),
        tls: TlsConfig {
            ca: data_dir.join("ca.pem"),
            cert: data_dir.join("agent.pem"),
            key: data_dir.join("agent.key"),
            client_names: Vec::new(),
            client_fingerprints: Vec::new(),
            crl: None,
        },
        audit: AuditSettings {
            signing_key: data_dir.join("audit.key"),
            checkpoint_every: 0,
            checkpoint_interval: Duration::ZERO,
            max_file_bytes: 64 << 20,
            min_free_bytes: 0,
        },
        limits: crate::admission::tests::limits(),
        policy: Arc::new(policy),
        metrics_listen: None,
    }
}

struct Fx {
    dir: tempfile::TempDir,
    key: SigningKey,
    config: Arc<Config>,
    audit: AuditLog,
    flags: Flags,
}

fn fx() -> Fx {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate().unwrap();
    let config = Arc::new(config(dir.path(), &key));
    let (audit, _) = AuditLog::open(
        AuditOptions {
            dir: dir.path().join("audit"),
            checkpoint_every: 0,
            checkpoint_interval: Duration::ZERO,
            max_file_bytes: 64 << 20,
            min_free_bytes: 0,
        },
        Arc::new(SigningKey::generate().unwrap()),
    )
    .unwrap();
    let flags = Flags::open(Arc::clone(&config), audit.clone()).unwrap();
    Fx {
        dir,
        key,
        config,
        audit,
        flags,
    }
}

fn web() -> AppName {
    AppName::new("web").unwrap()
}

fn release(v: &str) -> semver::Version {
    semver::Version::parse(v).unwrap()
}

impl Fx {
    /// Pushes `definition` as `version` of web's set, signed by `flags-a`.
    async fn push(&self, version: u64, definition: &str) {
        let bytes = v1::FlagSet {
            app: "web".into(),
            version,
            issued_at: NOW,
            expires_at: NOW + 600,
            agent_ids: vec![AGENT.into()],
            labels: Default::default(),
            definition_json: definition.as_bytes().to_vec(),
            reason: String::new(),
        }
        .encode_to_vec();
        let s = sign_flags(&self.key, &bytes);
        let sigs = [SignatureIn {
            key_id_hint: s.key_id,
            sig: s.sig,
        }];
        self.flags
            .push(&bytes, &sigs, NOW, &"ab".repeat(32))
            .await
            .unwrap();
    }

    /// A canary of `release` by `job` splitting `flag` of web.
    fn canary(&self, flag: &str, job: &str, release_: &str) -> CanaryFlag {
        self.flags
            .canary_flag(&web(), flag, job, &release(release_))
            .unwrap()
    }

    /// A canary of `flag` by `job` that was promoted and kept its split at 100%.
    async fn kept_canary(&self, flag: &str, job: &str, release_: &str) -> CanaryFlag {
        let c = self.canary(flag, job, release_);
        c.set(100, "promoted").await.unwrap();
        c.keep().await.unwrap();
        c
    }

    /// What web's OFREP endpoint serves now.
    fn served(&self) -> Arc<Served> {
        served_by(&self.flags)
    }

    /// The signed set's digest of web in force.
    fn signed_digest(&self) -> String {
        self.flags.in_force(&web()).unwrap().1.unwrap().digest
    }

    /// Every audit entry of `event`, without the chain's header fields.
    fn entries(&self, event: &str) -> Vec<Value> {
        crate::audit::read_lines(self.audit.dir(), 1)
            .unwrap()
            .into_iter()
            .map(|(_, l)| serde_json::from_str::<Value>(&l).unwrap())
            .filter(|v| v["event"] == event)
            .map(|mut v| {
                let m = v.as_object_mut().unwrap();
                for k in ["seq", "ts", "prev"] {
                    m.remove(k);
                }
                v
            })
            .collect()
    }

    /// `flags/web.json` as stored.
    fn stored(&self) -> Value {
        let path = self.dir.path().join("flags").join("web.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    /// The same data directory opened again, as after a restart.
    fn reopened(&self) -> Flags {
        Flags::open(Arc::clone(&self.config), self.audit.clone()).unwrap()
    }
}

fn served_by(flags: &Flags) -> Arc<Served> {
    let (_, _, feed) = flags
        .endpoints()
        .into_iter()
        .find(|(a, _, _)| *a == web())
        .unwrap();
    let s = feed.borrow().clone();
    s.unwrap()
}

/// The `flags.canary_weight` entry [`entry`] writes for checkout over version `version` of
/// V1-like sets.
#[allow(clippy::too_many_arguments)]
fn weight(
    job: &str,
    release: &str,
    version: u64,
    percent: Option<u32>,
    previous: Option<u32>,
    served: bool,
    why: &str,
) -> Value {
    json!({
        "event": "flags.canary_weight",
        "app": "web",
        "job_id": job,
        "release": release,
        "flag": "checkout",
        "version": version,
        "variant": "on",
        "default_variant": "off",
        "percent": percent,
        "previous_percent": previous,
        "served": served,
        "why": why,
    })
}

#[tokio::test]
async fn a_canary_may_split_only_an_enabled_flag_with_a_canary_variant_in_the_set_in_force() {
    let fx = fx();
    let refused = |app: &str, flag: &str| {
        fx.flags
            .canary_flag(&AppName::new(app).unwrap(), flag, "c1", &release("1.1.0"))
            .unwrap_err()
    };
    let e = refused("api", "checkout");
    assert!(matches!(e, FlagsError::FlagsNotEnabled { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "app api serves no flags on this agent (no [apps.api.flags] in its config)"
    );
    let e = refused("web", "checkout");
    assert!(matches!(e, FlagsError::NoFlagSet { .. }), "{e:?}");
    assert_eq!(e.to_string(), "app web has no flag set in force");

    fx.push(1, V1).await;
    let e = refused("web", "nope");
    assert!(matches!(e, FlagsError::UnknownFlag { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "flag set version 1 of app web has no flag \"nope\""
    );
    let e = refused("web", "plain");
    assert!(matches!(e, FlagsError::CannotSplit { .. }), "{e:?}");
    assert_eq!(
        e.to_string(),
        "flag \"plain\" of app web cannot be split by a canary: it names no canary variant \
         (\"metadata\": {\"canaryVariant\": \"VARIANT\"})"
    );
    let e = refused("web", "dark");
    assert_eq!(
        e.to_string(),
        "flag \"dark\" of app web cannot be split by a canary: it is DISABLED"
    );
    // A refusal changes nothing and records nothing.
    assert_eq!(fx.served().digest, fx.signed_digest());
    assert!(fx.entries("flags.canary_weight").is_empty());
    assert!(fx.flags.splits(&web()).is_empty());

    let c = fx.canary("checkout", "c1", "1.1.0");
    assert_eq!(c.flag(), "checkout");
}

#[tokio::test]
async fn an_ended_canary_serves_again_what_was_served_before_and_stores_nothing() {
    let fx = fx();
    fx.push(1, V1).await;
    let before = fx.served();
    let c = fx.canary("checkout", "c1", "1.1.0");

    assert!(c.set(20, "step 1").await.unwrap());
    let s = fx.served();
    assert_eq!(
        targeting(&s.set, "checkout"),
        json!({"fractional": [["on", 20], ["off", 80]]})
    );
    assert_ne!(s.digest, before.digest);
    assert_eq!(
        fx.flags.splits(&web()),
        [Shown {
            flag: "checkout".into(),
            split: split(20, "c1", "1.1.0"),
            kept: false,
            served: true,
        }]
    );
    assert!(c.set(50, "step 2").await.unwrap());
    let at_fifty = fx.served();
    assert_ne!(at_fifty.digest, s.digest);
    // In memory only: the store and an agent restarted mid-canary have the signed set alone.
    assert!(fx.stored().get("splits").is_none(), "{}", fx.stored());
    assert_eq!(served_by(&fx.reopened()).digest, before.digest);

    c.end("canary aborted: too many errors").await;
    let after = fx.served();
    assert_eq!(after.digest, before.digest);
    assert_eq!(
        targeting(&after.set, "checkout"),
        targeting(&before.set, "checkout")
    );
    assert!(fx.flags.splits(&web()).is_empty());
    assert_eq!(
        fx.entries("flags.canary_weight"),
        [
            weight("c1", "1.1.0", 1, Some(20), None, true, "step 1"),
            weight("c1", "1.1.0", 1, Some(50), Some(20), true, "step 2"),
            weight(
                "c1",
                "1.1.0",
                1,
                None,
                Some(50),
                false,
                "canary aborted: too many errors"
            ),
        ]
    );
    // Ending again has nothing to put back and records nothing.
    c.end("again").await;
    assert_eq!(fx.entries("flags.canary_weight").len(), 3);
}

#[tokio::test]
async fn a_kept_split_outlives_a_restart_until_a_rollback_from_its_release_drops_it() {
    let fx = fx();
    fx.push(1, V1).await;
    let signed = fx.served();
    let c = fx.canary("checkout", "c1", "1.1.0");
    assert!(c.set(100, "promoted").await.unwrap());
    c.keep().await.unwrap();
    let kept = fx.served();
    assert_eq!(
        targeting(&kept.set, "checkout"),
        json!({"fractional": [["on", 100], ["off", 0]]})
    );
    assert_eq!(
        fx.stored()["splits"],
        json!({"checkout": {"percent": 100, "job_id": "c1", "release": "1.1.0"}})
    );
    // Once kept, the job's end has nothing to put back, and keeping again records nothing.
    c.end("the job ended").await;
    c.keep().await.unwrap();
    assert_eq!(fx.served().digest, kept.digest);

    let again = fx.reopened();
    assert_eq!(served_by(&again).digest, kept.digest);
    assert_eq!(
        again.splits(&web()),
        [Shown {
            flag: "checkout".into(),
            split: split(100, "c1", "1.1.0"),
            kept: true,
            served: true,
        }]
    );
    // A rollback away from another release leaves it.
    assert!(
        again
            .drop_splits_of(&web(), &release("1.0.0"), "r0")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(served_by(&again).digest, kept.digest);
    assert_eq!(
        again
            .drop_splits_of(&web(), &release("1.1.0"), "r1")
            .await
            .unwrap(),
        ["checkout"]
    );
    assert_eq!(served_by(&again).digest, signed.digest);
    assert!(again.splits(&web()).is_empty());
    assert!(fx.stored().get("splits").is_none(), "{}", fx.stored());
    assert_eq!(served_by(&fx.reopened()).digest, signed.digest);
    assert_eq!(
        fx.entries("flags.canary_weight"),
        [
            weight("c1", "1.1.0", 1, Some(100), None, true, "promoted"),
            weight(
                "c1",
                "1.1.0",
                1,
                Some(100),
                None,
                true,
                "kept in force: the canary succeeded"
            ),
            weight(
                "r1",
                "1.1.0",
                1,
                None,
                Some(100),
                false,
                "rolled back from release 1.1.0"
            ),
        ]
    );
}

#[tokio::test]
async fn an_ended_canary_puts_back_the_split_an_earlier_canary_kept() {
    let fx = fx();
    fx.push(1, V1).await;
    fx.kept_canary("checkout", "c1", "1.1.0").await;
    let kept = fx.served();

    let second = fx.canary("checkout", "c2", "1.2.0");
    second.set(10, "step 1").await.unwrap();
    assert_eq!(
        targeting(&fx.served().set, "checkout"),
        json!({"fractional": [["on", 10], ["off", 90]]})
    );
    second.end("canary aborted").await;
    assert_eq!(fx.served().digest, kept.digest);
    assert_eq!(
        fx.flags.splits(&web()),
        [Shown {
            flag: "checkout".into(),
            split: split(100, "c1", "1.1.0"),
            kept: true,
            served: true,
        }]
    );
    let entries = fx.entries("flags.canary_weight");
    assert_eq!(
        entries.last().unwrap(),
        &weight(
            "c2",
            "1.2.0",
            1,
            Some(100),
            Some(10),
            true,
            "canary aborted"
        )
    );
}

#[tokio::test]
async fn a_new_set_that_changes_or_removes_a_flag_drops_the_split_kept_for_it() {
    let fx = fx();
    fx.push(1, V1).await;
    for (flag, job) in [("checkout", "c1"), ("banner", "c2")] {
        fx.kept_canary(flag, job, "1.1.0").await;
    }
    assert_eq!(fx.flags.splits(&web()).len(), 2);

    // V2 changes checkout and removes plain and dark; banner is as it was.
    fx.push(2, V2).await;
    let changed = fx.entries("flags.changed");
    assert_eq!(changed[1]["splits_dropped"], json!(["checkout"]));
    assert_eq!(
        fx.stored()["splits"],
        json!({"banner": {"percent": 100, "job_id": "c2", "release": "1.1.0"}})
    );
    let s = fx.served();
    assert_eq!(targeting(&s.set, "checkout"), Value::Null);
    assert_eq!(
        targeting(&s.set, "banner"),
        json!({"fractional": [["new", 100], ["old", 0]]})
    );
    assert_ne!(s.digest, fx.signed_digest());

    // V3 removes banner: its split goes too, and the signed set alone is served.
    fx.push(3, V3).await;
    assert_eq!(
        fx.entries("flags.changed")[2]["splits_dropped"],
        json!(["banner"])
    );
    assert!(fx.stored().get("splits").is_none(), "{}", fx.stored());
    assert!(fx.flags.splits(&web()).is_empty());
    assert_eq!(fx.served().digest, fx.signed_digest());
    assert_eq!(served_by(&fx.reopened()).digest, fx.signed_digest());
    // The first set dropped none.
    assert_eq!(fx.entries("flags.changed")[0]["splits_dropped"], json!([]));
}

#[tokio::test]
async fn a_running_canary_keeps_its_split_over_a_new_set_that_drops_the_kept_one() {
    let fx = fx();
    fx.push(1, V1).await;
    fx.kept_canary("checkout", "c1", "1.1.0").await;
    let running = fx.canary("checkout", "c2", "1.2.0");
    running.set(30, "step 1").await.unwrap();

    fx.push(2, V2).await;
    assert_eq!(
        fx.entries("flags.changed")[1]["splits_dropped"],
        json!(["checkout"])
    );
    assert!(fx.stored().get("splits").is_none(), "{}", fx.stored());
    // The running canary's 30% is served over the new definition.
    let s = fx.served();
    assert_eq!(
        targeting(&s.set, "checkout"),
        json!({"fractional": [["on", 30], ["off", 70]]})
    );
    assert_eq!(
        fx.flags.splits(&web()),
        [Shown {
            flag: "checkout".into(),
            split: split(30, "c2", "1.2.0"),
            kept: false,
            served: true,
        }]
    );
    // Its end puts back the new set alone, not the split the new set dropped.
    running.end("canary aborted").await;
    assert_eq!(fx.served().digest, fx.signed_digest());
    assert_eq!(
        fx.entries("flags.canary_weight").last().unwrap(),
        &weight("c2", "1.2.0", 2, None, Some(30), false, "canary aborted")
    );
}

#[tokio::test]
async fn a_kill_switch_wins_over_a_running_canary_split() {
    let fx = fx();
    fx.push(1, V1).await;
    let c = fx.canary("checkout", "c1", "1.1.0");
    assert!(c.set(20, "step 1").await.unwrap());
    fx.push(2, V1_KILLED).await;
    let s = fx.served();
    assert_eq!(s.digest, fx.signed_digest());
    assert_eq!(checkout_on(&s.set, 100), (0, false));
    assert!(!fx.flags.splits(&web())[0].served);
    // The next step is recorded, not served.
    assert!(!c.set(50, "step 2").await.unwrap());
    assert_eq!(fx.served().digest, fx.signed_digest());
    let last = fx.entries("flags.canary_weight").pop().unwrap();
    assert_eq!(
        (
            &last["percent"],
            &last["served"],
            &last["variant"],
            &last["version"]
        ),
        (&json!(50), &json!(false), &Value::Null, &json!(2))
    );
}

#[tokio::test]
async fn a_restored_set_that_changes_the_flag_drops_the_split_kept_for_it() {
    let fx = fx();
    fx.push(1, V1).await;
    // Release 1.0.0 is replaced while V1 is in force; then V2 comes, and a canary of 1.1.0
    // keeps a split of checkout and of banner over it.
    fx.flags
        .remember_release(&web(), &release("1.0.0"))
        .unwrap();
    fx.push(2, V2).await;
    for (flag, job) in [("checkout", "c1"), ("banner", "c1")] {
        fx.kept_canary(flag, job, "1.1.0").await;
    }
    // The rollback to 1.0.0 restores V1, whose checkout differs and whose banner does not.
    let restore = fx
        .flags
        .prepare_restore(&web(), &release("1.0.0"), NOW)
        .unwrap();
    assert_eq!(fx.flags.restore(restore, "r1", NOW).await.unwrap(), 1);
    assert_eq!(
        fx.entries("flags.restored")[0]["splits_dropped"],
        json!(["checkout"])
    );
    assert_eq!(
        fx.stored()["splits"],
        json!({"banner": {"percent": 100, "job_id": "c1", "release": "1.1.0"}})
    );
    let s = fx.served();
    assert_eq!(
        targeting(&s.set, "checkout"),
        json!({"if": [{"==": [{"var": "email"}, "a@corp.io"]}, "on"]})
    );
    assert_eq!(
        targeting(&s.set, "banner"),
        json!({"fractional": [["new", 100], ["old", 0]]})
    );
}

#[tokio::test]
async fn a_split_kept_for_a_flag_the_set_no_longer_has_does_not_apply_to_a_flag_added_again() {
    let fx = fx();
    fx.push(1, V2).await;
    let c = fx.canary("checkout", "c1", "1.1.0");
    assert!(c.set(10, "step 1").await.unwrap());
    // A new set removes checkout mid-canary: the steps are recorded, not served.
    fx.push(2, V2_WITHOUT_CHECKOUT).await;
    assert!(!c.set(100, "promoted").await.unwrap());
    c.keep().await.unwrap();
    assert_eq!(fx.served().digest, fx.signed_digest());

    // A later set defines checkout anew, with a rule of its own: it is served as signed.
    fx.push(3, V1).await;
    let s = fx.served();
    assert_eq!(
        targeting(&s.set, "checkout"),
        json!({"if": [{"==": [{"var": "email"}, "a@corp.io"]}, "on"]})
    );
    assert_eq!(s.digest, fx.signed_digest());
    assert!(fx.flags.splits(&web()).is_empty());
    assert!(fx.stored().get("splits").is_none(), "{}", fx.stored());
    assert_eq!(
        fx.entries("flags.changed")[2]["splits_dropped"],
        json!(["checkout"])
    );
}
