//! The command line, as clap sees it: raw flags and arguments. Commands validate them into
//! typed values (stage two) before doing anything.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub mod rollout;

pub use crate::fleet_cli::{FleetAuditCommand, FleetCommand, ServerArgs};
pub use rollout::{RolloutCommand, RolloutPlanArgs, RolloutShowArgs, RolloutSignArgs};

/// The exit-code paragraph of `gantry --help` (the contract: see [`crate::exit::Exit`]).
pub const EXIT_CODES: &str = "Exit codes: 0 success; 1 the job failed or was rolled back; 2 usage or \
input error, or the agent could not be reached or failed on its side (its audit log is full, \
say: not a refusal, a retry may pass); 3 rejected by the agent.";

/// `gantry`: create, sign and submit deploy jobs to a Gantry agent; watch them; verify its audit log.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, about, long_about = None, after_help = EXIT_CODES)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether the command asked for `--json`: then an error, too, is one JSON object on
    /// stdout (see [`crate::report::error_json`]).
    pub fn json(&self) -> bool {
        match &self.command {
            Command::Job(JobCommand::Show(a)) => a.json,
            Command::Job(JobCommand::Submit(a)) => a.json,
            Command::Job(JobCommand::Watch(a)) => a.json,
            Command::Job(JobCommand::Create(_) | JobCommand::Sign(_) | JobCommand::Approve(_)) => {
                false
            }
            Command::Rollout(RolloutCommand::Show(a)) => a.json,
            Command::Rollout(
                RolloutCommand::Plan(_) | RolloutCommand::Sign(_) | RolloutCommand::Approve(_),
            ) => false,
            Command::Deploy(a) => a.json,
            Command::Rollback(a) => a.action.json,
            Command::Restart(a) | Command::Stop(a) | Command::Promote(a) | Command::Abort(a) => {
                a.json
            }
            Command::Status(a) => a.json,
            Command::History(a) => a.json,
            Command::Rollout(RolloutCommand::Start(a)) => a.json,
            Command::Rollout(RolloutCommand::Status(a)) => a.json,
            Command::Rollout(
                RolloutCommand::Pause(a) | RolloutCommand::Resume(a) | RolloutCommand::Abort(a),
            ) => a.json,
            Command::Fleet(
                FleetCommand::Ls(a) | FleetCommand::Audit(FleetAuditCommand::Verify(a)),
            ) => a.json,
            Command::Fleet(FleetCommand::Audit(FleetAuditCommand::Tail(a))) => a.json,
            Command::Fleet(FleetCommand::Policy(a)) => a.json,
            Command::Audit(AuditCommand::Tail(a)) => a.json,
            Command::Flags(FlagsCommand::Show(a)) => a.json,
            Command::Flags(
                FlagsCommand::Sign(_) | FlagsCommand::Push(_) | FlagsCommand::Kill(_),
            ) => false,
            Command::Audit(AuditCommand::Verify(_))
            | Command::Gate(_)
            | Command::Release(_)
            | Command::Keygen(_)
            | Command::DevPki(_)
            | Command::Server(_)
            | Command::Quickstart(_)
            | Command::Completions(_)
            | Command::Man(_) => false,
        }
    }
}

/// Every `gantry` command.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum Command {
    /// Generate an Ed25519 signing key: PREFIX.key (mode 0600) and PREFIX.pub.
    Keygen(KeygenArgs),
    /// Make a throw-away CA and agent/controller certificates for trying Gantry out.
    DevPki(DevPkiArgs),
    /// Create, sign, inspect, submit and watch job files.
    #[command(subcommand)]
    Job(JobCommand),
    /// Fleet plans: create, sign, approve and inspect plan files.
    #[command(subcommand)]
    Rollout(RolloutCommand),
    /// Create, sign, upload, submit and watch a deploy in one step.
    Deploy(DeployArgs),
    /// Return an app to its previous release (or a named one still on the agent).
    Rollback(RollbackArgs),
    /// Restart the instances of an app's current release.
    Restart(ActionArgs),
    /// Stop every instance of an app.
    Stop(ActionArgs),
    /// Continue a rollout waiting for promotion (a canary step or blue-green --manual-promote).
    Promote(ActionArgs),
    /// Abort the rollout in progress: traffic back to the previous release, new instances stopped.
    Abort(ActionArgs),
    /// Show what runs where on an agent, and its recent jobs.
    Status(StatusArgs),
    /// The releases an app was deployed and rolled back to, from the agent's audit log.
    History(HistoryArgs),
    /// Read and verify an agent's audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Sign, push and show an app's feature flags; switch flags off with a kill-switch key.
    #[command(subcommand)]
    Flags(FlagsCommand),
    /// Run the controller service: inventory, durable store, ring-by-ring rollouts.
    Server(ServerArgs),
    /// The fleet as the controller service sees it.
    #[command(subcommand)]
    Fleet(FleetCommand),
    /// Quality gates: measure CI reports against thresholds and sign the evidence.
    #[command(subcommand)]
    Gate(GateCommand),
    /// Releases: draft release notes from Conventional Commits.
    #[command(subcommand)]
    Release(ReleaseCommand),
    /// Start a local agent with fresh keys and certificates, deploy a sample app to it with each
    /// strategy, then push, release and kill one of its feature flags.
    Quickstart(QuickstartArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(CompletionsArgs),
    /// Write a man page for `gantry` and each of its subcommands into DIR (`gantry.1`,
    /// `gantry-deploy.1`, ...), creating DIR when needed.
    Man(ManArgs),
}

