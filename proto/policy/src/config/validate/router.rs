//! An app's router (`listen` for the front door, or `[nginx]`) and the addresses that must not
//! clash.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::Path;

use super::{Problems, resolve};
use crate::config::raw::{RawApp, RawNginx};
use crate::config::{DEFAULT_HOLD_TIMEOUT, FrontDoorMode, MAX_HOLD_TIMEOUT, RouterConfig};

/// Parses an app's `listen` and `[nginx]` into its router; checks that the port range holds
/// both slots when there is a router.
pub(super) fn validate_router(
    p: &mut Problems,
    at: &str,
    app: &RawApp,
    base: &Path,
    ports: Option<&RangeInclusive<u16>>,
) -> (Option<SocketAddr>, RouterConfig) {
    let listen = app
        .listen
        .as_deref()
        .and_then(|value| match value.trim().parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => {
                p.add(
                    format!("{at}.listen"),
                    format!("{value:?}: the app's address needs a fixed port, not 0"),
                );
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                p.add(
                    format!("{at}.listen"),
                    format!("{value:?} is not an IP:port address like \"127.0.0.1:8080\""),
                );
                None
            }
        });
    let router = match &app.nginx {
        Some(nginx) => validate_nginx(p, at, nginx, base),
        None if app.listen.is_some() => RouterConfig::FrontDoor,
        None => RouterConfig::None,
    };
    let has_router = app.listen.is_some() || app.nginx.is_some();
    if has_router && let Some(r) = ports {
        let count = u32::from(*r.end()) + 1 - u32::from(*r.start());
        let needed = u64::from(app.max_instances) * 2;
        if u64::from(count) < needed {
            p.add(
                format!("{at}.ports"),
                format!(
                    "{}-{} holds {count} port(s), but an app with a router needs at least \
                     2 x max_instances = {needed}: blue and green slots of {} instance(s) each",
                    r.start(),
                    r.end(),
                    app.max_instances
                ),
            );
        }
    }
    (listen, router)
}

/// The front door's `mode`: `tcp` (default) or `http`, only with the built-in front door.
pub(super) fn validate_mode(p: &mut Problems, at: &str, app: &RawApp) -> FrontDoorMode {
    let Some(value) = app.mode.as_deref() else {
        return FrontDoorMode::Tcp;
    };
    let Some(mode) = FrontDoorMode::parse(value.trim()) else {
        p.add(
            format!("{at}.mode"),
            format!("{value:?} is not a front door mode: \"tcp\" or \"http\""),
        );
        return FrontDoorMode::Tcp;
    };
    if app.nginx.is_some() || app.listen.is_none() {
        p.add(
            format!("{at}.mode"),
            "applies to the built-in front door only: set listen, without [nginx]",
        );
    }
    mode
}

/// The front door's `hold_timeout` (humantime, at most [`MAX_HOLD_TIMEOUT`]).
pub(super) fn validate_hold(p: &mut Problems, at: &str, app: &RawApp) -> std::time::Duration {
    let Some(value) = app.hold_timeout.as_deref() else {
        return DEFAULT_HOLD_TIMEOUT;
    };
    match humantime::parse_duration(value.trim()) {
        Ok(d) if d <= MAX_HOLD_TIMEOUT => d,
        Ok(_) => {
            p.add(
                format!("{at}.hold_timeout"),
                format!("{value:?} is longer than the maximum of 60s"),
            );
            DEFAULT_HOLD_TIMEOUT
        }
        Err(e) => {
            p.add(
                format!("{at}.hold_timeout"),
                format!("{value:?} is not a duration like \"5s\": {e}"),
            );
            DEFAULT_HOLD_TIMEOUT
        }
    }
}

fn validate_nginx(p: &mut Problems, at: &str, nginx: &RawNginx, base: &Path) -> RouterConfig {
    let entry = format!("{at}.nginx");
    if nginx.upstream_file.trim().is_empty() {
        p.add(format!("{entry}.upstream_file"), "is empty");
    }
    let mut command = |field: &str, cmd: &[String]| {
        if cmd.first().is_none_or(|program| program.trim().is_empty()) {
            p.add(
                format!("{entry}.{field}"),
                "is empty: give the program and its arguments, e.g. [\"nginx\", \"-s\", \"reload\"]",
            );
        }
    };
    command("reload_command", &nginx.reload_command);
    if let Some(check) = &nginx.check_command {
        command("check_command", check);
    }
    if nginx
        .pid_file
        .as_deref()
        .is_some_and(|f| f.trim().is_empty())
    {
        p.add(format!("{entry}.pid_file"), "is empty");
    }
    RouterConfig::Nginx {
        upstream_file: resolve(base, &nginx.upstream_file),
        reload_command: nginx.reload_command.clone(),
        check_command: nginx.check_command.clone(),
        pid_file: nginx.pid_file.as_deref().map(|f| resolve(base, f)),
    }
}

/// Two addresses that would contend for one socket: same port, and the same IP or either one
/// the wildcard.
fn addresses_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Each app's `listen` must not be an instance port, the agent's address or another app's.
pub(super) fn check_app_listens(
    p: &mut Problems,
    agent: SocketAddr,
    ranges: &[(String, RangeInclusive<u16>)],
    listens: &[(String, SocketAddr)],
) {
    for (i, (name, addr)) in listens.iter().enumerate() {
        let entry = format!("apps.{name}.listen");
        for (other, r) in ranges {
            if r.contains(&addr.port()) {
                p.add(
                    entry.clone(),
                    format!(
                        "{addr} is inside apps.{other}.ports {}-{}: instance ports and the \
                         app's address must differ",
                        r.start(),
                        r.end()
                    ),
                );
            }
        }
        if agent.port() != 0 && addresses_clash(*addr, agent) {
            p.add(
                entry.clone(),
                format!("{addr} is the agent's own listen address {agent}"),
            );
        }
        for (other, theirs) in listens.iter().take(i) {
            if addresses_clash(*addr, *theirs) {
                p.add(
                    entry.clone(),
                    format!("{addr} is also apps.{other}.listen ({theirs})"),
                );
            }
        }
    }
}
