//! `controller.toml`: the service's configuration, read in two stages (raw serde with unknown
//! fields refused, then validated values with paths resolved against the file's directory).
//!
//! ```toml
//! listen = "127.0.0.1:7600"
//! data_dir = "/var/lib/gantry-server"
//! replica_id = "ctl-1"                  # default: "<hostname>:<listen>"
//! orchestrator_key = "orchestrator.key" # signs dispatches; the agents give it the orchestrator role
//! # store = "postgres://gantry@db.internal/gantry"   # default: the embedded file in data_dir
//! # store_ca = "db-ca.pem"     # with it, the store connection is TLS verified against this CA
//!
//! [tls]
//! ca = "ca.pem"                # operators' client certificates chain to it
//! cert = "server.pem"          # the service's certificate
//! key = "server.key"
//! client_names = ["ops"]       # operator certificates valid for one of these names
//! agent_ca = "agents-ca.pem"   # default: ca; what the agents' certificates chain to
//! client_cert = "client.pem"   # default: cert; presented to the agents
//! client_key = "client.key"
//!
//! [lease]
//! period = "10s"
//!
//! [engine]
//! poll = "1s"
//! retry = "1s"
//! dispatch_validity = "60s"
//! refresh = "10s"              # how often each agent's Info is read again
//!
//! [audit]
//! max_file_bytes = 67108864    # a new audit file past this size (default 64 MiB)
//!
//! [dashboard]                  # optional: the read-only web dashboard
//! listen = "127.0.0.1:7680"    # the default when the section is there; keep it on loopback
//!
//! [promotion]                  # a plan for an environment waits for the same artifact to
//! production = ["staging"]     # have succeeded in these first (docs/fleet.md, "Promotion")
//! staging = ["demo"]
//!
//! [dial]                       # agents in dial-out mode connect here
//! listen = "0.0.0.0:7443"      # the service's cert/key; each agent's certificate must chain to its ca
//!
//! [[agents]]
//! id = "web-1"
//! addr = "10.0.0.11:7443"
//! # ca, client_cert, client_key: per-agent overrides of the [tls] ones
//!
//! [[agents]]
//! id = "web-7"                 # no addr: it dials in (needs [dial])
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why the config cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The TOML does not parse or has unknown fields.
    #[error("{}: {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        reason: String,
    },
    /// A value cannot be used.
    #[error("{}: {field}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field.
        field: String,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: String,
    data_dir: PathBuf,
    replica_id: Option<String>,
    orchestrator_key: PathBuf,
    store: Option<String>,
    store_ca: Option<PathBuf>,
    tls: RawTls,
    #[serde(default)]
    lease: RawLease,
    #[serde(default)]
    engine: RawEngine,
    dashboard: Option<RawDashboard>,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    agents: Vec<RawAgent>,
    dial: Option<RawDial>,
    #[serde(default)]
    promotion: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDial {
    listen: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    max_file_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDashboard {
    listen: Option<String>,
}

/// Where the dashboard listens when `[dashboard]` names no address.
pub const DEFAULT_DASHBOARD_LISTEN: &str = "127.0.0.1:7680";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_names: Vec<String>,
    agent_ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLease {
    period: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    poll: Option<String>,
    retry: Option<String>,
    dispatch_validity: Option<String>,
    refresh: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    id: String,
    addr: Option<String>,
    ca: Option<PathBuf>,
    client_cert: Option<PathBuf>,
    client_key: Option<PathBuf>,
}

/// Where the durable state lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    /// The embedded file in the data dir.
    Embedded,
    /// PostgreSQL at this URL.
    Postgres(String),
}

/// The mTLS material toward one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTls {
    /// The CA its certificate chains to.
    pub ca: PathBuf,
    /// The certificate the service presents.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
}

/// How the service and an agent meet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentMode {
    /// The agent listens; the service dials its `addr`.
    Listen,
    /// The agent dials in to the service's `[dial] listen` (its `addr` is empty).
    Dial,
}

impl AgentMode {
    /// `listen` or `dial`, as `fleet ls` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            AgentMode::Listen => "listen",
            AgentMode::Dial => "dial",
        }
    }
}

