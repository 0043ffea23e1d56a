//! `gantry rollout plan|show|sign|approve`: fleet plan files, as clap sees them (raw).

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::JobSpecArgs;

/// `gantry rollout ...`: plan files (the `gantry.v1.SignedPlan` protobuf encoding).
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum RolloutCommand {
    /// Write an unsigned plan file: one app, one release, ordered rings, an environment.
    Plan(RolloutPlanArgs),
    /// Print a plan file: every field, its digest and signatures; with --policy, what an
    /// agent with that config would say of it.
    Show(RolloutShowArgs),
    /// Add a signature to a plan file, in place.
    Sign(RolloutSignArgs),
    /// Add an approval: a signature by an approver's key, in place.
    Approve(RolloutApproveArgs),
    /// Hand a signed plan to the controller service, which runs it ring by ring.
    Start(crate::fleet_cli::RolloutStartArgs),
    /// Show a rollout on the controller service: rings, hosts, per-host step, bake time left.
    Status(crate::fleet_cli::RolloutStatusArgs),
    /// Stop dispatching after the steps in flight (audited with your certificate's name).
    Pause(crate::fleet_cli::RolloutIdArgs),
    /// Go on after a pause.
    Resume(crate::fleet_cli::RolloutIdArgs),
    /// Stop dispatching and roll back per the current ring's on_failure.
    Abort(crate::fleet_cli::RolloutIdArgs),
}

/// `gantry rollout plan`: the release flags are those of `job create`.
#[derive(Debug, Args)]
#[command(
    mut_arg("valid_for", |a| a
        .default_value("7d")
        .help("How long the signed plan stays valid after --not-before (at most the agents' limits.max_plan_validity)")),
    mut_arg("action", |a| a.hide(true)),
    mut_arg("job_id", |a| a.hide(true)),
)]
pub struct RolloutPlanArgs {
    /// Plan file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The plan's id; job ids on each host derive from it. Default
    /// `<app>-<version>-<unix ms>-<random hex>`.
    #[arg(long, value_name = "ID")]
    pub plan_id: Option<String>,
    /// The environment of the agents the plan is for (an agent whose config names another
    /// refuses it). Default: none, for agents whose config names none.
    #[arg(
        long = "environment",
        value_name = "ENV",
        default_value = "",
        hide_default_value = true
    )]
    pub environment: String,
    /// A ring, in order (repeatable): comma-separated KEY=VALUE of name=NAME, ids=A;B,
    /// labels=K:V;K:V, max_parallel=N|P%, min_healthy=N|P%, bake=DURATION,
    /// on_failure=halt|rollback_ring|rollback_all, max_restarts=N, max_conn_errors=N,
    /// max_unhealthy_hosts=N, host_deadline=DURATION, flag_percent=PCT (with a canary's
    /// --canary-flag: the percent of users this ring's hosts serve the flag once promoted,
    /// never below an earlier ring's) (name and ids or labels required).
    #[arg(long = "ring", value_name = "SPEC")]
    pub rings: Vec<String>,
    /// Rings from a TOML file (`[[ring]]` tables with the same keys); before any --ring.
    #[arg(long = "rings", value_name = "FILE")]
    pub rings_file: Option<PathBuf>,
    /// The release artifact (.tar.gz): its SHA-256 and size go into the plan.
    #[arg(long, value_name = "FILE")]
    pub artifact: Option<PathBuf>,
    /// The release, as for `job create`.
    #[command(flatten)]
    pub spec: JobSpecArgs,
}

/// `gantry rollout sign` and `rollout approve`.
#[derive(Debug, Args)]
pub struct RolloutSignArgs {
    /// Private key (PKCS#8 PEM, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The plan file, rewritten with the new signature.
    #[arg(value_name = "PLANFILE")]
    pub plan: PathBuf,
}

/// `gantry rollout approve`.
#[derive(Debug, Args)]
pub struct RolloutApproveArgs {
    /// The approver's key and the plan file.
    #[command(flatten)]
    pub sign: RolloutSignArgs,
    /// What the approver says with the approval (e.g. "explored the demo; ok to ship"),
    /// signed by the same key over the plan's digest; `rollout show` prints it.
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

/// `gantry rollout show`.
#[derive(Debug, Args)]
pub struct RolloutShowArgs {
    /// Public keys to check the signatures against (repeatable).
    #[arg(long = "pubkey", value_name = "FILE")]
    pub pubkeys: Vec<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// An agent's config: show whether it would admit dispatches of this plan (signatures,
    /// role and approvals as for a deploy, window, environment, its ring, who may dispatch),
    /// and exit 3 when a requirement is missing. Only its keys, apps and placement are read.
    #[arg(long = "policy", value_name = "AGENT_TOML")]
    pub policy: Option<PathBuf>,
    /// The plan file.
    #[arg(value_name = "PLANFILE")]
    pub plan: PathBuf,
}
