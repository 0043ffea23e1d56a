//! `gantry flags sign|push|show|kill`: an app's feature flags (flagd flag-definition JSON) as a
//! signed flag-set document (DESIGN "Feature flags").
//!
//! A signed flag-set file holds a `SignedFlags` protobuf. `sign` checks the definition the way
//! the agent will (flagd's rules, every targeting rule compiles) before signing it; `kill`
//! reads the set in force, switches the named flags off, and pushes the result as the next
//! version, signed by a key the agent lets only switch flags off.
//!
//! With `--server` and no `--agent`, each command acts on the flag set the controller service
//! distributes across the fleet instead ([`fleet`]).

#[path = "flagset_fleet.rs"]
pub mod fleet;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_client::{Agent, ClientError, flags as client};
use gantry_policy::config::format_time;
use gantry_proto::keys::{KeyError, SigningKey};
use gantry_proto::v1::{FlagSet, FlagsInForce, FlagsReceipt, SignedFlags};
use prost::Message;
use serde_json::{Value, json};

use crate::cli::{FlagsDocArgs, FlagsKillArgs, FlagsPushArgs, FlagsShowArgs, FlagsSignArgs};
use crate::conn::{self, ConnError};
use crate::exit::Exit;
use crate::flags::{self as cliflags, FlagError, unix_secs};

/// Why a `gantry flags` command failed.
#[derive(Debug, thiserror::Error)]
pub enum FlagsCmdError {
    /// The connection flags are incomplete.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// Talking to the agent failed, or it refused the set.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A flag is wrong.
    #[error(transparent)]
    Flag(#[from] FlagError),
    /// A file cannot be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file cannot be written.
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A signing key cannot be loaded.
    #[error("cannot load the signing key {path}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: KeyError,
    },
    /// The flag definition is not one the agent would admit.
    #[error("{path}: {detail}")]
    Definition {
        /// The file (or the set in force).
        path: String,
        /// What is wrong.
        detail: String,
    },
    /// A file is not a signed flag set.
    #[error("{path} is not a signed flag-set file: {detail}")]
    NotSigned {
        /// The file.
        path: PathBuf,
        /// The decoder's description.
        detail: String,
    },
    /// The app has no flag set in force to change.
    #[error("app {app} has no flag set in force on the agent")]
    NothingInForce {
        /// The app.
        app: String,
    },
    /// Talking to the controller service failed, or it refused the set.
    #[error(transparent)]
    Fleet(#[from] crate::commands::fleet::FleetError),
    /// `kill` names a flag the set does not have.
    #[error("the flag set in force for {app} has no flag {flag:?}")]
    UnknownFlag {
        /// The app.
        app: String,
        /// The flag.
        flag: String,
    },
}

impl FlagsCmdError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            FlagsCmdError::Conn(e) => e.exit(),
            FlagsCmdError::Client(e) => e.fault().into(),
            FlagsCmdError::Fleet(e) => e.exit(),
            FlagsCmdError::Flag(_)
            | FlagsCmdError::Read { .. }
            | FlagsCmdError::Write { .. }
            | FlagsCmdError::Key { .. }
            | FlagsCmdError::Definition { .. }
            | FlagsCmdError::NotSigned { .. }
            | FlagsCmdError::NothingInForce { .. }
            | FlagsCmdError::UnknownFlag { .. } => Exit::Usage,
        }
    }
}

pub(crate) fn read(path: &Path) -> Result<Vec<u8>, FlagsCmdError> {
    std::fs::read(path).map_err(|source| FlagsCmdError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn load_keys(paths: &[PathBuf]) -> Result<Vec<SigningKey>, FlagsCmdError> {
    paths
        .iter()
        .map(|p| {
            SigningKey::read_pem_file(p).map_err(|source| FlagsCmdError::Key {
                path: p.clone(),
                source,
            })
        })
        .collect()
}

/// Checks a definition as the agent will: it parses, and every targeting rule compiles.
pub(crate) fn check_definition(
    json: &[u8],
    what: &str,
) -> Result<gantry_flags::FlagSet, FlagsCmdError> {
    let set = gantry_flags::FlagSet::parse(json).map_err(|e| FlagsCmdError::Definition {
        path: what.to_owned(),
        detail: e.to_string(),
    })?;
    if let Some((flag, e)) = set.problems().first() {
        return Err(FlagsCmdError::Definition {
            path: what.to_owned(),
            detail: format!("targeting of flag {flag:?}: {e}"),
        });
    }
    Ok(set)
}

fn labels(raw: &[String]) -> Result<BTreeMap<String, String>, FlagError> {
    raw.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(FlagError::new("--label", format!("{l:?} is not KEY=VALUE"))),
        })
        .collect()
}

