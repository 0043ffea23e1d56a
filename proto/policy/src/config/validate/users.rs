//! Who an app runs as: the user database on a full load, a placeholder on a policy-only one.

use std::ffi::CString;

use super::{HostIdentity, Problems};
use crate::config::raw::RawApp;
use crate::config::{RunAs, SwitchedBy};

/// The placeholder identity of a policy-only load; still refuses root without `allow_root`.
pub(super) fn unresolved_user(
    p: &mut Problems,
    at: &str,
    name: &str,
    app: &RawApp,
) -> Option<RunAs> {
    if app.user == "root" && !app.allow_root {
        p.add(
            format!("{at}.user"),
            format!("app {name}: user root is root (uid 0); set allow_root = true to allow it"),
        );
        return None;
    }
    Some(RunAs::User {
        name: app.user.clone(),
        uid: u32::MAX,
        gid: u32::MAX,
        groups: Vec::new(),
        by: SwitchedBy::Root,
    })
}

/// The app's user from the user database: uid, gid and groups when the agent can switch to
/// it (as root, or holding CAP_SETUID, CAP_SETGID and CAP_KILL), or the agent's own identity
/// when the app runs as the agent's user.
pub(super) fn resolve_user(
    p: &mut Problems,
    at: &str,
    name: &str,
    app: &RawApp,
    host: &HostIdentity,
) -> Option<RunAs> {
    let entry = format!("{at}.user");
    let user = match nix::unistd::User::from_name(&app.user) {
        Ok(Some(u)) => u,
        Ok(None) => {
            p.add(entry, format!("user {:?} not found", app.user));
            return None;
        }
        Err(e) => {
            p.add(entry, format!("cannot look up user {:?}: {e}", app.user));
            return None;
        }
    };
    if user.uid.is_root() && !app.allow_root {
        p.add(
            entry.clone(),
            format!(
                "app {name}: user {} is root (uid 0); set allow_root = true to allow it",
                app.user
            ),
        );
        return None;
    }
    let by = if host.euid == 0 {
        SwitchedBy::Root
    } else {
        if user.uid.as_raw() == host.euid {
            return Some(RunAs::CurrentUser {
                uid: host.euid,
                gid: host.egid,
            });
        }
        let missing = host.missing_switch_caps();
        // A non-root agent switching to uid 0 would hand its bounding set to the app at exec.
        if user.uid.is_root() || !missing.is_empty() {
            p.add(entry, needs_root_message(name, &app.user, host, &missing));
            return None;
        }
        SwitchedBy::Capabilities
    };
    let groups = match CString::new(app.user.as_str())
        .ok()
        .map(|c| nix::unistd::getgrouplist(&c, user.gid))
    {
        Some(Ok(gs)) => gs.into_iter().map(|g| g.as_raw()).collect(),
        Some(Err(e)) => {
            p.add(
                entry,
                format!("cannot list the groups of user {:?}: {e}", app.user),
            );
            return None;
        }
        None => vec![user.gid.as_raw()],
    };
    Some(RunAs::User {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        by,
    })
}

/// Why a non-root agent cannot run `user`'s instances, and the unit lines that would let it.
fn needs_root_message(app: &str, user: &str, host: &HostIdentity, missing: &[&str]) -> String {
    let agent = format!(
        "the agent runs as {}, uid {}",
        host.user.as_deref().unwrap_or("?"),
        host.euid
    );
    if missing.is_empty() {
        return format!("app {app}: user {user} needs the agent to run as root ({agent})");
    }
    let all = super::host::SWITCH_CAPS.map(|(n, _)| n).join(" ");
    format!(
        "app {app}: user {user} needs the agent to run as root or to hold {all} ({agent}, \
         without {}); the systemd unit grants them with CapabilityBoundingSet={all} and \
         AmbientCapabilities={all}, or set user = {:?} to run the app as the agent itself",
        missing.join(", "),
        host.user.as_deref().unwrap_or("?"),
    )
}
