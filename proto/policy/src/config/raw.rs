//! The config file as written: serde structs that mirror the TOML one to one.
//!
//! Nothing here is validated beyond TOML types and unknown keys (`deny_unknown_fields`
//! everywhere, so a misspelt key is an error, never a silently ignored setting). Durations,
//! port ranges, addresses and paths stay strings so that [`super::Config::load`] can check them
//! all and report every problem with its entry name at once.
//!
//! The same types write a config: [`RawConfig::new`] and [`RawApp::new`] start from the
//! layout that `gantry quickstart` and the tests use, fields are set directly, and
//! [`RawConfig::to_toml`] renders the file. Tests, benchmarks and the quickstart thus write the
//! agent's TOML through the types the agent reads it with, never through a text template.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::Action;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// This agent's name; must be a DNS name (it is a SAN of the agent's certificate).
    pub agent_id: String,
    /// `host:port` to listen on; absent when the agent dials out (`[controller] dial`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Where state, artifacts, releases, the audit log and the replay store live.
    pub data_dir: String,
    /// The environment this host belongs to (`production`, `staging`, `demo` ...), reported in
    /// `Info`; fleet plans name the environment they are for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    /// Labels of this host (`ring = "0"`, `region = "eu-west"` ...), reported in `Info`;
    /// fleet ring selectors match on them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Mutual TLS.
    pub tls: RawTls,
    /// The audit log.
    #[serde(default)]
    pub audit: RawAudit,
    /// Size and time limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Trusted signing keys.
    #[serde(default)]
    pub keys: Vec<RawKey>,
    /// Apps this host may run, by name.
    #[serde(default)]
    pub apps: BTreeMap<String, RawApp>,
    /// `[metrics]`: serve Prometheus metrics; absent: no metrics listener.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<RawMetrics>,
    /// Rules per environment (`[environments.production]`); the agent's own is in force.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environments: BTreeMap<String, RawEnvironment>,
    /// `[controller]`: dial out to the controller service instead of listening.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub controller: Option<RawController>,
}

/// `[controller]`: the agent keeps one outbound mutual-TLS connection to the controller
/// service and serves its gRPC API over it; it listens on nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawController {
    /// `host:port` of the service's dial-in listener.
    pub dial: String,
    /// The DNS name the service's certificate must carry.
    pub server_name: String,
    /// The CA the service's certificate chains to; default `tls.ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// Exit (non-zero, apps left running) once the link has been down this long (humantime);
    /// absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_on_disconnect_after: Option<String>,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    /// `IP:port` of the plain-HTTP `/metrics` listener (which also serves the read-only
    /// `/dashboard`).
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

/// Where `/metrics` listens when `[metrics]` names no address: loopback only.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

fn default_metrics_listen() -> String {
    DEFAULT_METRICS_LISTEN.to_owned()
}

/// One `[environments.NAME]` table. Left out, a setting keeps the environment's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEnvironment {
    /// Whether versions with a pre-release label (`1.2.3-rc.1`) may be deployed; default
    /// false in `production`, true elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_prerelease: Option<bool>,
    /// Gates (`tests`, `coverage`, `security`, `performance`) a deploy must carry passed
    /// evidence of, signed by a key with role `ci`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require_gates: Vec<String>,
    /// Approvals every app needs here at least, whatever its own `approvals` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_approvals: Option<u32>,
}

/// `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// CA that client certificates must chain to.
    pub ca: String,
    /// The agent's certificate chain (PEM).
    pub cert: String,
    /// The agent's private key (PEM).
    pub key: String,
    /// Controllers allowed to connect, by a DNS name in their certificate.
    #[serde(default)]
    pub client_names: Vec<String>,
    /// Controllers allowed to connect, by lowercase hex SHA-256 of their certificate (DER).
    #[serde(default)]
    pub client_fingerprints: Vec<String>,
    /// The CA's certificate revocation list (PEM or DER), checked at every handshake and
    /// reloaded when it changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl: Option<String>,
}

