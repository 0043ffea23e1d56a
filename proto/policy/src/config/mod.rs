//! The agent's TOML config, validated into the types the rest of the agent uses.
//!
//! The config is the trust boundary: it lists the keys the agent trusts and their roles, the
//! apps this host may run, the user each runs as and the ports each may listen on. A signed job
//! acts only inside these bounds.
//!
//! Loading is two-stage: [`raw`] mirrors the file (serde, unknown keys refused), then
//! [`Config::load`] checks everything and reports every problem at once, each naming the file,
//! the entry (`apps.web.ports`, `keys[1].public_key`) and what is wrong, so an operator fixes a
//! config in one pass. [`render_policy`] prints the effective permissions for a reviewer.

mod parse;
pub mod raw;
mod report;
mod report_environments;
mod report_flags;
mod validate;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gantry_proto::keys::{KeyId, PublicKey};

use crate::environment::Environments;
use crate::job::{Action, AppName, Sha256Hex};

pub use report::{render_policy, render_policy_at};

/// The validated agent config.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it was loaded from, made absolute against the working directory at load.
    pub path: PathBuf,
    /// SHA-256 of the file's bytes (recorded in `agent.started`).
    pub digest: Sha256Hex,
    /// This agent's id: a DNS name, a SAN of its certificate; jobs must name it.
    pub agent_id: String,
    /// Address to listen on (port 0 picks one); `None` when the agent dials out.
    pub listen: Option<SocketAddr>,
    /// `[controller]`: where the agent dials out to; `None` when it listens.
    pub controller: Option<DialOut>,
    /// Root of everything the agent writes.
    pub data_dir: PathBuf,
    /// Where this host sits in the fleet: its environment and labels.
    pub placement: Placement,
    /// Mutual TLS files and pins.
    pub tls: TlsConfig,
    /// Audit log settings.
    pub audit: AuditSettings,
    /// Size and time limits.
    pub limits: Limits,
    /// Who may do what.
    pub policy: Arc<Policy>,
    /// Where `/metrics` is served (`[metrics] listen`); `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
}

/// `[controller]`: the one outbound mutual-TLS connection of an agent that listens on nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialOut {
    /// `host:port` of the controller service's dial-in listener.
    pub dial: String,
    /// The DNS name the service's certificate must carry.
    pub server_name: String,
    /// The CA the service's certificate must chain to (default `tls.ca`).
    pub ca: PathBuf,
    /// Once the link has been down this long the agent exits non-zero; `None`: never.
    pub exit_on_disconnect_after: Option<std::time::Duration>,
}

/// Where a host sits in the fleet, from its own config: fleet plans and their ring selectors are
/// matched against this, never against what a controller claims about the host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// `environment`: `production`, `staging`, `demo` or any label; `None` when not set.
    pub environment: Option<String>,
    /// `[labels]`: name to value, e.g. `ring = "0"`.
    pub labels: BTreeMap<String, String>,
}

/// Mutual TLS settings; paths are absolute (resolved against the config file's directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA that client certificates must chain to.
    pub ca: PathBuf,
    /// The agent's certificate (chain), PEM.
    pub cert: PathBuf,
    /// The agent's private key, PEM.
    pub key: PathBuf,
    /// Client certificates valid for one of these DNS names are controllers.
    pub client_names: Vec<String>,
    /// Client certificates whose DER has one of these lowercase hex SHA-256 digests are
    /// controllers. With `client_names`, the only way in: a certificate that merely chains to
    /// the CA (another agent's, say) is not a controller.
    pub client_fingerprints: Vec<String>,
    /// The CA's revocation list (`tls.crl`), when revocation is checked.
    pub crl: Option<PathBuf>,
}

/// Audit log settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    /// The agent's own Ed25519 signing key (checkpoints).
    pub signing_key: PathBuf,
    /// A checkpoint every this many entries.
    pub checkpoint_every: u64,
    /// And at least this often.
    pub checkpoint_interval: Duration,
    /// Rotation size of one log file.
    pub max_file_bytes: u64,
    /// Jobs are refused below this much free space on the audit filesystem.
    pub min_free_bytes: u64,
}

