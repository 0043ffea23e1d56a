//! `[apps.<name>]`: ports, users, rights and quorum of each app, and the addresses apps must
//! not share.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use super::router::{check_app_listens, validate_hold, validate_mode, validate_router};
use super::users::{resolve_user, unresolved_user};
use super::{HostIdentity, Mode, Problems};
use crate::config::raw::{RawApp, RawConfig};
use crate::config::{APPROVER_ROLE, AppPolicy, DISPATCH_ENTRY, InstanceLimits, Policy, RunAs};
use crate::job::{Action, AppName};

/// Every app of `raw`, checked against the roles `policy`'s keys hold and the agent's own
/// `listen`; only apps with no problem are returned.
pub(super) fn validate_apps(
    p: &mut Problems,
    raw: &RawConfig,
    base: &Path,
    host: &HostIdentity,
    mode: Mode,
    listen: SocketAddr,
    policy: &Policy,
) -> BTreeMap<AppName, AppPolicy> {
    let mut apps = BTreeMap::new();
    let known_roles = policy.known_roles();
    let approvers = policy
        .keys
        .iter()
        .filter(|k| k.roles.contains(APPROVER_ROLE) && !k.revoked)
        .count();

    let mut ranges: Vec<(String, RangeInclusive<u16>)> = Vec::new();
    let mut listens: Vec<(String, SocketAddr)> = Vec::new();
    for (name, app) in &raw.apps {
        let at = format!("apps.{name}");
        let ports = parse_ports(p, &format!("{at}.ports"), &app.ports);
        if let Some(r) = &ports {
            for (other, theirs) in &ranges {
                if r.start() <= theirs.end() && theirs.start() <= r.end() {
                    p.add(
                        format!("{at}.ports"),
                        format!(
                            "{}-{} overlaps apps.{other}.ports {}-{}",
                            r.start(),
                            r.end(),
                            theirs.start(),
                            theirs.end()
                        ),
                    );
                }
            }
            if listen.port() != 0 && r.contains(&listen.port()) {
                p.add(
                    format!("{at}.ports"),
                    format!(
                        "{}-{} includes the agent's listen port {}",
                        r.start(),
                        r.end(),
                        listen.port()
                    ),
                );
            }
            ranges.push((name.clone(), r.clone()));
        }
        let app_name = match AppName::new(name) {
            Ok(n) => Some(n),
            Err(e) => {
                p.add(at.clone(), format!("invalid app name: {e}"));
                None
            }
        };
        let (app_listen, router) = validate_router(p, &at, app, base, ports.as_ref());
        let front_door_mode = validate_mode(p, &at, app);
        let hold_timeout = validate_hold(p, &at, app);
        if let Some(l) = app_listen {
            listens.push((name.clone(), l));
        }
        let checked = validate_app(
            p,
            &at,
            name,
            app,
            host,
            mode,
            &known_roles,
            approvers,
            ports.as_ref(),
        );
        if let (Some(app_name), Some((run_as, (allow, dispatch), stop_timeout)), Some(ports)) =
            (app_name, checked, ports)
        {
            apps.insert(
                app_name.clone(),
                AppPolicy {
                    name: app_name,
                    user: app.user.clone(),
                    run_as,
                    ports,
                    max_instances: app.max_instances,
                    stop_timeout,
                    approvals: app.approvals,
                    deployer_may_approve: app.deployer_may_approve,
                    allow,
                    dispatch,
                    listen: app_listen,
                    router,
                    front_door_mode,
                    hold_timeout,
                    flags: super::flags::validate_flags(p, &at, app.flags.as_ref(), &policy.keys),
                    limits: instance_limits(p, &at, app),
                },
            );
        }
    }
    check_app_listens(p, listen, &ranges, &listens);
    apps
}

fn parse_ports(p: &mut Problems, entry: &str, value: &str) -> Option<RangeInclusive<u16>> {
    let parse = |s: &str| s.trim().parse::<u16>().ok();
    let (a, b) = match value.split_once('-') {
        Some((a, b)) => (parse(a), parse(b)),
        None => (parse(value), parse(value)),
    };
    let (Some(a), Some(b)) = (a, b) else {
        p.add(
            entry,
            format!("{value:?} is not a port range like \"18000-18009\""),
        );
        return None;
    };
    if a == 0 {
        p.add(
            entry,
            format!("{value:?}: port 0 cannot be assigned to an instance"),
        );
        return None;
    }
    if a > b {
        p.add(entry, format!("{value:?} is empty (first port above last)"));
        return None;
    }
    Some(a..=b)
}

