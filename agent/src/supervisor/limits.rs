//! The rlimits each app's instances start with (`[apps.NAME.limits]`, case J9).
//!
//! Every instance's [`super::InstanceSpec`] carries its app's [`InstanceLimits`] (the
//! strategies' steps fill them in from the app's policy); the supervisor sets them as hard and
//! soft limits in the child, after the switch to the app's user and before exec:
//! `RLIMIT_NOFILE`, `RLIMIT_NPROC` (counted per user: all processes and threads of the app's
//! user together) and `RLIMIT_AS` when set. A limit above the agent's own hard limit is lowered
//! to it (an unprivileged process cannot raise a hard limit; with the limits lowered this way,
//! the app cannot raise them either). The front door and exec health probes keep the agent's
//! limits.

use std::io;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

pub use crate::config::InstanceLimits;

/// Limits ready to be set in a forked child: worked out (and lowered to the agent's own hard
/// limits) before the fork.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Prepared {
    limits: [(Resource, u64); 3],
    count: usize,
}

impl Prepared {
    /// `limits` as they will be set: each at most what the agent's own hard limit allows.
    pub(super) fn of(limits: &InstanceLimits) -> Self {
        let mut out = [(Resource::RLIMIT_NOFILE, 0); 3];
        let mut count = 0;
        let wanted = [
            (Resource::RLIMIT_NOFILE, Some(limits.max_open_files)),
            (Resource::RLIMIT_NPROC, Some(limits.max_processes)),
            (Resource::RLIMIT_AS, limits.max_memory),
        ];
        for (resource, value) in wanted {
            let Some(value) = value else { continue };
            // Unknown hard limit: set what was asked, and let setrlimit say if it is too much.
            let hard = getrlimit(resource).map_or(u64::MAX, |(_, hard)| hard);
            out[count] = (resource, value.min(hard));
            count += 1;
        }
        Self { limits: out, count }
    }

    /// What will be set, in order.
    pub(super) fn limits(&self) -> &[(Resource, u64)] {
        &self.limits[..self.count]
    }

    /// Sets every limit, hard and soft. Runs in the forked child: setrlimit(2) only, no
    /// allocation.
    pub(super) fn apply(&self) -> io::Result<()> {
        for (resource, value) in self.limits() {
            setrlimit(*resource, *value, *value)?;
        }
        Ok(())
    }
}