/// Size and time limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest encoded job admitted.
    pub max_job_bytes: usize,
    /// Largest artifact stored.
    pub max_artifact_bytes: u64,
    /// Most bytes one release may unpack to (its regular files together); unpacking stops
    /// with an error at this size, so a small archive cannot fill the disk.
    pub max_unpacked_bytes: u64,
    /// Most bytes the artifact store may hold, uploads in progress included; an upload that
    /// would pass it is refused.
    pub max_store_bytes: u64,
    /// Most bytes the uploads of one client certificate may hold in the store while no kept
    /// release of any app uses them, partial uploads included; an upload that would pass it
    /// is refused, so a certificate alone cannot take the whole store (case J9).
    pub max_unused_bytes_per_client: u64,
    /// How long an artifact that no kept release of any app uses stays in the store before it
    /// is collected.
    pub unused_artifact_ttl: Duration,
    /// Longest validity window a job may have (`expires_at - not_before`).
    pub max_validity: Duration,
    /// Longest validity window a fleet plan may have (`expires_at - not_before`): rings bake
    /// for hours or days, so a plan outlives any job.
    pub max_plan_validity: Duration,
    /// Longest validity window a dispatch may have (`expires_at - issued_at`): a dispatch is
    /// sent to be run now.
    pub max_dispatch_validity: Duration,
    /// How far in the future `not_before` may be and still admit.
    pub clock_skew: Duration,
    /// Releases kept on disk per app.
    pub releases_kept: usize,
    /// Rejected submits (and identical resubmissions) one client certificate may have in a
    /// burst before its connections are no longer read.
    pub client_rejections_burst: u32,
    /// Rejected submits a second one client certificate may have in the long run.
    pub client_rejections_per_second: u32,
    /// Connections one client certificate may have open at once; one more is held unread
    /// for a while after the handshake, then closed.
    pub client_connections: usize,
}

/// Who may do what: the trusted keys and the apps.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Trusted keys; names and public keys are unique.
    pub keys: Vec<TrustedKey>,
    /// Apps this host may run.
    pub apps: BTreeMap<AppName, AppPolicy>,
    /// The rules per environment, and which one is this agent's.
    pub environments: Environments,
}

/// A trusted signing key.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Its label in the config.
    pub name: String,
    /// The public key file it was read from (a trust anchor: the agent guards it at start).
    pub file: PathBuf,
    /// The Ed25519 public key.
    pub key: PublicKey,
    /// SHA-256 of the raw public key.
    pub key_id: KeyId,
    /// The roles it holds.
    pub roles: BTreeSet<String>,
    /// Unix seconds before which its signatures do not count.
    pub not_before: Option<i64>,
    /// Unix seconds from which its signatures no longer count.
    pub not_after: Option<i64>,
    /// A revoked key's signatures never count.
    pub revoked: bool,
    /// Why it was revoked, if the config says.
    pub revoked_reason: Option<String>,
}

/// Why a trusted key's signatures do not count at some time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyInvalidity {
    /// The key is marked `revoked = true`.
    Revoked {
        /// `revoked_reason`, if given.
        reason: Option<String>,
    },
    /// Before the key's `not_before`.
    NotYetValid {
        /// Unix seconds.
        not_before: i64,
    },
    /// At or after the key's `not_after`.
    Expired {
        /// Unix seconds.
        not_after: i64,
    },
}

impl fmt::Display for KeyInvalidity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyInvalidity::Revoked { reason: Some(r) } if !r.is_empty() => {
                write!(f, "revoked: {r}")
            }
            KeyInvalidity::Revoked { .. } => f.write_str("revoked"),
            KeyInvalidity::NotYetValid { not_before } => {
                write!(f, "not valid before {}", format_time(*not_before))
            }
            KeyInvalidity::Expired { not_after } => {
                write!(f, "expired at {}", format_time(*not_after))
            }
        }
    }
}

impl TrustedKey {
    /// Why this key's signatures do not count at `now` (Unix seconds), or `None` when they
    /// do: it is not revoked and `not_before <= now < not_after`.
    pub fn invalid_at(&self, now: i64) -> Option<KeyInvalidity> {
        if self.revoked {
            return Some(KeyInvalidity::Revoked {
                reason: self.revoked_reason.clone(),
            });
        }
        if let Some(not_before) = self.not_before
            && now < not_before
        {
            return Some(KeyInvalidity::NotYetValid { not_before });
        }
        if let Some(not_after) = self.not_after
            && now >= not_after
        {
            return Some(KeyInvalidity::Expired { not_after });
        }
        None
    }

