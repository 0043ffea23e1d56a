//! The command line of the controller service's commands (`server`, `rollout
//! start|status|pause|resume|abort` (their variants are in `cli::rollout`), `fleet ls|audit|policy`), as
//! clap sees it.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// How to reach the controller service over mutual TLS.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerConnArgs {
    /// The service's address, host:port.
    #[arg(long = "server", value_name = "ADDR", env = "GANTRY_SERVER")]
    pub server: Option<String>,
    /// The name the service's certificate must carry.
    #[arg(
        long,
        value_name = "NAME",
        env = "GANTRY_SERVER_NAME",
        default_value = "gantry-server"
    )]
    pub server_name: String,
    /// CA certificate (PEM) the service's certificate must chain to.
    #[arg(long, value_name = "FILE", env = "GANTRY_CA")]
    pub ca: Option<PathBuf>,
    /// The operator's client certificate (PEM); its name is who the service's audit log says
    /// acted.
    #[arg(long, value_name = "FILE", env = "GANTRY_CERT")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", env = "GANTRY_CERT_KEY")]
    pub cert_key: Option<PathBuf>,
}

/// `gantry server`.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// The service's config (controller.toml; see docs/fleet.md). With `[dashboard]` in it, a
    /// read-only web dashboard of the rollouts listens on `dashboard.listen` (loopback:
    /// 127.0.0.1:7680 by default).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
}

/// `gantry rollout start`.
#[derive(Debug, Args)]
pub struct RolloutStartArgs {
    /// How to reach the service.
    #[command(flatten)]
    pub conn: ServerConnArgs,
    /// The signed plan file (the protobuf encoding of gantry.v1.SignedPlan).
    #[arg(value_name = "PLAN")]
    pub plan: PathBuf,
    /// The release's artifact: streamed to the service (checked against the plan's digest),
    /// which uploads it to each agent that lacks it.
    #[arg(long, value_name = "FILE")]
    pub artifact: Option<PathBuf>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `gantry rollout status`: the rings and hosts, and under each host the app's golden signals
/// per cohort as its agent reports them now (asked by the service at each call, 2 s per agent).
#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// How to reach the service.
    #[command(flatten)]
    pub conn: ServerConnArgs,
    /// The rollout (its plan id).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Follow it until it ends (a live view on a terminal, one JSON object per change
    /// otherwise, the signals not counting as a change); exits 0 when it succeeded, 1 when it
    /// ended otherwise.
    #[arg(long)]
    pub watch: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `gantry rollout pause|resume|abort`.
#[derive(Debug, Args)]
pub struct RolloutIdArgs {
    /// How to reach the service.
    #[command(flatten)]
    pub conn: ServerConnArgs,
    /// The rollout (its plan id).
    #[arg(value_name = "ID")]
    pub id: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `gantry fleet ls|audit`.
#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// The inventory: agents, labels, versions, reachability, last witnessed checkpoint.
    Ls(FleetLsArgs),
    /// Check or read audit logs across the fleet.
    #[command(subcommand)]
    Audit(FleetAuditCommand),
    /// Per agent, which keys may do what (its effective policy, checked against the config
    /// digest its own audit log records at start) and which plans it accepted. Exit 1 when an
    /// agent's policy cannot be vouched for.
    Policy(FleetPolicyArgs),
}

/// `gantry fleet policy`.
#[derive(Debug, Args)]
pub struct FleetPolicyArgs {
    /// How to reach the service.
    #[command(flatten)]
    pub conn: ServerConnArgs,
    /// Only this agent (repeatable); default every agent in the inventory.
    #[arg(long = "agent", value_name = "ID")]
    pub agents: Vec<String>,
    /// Print JSON, one object per agent with its whole policy document.
    #[arg(long)]
    pub json: bool,
}

/// `gantry fleet ls`.
#[derive(Debug, Args)]
pub struct FleetLsArgs {
    /// How to reach the service.
    #[command(flatten)]
    pub conn: ServerConnArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `gantry fleet audit verify|tail`.
#[derive(Debug, Subcommand)]
pub enum FleetAuditCommand {
    /// Verify every agent's audit log against the checkpoint the service witnessed from it.
    Verify(FleetLsArgs),
    /// Every agent's audit entries interleaved by time, each line naming its agent and checked
    /// against its chain as it comes (exit 1 if any is not); `--service` for the service's own.
    Tail(FleetTailArgs),
}

/// `gantry fleet audit tail`.
#[derive(Debug, Args)]
pub struct FleetTailArgs {
    /// How to reach the service.
    #[command(flatten)]
    pub conn: ServerConnArgs,
    /// Keep printing new entries.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many of the last entries (of each agent) to start with.
    #[arg(long, value_name = "N", default_value = "20")]
    pub last: u32,
    /// The service's own audit log (its control actions) instead of the agents'.
    #[arg(long)]
    pub service: bool,
    /// Print the raw lines (JSON).
    #[arg(long)]
    pub json: bool,
}