/// The document for `json`, version and targets decided by the caller.
pub(crate) fn document(
    json: Vec<u8>,
    doc: &FlagsDocArgs,
    app: &str,
    version: u64,
    agents: Vec<String>,
) -> Result<FlagSet, FlagsCmdError> {
    let valid_for = cliflags::duration("--valid-for", &doc.valid_for)?;
    let now = unix_secs(std::time::SystemTime::now());
    let labels = labels(&doc.labels)?;
    if agents.is_empty() && labels.is_empty() {
        return Err(FlagError::new(
            "--for-agent",
            "a flag set must name the agents it is for (--for-agent or --label)",
        )
        .into());
    }
    Ok(FlagSet {
        app: app.to_owned(),
        version,
        issued_at: now,
        expires_at: now.saturating_add(i64::try_from(valid_for.as_secs()).unwrap_or(i64::MAX)),
        agent_ids: agents,
        labels: labels.into_iter().collect(),
        definition_json: json,
        reason: doc.reason.clone(),
    })
}

pub(crate) fn sign_doc(doc: &FlagSet, keys: &[SigningKey]) -> SignedFlags {
    let mut signed = SignedFlags {
        flags: doc.encode_to_vec(),
        signatures: Vec::new(),
    };
    for k in keys {
        client::add_flags_signature(&mut signed, k);
    }
    signed
}

pub(crate) fn decode_signed(
    path: &Path,
    bytes: &[u8],
) -> Result<(SignedFlags, FlagSet), FlagsCmdError> {
    let not = |detail: String| FlagsCmdError::NotSigned {
        path: path.to_owned(),
        detail,
    };
    let signed = SignedFlags::decode(bytes).map_err(|e| not(e.to_string()))?;
    let doc = FlagSet::decode(signed.flags.as_slice()).map_err(|e| not(e.to_string()))?;
    if doc.app.is_empty() || doc.version == 0 {
        return Err(not("it names no app or version".into()));
    }
    Ok((signed, doc))
}

pub(crate) fn looks_like_json(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
}

/// `gantry flags sign`.
///
/// # Errors
///
/// [`FlagsCmdError`] for unreadable files, an invalid definition or missing flags.
pub fn sign(args: &FlagsSignArgs) -> Result<(), FlagsCmdError> {
    let keys = load_keys(&args.keys)?;
    let bytes = read(&args.file)?;
    let signed = if args.add {
        let (mut signed, _) = decode_signed(&args.file, &bytes)?;
        for k in &keys {
            client::add_flags_signature(&mut signed, k);
        }
        signed
    } else {
        check_definition(&bytes, &args.file.display().to_string())?;
        let app = args
            .doc
            .app
            .clone()
            .ok_or_else(|| FlagError::new("--app", "required to sign a definition"))?;
        let version = args
            .doc
            .version
            .ok_or_else(|| FlagError::new("--version", "required to sign a definition"))?;
        let doc = document(bytes, &args.doc, &app, version, args.doc.for_agents.clone())?;
        sign_doc(&doc, &keys)
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| args.file.with_extension("flags"));
    std::fs::write(&out, signed.encode_to_vec()).map_err(|source| FlagsCmdError::Write {
        path: out.clone(),
        source,
    })?;
    println!(
        "wrote {} ({} signature(s))",
        out.display(),
        signed.signatures.len()
    );
    Ok(())
}

/// A receipt as `gantry flags push` prints it.
pub fn receipt_text(agent: &str, r: &FlagsReceipt) -> String {
    if r.unchanged {
        return format!(
            "flags of {} on {agent}: version {} is already in force",
            r.app, r.version
        );
    }
    let mut parts = Vec::new();
    for (what, keys) in [
        ("added", &r.added),
        ("changed", &r.changed),
        ("removed", &r.removed),
    ] {
        if !keys.is_empty() {
            parts.push(format!("{what} {}", keys.join(", ")));
        }
    }
    format!(
        "flags of {} on {agent}: version {} in force ({}), signed by {}",
        r.app,
        r.version,
        if parts.is_empty() {
            "no flag changed".to_owned()
        } else {
            parts.join("; ")
        },
        r.signers.join(", ")
    )
}

