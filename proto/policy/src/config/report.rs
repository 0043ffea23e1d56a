//! `gantry-agent policy`: the effective permissions, for a security reviewer.
//!
//! Everything is derived from the validated [`Config`], the same values admission uses, so
//! what is printed is what is enforced.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::json;

use super::{
    APPROVER_ROLE, AppPolicy, Config, EXPIRY_WARNING, FrontDoorMode, KeyInvalidity, RouterConfig,
    RunAs, SwitchedBy, TrustedKey, format_time,
};
use crate::job::Action;

/// Renders the effective policy: every trusted key with its id and roles, then per app what
/// each key may do, the approvals required, the identity its instances run as, the ports
/// they may listen on and its limits; then the agent-wide limits.
///
/// With `json`, a stable JSON document (`"format": "gantry.policy.v1"`, object keys sorted).
///
/// Each key's validity window and revocation are shown; keys expiring within
/// [`EXPIRY_WARNING`] (30 days) of now are flagged in the notes.
pub fn render_policy(cfg: &Config, json: bool) -> String {
    render_policy_at(cfg, json, crate::unix_now())
}

/// [`render_policy`] as of `now` (Unix seconds).
pub fn render_policy_at(cfg: &Config, json: bool, now: i64) -> String {
    if json {
        render_json(cfg, now)
    } else {
        render_text(cfg, now)
    }
}

/// A key's state at `now`: `valid`, `revoked`, `expired` or `not_yet_valid`.
fn key_status(k: &TrustedKey, now: i64) -> &'static str {
    match k.invalid_at(now) {
        None => "valid",
        Some(KeyInvalidity::Revoked { .. }) => "revoked",
        Some(KeyInvalidity::Expired { .. }) => "expired",
        Some(KeyInvalidity::NotYetValid { .. }) => "not_yet_valid",
    }
}

/// The VALIDITY column: the window, and what is wrong with the key now.
fn validity_text(k: &TrustedKey, now: i64) -> String {
    let window = match (k.not_before, k.not_after) {
        (None, None) => "always".to_owned(),
        (Some(a), None) => format!("from {}", format_time(a)),
        (None, Some(b)) => format!("until {}", format_time(b)),
        (Some(a), Some(b)) => format!("{} until {}", format_time(a), format_time(b)),
    };
    match k.invalid_at(now) {
        None if k.expires_soon(now, EXPIRY_WARNING) => format!("{window} (EXPIRES SOON)"),
        None => window,
        Some(why @ KeyInvalidity::Revoked { .. }) => why.to_string().to_uppercase(),
        Some(why) => format!("{window} ({})", why.to_string().to_uppercase()),
    }
}