/// `gantry completions`.
#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum, value_name = "SHELL")]
    pub shell: clap_complete::Shell,
}

/// `gantry man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write the pages to (e.g. /usr/local/share/man/man1).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// `gantry history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// How to reach the agent.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The app.
    #[arg(long, value_name = "APP")]
    pub app: String,
    /// Every job of the app (restart, stop, promote, abort too), not only its releases.
    #[arg(long)]
    pub all: bool,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `gantry keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Path prefix of the key files: PREFIX.key and PREFIX.pub are written (never overwritten).
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
}

/// `gantry dev-pki`: a new PKI (`--agent-id`) or one more client certificate (`--add-client`).
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("make").required(true).args(["agent_id", "add_client"])
))]
pub struct DevPkiArgs {
    /// Directory to write ca.pem, ca.key, agent.pem, agent.key, controller.pem, controller.key
    /// (with --add-client: the directory holding them).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The agent's id: its certificate's DNS name. Required unless --add-client is given.
    #[arg(long, value_name = "ID")]
    pub agent_id: Option<String>,
    /// Common name of the controller's client certificate.
    #[arg(long, value_name = "NAME", default_value = "controller")]
    pub client_name: String,
    /// Issue another controller client certificate, DIR/NAME.pem and DIR/NAME.key, from the CA
    /// already in DIR. Give each controller its own certificate, so that a controller whose jobs
    /// keep being rejected (and is paused for it) does not stop the others.
    #[arg(long, value_name = "NAME", conflicts_with = "client_name")]
    pub add_client: Option<String>,
}

/// How to reach one agent over mutual TLS (the default: no flag given): directly at its
/// address, or, with `--server`, through the controller service it dials in to.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnArgs {
    /// The agent's address, host:port; with --server, the agent's id instead (an agent in
    /// dial-out mode listens on nothing and is reached through the service).
    #[arg(long = "agent", value_name = "ADDR|ID", env = "GANTRY_AGENT")]
    pub agent: Option<String>,
    /// The agent's id: the agent's certificate must name it (with --server it defaults to
    /// --agent).
    #[arg(long, value_name = "ID", env = "GANTRY_AGENT_ID")]
    pub agent_id: Option<String>,
    /// Reach the agent through the controller service at host:port (the agent dials in to it):
    /// --agent names the agent, --ca is the service's CA and --cert the operator's
    /// certificate. The service forwards the calls unchanged; the agent checks signatures.
    /// Only this flag turns it on ($GANTRY_SERVER alone does not).
    #[arg(long = "server", value_name = "ADDR")]
    pub server: Option<String>,
    /// With --server: the name the service's certificate must carry.
    #[arg(
        long,
        value_name = "NAME",
        env = "GANTRY_SERVER_NAME",
        default_value = "gantry-server"
    )]
    pub server_name: String,
    /// CA certificate (PEM) the agent's certificate (with --server, the service's) must chain
    /// to.
    #[arg(long, value_name = "FILE", env = "GANTRY_CA")]
    pub ca: Option<PathBuf>,
    /// The controller's client certificate (PEM).
    #[arg(long, value_name = "FILE", env = "GANTRY_CERT")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", env = "GANTRY_CERT_KEY")]
    pub cert_key: Option<PathBuf>,
}

/// What a job asks for, as flags (shared by `job create` and `deploy`).
#[derive(Debug, Clone, Args)]
pub struct JobSpecArgs {
    /// The app the job acts on.
    #[arg(long, value_name = "APP")]
    pub app: String,
    /// deploy, rollback, restart or stop.
    #[arg(long, value_name = "ACTION", default_value = "deploy")]
    pub action: String,
    /// Release version (SemVer 2.0); for a rollback, the target version.
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// hot, rolling, blue-green or canary.
    #[arg(long, value_name = "STRATEGY", default_value = "hot")]
    pub strategy: String,
    /// How many instances to run.
    #[arg(long, value_name = "N", default_value = "1")]
    pub instances: String,
    /// Health check: `http:/PATH` (optionally `http:/PATH=STATUS`), `tcp`, or `exec:CMD ARGS...`.
    #[arg(long, value_name = "PROBE", default_value = "tcp")]
    pub health: String,
    /// Time between health probes.
    #[arg(long, value_name = "DURATION", default_value = "500ms")]
    pub health_interval: String,
    /// Time one health probe may take.
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub health_timeout: String,
    /// Consecutive passing probes that make an instance healthy.
    #[arg(long, value_name = "N", default_value = "1")]
    pub healthy_threshold: String,
    /// Consecutive failing probes that make an instance unhealthy.
    #[arg(long, value_name = "N", default_value = "3")]
    pub unhealthy_threshold: String,
    /// An instance not healthy within this time is unhealthy.
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub health_deadline: String,
    /// The whole job fails (and rolls back) if not finished by then.
    #[arg(long, value_name = "DURATION", default_value = "10m")]
    pub progress_deadline: String,
    /// How long the signed job stays valid after --not-before.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub valid_for: String,
    /// Earliest time the agent accepts the job (RFC 3339, UTC, e.g. 2026-01-02T03:04:05Z); default now.
    #[arg(long, value_name = "RFC3339")]
    pub not_before: Option<String>,
    /// Extra environment for the instances (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Secret environment for the instances (repeatable): the agent never writes the value
    /// in clear (its audit log holds a keyed hash) and `job show` prints `<secret>`. The job
    /// file itself holds the value: keep it private.
    #[arg(long = "secret-env", value_name = "K=V")]
    pub secret_env: Vec<String>,
    /// Release notes (Markdown) carried in the signed job; their SHA-256 is in the agent's
    /// `job.accepted` audit entry, and `job show` and `status` print them.
    #[arg(long, value_name = "FILE")]
    pub notes: Option<PathBuf>,
    /// Signed gate evidence (`gantry gate evaluate --out FILE`) carried in the job (repeatable).
    #[arg(long = "evidence", value_name = "FILE")]
    pub evidence: Vec<PathBuf>,
    /// Job id; default `<app>-<version>-<unix ms>-<random hex>`.
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// Why: shown in the audit log and status.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
    /// How a rolling, blue-green or canary deploy proceeds.
    #[command(flatten)]
    pub rollout: RolloutArgs,
    /// The instance's command (argv), run in the release directory.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Rollout parameters of the zero-downtime strategies (shared by `job create` and `deploy`).
/// Each flag fits only some strategies; an unset flag leaves the agent's default.
#[derive(Debug, Clone, Default, Args)]
pub struct RolloutArgs {
    /// Rolling: instances replaced per batch, a count (2) or a percent of the instances (25%).
    /// [default: 1]
    #[arg(long, value_name = "N|P%", help_heading = "Rolling")]
    pub batch: Option<String>,
    /// Rolling: once a batch is back in rotation, analyse its new instances this long before
    /// the next batch (health probes, restarts and, with a front door in HTTP mode, each new
    /// backend's error rate and p95 latency, plus the --prom-check queries); a breach reverts
    /// the deploy. [default: 0, not analysed]
    #[arg(long, value_name = "DURATION", help_heading = "Rolling")]
    pub batch_analysis: Option<String>,
    /// Rolling, blue-green, canary: a new instance must stay healthy this long after its
    /// health check passes to count as healthy. [default: 0]
    #[arg(long, value_name = "DURATION", help_heading = "Rollout")]
    pub min_healthy_time: Option<String>,
    /// Every strategy: once the deploy is done, keep watching the new release this long
    /// (health probes, restarts and, with a front door in HTTP mode, error rate and p95
    /// latency) and roll it back if it fails. [default: 0, not watched]
    #[arg(long, value_name = "DURATION", help_heading = "Rollout")]
    pub watch: Option<String>,
    /// Rolling, blue-green, canary: a new instance not healthy (for --min-healthy-time) by
    /// then fails the deploy. Default: --health-deadline.
    #[arg(long, value_name = "DURATION", help_heading = "Rollout")]
    pub healthy_deadline: Option<String>,
    /// Rolling: on failure, leave updated instances on the new release instead of returning
    /// them to the previous one.
    #[arg(long, help_heading = "Rolling")]
    pub no_auto_revert: bool,
    /// Rolling, blue-green, canary: how long a backend taken out of rotation keeps its open
    /// connections. [default: 30s]
    #[arg(long, value_name = "DURATION", help_heading = "Rollout")]
    pub drain_timeout: Option<String>,
    /// Blue-green: percent (0-100) of new connections sent to the new slot during --preview.
    #[arg(long, value_name = "PCT", help_heading = "Blue-green")]
    pub preview_weight: Option<String>,
    /// Blue-green: how long the preview lasts (and is watched) before the switch.
    #[arg(long, value_name = "DURATION", help_heading = "Blue-green")]
    pub preview: Option<String>,
    /// Blue-green: how long the old slot keeps running after the switch, ready for an
    /// instant switch back by `gantry rollback`. [default: 10m]
    #[arg(long, value_name = "DURATION", help_heading = "Blue-green")]
    pub scale_down_delay: Option<String>,
    /// Blue-green: once healthy, wait for `gantry promote` instead of switching.
    #[arg(long, help_heading = "Blue-green")]
    pub manual_promote: bool,
    /// Canary (repeatable, in order): send WEIGHT percent (1-100, never decreasing) of new
    /// connections to the canary and hold for DURATION, or until `gantry promote` with
    /// WEIGHT:promote. With --canary-flag, a trailing :flag=PCT (0-100, never decreasing)
    /// serves the flag's canary variant to PCT percent of users during the step instead of
    /// WEIGHT percent. Default: 10:30s, 50:30s, then 100.
    #[arg(
        long = "step",
        value_name = "WEIGHT:DURATION[:flag=PCT]|WEIGHT:promote[:flag=PCT]",
        help_heading = "Canary"
    )]
    pub steps: Vec<String>,
    /// Canary: a flag of the app's flag set that the steps release with the code. Each step
    /// serves the flag's canary variant (the variant its metadata names as canaryVariant) to
    /// the step's share of users, the rest get its default variant; once promoted, to all of
    /// them. An abort or rollback puts the signed set back. The flag must be enabled and name
    /// a canaryVariant, or the job fails before anything changes (docs/flags.md).
    #[arg(long, value_name = "FLAG", help_heading = "Canary")]
    pub canary_flag: Option<String>,
    /// Canary: how many canary instances. [default: 1]
    #[arg(long, value_name = "N", help_heading = "Canary")]
    pub canary_instances: Option<String>,
    /// Canary analysis: failed health probes of canary instances that abort it. [default: 3]
    #[arg(long, value_name = "N", help_heading = "Canary")]
    pub max_probe_failures: Option<String>,
    /// Canary analysis: canary instance restarts (crashes) tolerated. [default: 0]
    #[arg(long, value_name = "N", help_heading = "Canary")]
    pub max_restarts: Option<String>,
    /// Canary analysis: front-door connection errors to canary backends that abort it.
    /// [default: 5]
    #[arg(long, value_name = "N", help_heading = "Canary")]
    pub max_conn_errors: Option<String>,
    /// Canary analysis: CPU of a canary process, percent of one core (150 = 1.5 cores).
    /// Default: not checked.
    #[arg(long, value_name = "PCT", help_heading = "Canary")]
    pub max_cpu: Option<String>,
    /// Canary analysis: resident memory of a canary process, a size (256MiB, 1GB) or a share of
    /// the host's memory (80%, the recommended limit). Default: not checked.
    #[arg(long, value_name = "SIZE|PCT%", help_heading = "Canary")]
    pub max_memory: Option<String>,
    /// Analysis (canary steps, the blue-green preview, the watch): how often it runs.
    /// [default: 1s]
    #[arg(long, value_name = "DURATION", help_heading = "Canary")]
    pub analysis_interval: Option<String>,
    /// Analysis (front door in HTTP mode; canary steps, the blue-green preview, the watch): the
    /// largest share of the new release's responses that may be 5xx, 0 to 1 (0.001) or a percent (0.1%). [default: 0.001]
    #[arg(long, value_name = "SHARE", help_heading = "Canary")]
    pub max_error_rate: Option<String>,
    /// Analysis (front door in HTTP mode; canary steps, the blue-green preview, the watch): the
    /// largest 95th percentile latency of the new release's responses. [default: 200ms]
    #[arg(long, value_name = "DURATION", help_heading = "Canary")]
    pub max_p95_latency: Option<String>,
    /// Analysis: responses a metric needs before it may pass. Default: the rule of
    /// three, 3 / the share of bad responses allowed (3000 for an error rate of 0.001, 60 for
    /// the p95).
    #[arg(long, value_name = "N", help_heading = "Canary")]
    pub min_samples: Option<String>,
    /// Canary analysis: what a step whose hold is over does while a metric has too few
    /// samples: pause (wait, saying why, for more traffic or gantry promote/abort), fail (roll
    /// back) or pass (go on without a verdict). [default: pause]
    #[arg(long, value_name = "pause|fail|pass", help_heading = "Canary")]
    pub no_data: Option<String>,
    /// Canary analysis (front door in HTTP mode): judge the canary's error rate and latency
    /// against the fixed limits (threshold: --max-error-rate, --max-p95-latency) or against
    /// the stable cohort in the same window (stable: a one-sided two-proportion z-test on the
    /// 5xx shares and a Mann-Whitney U test on the latency histograms, failing at a p-value
    /// under --compare-alpha; each needs --min-samples responses on both sides first).
    /// [default: threshold]
    #[arg(long, value_name = "threshold|stable", help_heading = "Canary")]
    pub compare: Option<String>,
    /// With --compare stable: the significance, above 0 and at most 0.5. A lower value
    /// fails fewer good canaries and catches fewer bad ones. [default: 0.05]
    #[arg(long, value_name = "ALPHA", help_heading = "Canary")]
    pub compare_alpha: Option<String>,
    /// Canary steps, the blue-green preview and the watch: a Prometheus server (http://HOST:PORT[/PREFIX]) whose
    /// --prom-check queries must meet their conditions at every analysis interval.
    #[arg(long, value_name = "URL", help_heading = "Canary")]
    pub prometheus: Option<String>,
    /// With --prometheus, repeatable: NAME:QUERY:CONDITION, e.g.
    /// 'errors:sum(rate(http_5xx{app="{{app}}"}[{{window}}])):< 0.01'. The query is PromQL
    /// with {{app}}, {{cohort}} (canary, stable, preview) and {{window}} (the time analysed so
    /// far, like 30s) filled in; the condition (<, <=, >, >= a number) applies to its scalar or
    /// single-series result. No result, NaN, several series or an unreachable server count as
    /// no data (--no-data applies), never as a pass.
    #[arg(
        long = "prom-check",
        value_name = "NAME:QUERY:CONDITION",
        help_heading = "Canary"
    )]
    pub prom_checks: Vec<String>,
}

/// `gantry job ...`.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
pub enum JobCommand {
    /// Write an unsigned job file (the `gantry.v1.SignedJob` protobuf encoding).
    Create(JobCreateArgs),
    /// Add a signature to a job file, in place.
    Sign(JobSignArgs),
    /// Add an approval: a signature by an approver's key, in place.
    Approve(JobApproveArgs),
    /// Print a job file: every field, its digest and signatures.
    Show(JobShowArgs),
    /// Upload the artifact if needed, submit the job and follow it to the end.
    Submit(JobSubmitArgs),
    /// Follow a job the agent knows, from its first event to its end.
    Watch(JobWatchArgs),
}

/// `gantry job create`.
#[derive(Debug, Args)]
pub struct JobCreateArgs {
    /// Job file to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The one agent the job is for.
    #[arg(long, value_name = "ID", env = "GANTRY_AGENT_ID")]
    pub agent_id: String,
    /// The release artifact (.tar.gz): its SHA-256 and size go into the job.
    #[arg(long, value_name = "FILE")]
    pub artifact: Option<PathBuf>,
    /// What the job asks for.
    #[command(flatten)]
    pub spec: JobSpecArgs,
}

/// `gantry job sign`.
#[derive(Debug, Args)]
pub struct JobSignArgs {
    /// Private key (PKCS#8 PEM, mode 0600).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The job file, rewritten with the new signature.
    #[arg(value_name = "JOBFILE")]
    pub job: PathBuf,
}

/// `gantry job approve`.
#[derive(Debug, Args)]
pub struct JobApproveArgs {
    /// The approver's key and the job file.
    #[command(flatten)]
    pub sign: JobSignArgs,
    /// What the approver says with the approval (e.g. "explored the demo; ok to ship"),
    /// signed by the same key and bound to this job; `job show` and `release show` print it.
    #[arg(long, value_name = "TEXT")]
    pub comment: Option<String>,
}

/// `gantry job show`.
#[derive(Debug, Args)]
pub struct JobShowArgs {
    /// Public keys to check the signatures against (repeatable).
    #[arg(long = "pubkey", value_name = "FILE")]
    pub pubkeys: Vec<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// An agent's config: show which of its policy's requirements the job meets and which
    /// are missing (signatures, trusted signers, key validity, target, window, role,
    /// approvals), and exit 3 when one is missing. Only its keys and apps are read.
    #[arg(long = "policy", value_name = "AGENT_TOML")]
    pub policy: Option<PathBuf>,
    /// The job file.
    #[arg(value_name = "JOBFILE")]
    pub job: PathBuf,
}

/// `gantry job submit`.
#[derive(Debug, Args)]
pub struct JobSubmitArgs {
    /// How to reach the agent.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The artifact to upload if the agent does not have it yet.
    ///
    /// An upload that broke off earlier (a lost connection, an agent restart) resumes at the
    /// byte the agent holds; one that breaks off now is tried again (4 attempts in all).
    #[arg(long, value_name = "FILE")]
    pub artifact: Option<PathBuf>,
    /// Print one JSON object per event on stdout (and one for an error).
    #[arg(long)]
    pub json: bool,
    /// Return once the agent has accepted the job; it goes on without this command (follow
    /// it with `gantry job watch ID`).
    #[arg(long)]
    pub detach: bool,
    /// The signed job file.
    #[arg(value_name = "JOBFILE")]
    pub job: PathBuf,
}

/// `gantry job watch`.
#[derive(Debug, Args)]
pub struct JobWatchArgs {
    /// How to reach the agent.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Print one JSON object per event on stdout (and one for an error).
    #[arg(long)]
    pub json: bool,
    /// The job's id.
    #[arg(value_name = "JOB_ID")]
    pub job_id: String,
}

/// `gantry deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    /// How to reach the agent (its id also goes into the job).
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Private keys to sign with (repeatable).
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    /// The release artifact (.tar.gz).
    ///
    /// Uploaded only if the agent does not have it; an upload that broke off earlier (a lost
    /// connection, an agent restart) resumes at the byte the agent holds, and one that breaks
    /// off now is tried again (4 attempts in all).
    #[arg(long, value_name = "FILE")]
    pub artifact: Option<PathBuf>,
    /// Print one JSON object per event on stdout (and one for an error).
    #[arg(long)]
    pub json: bool,
    /// Return once the agent has accepted the job; it goes on without this command (follow
    /// it with `gantry job watch ID`). Ctrl-C without it stops following, not the job.
    #[arg(long)]
    pub detach: bool,
    /// What the job asks for.
    #[command(flatten)]
    pub spec: JobSpecArgs,
}