/// What `push` of a flag definition (JSON) signs with: the `--key` keys, loaded, and the
/// `--app`, once the definition checks as the agent will check it.
///
/// # Errors
///
/// [`FlagsCmdError`]: no key or app, an unreadable key, a definition the agent would refuse.
pub(crate) fn to_sign(
    args: &FlagsPushArgs,
    bytes: &[u8],
) -> Result<(Vec<SigningKey>, String), FlagsCmdError> {
    if args.keys.is_empty() {
        return Err(FlagError::new(
            "--key",
            "needed to sign a flag definition before pushing it",
        )
        .into());
    }
    check_definition(bytes, &args.file.display().to_string())?;
    let keys = load_keys(&args.keys)?;
    let app = args
        .doc
        .app
        .clone()
        .ok_or_else(|| FlagError::new("--app", "required to sign a definition"))?;
    Ok((keys, app))
}

/// `gantry flags push`.
///
/// # Errors
///
/// [`FlagsCmdError`]; a refusal is [`FlagsCmdError::Client`] (exit 3).
pub async fn push(args: FlagsPushArgs) -> Result<Exit, FlagsCmdError> {
    if fleet::wanted(&args.conn) {
        return fleet::publish(args).await;
    }
    let settings = conn::settings(&args.conn)?;
    let bytes = read(&args.file)?;
    let agent = Agent::connect(&settings).await?;
    let signed = if looks_like_json(&bytes) {
        let (keys, app) = to_sign(&args, &bytes)?;
        let version = match args.doc.version {
            Some(v) => v,
            None => next_version(&agent, &app).await?,
        };
        let agents = if args.doc.for_agents.is_empty() && args.doc.labels.is_empty() {
            vec![settings.agent_id.clone()]
        } else {
            args.doc.for_agents.clone()
        };
        sign_doc(&document(bytes, &args.doc, &app, version, agents)?, &keys)
    } else {
        let (mut signed, _) = decode_signed(&args.file, &bytes)?;
        for k in &load_keys(&args.keys)? {
            client::add_flags_signature(&mut signed, k);
        }
        signed
    };
    let receipt = client::push(&agent, signed).await?;
    println!("{}", receipt_text(&settings.agent_id, &receipt));
    Ok(Exit::Success)
}

async fn next_version(agent: &Agent, app: &str) -> Result<u64, FlagsCmdError> {
    Ok(next_after(&client::in_force(agent, app).await?))
}

/// The version a new set of the app needs: above the highest the agent admitted (an older
/// agent sends no floor: above the one in force).
fn next_after(current: &gantry_proto::v1::FlagsInForce) -> u64 {
    current.version.max(current.floor) + 1
}

fn age(secs: i64) -> String {
    let d = Duration::from_secs(u64::try_from(secs.max(0)).unwrap_or(0));
    let days = d.as_secs() / 86_400;
    if days > 0 {
        format!("{days}d")
    } else {
        humantime::format_duration(Duration::from_secs(d.as_secs() / 60 * 60)).to_string()
    }
}

/// The set in force as JSON (`flags show --json`); values of flags marked secret are left out.
pub fn in_force_json(f: &FlagsInForce, now: i64) -> Value {
    let doc = f
        .signed
        .as_ref()
        .and_then(|s| FlagSet::decode(s.flags.as_slice()).ok());
    let set = doc
        .as_ref()
        .and_then(|d| gantry_flags::FlagSet::parse(&d.definition_json).ok());
    let ages: BTreeMap<&str, _> = f.ages.iter().map(|a| (a.key.as_str(), a)).collect();
    let flags: Vec<Value> = set
        .iter()
        .flat_map(|s| s.flags.iter())
        .map(|(k, flag)| {
            let a = ages.get(k.as_str());
            let created = a.map(|a| a.created_at);
            json!({
                "key": k,
                "state": match flag.state {
                    gantry_flags::State::Enabled => "ENABLED",
                    gantry_flags::State::Disabled => "DISABLED",
                },
                "default_variant": flag.default_variant,
                "variants": if flag.is_secret() { Value::Null } else { Value::Object(flag.variants.clone()) },
                "secret": flag.is_secret(),
                "targeted": !matches!(flag.targeting, gantry_flags::Targeting::None),
                "created_at": created,
                "created_version": a.map(|a| a.created_version),
                "due_for_removal": created.is_some_and(|c| now - c > i64::try_from(f.remove_after_secs).unwrap_or(i64::MAX)),
            })
        })
        .collect();
    json!({
        "app": f.app,
        "version": f.version,
        "signers": f.signers,
        "admitted_at": f.admitted_at,
        "ofrep_url": f.ofrep_url,
        "remove_after_secs": f.remove_after_secs,
        "reason": doc.as_ref().map(|d| d.reason.clone()),
        "flags": flags,
        "splits": f.splits.iter().map(|s| json!({
            "key": s.key,
            "percent": s.percent,
            "job_id": s.job_id,
            "release": s.release,
            "kept": s.kept,
            "served": s.served,
        })).collect::<Vec<_>>(),
    })
}

