//! `gantry quickstart`: a local agent with fresh PKI and keys; deploys of the sample app with
//! each strategy (hot twice, then rolling, blue-green and canary through the app's front
//! door); a feature flag of the sample app pushed, released and killed (`flags.rs`); the audit
//! log and its verification; then clean-up and the commands to do it by hand.
//! With `--fleet` (`fleet.rs`): several agents in rings and a controller service running a plan.

mod agent_process;
mod flags;
mod fleet;
mod workspace;

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use gantry_client::{Agent, ClientError, ConnSettings};
use gantry_proto::keys::{self, KeyError, PublicKey, SigningKey};
use gantry_proto::v1::Action;

pub use self::agent_process::AgentProcessError;
use self::agent_process::{http_get, locate, start_agent};
pub use self::workspace::{
    AGENT_ID, APP, WorkspaceError, agent_config, agent_config_text, package_sample,
};
use self::workspace::{
    PORTS, free_front_door_port, free_port_outside, free_port_range, instance_user, io, work_dir,
};
use crate::cli::{ActionArgs, ConnArgs, JobSpecArgs, QuickstartArgs, RolloutArgs};
use crate::commands::audit::{self, Verdict};
use crate::commands::dev_pki::{self, DevPkiError};
use crate::commands::flagset::FlagsCmdError;
use crate::commands::job::action_job;
use crate::commands::job::spec::{build_job, hash_file};
use crate::commands::job::{JobError, JobFile};
use crate::commands::status;
use crate::commands::submit::{SubmitError, ensure_artifact, submit_and_follow};
use crate::exit::Exit;
use crate::output::{Events, Mode, outcome_name};