/// `gantry rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The action's common flags.
    #[command(flatten)]
    pub action: ActionArgs,
    /// The release to return to (must still be on the agent); default the previous one.
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Also put back the app's flag set that was in force when that release was last
    /// replaced (its signatures are checked again under the agent's policy); the job fails
    /// before anything changes when it cannot come back.
    #[arg(long)]
    pub restore_flags: bool,
}

/// `gantry restart`, `stop`, `promote` and `abort` (and the common part of `gantry rollback`).
#[derive(Debug, Args)]
pub struct ActionArgs {
    /// How to reach the agent (its id also goes into the job).
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Private keys to sign with (repeatable).
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    /// The app.
    #[arg(long, value_name = "APP")]
    pub app: String,
    /// Why: shown in the audit log and status.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
    /// How long the signed job stays valid.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub valid_for: String,
    /// Print one JSON object per event on stdout (and one for an error).
    #[arg(long)]
    pub json: bool,
}

/// `gantry status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How to reach the agent.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// Only this app.
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
    /// Print the agent's answer as one JSON object (with --watch, one per line per refresh).
    #[arg(long)]
    pub json: bool,
    /// Keep showing the status, refreshed every --interval, until Ctrl-C.
    #[arg(short = 'w', long)]
    pub watch: bool,
    /// With --watch: time between refreshes.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "2s",
        requires = "watch"
    )]
    pub interval: String,
    /// With --watch: stop after N refreshes.
    #[arg(long, value_name = "N", requires = "watch")]
    pub count: Option<u32>,
}

