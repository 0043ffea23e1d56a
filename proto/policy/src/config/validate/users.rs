//! Who an app runs as: the user database on a full load, a placeholder on a policy-only one.

use std::ffi::CString;

use super::{HostIdentity, Problems};
use crate::config::RunAs;
use crate::config::raw::RawApp;

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
    })
}

/// The app's user from the user database: uid, gid and groups, or the agent's own identity
/// when the agent is not root and the app runs as the agent's user.
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
    if host.euid != 0 {
        if host.user.as_deref() == Some(app.user.as_str()) {
            return Some(RunAs::CurrentUser {
                uid: host.euid,
                gid: host.egid,
            });
        }
        p.add(
            entry,
            format!(
                "app {name}: user {} needs the agent to run as root (the agent runs as {}, uid {})",
                app.user,
                host.user.as_deref().unwrap_or("?"),
                host.euid
            ),
        );
        return None;
    }
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
    })
}
