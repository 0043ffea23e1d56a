//! `gantry flags push|show|kill --server ADDR` without `--agent`: the flag set the controller
//! service distributes across the fleet (docs/flags.md "Across the fleet"). The service keeps
//! the newest signed set per app and pushes it to every agent it targets; each agent still
//! admits it under its own policy.

use std::fmt::Write as _;

use gantry_proto::v1::{FlagSet, FleetFlags, FleetFlagsRequest, SignedFlags};
use prost::Message;
use serde_json::{Value, json};

use super::{
    FlagsCmdError, check_definition, decode_signed, document, load_keys, looks_like_json, read,
    sign_doc, switched_off, to_sign,
};
use crate::cli::{ConnArgs, FlagsDocArgs, FlagsKillArgs, FlagsPushArgs, FlagsShowArgs};
use crate::commands::fleet::connect::{Service, connect, status_error};
use crate::exit::Exit;
use crate::flags::{FlagError, format_unix};
use crate::fleet_cli::ServerConnArgs;

/// True when the command names the service and no agent: it acts on the fleet's flag set.
pub fn wanted(conn: &ConnArgs) -> bool {
    conn.server.is_some() && conn.agent.is_none()
}

fn server_conn(conn: &ConnArgs) -> ServerConnArgs {
    ServerConnArgs {
        server: conn.server.clone(),
        server_name: conn.server_name.clone(),
        ca: conn.ca.clone(),
        cert: conn.cert.clone(),
        cert_key: conn.cert_key.clone(),
    }
}

/// The set the service distributes for `app`, or `None` when it has none.
async fn fleet_set(service: &Service, app: &str) -> Result<Option<FleetFlags>, FlagsCmdError> {
    match service
        .clone()
        .get_fleet_flags(FleetFlagsRequest {
            app: app.to_owned(),
        })
        .await
    {
        Ok(f) => Ok(Some(f.into_inner())),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
        Err(s) => Err(status_error("GetFleetFlags", &s).into()),
    }
}

/// The version a new set of the app needs: above the one the service distributes, and above
/// every version an agent was last sent.
fn next_version(current: Option<&FleetFlags>) -> u64 {
    current.map_or(0, |f| {
        f.deliveries
            .iter()
            .map(|d| d.version)
            .fold(f.version, u64::max)
    }) + 1
}

async fn hand_in(
    service: &Service,
    signed: SignedFlags,
    json_out: bool,
) -> Result<Exit, FlagsCmdError> {
    let status = service
        .clone()
        .publish_flags(signed)
        .await
        .map_err(|s| status_error("PublishFlags", &s))?
        .into_inner();
    print_status(&status, json_out);
    Ok(exit_of(&status))
}

/// Exit 3 when an agent refused the set; pending agents are not a failure (the service keeps
/// trying them).
fn exit_of(status: &FleetFlags) -> Exit {
    if status
        .deliveries
        .iter()
        .any(|d| d.version == status.version && d.state == "refused")
    {
        Exit::Rejected
    } else {
        Exit::Success
    }
}

fn print_status(status: &FleetFlags, json_out: bool) {
    if json_out {
        println!("{}", status_json(status));
    } else {
        print!("{}", status_text(status));
    }
}

/// `gantry flags push --server ADDR FILE`: hands the signed set to the service.
///
/// # Errors
/// [`FlagsCmdError`]; the service's refusal is [`FlagsCmdError::Fleet`].
pub async fn publish(args: FlagsPushArgs) -> Result<Exit, FlagsCmdError> {
    let bytes = read(&args.file)?;
    let service = connect(&server_conn(&args.conn)).await?;
    let signed = if looks_like_json(&bytes) {
        let (keys, app) = to_sign(&args, &bytes)?;
        if args.doc.for_agents.is_empty() && args.doc.labels.is_empty() {
            return Err(FlagError::new(
                "--for-agent",
                "a flag set for the fleet must name its agents (--for-agent ID or --label KEY=VALUE)",
            )
            .into());
        }
        let version = match args.doc.version {
            Some(v) => v,
            None => next_version(fleet_set(&service, &app).await?.as_ref()),
        };
        sign_doc(
            &document(bytes, &args.doc, &app, version, args.doc.for_agents.clone())?,
            &keys,
        )
    } else {
        let (mut signed, _) = decode_signed(&args.file, &bytes)?;
        for k in &load_keys(&args.keys)? {
            gantry_client::flags::add_flags_signature(&mut signed, k);
        }
        signed
    };
    hand_in(&service, signed, false).await
}

/// `gantry flags show --server ADDR --app APP`: the set the service distributes and where each
/// agent stands.
///
/// # Errors
/// [`FlagsCmdError`] when the service cannot be asked or distributes no set for the app.
pub async fn show(args: FlagsShowArgs) -> Result<Exit, FlagsCmdError> {
    let service = connect(&server_conn(&args.conn)).await?;
    let status = service
        .clone()
        .get_fleet_flags(FleetFlagsRequest {
            app: args.app.clone(),
        })
        .await
        .map_err(|s| status_error("GetFleetFlags", &s))?
        .into_inner();
    print_status(&status, args.json);
    Ok(Exit::Success)
}