/// `gantry audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Print the last entries of the agent's audit log, optionally following it.
    Tail(AuditTailArgs),
    /// Fetch the whole log and verify its hash chain, checkpoints and this controller's witness.
    Verify(AuditVerifyArgs),
}

/// `gantry audit tail`.
#[derive(Debug, Args)]
pub struct AuditTailArgs {
    /// How to reach the agent.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// How many of the last entries.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 20)]
    pub lines: u32,
    /// Keep following new entries.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print the raw lines (each a JSON object).
    #[arg(long)]
    pub json: bool,
}

/// `gantry audit verify`.
#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// How to reach the agent.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The agent's audit public key (SPKI PEM); default the key the agent reports.
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
}

/// `gantry quickstart`.
#[derive(Debug, Args)]
pub struct QuickstartArgs {
    /// Working directory (created); default a new temporary directory.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// The `gantry-agent` binary; default the one next to `gantry`.
    #[arg(long, value_name = "PATH")]
    pub agent_bin: Option<PathBuf>,
    /// The sample app binary; default `gantry-sample-app` next to `gantry`.
    #[arg(long, value_name = "PATH")]
    pub sample_app: Option<PathBuf>,
    /// Leave the agent running at the end.
    #[arg(long)]
    pub keep_running: bool,
    /// The fleet tour instead: four agents in three rings and a local controller service
    /// (`gantry server`), one signed plan run ring by ring with bakes, then `fleet ls`,
    /// `fleet policy` and `fleet audit verify`.
    #[arg(long)]
    pub fleet: bool,
}