/// One configured agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentEntry {
    /// Its id (its certificate's name).
    pub id: String,
    /// host:port; empty for an agent that dials in.
    pub addr: String,
    /// Whether it listens or dials in.
    pub mode: AgentMode,
    /// How to reach it.
    pub tls: AgentTls,
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the gRPC listener binds.
    pub listen: SocketAddr,
    /// The data dir (embedded store, audit log, artifacts).
    pub data_dir: PathBuf,
    /// This replica's name in leases and audit entries.
    pub replica_id: String,
    /// The orchestrator key file.
    pub orchestrator_key: PathBuf,
    /// The store.
    pub store: StoreChoice,
    /// The CA PostgreSQL's certificate must chain to; with it the store connection is verified
    /// TLS.
    pub store_ca: Option<PathBuf>,
    /// The CA operators' certificates chain to.
    pub ca: PathBuf,
    /// The service's certificate and key.
    pub cert: PathBuf,
    /// Its key.
    pub key: PathBuf,
    /// Names an operator certificate must be valid for (one of them).
    pub client_names: Vec<String>,
    /// The lease period.
    pub lease_period: Duration,
    /// Gate and request polling.
    pub poll: Duration,
    /// Retry delay toward an unreachable agent.
    pub retry: Duration,
    /// How long a dispatch is valid.
    pub dispatch_validity: Duration,
    /// How often agents' `Info` is refreshed.
    pub refresh: Duration,
    /// The service's audit log starts a new file past this size.
    pub audit_max_file_bytes: u64,
    /// Where the read-only dashboard listens (`[dashboard] listen`); `None`: no dashboard.
    pub dashboard: Option<SocketAddr>,
    /// The agents.
    pub agents: Vec<AgentEntry>,
    /// Where agents in dial-out mode connect (`[dial] listen`); `None`: none can.
    pub dial_listen: Option<SocketAddr>,
    /// Which environments an artifact must have succeeded in before a plan for another
    /// (`[promotion]`).
    pub promotion: crate::promotion::Rules,
}