/// `gantry flags kill --server ADDR --app APP FLAG...`: the set the service distributes with
/// the flags switched off, as its next version for the same agents, signed by the kill-switch
/// keys and handed to the service.
///
/// # Errors
/// [`FlagsCmdError::NothingInForce`] when the service distributes no set for the app, an
/// unknown flag, or the service's refusal.
pub async fn kill(args: FlagsKillArgs) -> Result<Exit, FlagsCmdError> {
    let keys = load_keys(&args.keys)?;
    let service = connect(&server_conn(&args.conn)).await?;
    let nothing = || FlagsCmdError::NothingInForce {
        app: args.app.clone(),
    };
    let current = fleet_set(&service, &args.app).await?.ok_or_else(nothing)?;
    let doc = current
        .signed
        .as_ref()
        .and_then(|s| FlagSet::decode(s.flags.as_slice()).ok())
        .ok_or_else(nothing)?;
    let json = switched_off(
        &args.app,
        &doc.definition_json,
        &args.flags,
        args.to_default,
    )?;
    check_definition(&json, &format!("the flag set for {}", args.app))?;
    let what = FlagsDocArgs {
        app: Some(args.app.clone()),
        version: None,
        for_agents: Vec::new(),
        labels: doc.labels.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        valid_for: "1h".to_owned(),
        reason: args.reason.clone(),
    };
    let next = document(
        json,
        &what,
        &args.app,
        next_version(Some(&current)),
        doc.agent_ids.clone(),
    )?;
    hand_in(&service, sign_doc(&next, &keys), false).await
}

/// The fleet's set as JSON (`flags show --server --json`).
pub fn status_json(f: &FleetFlags) -> Value {
    let doc = f
        .signed
        .as_ref()
        .and_then(|s| FlagSet::decode(s.flags.as_slice()).ok())
        .unwrap_or_default();
    json!({
        "app": f.app,
        "version": f.version,
        "digest": f.digest,
        "published_ms": f.published_ms,
        "published_by": f.published_by,
        "agent_ids": doc.agent_ids,
        "labels": doc.labels,
        "expires_at": doc.expires_at,
        "reason": doc.reason,
        "signatures": f.signed.as_ref().map_or(0, |s| s.signatures.len()),
        "deliveries": f.deliveries.iter().map(|d| json!({
            "agent_id": d.agent_id,
            "state": d.state,
            "version": d.version,
            "detail": d.detail,
            "at_ms": d.at_ms,
            "attempts": d.attempts,
        })).collect::<Vec<_>>(),
    })
}

/// The fleet's set as people read it: one line for the set, one row per targeted agent.
pub fn status_text(f: &FleetFlags) -> String {
    let mut out = String::new();
    let doc = f
        .signed
        .as_ref()
        .and_then(|s| FlagSet::decode(s.flags.as_slice()).ok())
        .unwrap_or_default();
    let mut aimed: Vec<String> = doc.agent_ids.clone();
    aimed.extend(doc.labels.iter().map(|(k, v)| format!("{k}={v}")));
    let _ = writeln!(
        out,
        "flags of {} across the fleet: version {} (sha256 {}), handed in by {} at {}, for {}",
        f.app,
        f.version,
        f.digest.get(..12).unwrap_or(&f.digest),
        f.published_by,
        format_unix(f.published_ms.div_euclid(1000)),
        aimed.join(", ")
    );
    let counts = ["applied", "pending", "refused", "expired"]
        .iter()
        .filter_map(|state| {
            let n = f.deliveries.iter().filter(|d| d.state == *state).count();
            (n > 0).then(|| format!("{n} {state}"))
        })
        .collect::<Vec<_>>();
    let _ = writeln!(
        out,
        "{} agent(s) targeted{}",
        f.deliveries.len(),
        if counts.is_empty() {
            String::new()
        } else {
            format!(": {}", counts.join(", "))
        }
    );
    let rows: Vec<Vec<String>> = f
        .deliveries
        .iter()
        .map(|d| {
            vec![
                d.agent_id.clone(),
                d.state.clone(),
                d.version.to_string(),
                d.attempts.to_string(),
                if d.detail.is_empty() {
                    "-".to_owned()
                } else {
                    d.detail.clone()
                },
            ]
        })
        .collect();
    use crate::commands::status::Align;
    crate::commands::status::table(
        &mut out,
        &[
            ("AGENT", Align::Left),
            ("STATE", Align::Left),
            ("VERSION", Align::Right),
            ("ATTEMPTS", Align::Right),
            ("DETAIL", Align::Left),
        ],
        &rows,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_proto::v1::FlagDelivery;

    fn delivery(agent: &str, state: &str, version: u64) -> FlagDelivery {
        FlagDelivery {
            agent_id: agent.into(),
            state: state.into(),
            version,
            detail: if state == "refused" {
                "no key signed it".into()
            } else {
                String::new()
            },
            at_ms: 0,
            attempts: 1,
        }
    }

    fn fleet(deliveries: Vec<FlagDelivery>) -> FleetFlags {
        FleetFlags {
            app: "web".into(),
            version: 4,
            signed: None,
            digest: "ab".repeat(32),
            published_ms: 1_800_000_000_000,
            published_by: "ops-1".into(),
            deliveries,
        }
    }

    #[test]
    fn the_next_version_is_above_the_fleets_and_every_agents() {
        assert_eq!(next_version(None), 1);
        assert_eq!(next_version(Some(&fleet(vec![]))), 5);
        assert_eq!(
            next_version(Some(&fleet(vec![delivery("web-1", "refused", 9)]))),
            10
        );
    }

    #[test]
    fn a_refusal_of_the_current_version_exits_3_and_pending_agents_do_not() {
        assert_eq!(
            exit_of(&fleet(vec![delivery("web-1", "pending", 4)])),
            Exit::Success
        );
        assert_eq!(
            exit_of(&fleet(vec![
                delivery("web-1", "applied", 4),
                delivery("web-2", "refused", 4)
            ])),
            Exit::Rejected
        );
        let text = status_text(&fleet(vec![
            delivery("web-1", "applied", 4),
            delivery("web-2", "refused", 4),
        ]));
        assert!(
            text.contains("2 agent(s) targeted: 1 applied, 1 refused"),
            "{text}"
        );
        assert!(text.contains("no key signed it"), "{text}");
    }
}