/// The set in force as people read it.
pub fn in_force_text(agent: &str, f: &FlagsInForce, now: i64) -> String {
    let mut out = String::new();
    if f.version == 0 {
        let _ = writeln!(
            out,
            "flags of {} on {agent}: no flag set in force (OFREP on {})",
            f.app, f.ofrep_url
        );
        return out;
    }
    let _ = writeln!(
        out,
        "flags of {} on {agent}: version {}, admitted {}, signed by {}",
        f.app,
        f.version,
        format_time(f.admitted_at),
        f.signers.join(", ")
    );
    let _ = writeln!(
        out,
        "served over OFREP on {} (GANTRY_OFREP_URL)",
        f.ofrep_url
    );
    let v = in_force_json(f, now);
    let mut rows = Vec::new();
    let mut due = Vec::new();
    for flag in v["flags"].as_array().into_iter().flatten() {
        let key = flag["key"].as_str().unwrap_or_default().to_owned();
        let created = flag["created_at"].as_i64();
        if flag["due_for_removal"] == json!(true) {
            due.push(key.clone());
        }
        rows.push(vec![
            key,
            flag["state"].as_str().unwrap_or_default().to_owned(),
            flag["default_variant"].as_str().unwrap_or("-").to_owned(),
            if flag["targeted"] == json!(true) {
                "yes"
            } else {
                "no"
            }
            .to_owned(),
            created.map_or_else(
                || "-".to_owned(),
                |c| format!("{} ago (v{})", age(now - c), flag["created_version"]),
            ),
        ]);
    }
    use super::status::Align;
    super::status::table(
        &mut out,
        &[
            ("FLAG", Align::Left),
            ("STATE", Align::Left),
            ("DEFAULT", Align::Left),
            ("TARGETING", Align::Left),
            ("CREATED", Align::Left),
        ],
        &rows,
    );
    for s in &f.splits {
        let _ = writeln!(
            out,
            "canary split: {} serves its canary variant to {}% of users ({} job {}, release {}){}",
            s.key,
            s.percent,
            if s.kept { "kept by" } else { "running" },
            s.job_id,
            s.release,
            if s.served {
                ""
            } else {
                "; not served: the flag in force does not allow it (switched off?)"
            }
        );
    }
    let limit = age(i64::try_from(f.remove_after_secs).unwrap_or(i64::MAX));
    if due.is_empty() {
        let _ = writeln!(out, "no flag is older than {limit}");
    } else {
        let _ = writeln!(
            out,
            "due for removal (older than {limit}): {}",
            due.join(", ")
        );
    }
    out
}

/// `gantry flags show`.
///
/// # Errors
///
/// [`FlagsCmdError`] when the agent cannot be asked.
pub async fn show(args: FlagsShowArgs) -> Result<Exit, FlagsCmdError> {
    if fleet::wanted(&args.conn) {
        return fleet::show(args).await;
    }
    let settings = conn::settings(&args.conn)?;
    let agent = Agent::connect(&settings).await?;
    let f = client::in_force(&agent, &args.app).await?;
    let now = unix_secs(std::time::SystemTime::now());
    if args.json {
        println!("{}", in_force_json(&f, now));
    } else {
        print!("{}", in_force_text(&settings.agent_id, &f, now));
    }
    Ok(Exit::Success)
}

/// The definition of the set in force with `flags` switched off: `state` set to `DISABLED`,
/// or with `to_default` their targeting dropped.
///
/// # Errors
///
/// [`FlagsCmdError::UnknownFlag`] for a flag the set lacks; [`FlagsCmdError::Definition`]
/// when the set in force is not JSON.
pub fn switched_off(
    app: &str,
    definition: &[u8],
    flags: &[String],
    to_default: bool,
) -> Result<Vec<u8>, FlagsCmdError> {
    let bad = |detail: String| FlagsCmdError::Definition {
        path: format!("the flag set in force for {app}"),
        detail,
    };
    let mut doc: Value = serde_json::from_slice(definition).map_err(|e| bad(e.to_string()))?;
    for key in flags {
        let Some(Value::Object(flag)) = doc.get_mut("flags").and_then(|f| f.get_mut(key)) else {
            return Err(FlagsCmdError::UnknownFlag {
                app: app.to_owned(),
                flag: key.clone(),
            });
        };
        if to_default {
            flag.remove("targeting");
        } else {
            flag.insert("state".into(), json!("DISABLED"));
        }
    }
    serde_json::to_vec_pretty(&doc).map_err(|e| bad(e.to_string()))
}