    /// Whether the key is valid at `now` but expires within `within` after it.
    pub fn expires_soon(&self, now: i64, within: Duration) -> bool {
        let within = i64::try_from(within.as_secs()).unwrap_or(i64::MAX);
        self.invalid_at(now).is_none()
            && self
                .not_after
                .is_some_and(|t| i128::from(t) - i128::from(now) <= i128::from(within))
    }
}

/// Keys expiring within this time are flagged by `gantry-agent policy`.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(30 * 24 * 3600);

/// Unix seconds as RFC 3339 UTC (`@SECS` when out of range).
pub fn format_time(secs: i64) -> String {
    match u64::try_from(secs)
        .ok()
        .and_then(|s| std::time::UNIX_EPOCH.checked_add(Duration::from_secs(s)))
    {
        Some(t) => humantime::format_rfc3339_seconds(t).to_string(),
        None => format!("@{secs}"),
    }
}

/// What one app may do on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPolicy {
    /// The app.
    pub name: AppName,
    /// The configured user name.
    pub user: String,
    /// The resolved identity its instances run as.
    pub run_as: RunAs,
    /// Ports its instances may listen on; instance i gets the i-th.
    pub ports: RangeInclusive<u16>,
    /// Most instances a job may ask for.
    pub max_instances: u32,
    /// SIGTERM → SIGKILL grace period.
    pub stop_timeout: Duration,
    /// Signatures required from distinct keys with role [`APPROVER_ROLE`], beyond the signer
    /// that holds the action's role.
    pub approvals: u32,
    /// Whether the deployer's own key may count as one of the approvals. Off by default: a
    /// job then needs `approvals` approver keys besides the one acting as the deployer.
    pub deployer_may_approve: bool,
    /// Action → roles, any of which may do it. An absent action is allowed to nobody.
    pub allow: BTreeMap<Action, BTreeSet<String>>,
    /// Roles whose keys may sign dispatches of fleet plans for this app
    /// (`[apps.NAME.allow] dispatch = ["orchestrator"]`); empty when nobody may. A dispatch
    /// only runs a plan that deployers and approvers signed: this role cannot deploy by itself.
    pub dispatch: BTreeSet<String>,
    /// The app's public address (`listen`): where the front door listens, or, with
    /// [`RouterConfig::Nginx`], nginx's address (informational). `None` when not configured.
    pub listen: Option<SocketAddr>,
    /// What routes connections to the app's instances.
    pub router: RouterConfig,
    /// What the built-in front door understands (`mode`); TCP for other routers.
    pub front_door_mode: FrontDoorMode,
    /// How long the front door holds a new connection no instance accepts
    /// ([`DEFAULT_HOLD_TIMEOUT`] unless `hold_timeout` says otherwise; 0: not at all).
    pub hold_timeout: Duration,
    /// Feature flags served to the app (`[apps.NAME.flags]`); `None`: the app has none.
    pub flags: Option<FlagsPolicy>,
    /// The resource limits each instance starts with (`[apps.NAME.limits]`).
    pub limits: InstanceLimits,
}

/// What each instance of an app may use: set as hard and soft rlimits in the child before
/// exec (case J9: one app cannot fork-bomb or exhaust the host on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceLimits {
    /// Open file descriptors per process (`RLIMIT_NOFILE`).
    pub max_open_files: u64,
    /// Processes and threads of the app's user, all its processes together (`RLIMIT_NPROC`;
    /// the kernel does not enforce it for root).
    pub max_processes: u64,
    /// Bytes of virtual address space per process (`RLIMIT_AS`); `None`: no limit of its own.
    pub max_memory: Option<u64>,
}

impl InstanceLimits {
    /// `max_open_files` when `[apps.NAME.limits]` leaves it out: the unit's `LimitNOFILE=`.
    pub const DEFAULT_OPEN_FILES: u64 = 65_536;
    /// `max_processes` when left out: the unit's `TasksMax=`.
    pub const DEFAULT_PROCESSES: u64 = 4096;
}

impl Default for InstanceLimits {
    fn default() -> Self {
        Self {
            max_open_files: Self::DEFAULT_OPEN_FILES,
            max_processes: Self::DEFAULT_PROCESSES,
            max_memory: None,
        }
    }
}

/// How long the front door holds a connection no instance accepts, by default.
pub const DEFAULT_HOLD_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest `hold_timeout` (the front door's limit).
pub const MAX_HOLD_TIMEOUT: Duration = Duration::from_secs(60);

/// What the built-in front door understands of the bytes it passes on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FrontDoorMode {
    /// Connections only: counts connections and bytes.
    #[default]
    Tcp,
    /// HTTP/1.1: also counts requests, responses by status class and their latency.
    Http,
}