/// Why quickstart stopped.
#[derive(Debug, thiserror::Error)]
pub enum QuickstartError {
    /// The working directory could not be set up.
    #[error(transparent)]
    Workspace(#[from] WorkspaceError),
    /// The local agent could not be found or started.
    #[error(transparent)]
    AgentProcess(#[from] AgentProcessError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime for {}", dir.display())]
    Runtime {
        /// The working directory.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Certificates could not be made.
    #[error(transparent)]
    Pki(#[from] DevPkiError),
    /// Keys could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A job could not be built.
    #[error(transparent)]
    Job(#[from] JobError),
    /// Talking to the agent failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Submitting a job failed.
    #[error(transparent)]
    Submit(#[from] SubmitError),
    /// Pushing a flag set failed.
    #[error(transparent)]
    Flags(#[from] FlagsCmdError),
    /// A job ended without success.
    #[error("{what} did not succeed: {outcome}: {reason} (see the events above and {})", log.display())]
    JobFailed {
        /// Which job.
        what: String,
        /// How it ended, as the agent said.
        outcome: String,
        /// Why, as the agent said.
        reason: String,
        /// The agent's log.
        log: PathBuf,
    },
    /// The deployed app did not answer.
    #[error("GET http://{addr}{path} failed")]
    Http {
        /// Where.
        addr: SocketAddr,
        /// Path.
        path: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The deployed app's instance could not be found in the agent's status.
    #[error("the agent reports no running instance of {APP}")]
    NoInstance,
    /// The audit log did not verify.
    #[error("the audit log did not verify: {0}")]
    AuditFailed(String),
    /// Talking to the controller service failed (`--fleet`).
    #[error(transparent)]
    Fleet(#[from] crate::commands::fleet::FleetError),
    /// The plan could not be made (`--fleet`).
    #[error(transparent)]
    Plan(#[from] crate::commands::rollout::RolloutError),
    /// A fleet command did not succeed (`--fleet`).
    #[error("{what} exited {exit} (see above)")]
    FleetStep {
        /// Which command.
        what: String,
        /// Its exit code.
        exit: u8,
    },
    /// The rollout did not succeed (`--fleet`).
    #[error("the rollout ended {state}: {reason}")]
    RolloutEnded {
        /// Its final state.
        state: String,
        /// Why, as the service says.
        reason: String,
    },
}

impl QuickstartError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            QuickstartError::Workspace(e) => e.exit(),
            QuickstartError::AgentProcess(e) => e.exit(),
            QuickstartError::Runtime { .. } | QuickstartError::Pki(_) | QuickstartError::Key(_) => {
                Exit::Usage
            }
            QuickstartError::Job(e) => e.exit(),
            QuickstartError::Client(e) => e.fault().into(),
            QuickstartError::Submit(e) => e.exit(),
            QuickstartError::Flags(e) => e.exit(),
            QuickstartError::JobFailed { .. }
            | QuickstartError::Http { .. }
            | QuickstartError::NoInstance
            | QuickstartError::AuditFailed(_)
            | QuickstartError::FleetStep { .. }
            | QuickstartError::RolloutEnded { .. } => Exit::JobFailed,
            QuickstartError::Fleet(e) => e.exit(),
            QuickstartError::Plan(e) => e.exit(),
        }
    }
}

/// Everything one run needs.
struct Ctx {
    dir: PathBuf,
    settings: ConnSettings,
    key: SigningKey,
    agent_key: PublicKey,
    flag_keys: flags::FlagKeys,
}

impl Ctx {
    async fn connect(&self) -> Result<Agent, QuickstartError> {
        Ok(Agent::connect(&self.settings).await?)
    }

    fn spec(&self, version: &str) -> JobSpecArgs {
        sample_spec(version)
    }

    /// Deploys `spec`'s release from `artifact`; `how` describes it in the heading.
    async fn deploy(
        &self,
        spec: &JobSpecArgs,
        artifact: &Path,
        how: &str,
    ) -> Result<(), QuickstartError> {
        let version = spec.version.as_deref().unwrap_or_default();
        println!("\n== deploy {APP} {version} ({how})");
        let info = hash_file(artifact).map_err(|source| JobError::ReadArtifact {
            path: artifact.to_owned(),
            source,
        })?;
        let job =
            build_job(AGENT_ID, spec, Some(&info), SystemTime::now()).map_err(JobError::from)?;
        let mut file = JobFile::new(job);
        file.sign(&self.dir.join("keys/deployer.key"), &self.key)?;
        let agent = self.connect().await?;
        let mut out = Events::new(Mode::detect(false));
        ensure_artifact(&agent, &file, Some(artifact), &out).await?;
        let exit = submit_and_follow(&agent, &file, &mut out).await?;
        self.expect_success(exit, &out, format!("deploy {version} ({})", spec.strategy))
    }

    /// Ok on success; otherwise the job's outcome and the agent's reason.
    fn expect_success(
        &self,
        exit: Exit,
        out: &Events,
        what: String,
    ) -> Result<(), QuickstartError> {
        match exit {
            Exit::Success => Ok(()),
            Exit::JobFailed | Exit::Usage | Exit::Rejected => {
                let (outcome, reason) = out.finished().map_or_else(
                    || ("no outcome".to_owned(), "the event stream ended".to_owned()),
                    |f| {
                        (
                            gantry_proto::v1::Outcome::try_from(f.outcome)
                                .map_or("unknown", outcome_name)
                                .to_owned(),
                            f.reason.clone(),
                        )
                    },
                );
                Err(QuickstartError::JobFailed {
                    what,
                    outcome,
                    reason,
                    log: self.dir.join("agent.log"),
                })
            }
        }
    }

    /// GET / through the app's front door.
    fn get_front_door(&self, addr: SocketAddr) -> Result<(), QuickstartError> {
        let (code, body) = http_get(addr, "/").map_err(|source| QuickstartError::Http {
            addr,
            path: "/",
            source,
        })?;
        println!("GET http://{addr}/ -> {code} {}", body.trim_end());
        Ok(())
    }

    async fn get_root(&self) -> Result<(), QuickstartError> {
        let agent = self.connect().await?;
        let s = status::fetch(&agent, Some(APP)).await?;
        let port = s
            .apps
            .iter()
            .find(|a| a.name == APP)
            .and_then(|a| a.instances.iter().find(|i| i.port != 0))
            .map(|i| i.port)
            .ok_or(QuickstartError::NoInstance)?;
        let port = u16::try_from(port).map_err(|_| QuickstartError::NoInstance)?;
        self.get_front_door(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    async fn audit(&self) -> Result<(), QuickstartError> {
        let agent = self.connect().await?;
        println!("\n== audit log (last 15 entries)");
        for line in audit::fetch(&agent, 0, 15).await? {
            println!("{}", audit::readable(&line));
        }
        println!("\n== audit verify (against keys/agent.pub)");
        let lines = audit::fetch_all(&agent).await?;
        let witnessed = gantry_client::witness::load(
            &self.dir.join("state"),
            AGENT_ID,
            &self.agent_key.key_id(),
        )
        .ok()
        .flatten();
        match audit::verdict(&lines, &self.agent_key, witnessed.as_ref()) {
            Verdict::Ok(text) => {
                println!("{text}");
                Ok(())
            }
            Verdict::Failed(text) => Err(QuickstartError::AuditFailed(text)),
        }
    }

    async fn stop_app(&self) -> Result<(), QuickstartError> {
        println!("\n== stop {APP} (instances outlive the agent, so stop them first)");
        let args = ActionArgs {
            conn: ConnArgs::default(),
            keys: Vec::new(),
            app: APP.to_owned(),
            reason: "quickstart: clean up".to_owned(),
            valid_for: "15m".to_owned(),
            json: false,
        };
        let mut file = JobFile::new(action_job(
            AGENT_ID,
            &args,
            Action::Stop,
            None,
            SystemTime::now(),
        )?);
        file.sign(&self.dir.join("keys/deployer.key"), &self.key)?;
        let agent = self.connect().await?;
        let mut out = Events::new(Mode::detect(false));
        let exit = submit_and_follow(&agent, &file, &mut out).await?;
        self.expect_success(exit, &out, format!("stop {APP}"))
    }
}

/// The sample app's deploy of `version`: hot, one instance, healthy on `GET /health`.
fn sample_spec(version: &str) -> JobSpecArgs {
    JobSpecArgs {
        app: APP.to_owned(),
        action: "deploy".to_owned(),
        version: Some(version.to_owned()),
        strategy: "hot".to_owned(),
        instances: "1".to_owned(),
        health: "http:/health".to_owned(),
        health_interval: "200ms".to_owned(),
        health_timeout: "2s".to_owned(),
        healthy_threshold: "1".to_owned(),
        unhealthy_threshold: "3".to_owned(),
        health_deadline: "20s".to_owned(),
        progress_deadline: "2m".to_owned(),
        valid_for: "15m".to_owned(),
        not_before: None,
        env: Vec::new(),
        secret_env: Vec::new(),
        notes: None,
        evidence: Vec::new(),
        job_id: None,
        reason: format!("quickstart: deploy {version}"),
        rollout: RolloutArgs::default(),
        command: vec!["bin/gantry-sample-app".to_owned()],
    }
}

/// `gantry quickstart`.
///
/// # Errors
///
/// [`QuickstartError`] naming the step that failed.
pub fn run(args: &QuickstartArgs) -> Result<Exit, QuickstartError> {
    if args.fleet {
        return fleet::run(args);
    }
    let agent_bin = locate(args.agent_bin.as_deref(), "gantry-agent", "--agent-bin")?;
    let sample_bin = locate(
        args.sample_app.as_deref(),
        "gantry-sample-app",
        "--sample-app",
    )?;
    let dir = work_dir(args.dir.as_deref())?;
    println!("quickstart directory: {}", dir.display());

    let pki = dev_pki::generate_pki(&dir.join("pki"), AGENT_ID, "controller")?;
    let keys_dir = dir.join("keys");
    fs::create_dir_all(&keys_dir).map_err(io("create", &keys_dir))?;
    let (key, _, _) = keys::write_keypair(&keys_dir.join("deployer"))?;
    let (agent_signing, _, _) = keys::write_keypair(&keys_dir.join("agent"))?;
    let flag_keys = flags::FlagKeys {
        release: keys::write_keypair(&keys_dir.join(flags::RELEASE_KEY))?.0,
        kill: keys::write_keypair(&keys_dir.join(flags::KILL_KEY))?.0,
    };
    println!(
        "made a CA and certificates in {}, keys in {}",
        dir.join("pki").display(),
        keys_dir.display()
    );
    println!("deployer key id {}", key.key_id());

    // Held until quickstart ends, so a second quickstart on this host picks other ports.
    let ports = free_port_range()?;
    let first_port = ports.start;
    let front_door_port = free_front_door_port(first_port)?;
    let front_door = SocketAddr::from(([127, 0, 0, 1], front_door_port));
    let ofrep_port = free_port_outside(first_port, &[front_door_port])?;
    let user = instance_user();
    let config_path = dir.join("agent.toml");
    let config = agent_config_text(&flags::with_flags(
        agent_config(
            first_port,
            front_door_port,
            &user,
            &pki.controller_fingerprint,
        ),
        ofrep_port,
    ))?;
    fs::write(&config_path, config).map_err(io("write", &config_path))?;
    println!(
        "wrote {} (app {APP}: front door {front_door}, instances on ports {first_port}-{}, runs as {user}, flags over OFREP on 127.0.0.1:{ofrep_port})",
        config_path.display(),
        first_port + PORTS - 1
    );

    // Each release gets its own README, so that every artifact has its own digest.
    let package = |version: &str, readme: &str| {
        let path = dir.join(format!("sample-{version}.tar.gz"));
        package_sample(&sample_bin, readme, &path)
            .map(|()| path.clone())
            .map_err(io("write", &path))
    };
    let v1 = package("1.0.0", "Gantry sample app, release 1.0.0\n")?;
    let v2 = package(
        "1.1.0",
        "Gantry sample app, release 1.1.0: same binary, new notes\n",
    )?;
    let v3 = package(
        "1.2.0",
        "Gantry sample app, release 1.2.0: rolled out one instance at a time\n",
    )?;
    let v4 = package(
        "1.3.0",
        "Gantry sample app, release 1.3.0: started beside the old set, then switched\n",
    )?;
    let v5 = package(
        "1.4.0",
        "Gantry sample app, release 1.4.0: a canary first, then everyone\n",
    )?;

    let (mut agent, addr) = start_agent(&agent_bin, &dir)?;
    println!(
        "agent {AGENT_ID} listening on {addr} (log: {})",
        dir.join("agent.log").display()
    );

    let ctx = Ctx {
        settings: ConnSettings {
            addr: addr.to_string(),
            agent_id: AGENT_ID.to_owned(),
            ca: pki.paths.ca.clone(),
            cert: pki.paths.controller.clone(),
            cert_key: pki.paths.controller_key.clone(),
            // The witness lives with this throw-away agent, not in the user's state directory.
            witness_dir: Some(dir.join("state")),
            via: None,
        },
        dir: dir.clone(),
        key,
        agent_key: agent_signing.public_key(),
        flag_keys,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|source| QuickstartError::Runtime {
            dir: dir.clone(),
            source,
        })?;
    let result = rt.block_on(async {
        let hot = "hot, health http:/health";
        ctx.deploy(&ctx.spec("1.0.0"), &v1, hot).await?;
        ctx.get_root().await?;
        ctx.deploy(&ctx.spec("1.1.0"), &v2, hot).await?;
        ctx.get_root().await?;

        let mut rolling = ctx.spec("1.2.0");
        rolling.strategy = "rolling".to_owned();
        rolling.instances = "2".to_owned();
        rolling.rollout.batch = Some("1".to_owned());
        ctx.deploy(&rolling, &v3, "rolling, 2 instances, batch 1")
            .await?;
        ctx.get_front_door(front_door)?;

        let mut blue_green = ctx.spec("1.3.0");
        blue_green.strategy = "blue-green".to_owned();
        blue_green.instances = "2".to_owned();
        blue_green.rollout.scale_down_delay = Some("5s".to_owned());
        ctx.deploy(
            &blue_green,
            &v4,
            "blue-green, 2 instances, old slot kept 5s",
        )
        .await?;
        ctx.get_front_door(front_door)?;

        let mut canary = ctx.spec("1.4.0");
        canary.strategy = "canary".to_owned();
        canary.instances = "2".to_owned();
        canary.rollout.steps = vec!["50:2s".to_owned(), "100:1s".to_owned()];
        ctx.deploy(&canary, &v5, "canary, 50% for 2s, then 100% for 1s")
            .await?;
        ctx.get_front_door(front_door)?;

        flags::tour(&ctx, front_door).await?;

        ctx.audit().await?;
        if !args.keep_running {
            ctx.stop_app().await?;
        }
        Ok::<(), QuickstartError>(())
    });
    if let Err(e) = result {
        // No process left behind: the app's instances and front door outlive the agent, so
        // they are stopped first, by a stop job while the agent answers, else by their pids.
        let stopped = rt.block_on(ctx.stop_app());
        if stopped.is_err() {
            kill_recorded_processes(&dir.join("data").join("apps").join("sample"));
        }
        if let Some(status) = agent.stop() {
            eprintln!(
                "stopped the agent ({status}); its log: {}",
                dir.join("agent.log").display()
            );
        }
        return Err(e);
    }

    if args.keep_running {
        if let Some(pid) = agent.keep() {
            println!("\nthe agent keeps running (pid {pid}); stop it with: kill {pid}");
        }
    } else if let Some(status) = agent.stop() {
        println!("\nstopped the agent ({status})");
    }
    print_next_steps(
        &dir,
        &agent_bin,
        &pki.paths,
        addr,
        front_door,
        args.keep_running,
    );
    Ok(Exit::Success)
}

/// SIGTERM to the process group of every instance and front door the app's state file
/// records (each is the leader of its own session and group). Best effort: quickstart is
/// failing already, and an unreadable state file leaves nothing to find.
fn kill_recorded_processes(app_dir: &Path) {
    let Ok(text) = fs::read(app_dir.join("state.json")) else {
        return;
    };
    let Ok(state) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return;
    };
    let pids = state["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(std::iter::once(&state["front_door"]))
        .filter_map(|r| r["pid"].as_u64())
        .filter_map(|p| i32::try_from(p).ok());
    for pid in pids {
        // ESRCH (gone already) is the expected failure.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

fn print_next_steps(
    dir: &Path,
    agent_bin: &Path,
    p: &dev_pki::PkiPaths,
    addr: SocketAddr,
    front_door: SocketAddr,
    running: bool,
) {
    let d = dir.display();
    if running {
        println!("\nthe sample app answers through its front door: http://{front_door}/");
    } else {
        println!(
            "\nthe sample app's front door is http://{front_door}/ (stopped with the app; it \
             comes back with the next deploy)"
        );
    }
    println!("\nnext steps:");
    if !running {
        println!("  # start the agent again (it writes its address to {d}/data/run/listen.addr):");
        println!("  {} run --config {d}/agent.toml", agent_bin.display());
    }
    println!("  # point the controller at it:");
    let agent_addr = if running {
        addr.to_string()
    } else {
        format!("$(cat {d}/data/run/listen.addr)")
    };
    println!(
        "  export GANTRY_AGENT={agent_addr} GANTRY_AGENT_ID={AGENT_ID} GANTRY_CA={} GANTRY_CERT={} GANTRY_CERT_KEY={} GANTRY_STATE_DIR={d}/state",
        p.ca.display(),
        p.controller.display(),
        p.controller_key.display()
    );
    println!(
        "  # deploy a canary that waits for you, look, promote it (or abort), roll back, verify:"
    );
    println!(
        "  gantry deploy --key {d}/keys/deployer.key --app {APP} --version 1.5.0 --artifact {d}/sample-1.1.0.tar.gz --health http:/health --instances 2 --strategy canary --step 20:promote --step 100:5s -- bin/gantry-sample-app"
    );
    println!("  curl http://{front_door}/");
    println!("  gantry status");
    println!("  gantry promote --key {d}/keys/deployer.key --app {APP}");
    println!("  gantry abort --key {d}/keys/deployer.key --app {APP}");
    println!("  gantry rollback --key {d}/keys/deployer.key --app {APP}");
    println!(
        "  # the flag set in force (quickstart switched banner off; a kill-switch key may only switch flags off):"
    );
    println!("  gantry flags show --app {APP}");
    println!(
        "  gantry flags kill --key {d}/keys/{}.key --app {APP} banner",
        flags::KILL_KEY
    );
    println!("  gantry audit verify --pubkey {d}/keys/agent.pub");
}