/// `gantry flags kill`.
///
/// # Errors
///
/// [`FlagsCmdError`]; a refusal is [`FlagsCmdError::Client`] (exit 3).
pub async fn kill(args: FlagsKillArgs) -> Result<Exit, FlagsCmdError> {
    if fleet::wanted(&args.conn) {
        return fleet::kill(args).await;
    }
    let settings = conn::settings(&args.conn)?;
    let keys = load_keys(&args.keys)?;
    let agent = Agent::connect(&settings).await?;
    let receipt = kill_flags(
        &agent,
        &settings.agent_id,
        &args.app,
        &args.flags,
        args.to_default,
        &keys,
        &args.reason,
    )
    .await?;
    println!("{}", receipt_text(&settings.agent_id, &receipt));
    Ok(Exit::Success)
}

/// What `gantry flags kill` sends: the set in force for `app` on `agent` with `flags` switched
/// off (see [`switched_off`]), as the next version for `agent_id`, valid for an hour, signed
/// by `keys`.
///
/// # Errors
///
/// [`FlagsCmdError::NothingInForce`], [`FlagsCmdError::UnknownFlag`], or the agent's refusal.
pub async fn kill_flags(
    agent: &Agent,
    agent_id: &str,
    app: &str,
    flags: &[String],
    to_default: bool,
    keys: &[SigningKey],
    reason: &str,
) -> Result<FlagsReceipt, FlagsCmdError> {
    let current = client::in_force(agent, app).await?;
    let nothing = || FlagsCmdError::NothingInForce {
        app: app.to_owned(),
    };
    let signed = current.signed.as_ref().ok_or_else(nothing)?;
    let doc = FlagSet::decode(signed.flags.as_slice()).map_err(|_| nothing())?;
    let json = switched_off(app, &doc.definition_json, flags, to_default)?;
    push_definition(
        agent,
        agent_id,
        app,
        json,
        next_after(&current),
        keys,
        reason,
    )
    .await
}

/// Signs the flag definition `json` as version `version` of `app`'s set for `agent_id`,
/// valid for an hour, and pushes it to `agent`.
///
/// # Errors
///
/// [`FlagsCmdError::Definition`] for a definition the agent would not admit, or the agent's
/// refusal.
pub async fn push_definition(
    agent: &Agent,
    agent_id: &str,
    app: &str,
    json: Vec<u8>,
    version: u64,
    keys: &[SigningKey],
    reason: &str,
) -> Result<FlagsReceipt, FlagsCmdError> {
    check_definition(&json, &format!("the flag set for {app}"))?;
    let what = FlagsDocArgs {
        app: Some(app.to_owned()),
        version: None,
        for_agents: Vec::new(),
        labels: Vec::new(),
        valid_for: "1h".to_owned(),
        reason: reason.to_owned(),
    };
    let next = document(json, &what, app, version, vec![agent_id.to_owned()])?;
    Ok(client::push(agent, sign_doc(&next, keys)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kill_disables_or_drops_targeting_of_the_named_flags_only() {
        let def = br#"{"flags":{"a":{"state":"ENABLED","defaultVariant":"off","variants":{"on":true,"off":false},"targeting":{"fractional":[["on",50],["off",50]]}},"b":{"state":"ENABLED","defaultVariant":"off","variants":{"on":true,"off":false}}}}"#;
        let old = gantry_flags::FlagSet::parse(def).unwrap();
        let off = switched_off("web", def, &["a".into()], false).unwrap();
        let new = gantry_flags::FlagSet::parse(&off).unwrap();
        assert_eq!(new.flags["a"].state, gantry_flags::State::Disabled);
        assert_eq!(new.flags["b"].state, gantry_flags::State::Enabled);
        assert_eq!(gantry_flags::check_kill_switch(&old, &new), Ok(()));
        let dflt = switched_off("web", def, &["a".into()], true).unwrap();
        let new = gantry_flags::FlagSet::parse(&dflt).unwrap();
        assert!(matches!(
            new.flags["a"].targeting,
            gantry_flags::Targeting::None
        ));
        assert_eq!(gantry_flags::check_kill_switch(&old, &new), Ok(()));
        assert!(matches!(
            switched_off("web", def, &["zzz".into()], false),
            Err(FlagsCmdError::UnknownFlag { .. })
        ));
    }
}