impl FrontDoorMode {
    /// `tcp` or `http`, as in the config and on the front door's command line.
    pub fn as_str(self) -> &'static str {
        match self {
            FrontDoorMode::Tcp => "tcp",
            FrontDoorMode::Http => "http",
        }
    }

    /// Parses [`FrontDoorMode::as_str`]'s names.
    pub fn parse(s: &str) -> Option<FrontDoorMode> {
        match s {
            "tcp" => Some(FrontDoorMode::Tcp),
            "http" => Some(FrontDoorMode::Http),
            _ => None,
        }
    }
}

/// The role that may change anything in an app's flag set, unless `[apps.NAME.flags] allow`
/// names others.
pub const FLAGS_ROLE: &str = "flags";
/// The role that may only switch an app's flags off, unless `[apps.NAME.flags] kill_switch`
/// names others.
pub const KILL_SWITCH_ROLE: &str = "kill-switch";

/// An app's feature flags: where they are served and who may change them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlagsPolicy {
    /// The loopback address of the app's OFREP endpoint.
    pub listen: SocketAddr,
    /// Roles that may make any change.
    pub allow: BTreeSet<String>,
    /// Roles that may only set flags to `DISABLED` or drop their targeting (no quorum).
    pub kill_switch: BTreeSet<String>,
    /// A flag older than this is listed as due for removal.
    pub remove_after: Duration,
    /// Distinct valid keys holding an `allow` role a set needs (1 or more); not applied to a
    /// set admitted under a `kill_switch` role.
    pub approvals: u32,
}

/// What routes an app's connections to its instances (rolling, blue-green and canary need one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouterConfig {
    /// No router: neither `listen` nor `[apps.X.nginx]` is configured; only hot deploys.
    None,
    /// The agent's built-in front door, a TCP proxy process per app on [`AppPolicy::listen`].
    FrontDoor,
    /// An existing nginx: the agent writes an upstream file and runs the reload command.
    Nginx {
        /// The upstream file the agent writes atomically (included by nginx's config).
        upstream_file: PathBuf,
        /// Program and arguments that make nginx reload (e.g. `nginx -s reload`); never empty.
        reload_command: Vec<String>,
        /// Program and arguments that check nginx's config before reloading (e.g.
        /// `nginx -t -q`); never empty when set.
        check_command: Option<Vec<String>>,
        /// nginx's pid file (its `pid` directive): an apply is in effect once the master has
        /// started new workers, not as soon as the reload command returns.
        pid_file: Option<PathBuf>,
    },
}

impl RouterConfig {
    /// Whether there is a router at all (rolling, blue-green and canary need one).
    pub fn is_some(&self) -> bool {
        !matches!(self, RouterConfig::None)
    }

    /// Short name for reports: `none`, `front-door` or `nginx`.
    pub fn kind(&self) -> &'static str {
        match self {
            RouterConfig::None => "none",
            RouterConfig::FrontDoor => "front-door",
            RouterConfig::Nginx { .. } => "nginx",
        }
    }
}

/// The identity an app's instances run as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RunAs {
    /// Switch to this user in the child before exec: `setgroups(groups)`, `setgid`, `setuid`.
    User {
        /// User name.
        name: String,
        /// Its uid.
        uid: u32,
        /// Its primary gid.
        gid: u32,
        /// Its supplementary groups (including the primary one).
        groups: Vec<u32>,
        /// What lets the agent make the switch.
        by: SwitchedBy,
    },
    /// Keep the agent's own identity (the agent is not root and the app names its user). Such
    /// instances can read the agent's keys and write its data dir: see docs/security.md.
    CurrentUser {
        /// The agent's effective uid.
        uid: u32,
        /// The agent's effective gid.
        gid: u32,
    },
}

/// What lets the agent start an app's instances as another user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SwitchedBy {
    /// The agent runs as root.
    Root,
    /// The agent is not root but holds CAP_SETUID, CAP_SETGID and CAP_KILL (the systemd
    /// unit's `AmbientCapabilities=`); its instances end with no capabilities at all.
    Capabilities,
}

impl SwitchedBy {
    /// How reports name it: `root` or `capabilities`.
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchedBy::Root => "root",
            SwitchedBy::Capabilities => "capabilities",
        }
    }
}

impl RunAs {
    /// The uid the instances run with.
    pub fn uid(&self) -> u32 {
        match self {
            RunAs::User { uid, .. } | RunAs::CurrentUser { uid, .. } => *uid,
        }
    }

