//! Who the agent runs as, and whether it may switch its instances to other users.
//!
//! A root agent switches to any app user. A non-root agent can do the same when it holds
//! CAP_SETUID and CAP_SETGID (for setuid, setgid and setgroups in the child) and CAP_KILL (to
//! stop instances that then run as other uids) in its effective set: the shipped systemd unit
//! grants exactly these as ambient capabilities. Without them it can only run apps as itself.

/// Capability numbers from `<linux/capability.h>`.
const CAP_KILL: u32 = 5;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;

/// The capabilities a non-root agent needs to run apps as their own users, in the order
/// messages name them.
pub(crate) const SWITCH_CAPS: [(&str, u32); 3] = [
    ("CAP_SETUID", CAP_SETUID),
    ("CAP_SETGID", CAP_SETGID),
    ("CAP_KILL", CAP_KILL),
];

/// Who the agent runs as; decides [`crate::config::RunAs`]. Injected so tests can play a
/// non-root agent with or without capabilities.
#[derive(Debug, Clone)]
pub(crate) struct HostIdentity {
    pub(crate) euid: u32,
    pub(crate) egid: u32,
    /// The user name of `euid`, when the user database has one.
    pub(crate) user: Option<String>,
    /// The effective capability set (`CapEff` of `/proc/self/status`), a bit per capability;
    /// 0 when it cannot be read.
    pub(crate) cap_eff: u64,
}

impl HostIdentity {
    pub(crate) fn current() -> Self {
        let euid = nix::unistd::geteuid();
        let user = nix::unistd::User::from_uid(euid)
            .ok()
            .flatten()
            .map(|u| u.name);
        // Unreadable (no /proc): treated as holding none, which only narrows what is allowed.
        let cap_eff = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| parse_cap_eff(&s))
            .unwrap_or(0);
        Self {
            euid: euid.as_raw(),
            egid: nix::unistd::getegid().as_raw(),
            user,
            cap_eff,
        }
    }

    /// Whether the agent holds the capability numbered `cap` in its effective set.
    fn holds(&self, cap: u32) -> bool {
        self.cap_eff & (1u64 << cap) != 0
    }

    /// The names of the [`SWITCH_CAPS`] the agent lacks; empty when it can run apps as other
    /// users (always empty for root).
    pub(crate) fn missing_switch_caps(&self) -> Vec<&'static str> {
        if self.euid == 0 {
            return Vec::new();
        }
        SWITCH_CAPS
            .iter()
            .filter(|(_, cap)| !self.holds(*cap))
            .map(|(name, _)| *name)
            .collect()
    }
}

/// The `CapEff:` line of a `/proc/<pid>/status` text, as a bit set.
pub(crate) fn parse_cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(euid: u32, cap_eff: u64) -> HostIdentity {
        HostIdentity {
            euid,
            egid: euid,
            user: None,
            cap_eff,
        }
    }

    #[test]
    fn cap_eff_is_read_from_the_status_text() {
        let status = "Name:\tgantry-agent\nCapInh:\t00000000000000e0\nCapPrm:\t00000000000000e0\n\
                      CapEff:\t00000000000000e0\nCapBnd:\t00000000000000e0\n";
        assert_eq!(parse_cap_eff(status), Some(0xe0));
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
        assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    }

    #[test]
    fn the_units_capabilities_are_enough_and_each_missing_one_is_named() {
        // CAP_KILL (5), CAP_SETGID (6), CAP_SETUID (7): what the systemd unit grants.
        assert!(host(998, 0xe0).missing_switch_caps().is_empty());
        assert_eq!(
            host(998, 0).missing_switch_caps(),
            ["CAP_SETUID", "CAP_SETGID", "CAP_KILL"]
        );
        assert_eq!(host(998, 0x60).missing_switch_caps(), ["CAP_SETUID"]);
        assert_eq!(host(998, 0xc0).missing_switch_caps(), ["CAP_KILL"]);
        assert!(host(0, 0).missing_switch_caps().is_empty());
    }
}