/// `[audit]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAudit {
    /// The agent's own Ed25519 key (PKCS#8 PEM, mode 0600), signs checkpoints.
    pub signing_key: String,
    /// A checkpoint every this many entries.
    pub checkpoint_every: u64,
    /// And at least every this long (humantime, e.g. `"60s"`).
    pub checkpoint_interval: String,
    /// Rotate a log file past this size.
    pub max_file_bytes: u64,
    /// Refuse jobs below this much free space on the audit filesystem.
    pub min_free_bytes: u64,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            signing_key: "keys/agent.key".to_owned(),
            checkpoint_every: 64,
            checkpoint_interval: "60s".to_owned(),
            max_file_bytes: 64 * 1024 * 1024,
            min_free_bytes: 16 * 1024 * 1024,
        }
    }
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// Largest encoded job accepted.
    pub max_job_bytes: u64,
    /// Largest artifact accepted.
    pub max_artifact_bytes: u64,
    /// Most bytes one release may unpack to (all its regular files together).
    pub max_unpacked_bytes: u64,
    /// Most bytes the artifact store may hold, uploads in progress included.
    pub max_store_bytes: u64,
    /// Most bytes the uploads of one client certificate may hold in the store while no kept
    /// release uses them (partial uploads included).
    pub max_unused_bytes_per_client: u64,
    /// How long an artifact no kept release uses stays in the store (humantime), so an
    /// upload survives until the job that deploys it arrives.
    pub unused_artifact_ttl: String,
    /// Longest validity window (`expires_at - not_before`), humantime.
    pub max_validity: String,
    /// Tolerated clock difference for `not_before`, humantime.
    pub clock_skew: String,
    /// Longest validity window of a fleet plan, humantime.
    pub max_plan_validity: String,
    /// Longest validity window of a dispatch, humantime.
    pub max_dispatch_validity: String,
    /// Releases kept on disk per app.
    pub releases_kept: u64,
    /// Rejected submits (and identical resubmissions) one client certificate may have in a
    /// burst before its connections are paused.
    pub client_rejections_burst: u32,
    /// Rejected submits a second one client certificate may have in the long run.
    pub client_rejections_per_second: u32,
    /// Connections one client certificate may have open at once.
    pub client_connections: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_job_bytes: 64 * 1024,
            max_artifact_bytes: 512 * 1024 * 1024,
            max_unpacked_bytes: 2 * 1024 * 1024 * 1024,
            max_store_bytes: 8 * 1024 * 1024 * 1024,
            max_unused_bytes_per_client: 2 * 1024 * 1024 * 1024,
            unused_artifact_ttl: "1h".to_owned(),
            max_validity: "1h".to_owned(),
            clock_skew: "30s".to_owned(),
            max_plan_validity: "14d".to_owned(),
            max_dispatch_validity: "5m".to_owned(),
            releases_kept: 5,
            client_rejections_burst: 100,
            client_rejections_per_second: 10,
            client_connections: 64,
        }
    }
}

/// One `[[keys]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// A label for messages and the policy report.
    pub name: String,
    /// SPKI PEM file of the Ed25519 public key.
    pub public_key: String,
    /// Roles this key holds.
    #[serde(default)]
    pub roles: Vec<String>,
    /// RFC 3339 UTC time before which the key's signatures do not count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
    /// RFC 3339 UTC time from which the key's signatures no longer count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    /// A revoked key's signatures never count.
    #[serde(default)]
    pub revoked: bool,
    /// Why it was revoked (shown in rejections and the policy report).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_reason: Option<String>,
}