    /// The gid the instances run with.
    pub fn gid(&self) -> u32 {
        match self {
            RunAs::User { gid, .. } | RunAs::CurrentUser { gid, .. } => *gid,
        }
    }
}

/// The role whose holders' signatures count as approvals.
pub const APPROVER_ROLE: &str = "approver";

/// The `[apps.NAME.allow]` entry naming the roles that may sign dispatches of fleet plans.
pub const DISPATCH_ENTRY: &str = "dispatch";

impl Policy {
    /// The trusted key with this id.
    pub fn key(&self, key_id: &KeyId) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| &k.key_id == key_id)
    }

    /// Every role a key holds, plus [`APPROVER_ROLE`]: the roles `allow` may name.
    pub fn known_roles(&self) -> BTreeSet<String> {
        let mut roles: BTreeSet<String> = self
            .keys
            .iter()
            .flat_map(|k| k.roles.iter().cloned())
            .collect();
        roles.insert(APPROVER_ROLE.to_owned());
        roles
    }
}

impl AppPolicy {
    /// The roles that may do `action` (empty when nobody may).
    pub fn roles_for(&self, action: Action) -> BTreeSet<String> {
        self.allow.get(&action).cloned().unwrap_or_default()
    }

    /// The actions a signer holding `roles` may do on this app, in [`Action::ALL`] order.
    pub fn actions_for(&self, roles: &BTreeSet<String>) -> Vec<Action> {
        Action::ALL
            .into_iter()
            .filter(|a| {
                self.allow
                    .get(a)
                    .is_some_and(|need| !need.is_disjoint(roles))
            })
            .collect()
    }

    /// The port of instance `index`, if the range has one.
    pub fn port_of(&self, index: u32) -> Option<u16> {
        let port = u32::from(*self.ports.start()).checked_add(index)?;
        u16::try_from(port).ok().filter(|p| self.ports.contains(p))
    }

    /// How many ports the range holds.
    pub fn port_count(&self) -> u32 {
        u32::from(*self.ports.end()) + 1 - u32::from(*self.ports.start())
    }
}

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The config file.
    pub file: PathBuf,
    /// The entry, e.g. `apps.web.ports` or `keys[1].public_key`.
    pub entry: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.file.display(),
            self.entry,
            self.message
        )
    }
}

/// Everything wrong with a config file (never empty).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl ConfigErrors {
    /// The problem reported for `entry`, if any (tests and tooling).
    pub fn for_entry(&self, entry: &str) -> Option<&ConfigProblem> {
        self.0.iter().find(|p| p.entry == entry)
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        match self.0.first() {
            None => write!(f, "invalid config"),
            Some(first) => {
                write!(
                    f,
                    "{} has {n} problem{}:",
                    first.file.display(),
                    if n == 1 { "" } else { "s" }
                )?;
                for p in &self.0 {
                    write!(f, "\n  {}: {}", p.entry, p.message)?;
                }
                Ok(())
            }
        }
    }
}

impl Config {
    /// Reads, parses and validates the config file at `path`.
    ///
    /// `path` is made absolute against the working directory first, and relative paths in the
    /// file resolve against its directory, so every path in the result is absolute. Key files
    /// are read and parsed; app users are looked up in the user database.
    ///
    /// # Errors
    ///
    /// [`ConfigErrors`] listing every problem found, each with its entry.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        validate::load(
            path,
            &validate::HostIdentity::current(),
            validate::Mode::Full,
        )
    }

    /// Reads, parses and validates only what decides whether a job is admitted: the keys,
    /// the apps' roles and approvals, `agent_id` and the limits. For tools that evaluate a job
    /// against a policy elsewhere (`gantry job show --policy`), never for running an agent.
    ///
    /// TLS files and the audit signing key are not read, and app users are not looked up:
    /// every app's [`AppPolicy::run_as`] is then a placeholder `RunAs::User` with uid and gid
    /// `u32::MAX`, no groups and [`SwitchedBy::Root`]. `user = "root"` without `allow_root` is still refused.
    ///
    /// # Errors
    ///
    /// [`ConfigErrors`] listing every problem found in what is checked.
    pub fn load_policy_only(path: &Path) -> Result<Config, ConfigErrors> {
        validate::load(
            path,
            &validate::HostIdentity::current(),
            validate::Mode::PolicyOnly,
        )
    }
}