/// `gantry flags ...`: an app's flag set (flagd flag-definition JSON) as a signed document.
#[derive(Debug, Subcommand)]
pub enum FlagsCommand {
    /// Sign a flag definition for an app into a signed flag-set file (or add a signature to one).
    Sign(FlagsSignArgs),
    /// Push a signed flag-set file, or sign a flag definition and push it, to an agent; with
    /// --server and no --agent, hand it to the controller service, which pushes it to every
    /// agent it targets and retries those it cannot reach (exit 3 if an agent refused it).
    Push(FlagsPushArgs),
    /// Show the flag set in force for an app: version, signers, flags and their ages; with
    /// --server and no --agent, the set the service distributes and each agent's delivery.
    Show(FlagsShowArgs),
    /// Switch flags off (state DISABLED, or --to-default) and push that, signed by a
    /// kill-switch key; with --server and no --agent, across the fleet, as the next version of
    /// the set the service distributes, for the same agents.
    Kill(FlagsKillArgs),
}

/// What a flag set is for (`flags sign` and `flags push`).
#[derive(Debug, Clone, Args)]
pub struct FlagsDocArgs {
    /// The app whose instances are served the flags.
    #[arg(long, value_name = "APP")]
    pub app: Option<String>,
    /// The set's version; it must be above the one in force. Default for `push`: one above it
    /// (through the service, one above the version it distributes and every agent was sent).
    #[arg(long, value_name = "N")]
    pub version: Option<u64>,
    /// An agent the set is for (repeat for several). Default for `push`: the agent pushed to
    /// (through the service, --for-agent or --label is required).
    #[arg(long = "for-agent", value_name = "ID")]
    pub for_agents: Vec<String>,
    /// A label every agent the set is for has, `key=value` (repeat for several).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// How long the signed document may be pushed (the set in force stays in force).
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub valid_for: String,
    /// Why, for the audit log.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
}