/// One `[apps.NAME]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    /// Unix user the instances run as.
    pub user: String,
    /// Must be true for `user = "root"`.
    #[serde(default)]
    pub allow_root: bool,
    /// `"A-B"` (or a single port): instance i listens on A + i.
    pub ports: String,
    /// Upper bound on a job's instance count.
    #[serde(default = "default_max_instances")]
    pub max_instances: u32,
    /// SIGTERM → SIGKILL grace, humantime.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: String,
    /// Extra signatures required from distinct keys with role `approver`.
    #[serde(default)]
    pub approvals: u32,
    /// Whether the deployer's own key may count as one of the approvals (default: never).
    #[serde(default)]
    pub deployer_may_approve: bool,
    /// `IP:port` of the app's front door (or nginx's address with `[apps.NAME.nginx]`).
    // Before `allow`: a TOML table's plain values are written before its sub-tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// What the front door understands: `"tcp"` (the default: connections) or `"http"`
    /// (HTTP/1.1 requests, counted by status and latency for analysis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Front door: how long a new connection waits while no instance accepts (between the
    /// old ones stopping and the new ones listening in a hot deploy), humantime; default 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_timeout: Option<String>,
    /// Action → roles that may do it.
    #[serde(default)]
    pub allow: BTreeMap<String, Vec<String>>,
    /// Use an existing nginx instead of the built-in front door.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nginx: Option<RawNginx>,
    /// Serve the app signed feature flags over OFREP (`[apps.NAME.flags]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flags: Option<RawFlags>,
    /// The resource limits every instance starts with (`[apps.NAME.limits]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<RawAppLimits>,
}

/// `[apps.NAME.limits]`: what each instance may use, set as its hard and soft rlimits before
/// exec; a limit left out takes its default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAppLimits {
    /// Open file descriptors per process (`RLIMIT_NOFILE`), default 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_open_files: Option<u64>,
    /// Processes and threads of the app's user, all its processes together (`RLIMIT_NPROC`),
    /// default 4096.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_processes: Option<u64>,
    /// Bytes of virtual address space per process (`RLIMIT_AS`), default none (the unit's
    /// `MemoryMax=` bounds the agent and every app together).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_memory: Option<u64>,
}

/// `[apps.NAME.flags]`: where the app's instances evaluate flags, and who may change them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFlags {
    /// Loopback `IP:port` of the app's OFREP endpoint.
    pub listen: String,
    /// Roles that may make any change to the app's flag set (default `["flags"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Vec<String>>,
    /// Roles that may only switch flags off (default `["kill-switch"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_switch: Option<Vec<String>>,
    /// Age after which `gantry flags show` lists a flag as due for removal, humantime
    /// (default `90d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remove_after: Option<String>,
    /// Distinct keys with an `allow` role that must sign a flag set (default 1); a set signed
    /// by a `kill_switch` role only needs one signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvals: Option<u32>,
}

impl RawFlags {
    /// OFREP on `listen`, the default roles and lifecycle.
    pub fn new(listen: &str) -> Self {
        Self {
            listen: listen.to_owned(),
            allow: None,
            kill_switch: None,
            remove_after: None,
            approvals: None,
        }
    }
}

/// `[apps.NAME.nginx]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNginx {
    /// The upstream file the agent writes (nginx's config includes it).
    pub upstream_file: String,
    /// Program and arguments that reload nginx.
    pub reload_command: Vec<String>,
    /// Program and arguments that check nginx's config before a reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check_command: Option<Vec<String>>,
    /// nginx's pid file: an apply waits until the master has started new workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_file: Option<String>,
}

fn default_max_instances() -> u32 {
    1
}

fn default_stop_timeout() -> String {
    "10s".to_owned()
}

impl RawConfig {
    /// A config for agent `agent_id` in the usual layout, paths relative to the file: listen
    /// on `127.0.0.1:0`, data in `data/`, TLS files in `pki/` (`ca.pem`, `agent.pem`,
    /// `agent.key`), the audit signing key `keys/agent.key`, default audit settings and
    /// limits, and no controllers, keys or apps yet.
    pub fn new(agent_id: &str) -> Self {
        Self {
            agent_id: agent_id.to_owned(),
            listen: Some("127.0.0.1:0".to_owned()),
            data_dir: "data".to_owned(),
            environment: None,
            labels: BTreeMap::new(),
            tls: RawTls {
                ca: "pki/ca.pem".to_owned(),
                cert: "pki/agent.pem".to_owned(),
                key: "pki/agent.key".to_owned(),
                client_names: Vec::new(),
                client_fingerprints: Vec::new(),
                crl: None,
            },
            audit: RawAudit::default(),
            limits: RawLimits::default(),
            keys: Vec::new(),
            apps: BTreeMap::new(),
            metrics: None,
            environments: BTreeMap::new(),
            controller: None,
        }
    }