impl Config {
    /// Reads and validates `path`.
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text` as if read from `path` (relative paths resolve against its directory).
    ///
    /// # Errors
    /// [`ConfigError`].
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_owned()
            } else {
                base.join(p)
            }
        };
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            path: path.to_owned(),
            field: field.to_owned(),
            reason,
        };
        let listen: SocketAddr = raw.listen.parse().map_err(|e| {
            invalid(
                "listen",
                format!("{:?}: {e} (expected ip:port)", raw.listen),
            )
        })?;
        let dashboard = match &raw.dashboard {
            None => None,
            Some(d) => {
                let text = d.listen.as_deref().unwrap_or(DEFAULT_DASHBOARD_LISTEN);
                Some(text.parse::<SocketAddr>().map_err(|e| {
                    invalid(
                        "dashboard.listen",
                        format!("{text:?}: {e} (expected ip:port)"),
                    )
                })?)
            }
        };
        let duration = |field: &str, v: &Option<String>, default: Duration| match v {
            None => Ok(default),
            Some(s) => match humantime::parse_duration(s) {
                Ok(d) if !d.is_zero() => Ok(d),
                Ok(_) => Err(invalid(field, "must be more than 0".into())),
                Err(e) => Err(invalid(field, format!("{s:?}: {e}"))),
            },
        };
        let store = match raw.store.as_deref() {
            None | Some("" | "embedded") => StoreChoice::Embedded,
            Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                StoreChoice::Postgres(url.to_owned())
            }
            Some(other) => {
                return Err(invalid(
                    "store",
                    format!("{other:?}: expected \"embedded\" or a postgres:// URL"),
                ));
            }
        };
        if raw.store_ca.is_some() && store == StoreChoice::Embedded {
            return Err(invalid(
                "store_ca",
                "only a postgres:// store is reached over TLS".into(),
            ));
        }
        if raw.tls.client_names.is_empty() {
            return Err(invalid(
                "tls.client_names",
                "name at least one operator certificate name".into(),
            ));
        }
        let default_tls = AgentTls {
            ca: abs(raw.tls.agent_ca.as_deref().unwrap_or(&raw.tls.ca)),
            cert: abs(raw.tls.client_cert.as_deref().unwrap_or(&raw.tls.cert)),
            key: abs(raw.tls.client_key.as_deref().unwrap_or(&raw.tls.key)),
        };
        let mut agents: Vec<AgentEntry> = Vec::new();
        for (i, a) in raw.agents.iter().enumerate() {
            if a.id.is_empty() {
                return Err(invalid(&format!("agents[{i}].id"), "is empty".into()));
            }
            if agents.iter().any(|b| b.id == a.id) {
                return Err(invalid(
                    &format!("agents[{i}].id"),
                    format!("{:?} is listed twice", a.id),
                ));
            }
            let mode = match &a.addr {
                Some(addr) => {
                    gantry_client::connect::check_address(addr)
                        .map_err(|e| invalid(&format!("agents[{i}].addr"), e.to_string()))?;
                    AgentMode::Listen
                }
                None if raw.dial.is_none() => {
                    return Err(invalid(
                        &format!("agents[{i}].addr"),
                        format!(
                            "agent {:?} has no addr, so it must dial in, but there is no [dial] listen for it to reach",
                            a.id
                        ),
                    ));
                }
                None => AgentMode::Dial,
            };
            agents.push(AgentEntry {
                id: a.id.clone(),
                addr: a.addr.clone().unwrap_or_default(),
                mode,
                tls: AgentTls {
                    ca: a.ca.as_deref().map_or_else(|| default_tls.ca.clone(), abs),
                    cert: a
                        .client_cert
                        .as_deref()
                        .map_or_else(|| default_tls.cert.clone(), abs),
                    key: a
                        .client_key
                        .as_deref()
                        .map_or_else(|| default_tls.key.clone(), abs),
                },
            });
        }
        if raw.dial.is_some() && !agents.iter().any(|a| a.mode == AgentMode::Dial) {
            return Err(invalid(
                "dial.listen",
                "no [[agents]] entry dials in (an agent that dials in has no addr)".into(),
            ));
        }
        let dial_listen = match &raw.dial {
            None => None,
            Some(d) => Some(d.listen.parse::<SocketAddr>().map_err(|e| {
                invalid(
                    "dial.listen",
                    format!("{:?}: {e} (expected ip:port)", d.listen),
                )
            })?),
        };
        let promotion = crate::promotion::Rules::new(raw.promotion)
            .map_err(|(env, reason)| invalid(&format!("promotion.{env}"), reason))?;
        let replica_id = match raw.replica_id {
            Some(id) if !id.is_empty() => id,
            Some(_) => return Err(invalid("replica_id", "is empty".into())),
            None => format!(
                "{}:{}",
                std::fs::read_to_string("/etc/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "localhost".into()),
                listen
            ),
        };
        Ok(Self {
            listen,
            data_dir: abs(&raw.data_dir),
            replica_id,
            orchestrator_key: abs(&raw.orchestrator_key),
            store,
            store_ca: raw.store_ca.as_deref().map(abs),
            ca: abs(&raw.tls.ca),
            cert: abs(&raw.tls.cert),
            key: abs(&raw.tls.key),
            client_names: raw.tls.client_names,
            lease_period: duration("lease.period", &raw.lease.period, Duration::from_secs(10))?,
            poll: duration("engine.poll", &raw.engine.poll, Duration::from_secs(1))?,
            retry: duration("engine.retry", &raw.engine.retry, Duration::from_secs(1))?,
            dispatch_validity: duration(
                "engine.dispatch_validity",
                &raw.engine.dispatch_validity,
                Duration::from_secs(60),
            )?,
            refresh: duration(
                "engine.refresh",
                &raw.engine.refresh,
                Duration::from_secs(10),
            )?,
            audit_max_file_bytes: match raw.audit.max_file_bytes {
                Some(0) => {
                    return Err(invalid("audit.max_file_bytes", "must be at least 1".into()));
                }
                Some(n) => n,
                None => crate::audit::DEFAULT_MAX_FILE_BYTES,
            },
            dashboard,
            agents,
            dial_listen,
            promotion,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:7600"
data_dir = "data"
orchestrator_key = "/keys/orch.key"
[tls]
ca = "ca.pem"
cert = "server.pem"
key = "server.key"
client_names = ["ops"]
[lease]
period = "3s"
[[agents]]
id = "web-1"
addr = "127.0.0.1:7001"
[[agents]]
id = "web-2"
addr = "127.0.0.1:7002"
ca = "/other/ca.pem"
"#;

    #[test]
    fn a_config_resolves_paths_and_defaults() {
        let c = Config::parse(Path::new("/etc/gantry/controller.toml"), GOOD).unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/gantry/data"));
        assert_eq!(c.orchestrator_key, Path::new("/keys/orch.key"));
        assert_eq!(c.store, StoreChoice::Embedded);
        assert_eq!(c.lease_period, Duration::from_secs(3));
        assert_eq!(c.poll, Duration::from_secs(1));
        assert_eq!(c.audit_max_file_bytes, 64 * 1024 * 1024);
        let small = GOOD.replace("[lease]", "[audit]\nmax_file_bytes = 4096\n[lease]");
        let small = Config::parse(Path::new("/c.toml"), &small).unwrap();
        assert_eq!(small.audit_max_file_bytes, 4096);
        assert_eq!(c.agents[0].tls.ca, Path::new("/etc/gantry/ca.pem"));
        assert_eq!(c.agents[0].tls.cert, Path::new("/etc/gantry/server.pem"));
        assert_eq!(c.agents[1].tls.ca, Path::new("/other/ca.pem"));
        assert!(
            c.replica_id.ends_with(":127.0.0.1:7600"),
            "{}",
            c.replica_id
        );
    }

    #[test]
    fn bad_values_are_named_by_field() {
        let p = Path::new("/c.toml");
        for (edit, says) in [
            (GOOD.replace("\"3s\"", "\"soon\""), "lease.period"),
            (
                GOOD.replace("127.0.0.1:7002", "localhost"),
                "agents[1].addr",
            ),
            (GOOD.replace("web-2", "web-1"), "listed twice"),
            (GOOD.replace("[\"ops\"]", "[]"), "tls.client_names"),
            (
                GOOD.replace("listen = \"127.0.0.1:7600\"", "listen = \"x\""),
                "listen",
            ),
            (format!("store = \"mysql://x\"\n{GOOD}"), "store"),
            (format!("colour = 1\n{GOOD}"), "unknown field"),
            (
                GOOD.replace("[lease]", "[audit]\nmax_file_bytes = 0\n[lease]"),
                "audit.max_file_bytes: must be at least 1",
            ),
            (
                GOOD.replace("addr = \"127.0.0.1:7002\"\n", ""),
                "no [dial] listen",
            ),
            (
                format!("{GOOD}[dial]\nlisten = \"127.0.0.1:7443\"\n"),
                "dial.listen: no [[agents]] entry dials in",
            ),
            (
                format!(
                    "{}[dial]\nlisten = \"nowhere\"\n",
                    GOOD.replace("addr = \"127.0.0.1:7002\"\n", "")
                ),
                "dial.listen: \"nowhere\"",
            ),
        ] {
            let e = Config::parse(p, &edit).unwrap_err().to_string();
            assert!(e.contains(says), "{says}: {e}");
        }
        let dialled = GOOD.replace("addr = \"127.0.0.1:7002\"\n", "");
        let d = Config::parse(
            p,
            &format!("{dialled}[dial]\nlisten = \"127.0.0.1:7443\"\n"),
        )
        .unwrap();
        assert_eq!(d.dial_listen, Some("127.0.0.1:7443".parse().unwrap()));
        assert_eq!(d.agents[0].mode, AgentMode::Listen);
        assert_eq!(d.agents[1].mode, AgentMode::Dial);
        assert_eq!(d.agents[1].addr, "");
        let pg = Config::parse(p, &format!("store = \"postgres://u@h/db\"\n{GOOD}")).unwrap();
        assert_eq!(pg.store, StoreChoice::Postgres("postgres://u@h/db".into()));
        assert_eq!(pg.store_ca, None);
        let tls = format!("store = \"postgres://u@h/db\"\nstore_ca = \"db-ca.pem\"\n{GOOD}");
        let tls = Config::parse(Path::new("/etc/gantry/c.toml"), &tls).unwrap();
        assert_eq!(
            tls.store_ca.as_deref(),
            Some(Path::new("/etc/gantry/db-ca.pem"))
        );
        let e = Config::parse(p, &format!("store_ca = \"db-ca.pem\"\n{GOOD}"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("store_ca: only a postgres:// store"), "{e}");
    }

    #[test]
    fn promotion_rules_are_read_and_a_loop_is_refused_by_its_entry() {
        let p = Path::new("/c.toml");
        assert!(Config::parse(p, GOOD).unwrap().promotion.is_empty());
        let with = |table: &str| GOOD.replace("[lease]", &format!("[promotion]\n{table}\n[lease]"));
        let c =
            Config::parse(p, &with("production = [\"staging\"]\nstaging = [\"demo\"]")).unwrap();
        assert_eq!(c.promotion.before("production"), ["staging".to_owned()]);
        assert_eq!(c.promotion.before("staging"), ["demo".to_owned()]);
        let e = Config::parse(
            p,
            &with("production = [\"staging\"]\nstaging = [\"production\"]"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "/c.toml: promotion.production: the environments loop: production → staging → production"
        );
    }

    #[test]
    fn the_dashboard_is_off_unless_configured_and_defaults_to_loopback() {
        let p = Path::new("/c.toml");
        assert_eq!(Config::parse(p, GOOD).unwrap().dashboard, None);
        // Tables after [[agents]] would belong to it: [dashboard] goes before.
        let with = |section: &str| GOOD.replace("[lease]", &format!("{section}\n[lease]"));
        let on = Config::parse(p, &with("[dashboard]")).unwrap();
        assert_eq!(
            on.dashboard,
            Some(DEFAULT_DASHBOARD_LISTEN.parse().unwrap())
        );
        assert!(on.dashboard.unwrap().ip().is_loopback());
        let at = Config::parse(p, &with("[dashboard]\nlisten = \"127.0.0.1:0\"")).unwrap();
        assert_eq!(at.dashboard, Some("127.0.0.1:0".parse().unwrap()));
        let e = Config::parse(p, &with("[dashboard]\nlisten = \"nowhere\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dashboard.listen"), "{e}");
        let e = Config::parse(p, &with("[dashboard]\nport = 1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }
}