/// `gantry flags sign`.
#[derive(Debug, Args)]
pub struct FlagsSignArgs {
    /// flagd flag-definition JSON, or with --add a signed flag-set file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Signing key (PKCS#8 PEM); repeat for several signatures.
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    /// Add the keys' signatures to the signed flag-set FILE instead of signing a definition
    /// (a second signer, where `[apps.NAME.flags] approvals` asks for a quorum).
    #[arg(long)]
    pub add: bool,
    /// The signed flag-set file to write (default: FILE with the extension .flags).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// What the set is for.
    #[command(flatten)]
    pub doc: FlagsDocArgs,
}

/// `gantry flags push`.
#[derive(Debug, Args)]
pub struct FlagsPushArgs {
    /// Connection.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// A signed flag-set file (from `flags sign`), or flagd JSON to sign with --key first.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Sign FILE (flagd JSON) with this key before pushing; repeat for several.
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// What the set is for, when signing here.
    #[command(flatten)]
    pub doc: FlagsDocArgs,
}

/// `gantry flags show`.
#[derive(Debug, Args)]
pub struct FlagsShowArgs {
    /// Connection.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The app.
    #[arg(long, value_name = "APP")]
    pub app: String,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `gantry flags kill`.
#[derive(Debug, Args)]
pub struct FlagsKillArgs {
    /// Connection.
    #[command(flatten)]
    pub conn: ConnArgs,
    /// The app.
    #[arg(long, value_name = "APP")]
    pub app: String,
    /// The flags to switch off.
    #[arg(value_name = "FLAG", required = true)]
    pub flags: Vec<String>,
    /// A key with the app's kill-switch (or flags) role.
    #[arg(long = "key", value_name = "FILE", required = true)]
    pub keys: Vec<PathBuf>,
    /// Serve each flag's default variant (drop its targeting) instead of disabling it.
    #[arg(long)]
    pub to_default: bool,
    /// Why, for the audit log.
    #[arg(long, value_name = "TEXT", default_value = "kill switch")]
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clap_definition_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}

/// `gantry gate ...`.
#[derive(Debug, Subcommand)]
pub enum GateCommand {
    /// Measure test, coverage, security and benchmark reports against thresholds; when every
    /// gate passes, sign an in-toto statement of the values over the artifact's digest.
    Evaluate(GateEvaluateArgs),
}

/// `gantry gate evaluate`.
#[derive(Debug, Args)]
#[command(group(
    clap::ArgGroup::new("subject").required(true).args(["artifact", "digest"])
))]
pub struct GateEvaluateArgs {
    /// The release artifact (.tar.gz) the evidence is about.
    #[arg(long, value_name = "FILE")]
    pub artifact: Option<PathBuf>,
    /// Or its lowercase hex SHA-256.
    #[arg(long, value_name = "SHA256")]
    pub digest: Option<String>,
    /// JUnit XML test results (repeatable: the cases are added up). Gate `tests`.
    #[arg(long, value_name = "FILE")]
    pub junit: Vec<PathBuf>,
    /// LCOV tracefile. Gate `coverage`.
    #[arg(long, value_name = "FILE", conflicts_with = "cobertura")]
    pub lcov: Option<PathBuf>,
    /// Cobertura XML coverage. Gate `coverage`.
    #[arg(long, value_name = "FILE")]
    pub cobertura: Option<PathBuf>,
    /// SARIF 2.1.0 from a security scanner (repeatable: findings are added up). Gate
    /// `security`.
    #[arg(long, value_name = "FILE")]
    pub sarif: Vec<PathBuf>,
    /// Benchmark comparison JSON (docs/releases.md). Gate `performance`.
    #[arg(long, value_name = "FILE")]
    pub bench: Option<PathBuf>,
    /// Thresholds (TOML); default the CD model's: tests 100% passing, line coverage >= 80%,
    /// no critical or high findings, a regression under 5%.
    #[arg(long, value_name = "FILE")]
    pub thresholds: Option<PathBuf>,
    /// The CI's signing key (its public key needs role `ci` in the agents' policy).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Where to write the signed evidence (a DSSE envelope, JSON).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// How long agents accept the evidence.
    #[arg(long, value_name = "DURATION", default_value = "7d")]
    pub valid_for: String,
}

