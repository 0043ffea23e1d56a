//! Slots and ports: blue is the first `max_instances` ports of an app's range, green the
//! next. Each instance's record names its slot; ports are computed only to start one.

use crate::config::AppPolicy;
use crate::state::Slot;

use super::AppRuntime;

/// An app's port range has no port for an instance.
#[derive(Debug, thiserror::Error)]
#[error("app {app} has no port for instance {index} of the {} slot in {first}-{last}", slot.as_str())]
pub struct NoPort {
    /// The app.
    pub app: String,
    /// The instance index asked for.
    pub index: u32,
    /// The slot asked for.
    pub slot: Slot,
    /// The range's first port.
    pub first: u16,
    /// The range's last port.
    pub last: u16,
}

/// The port of instance `index` in `slot`: blue is the first `max_instances` ports of the
/// app's range, green the next.
///
/// # Errors
///
/// [`NoPort`] when the range has no such port.
pub fn slot_port(app: &AppRuntime, slot: Slot, index: u32) -> Result<u16, NoPort> {
    let offset = match slot {
        Slot::Blue => 0,
        Slot::Green => app.policy.max_instances,
    };
    let range = &app.policy.ports;
    index
        .checked_add(offset)
        .and_then(|i| u16::try_from(i).ok())
        .and_then(|i| range.start().checked_add(i))
        .filter(|p| range.contains(p) && index < app.policy.max_instances)
        .ok_or_else(|| NoPort {
            app: app.policy.name.to_string(),
            index,
            slot,
            first: *range.start(),
            last: *range.end(),
        })
}

/// The slot a port of the app's range belongs to. Only for state files written before
/// instance records named their slot: read once, at load.
pub fn slot_by_port(policy: &AppPolicy, port: u16) -> Slot {
    let offset = u32::from(port.saturating_sub(*policy.ports.start()));
    if policy.router.is_some() && offset >= policy.max_instances {
        Slot::Green
    } else {
        Slot::Blue
    }
}

/// The ports of live instances in `slot`.
pub fn ports_in(app: &AppRuntime, slot: Slot) -> Vec<u16> {
    app.instances
        .iter()
        .map(|i| i.record())
        .filter(|r| r.slot == slot)
        .map(|r| r.port)
        .collect()
}

/// A backend's name in route tables and stats: slot, index and version.
pub fn backend_id(app: &AppRuntime, port: u16) -> Option<String> {
    let instance = app.instances.iter().find(|i| i.record().port == port)?;
    let r = instance.record();
    Some(format!("{}-{}-{}", r.slot.as_str(), r.index, r.version))
}