/// What `[apps.NAME.allow]` grants: the roles per action, and the roles that may sign
/// dispatches.
type Rights = (BTreeMap<Action, BTreeSet<String>>, BTreeSet<String>);

/// Checks one app; returns what it resolved when all of it is valid.
#[allow(clippy::too_many_arguments)]
fn validate_app(
    p: &mut Problems,
    at: &str,
    name: &str,
    app: &RawApp,
    host: &HostIdentity,
    mode: Mode,
    known_roles: &BTreeSet<String>,
    approvers: usize,
    ports: Option<&RangeInclusive<u16>>,
) -> Option<(RunAs, Rights, Duration)> {
    let before = p.list.len();
    let run_as = match mode {
        Mode::Full => resolve_user(p, at, name, app, host),
        Mode::PolicyOnly => unresolved_user(p, at, name, app),
    };

    if app.max_instances == 0 {
        p.add(format!("{at}.max_instances"), "must be more than 0");
    }
    if let Some(r) = ports {
        let count = u32::from(*r.end()) + 1 - u32::from(*r.start());
        if app.max_instances > count {
            p.add(
                format!("{at}.max_instances"),
                format!(
                    "{} is more than the {count} port(s) in {}-{}",
                    app.max_instances,
                    r.start(),
                    r.end()
                ),
            );
        }
    }
    let stop_timeout = p.duration(&format!("{at}.stop_timeout"), &app.stop_timeout, false);

    let approvers_u32 = u32::try_from(approvers).unwrap_or(u32::MAX);
    if app.approvals > approvers_u32 {
        p.add(
            format!("{at}.approvals"),
            format!(
                "{} approval(s) required but only {approvers} unrevoked key(s) hold role \
                 {APPROVER_ROLE:?}: no job could ever be admitted",
                app.approvals
            ),
        );
    }

    let mut allow = BTreeMap::new();
    let mut dispatch = BTreeSet::new();
    for (action_name, roles) in &app.allow {
        let entry = format!("{at}.allow.{action_name}");
        let action = Action::parse(action_name);
        if action.is_none() && action_name != DISPATCH_ENTRY {
            let all: Vec<&str> = Action::ALL.iter().map(|a| a.as_str()).collect();
            p.add(
                entry,
                format!(
                    "unknown action (expected one of {}, or {DISPATCH_ENTRY})",
                    all.join(", ")
                ),
            );
            continue;
        }
        for role in roles {
            if !known_roles.contains(role) {
                let known: Vec<&str> = known_roles.iter().map(String::as_str).collect();
                p.add(
                    entry.clone(),
                    format!(
                        "role {role:?} is held by no key (known roles: {})",
                        known.join(", ")
                    ),
                );
            }
        }
        match action {
            Some(action) => {
                allow.insert(action, roles.iter().cloned().collect());
            }
            None => dispatch.extend(roles.iter().cloned()),
        }
    }

    match run_as {
        Some(run_as) if p.list.len() == before => Some((run_as, (allow, dispatch), stop_timeout)),
        _ => None,
    }
}

/// `[apps.NAME.limits]`, each left-out limit at its default; a zero is a problem (an instance
/// could not even start).
fn instance_limits(p: &mut Problems, at: &str, app: &RawApp) -> InstanceLimits {
    let raw = app.limits.clone().unwrap_or_default();
    let defaults = InstanceLimits::default();
    let mut limit = |name: &str, value: Option<u64>| {
        if let Some(v) = value {
            p.positive(&format!("{at}.limits.{name}"), v);
        }
        value
    };
    InstanceLimits {
        max_open_files: limit("max_open_files", raw.max_open_files)
            .unwrap_or(defaults.max_open_files),
        max_processes: limit("max_processes", raw.max_processes).unwrap_or(defaults.max_processes),
        max_memory: limit("max_memory", raw.max_memory),
    }
}