/// `gantry release ...`.
#[derive(Debug, Subcommand)]
pub enum ReleaseCommand {
    /// Draft release notes from the Conventional Commits in a git range, in the sections
    /// features, enhancements, fixes, breaking changes, security, deprecations, known issues.
    Notes(ReleaseNotesArgs),
    /// One release from signed data only: its jobs' signers, approvals with their comments,
    /// notes and gates, and (with --agent) where it was deployed, from the agent's audit log.
    Show(ReleaseShowArgs),
}

/// `gantry release show`.
#[derive(Debug, Args)]
pub struct ReleaseShowArgs {
    /// The artifact's SHA-256 (lowercase hex).
    #[arg(value_name = "DIGEST")]
    pub digest: String,
    /// Signed job files (repeatable); those that deploy DIGEST are shown.
    #[arg(long = "job", value_name = "FILE", required_unless_present_any = ["plans", "server"])]
    pub jobs: Vec<PathBuf>,
    /// Signed fleet plan files (repeatable); those that release DIGEST are shown, and their
    /// dispatches found in the agent's log.
    #[arg(long = "plan", value_name = "FILE")]
    pub plans: Vec<PathBuf>,
    /// The agent's config: the names and roles of the keys that signed.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// More public keys to check signatures against (repeatable).
    #[arg(long = "pubkey", value_name = "FILE")]
    pub pubkeys: Vec<PathBuf>,
    /// The agent's audit-checkpoint public key: the log is verified with it before it is read.
    #[arg(long, value_name = "FILE")]
    pub agent_pubkey: Option<PathBuf>,
    /// How to reach the agent (optional: without it, where it was deployed is not shown). With
    /// `--server` and no `--agent`: every agent of the controller service, and the plans of its
    /// rollouts that release DIGEST.
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// `gantry release notes`.
#[derive(Debug, Args)]
pub struct ReleaseNotesArgs {
    /// The range's start (exclusive): a tag, branch or commit.
    #[arg(long, value_name = "REF")]
    pub from: String,
    /// The range's end (inclusive).
    #[arg(long, value_name = "REF", default_value = "HEAD")]
    pub to: String,
    /// The repository.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub repo: PathBuf,
    /// The heading's version, e.g. 1.2.0 (`# Release v1.2.0`); default the --to ref.
    #[arg(long, value_name = "V")]
    pub version: Option<String>,
    /// Write the notes here instead of stdout.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}