fn dur(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn join_or(items: impl IntoIterator<Item = impl AsRef<str>>, empty: &str) -> String {
    let v: Vec<String> = items.into_iter().map(|s| s.as_ref().to_owned()).collect();
    if v.is_empty() {
        empty.to_owned()
    } else {
        v.join(", ")
    }
}

/// Left-aligned columns, two spaces apart, each line indented.
fn table(out: &mut String, indent: &str, rows: &[Vec<String>]) {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let mut line = String::from(indent);
        for (c, cell) in row.iter().enumerate() {
            if c + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[c]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
}

/// The user an app runs as and how the agent gets there.
fn run_as_text(app: &AppPolicy) -> String {
    match &app.run_as {
        RunAs::User {
            name,
            uid,
            gid,
            groups,
            by,
        } => format!(
            "user {name} (uid {uid}, gid {gid}, groups {}), switched to by {}",
            join_or(groups.iter().map(u32::to_string), "none"),
            match by {
                SwitchedBy::Root => "the agent running as root",
                SwitchedBy::Capabilities => "the agent's CAP_SETUID and CAP_SETGID",
            }
        ),
        RunAs::CurrentUser { uid, gid } => {
            format!(
                "user {} = the agent's own user (uid {uid}, gid {gid})",
                app.user
            )
        }
    }
}

/// The rlimits each instance starts with (`[apps.NAME.limits]`).
fn limits_text(app: &AppPolicy) -> String {
    let l = &app.limits;
    format!(
        "{} open files per process, {} processes of its user, {} of address space per process",
        l.max_open_files,
        l.max_processes,
        l.max_memory
            .map_or_else(|| "no limit".to_owned(), |b| format!("{b} bytes")),
    )
}

/// The app's address, as the report shows it.
fn listen_text(app: &AppPolicy) -> String {
    match (&app.listen, &app.router) {
        (Some(a), RouterConfig::Nginx { .. }) => format!("{a} (nginx's address, informational)"),
        (Some(a), _) => a.to_string(),
        (None, _) => "-".to_owned(),
    }
}

/// The app's router, as the report shows it.
fn router_text(app: &AppPolicy) -> String {
    match &app.router {
        RouterConfig::None => {
            "none (hot deploys only; rolling, blue-green and canary need listen or nginx)"
                .to_owned()
        }
        RouterConfig::FrontDoor if app.front_door_mode == FrontDoorMode::Http => {
            "front door in HTTP mode (the agent's proxy, started per app; counts requests, \
             status classes and latency)"
                .to_owned()
        }
        RouterConfig::FrontDoor => "front door (the agent's TCP proxy, started per app)".to_owned(),
        RouterConfig::Nginx {
            upstream_file,
            reload_command,
            check_command,
            pid_file,
        } => {
            let mut s = format!(
                "nginx: upstream file {}, reload `{}`",
                upstream_file.display(),
                reload_command.join(" ")
            );
            if let Some(check) = check_command {
                let _ = write!(s, ", check `{}`", check.join(" "));
            }
            match pid_file {
                Some(f) => {
                    let _ = write!(s, ", new workers awaited via {}", f.display());
                }
                None => s.push_str(", no pid_file (a reload counts once its command returns)"),
            }
            s
        }
    }
}

fn router_json(app: &AppPolicy) -> serde_json::Value {
    match &app.router {
        RouterConfig::Nginx {
            upstream_file,
            reload_command,
            check_command,
            pid_file,
        } => json!({
            "kind": app.router.kind(),
            "upstream_file": upstream_file.display().to_string(),
            "reload_command": reload_command,
            "check_command": check_command,
            "pid_file": pid_file.as_ref().map(|f| f.display().to_string()),
        }),
        RouterConfig::FrontDoor if app.front_door_mode == FrontDoorMode::Http => {
            json!({ "kind": app.router.kind(), "mode": app.front_door_mode.as_str() })
        }
        RouterConfig::None | RouterConfig::FrontDoor => json!({ "kind": app.router.kind() }),
    }
}

/// What a key may do on an app: its actions, and whether it approves.
fn key_powers(app: &AppPolicy, key: &TrustedKey) -> (Vec<Action>, bool) {
    (
        app.actions_for(&key.roles),
        key.roles.contains(APPROVER_ROLE) && app.approvals > 0,
    )
}

/// Settings a reviewer should look at twice.
fn notes(cfg: &Config, now: i64) -> Vec<String> {
    let mut notes = Vec::new();
    for app in cfg.policy.apps.values() {
        if app.run_as.uid() == 0 {
            notes.push(format!("app {} runs as root (allow_root = true)", app.name));
        }
        if matches!(app.run_as, RunAs::CurrentUser { .. }) {
            notes.push(format!(
                "app {} runs as the agent's own user: its instances can read the agent's keys \
                 and write its data dir (give it a user of its own; a non-root agent then needs \
                 CAP_SETUID, CAP_SETGID and CAP_KILL)",
                app.name
            ));
        }
    }
    for k in &cfg.policy.keys {
        match k.invalid_at(now) {
            Some(why) => notes.push(format!(
                "key {} is {why}: its signatures do not count",
                k.name
            )),
            None if k.expires_soon(now, EXPIRY_WARNING) => {
                let at = k.not_after.unwrap_or(now);
                notes.push(format!(
                    "key {} expires in {} day(s), at {}: rotate it (add its successor with an \
                     overlapping window)",
                    k.name,
                    (at - now) / 86_400,
                    format_time(at)
                ));
            }
            None => {}
        }
        let used = cfg.policy.apps.values().any(|app| {
            let (actions, approves) = key_powers(app, k);
            !actions.is_empty() || approves
        });
        if !used {
            notes.push(format!("key {} may do nothing on any app", k.name));
        }
    }
    notes
}

fn render_text(cfg: &Config, now: i64) -> String {
    let policy = &cfg.policy;
    let mut out = String::new();
    out.push_str("Gantry agent policy\n");
    let pin = {
        let mut who = Vec::new();
        if !cfg.tls.client_names.is_empty() {
            who.push(format!(
                "certificates named {}",
                cfg.tls.client_names.join(", ")
            ));
        }
        if !cfg.tls.client_fingerprints.is_empty() {
            who.push(format!(
                "{} pinned certificate fingerprint(s)",
                cfg.tls.client_fingerprints.len()
            ));
        }
        format!("CA-signed client {}", who.join(" or "))
    };
    table(
        &mut out,
        "  ",
        &[
            vec!["config".into(), cfg.path.display().to_string()],
            vec!["digest".into(), format!("sha256:{}", cfg.digest)],
            vec!["agent id".into(), cfg.agent_id.clone()],
            vec![
                "environment".into(),
                cfg.placement
                    .environment
                    .clone()
                    .unwrap_or_else(|| "none (no environment)".to_owned()),
            ],
            vec![
                "labels".into(),
                if cfg.placement.labels.is_empty() {
                    "none".to_owned()
                } else {
                    cfg.placement
                        .labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                },
            ],
            vec!["listen".into(), agent_listen_text(cfg)],
            vec!["client CA".into(), cfg.tls.ca.display().to_string()],
            vec!["clients".into(), pin],
            vec![
                "revocation".into(),
                cfg.tls.crl.as_ref().map_or_else(
                    || "none (no tls.crl)".to_owned(),
                    |p| format!("CRL {}", p.display()),
                ),
            ],
        ],
    );
    out.push_str(
        "\n  Authority comes from job signatures by the keys below, never from the TLS client.\n",
    );
    out.push_str(&super::report_environments::text(&policy.environments));

    let _ = writeln!(out, "\nTrusted keys ({})", policy.keys.len());
    if policy.keys.is_empty() {
        out.push_str("  (none: no job can be admitted)\n");
    } else {
        let mut rows = vec![vec![
            "NAME".into(),
            "KEY ID".into(),
            "ROLES".into(),
            "VALIDITY".into(),
        ]];
        for k in &policy.keys {
            rows.push(vec![
                k.name.clone(),
                k.key_id.to_string(),
                join_or(&k.roles, "-"),
                validity_text(k, now),
            ]);
        }
        table(&mut out, "  ", &rows);
    }

    if policy.apps.is_empty() {
        out.push_str("\nApps\n  (none: no job can be admitted)\n");
    }
    for app in policy.apps.values() {
        let _ = writeln!(out, "\nApp {}", app.name);
        let approvals = match app.approvals {
            0 => "none: one signature with an allowed role suffices".to_owned(),
            n if app.deployer_may_approve => format!(
                "{n} signature(s) by distinct keys with role {APPROVER_ROLE:?} \
                 (the deployer's own key may count)"
            ),
            n => format!("{n} signature(s) by other keys with role {APPROVER_ROLE:?}"),
        };
        table(
            &mut out,
            "  ",
            &[
                vec!["runs as".into(), run_as_text(app)],
                vec![
                    "ports".into(),
                    format!(
                        "{}-{} ({} port(s); instance i listens on {} + i)",
                        app.ports.start(),
                        app.ports.end(),
                        app.port_count(),
                        app.ports.start()
                    ),
                ],
                vec!["listen".into(), listen_text(app)],
                vec!["router".into(), router_text(app)],
                vec!["max instances".into(), app.max_instances.to_string()],
                vec!["stop timeout".into(), dur(app.stop_timeout)],
                vec!["limits".into(), limits_text(app)],
                vec!["approvals".into(), approvals],
            ],
        );
        out.push_str("  roles allowed per action:\n");
        let rows: Vec<Vec<String>> = Action::ALL
            .iter()
            .map(|a| vec![a.to_string(), join_or(app.roles_for(*a), "(nobody)")])
            .collect();
        table(&mut out, "    ", &rows);
        out.push_str("  fleet plans:\n");
        table(
            &mut out,
            "    ",
            &[
                vec![
                    "sign plans".into(),
                    format!(
                        "{} (as for a deploy, with the approvals above)",
                        join_or(app.roles_for(Action::Deploy), "(nobody)")
                    ),
                ],
                vec![
                    "sign dispatches".into(),
                    join_or(&app.dispatch, "(nobody: no plan can be dispatched here)"),
                ],
            ],
        );
        out.push_str(&super::report_flags::text(app.flags.as_ref()));
        out.push_str("  what each key may do:\n");
        let mut rows = Vec::new();
        for k in &policy.keys {
            let (actions, approves) = key_powers(app, k);
            let mut what = join_or(actions.iter().map(|a| a.as_str()), "");
            if approves {
                if !what.is_empty() {
                    what.push_str("; ");
                }
                what.push_str("approve");
            }
            if !k.roles.is_disjoint(&app.dispatch) {
                if !what.is_empty() {
                    what.push_str("; ");
                }
                what.push_str("dispatch plans");
            }
            if what.is_empty() {
                what = "nothing".into();
            }
            rows.push(vec![k.name.clone(), what]);
        }
        if rows.is_empty() {
            out.push_str("    (no keys)\n");
        } else {
            table(&mut out, "    ", &rows);
        }
    }

    let l = &cfg.limits;
    out.push_str("\nLimits\n");
    table(
        &mut out,
        "  ",
        &[
            vec!["max job size".into(), format!("{} bytes", l.max_job_bytes)],
            vec![
                "max artifact size".into(),
                format!("{} bytes", l.max_artifact_bytes),
            ],
            vec![
                "max unpacked release size".into(),
                format!("{} bytes", l.max_unpacked_bytes),
            ],
            vec!["max validity window".into(), dur(l.max_validity)],
            vec!["clock skew allowed".into(), dur(l.clock_skew)],
            vec!["max plan validity".into(), dur(l.max_plan_validity)],
            vec!["max dispatch validity".into(), dur(l.max_dispatch_validity)],
            vec!["releases kept".into(), l.releases_kept.to_string()],
            vec![
                "audit min free space".into(),
                format!("{} bytes (jobs refused below)", cfg.audit.min_free_bytes),
            ],
        ],
    );
    let notes = notes(cfg, now);
    if !notes.is_empty() {
        out.push_str("\nNotes\n");
        for n in notes {
            let _ = writeln!(out, "  - {n}");
        }
    }
    out
}

fn render_json(cfg: &Config, now: i64) -> String {
    let policy = &cfg.policy;
    let keys: Vec<_> = policy
        .keys
        .iter()
        .map(|k| {
            json!({
                "name": k.name,
                "key_id": k.key_id.to_string(),
                "roles": k.roles,
                "not_before": k.not_before.map(format_time),
                "not_after": k.not_after.map(format_time),
                "revoked": k.revoked,
                "revoked_reason": k.revoked_reason,
                "status": key_status(k, now),
                "expires_soon": k.expires_soon(now, EXPIRY_WARNING),
            })
        })
        .collect();
    let apps: Vec<_> = policy
        .apps
        .values()
        .map(|app| {
            let run_as = match &app.run_as {
                RunAs::User {
                    name,
                    uid,
                    gid,
                    groups,
                    by,
                } => json!({
                    "kind": "user", "user": name, "uid": uid, "gid": gid, "groups": groups,
                    "via": by.as_str(),
                }),
                RunAs::CurrentUser { uid, gid } => json!({
                    "kind": "current_user", "user": app.user, "uid": uid, "gid": gid,
                    "via": "agent_user",
                }),
            };
            let allow: serde_json::Map<String, serde_json::Value> = Action::ALL
                .iter()
                .map(|a| (a.to_string(), json!(app.roles_for(*a))))
                .collect();
            let key_rights: Vec<_> = policy
                .keys
                .iter()
                .map(|k| {
                    let (actions, approves) = key_powers(app, k);
                    json!({
                        "name": k.name,
                        "key_id": k.key_id.to_string(),
                        "actions": actions.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                        "approves": approves,
                        "signs_plans": !k.roles.is_disjoint(&app.roles_for(Action::Deploy)),
                        "dispatches": !k.roles.is_disjoint(&app.dispatch),
                    })
                })
                .collect();
            json!({
                "name": app.name.as_str(),
                "run_as": run_as,
                "ports": { "first": app.ports.start(), "last": app.ports.end() },
                "listen": app.listen.map(|a| a.to_string()),
                "router": router_json(app),
                "max_instances": app.max_instances,
                "stop_timeout_ms": ms(app.stop_timeout),
                "limits": {
                    "max_open_files": app.limits.max_open_files,
                    "max_processes": app.limits.max_processes,
                    "max_memory": app.limits.max_memory,
                },
                "approvals": app.approvals,
                "deployer_may_approve": app.deployer_may_approve,
                "allow": allow,
                "fleet": {
                    "plan_signers": app.roles_for(Action::Deploy),
                    "plan_approvals": app.approvals,
                    "dispatch": app.dispatch,
                },
                "flags": super::report_flags::json(app.flags.as_ref()),
                "keys": key_rights,
            })
        })
        .collect();
    let l = &cfg.limits;
    let doc = json!({
        "format": "gantry.policy.v1",
        "config": { "path": cfg.path.display().to_string(), "digest": cfg.digest.as_str() },
        "agent_id": cfg.agent_id,
        "environment": cfg.placement.environment,
        "labels": cfg.placement.labels,
        "environment_rules": super::report_environments::json(&cfg.policy.environments),
        "listen": cfg.listen.map(|l| l.to_string()),
        "controller": cfg.controller.as_ref().map(|c| json!({
            "dial": c.dial,
            "server_name": c.server_name,
            "ca": c.ca.display().to_string(),
            "exit_on_disconnect_after_secs": c.exit_on_disconnect_after.map(|d| d.as_secs()),
        })),
        "tls": {
            "ca": cfg.tls.ca.display().to_string(),
            "client_names": cfg.tls.client_names,
            "client_fingerprints": cfg.tls.client_fingerprints,
            "crl": cfg.tls.crl.as_ref().map(|p| p.display().to_string()),
        },
        "keys": keys,
        "apps": apps,
        "notes": notes(cfg, now),
        "limits": {
            "max_job_bytes": l.max_job_bytes,
            "max_artifact_bytes": l.max_artifact_bytes,
            "max_unpacked_bytes": l.max_unpacked_bytes,
            "max_validity_ms": ms(l.max_validity),
            "clock_skew_ms": ms(l.clock_skew),
            "max_plan_validity_ms": ms(l.max_plan_validity),
            "max_dispatch_validity_ms": ms(l.max_dispatch_validity),
            "releases_kept": l.releases_kept,
            "audit_min_free_bytes": cfg.audit.min_free_bytes,
        },
    });
    let mut s =
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    s.push('\n');
    s
}

/// `listen` as the report shows it: the address, or where the agent dials out to.
fn agent_listen_text(cfg: &Config) -> String {
    match (&cfg.listen, &cfg.controller) {
        (Some(l), _) => l.to_string(),
        (None, Some(c)) => format!(
            "nothing (dials out to {} as {}, [controller])",
            c.dial, c.server_name
        ),
        (None, None) => "nothing".to_owned(),
    }
}