    /// Dials out to the controller service at `addr`, whose certificate must name
    /// `server_name`, instead of listening (`listen` is removed).
    #[must_use]
    pub fn dial(mut self, addr: &str, server_name: &str) -> Self {
        self.listen = None;
        self.controller = Some(RawController {
            dial: addr.to_owned(),
            server_name: server_name.to_owned(),
            ca: None,
            exit_on_disconnect_after: None,
        });
        self
    }

    /// Admits controllers whose certificate names `name` (`tls.client_names`).
    #[must_use]
    pub fn client_name(mut self, name: &str) -> Self {
        self.tls.client_names.push(name.to_owned());
        self
    }

    /// Admits the controller certificate with this SHA-256 fingerprint
    /// (`tls.client_fingerprints`).
    #[must_use]
    pub fn client_fingerprint(mut self, fingerprint: &str) -> Self {
        self.tls.client_fingerprints.push(fingerprint.to_owned());
        self
    }

    /// Trusts the public key in file `public_key` as `name`, with `roles` (`[[keys]]`).
    #[must_use]
    pub fn key(mut self, name: &str, public_key: &str, roles: &[&str]) -> Self {
        self.keys.push(RawKey {
            name: name.to_owned(),
            public_key: public_key.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            not_before: None,
            not_after: None,
            revoked: false,
            revoked_reason: None,
        });
        self
    }

    /// Adds (or replaces) app `name` (`[apps.NAME]`).
    #[must_use]
    pub fn app(mut self, name: &str, app: RawApp) -> Self {
        self.apps.insert(name.to_owned(), app);
        self
    }

    /// The `[[keys]]` entry named `name`, to change it.
    pub fn key_mut(&mut self, name: &str) -> Option<&mut RawKey> {
        self.keys.iter_mut().find(|k| k.name == name)
    }

    /// The file's text.
    ///
    /// # Errors
    ///
    /// The TOML serializer's error (not expected for these types: every map key is a string
    /// and every optional value is left out when unset).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

impl RawApp {
    /// An app run as `user` on the ports `ports` (`"A-B"`), with the defaults of a file that
    /// leaves everything else out: one instance, a 10 s stop timeout, no approvals, no router,
    /// and nobody allowed to do anything yet.
    pub fn new(user: &str, ports: &str) -> Self {
        Self {
            user: user.to_owned(),
            allow_root: false,
            ports: ports.to_owned(),
            max_instances: default_max_instances(),
            stop_timeout: default_stop_timeout(),
            approvals: 0,
            deployer_may_approve: false,
            listen: None,
            mode: None,
            hold_timeout: None,
            allow: BTreeMap::new(),
            nginx: None,
            flags: None,
            limits: None,
        }
    }

    /// Lets keys holding one of `roles` do `action` (`[apps.NAME.allow]`).
    #[must_use]
    pub fn allow(mut self, action: Action, roles: &[&str]) -> Self {
        self.allow.insert(
            action.as_str().to_owned(),
            roles.iter().map(|r| (*r).to_owned()).collect(),
        );
        self
    }

    /// Lets keys holding one of `roles` sign dispatches of fleet plans for this app
    /// (`[apps.NAME.allow] dispatch = [...]`).
    #[must_use]
    pub fn allow_dispatch(mut self, roles: &[&str]) -> Self {
        self.allow.insert(
            crate::config::DISPATCH_ENTRY.to_owned(),
            roles.iter().map(|r| (*r).to_owned()).collect(),
        );
        self
    }
}
