//! `gantry quickstart`: a local agent with fresh PKI and keys; deploys of the sample app with
//! each strategy (hot twice, then rolling, blue-green and canary through the app's front
//! door); the audit log and its verification; then clean-up and the commands to do it by hand.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use gantry_proto::keys::{self, KeyError, PublicKey, SigningKey};
use gantry_proto::v1::Action;

use crate::cli::{ActionArgs, ConnArgs, JobSpecArgs, QuickstartArgs, RolloutArgs};
use crate::client::{Agent, ClientError, ConnSettings};
use crate::commands::audit::{self, Verdict};
use crate::commands::dev_pki::{self, DevPkiError};
use crate::commands::job::action_job;
use crate::commands::job::spec::{build_job, hash_file};
use crate::commands::job::{JobError, JobFile};
use crate::commands::status;
use crate::commands::submit::{SubmitError, ensure_artifact, submit_and_follow};
use crate::exit::Exit;
use crate::output::{Events, Mode, outcome_name};

/// The agent id quickstart's PKI names.
pub const AGENT_ID: &str = "quickstart-agent";
/// The sample app's name in the agent's config.
pub const APP: &str = "sample";
/// How long the agent gets to bind its port.
const AGENT_START_DEADLINE: Duration = Duration::from_secs(20);
/// How long the agent gets to stop after SIGTERM.
const AGENT_STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Why quickstart stopped.
#[derive(Debug, thiserror::Error)]
pub enum QuickstartError {
    /// A directory or file could not be made.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--dir` exists and holds files.
    #[error("{} is not empty; quickstart needs a new or empty directory", path.display())]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// A binary is missing.
    #[error("cannot find {what} at {}; build it (cargo build --workspace) or pass {flag}", path.display())]
    MissingBinary {
        /// Which binary.
        what: &'static str,
        /// Where it was looked for.
        path: PathBuf,
        /// The flag that names it.
        flag: &'static str,
    },
    /// No range of ten free ports was found.
    #[error("no range of {PORTS} free ports between 18080 and 19079 on 127.0.0.1")]
    NoFreePorts,
    /// No free port for the front door was found.
    #[error("no free port on 127.0.0.1 for the sample app's front door")]
    NoFrontDoorPort(#[source] std::io::Error),
    /// Certificates could not be made.
    #[error(transparent)]
    Pki(#[from] DevPkiError),
    /// Keys could not be made.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The agent exited while starting.
    #[error("the agent exited while starting ({status}); the end of {}:\n{tail}", log.display())]
    AgentExited {
        /// Its exit status.
        status: String,
        /// Its log.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// The agent did not bind its port in time.
    #[error("the agent did not write {} within {}s; the end of {}:\n{tail}", addr_file.display(), AGENT_START_DEADLINE.as_secs(), log.display())]
    AgentTimeout {
        /// The file awaited.
        addr_file: PathBuf,
        /// Its log.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// A job could not be built.
    #[error(transparent)]
    Job(#[from] JobError),
    /// Talking to the agent failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Submitting a job failed.
    #[error(transparent)]
    Submit(#[from] SubmitError),
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
}

impl QuickstartError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            QuickstartError::Io { .. }
            | QuickstartError::NotEmpty { .. }
            | QuickstartError::MissingBinary { .. }
            | QuickstartError::NoFreePorts
            | QuickstartError::NoFrontDoorPort(_)
            | QuickstartError::Pki(_)
            | QuickstartError::Key(_) => Exit::Usage,
            QuickstartError::Job(e) => e.exit(),
            QuickstartError::Client(e) => e.exit(),
            QuickstartError::Submit(e) => e.exit(),
            QuickstartError::AgentExited { .. }
            | QuickstartError::AgentTimeout { .. }
            | QuickstartError::JobFailed { .. }
            | QuickstartError::Http { .. }
            | QuickstartError::NoInstance
            | QuickstartError::AuditFailed(_) => Exit::JobFailed,
        }
    }
}

/// Ports in the sample app's range: at least two per instance (a blue and a green slot).
const PORTS: u16 = 10;
/// The sample app's `max_instances`.
const MAX_INSTANCES: u16 = 2;
const _: () = assert!(PORTS >= 2 * MAX_INSTANCES);

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> QuickstartError + 'a {
    move |source| QuickstartError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The working directory: `--dir` (new or empty) or a fresh temporary one, mode 0711 so that
/// instances running as another user can reach their release directory.
fn work_dir(dir: Option<&Path>) -> Result<PathBuf, QuickstartError> {
    let dir = match dir {
        Some(d) => {
            fs::create_dir_all(d).map_err(io("create", d))?;
            if fs::read_dir(d).map_err(io("read", d))?.next().is_some() {
                return Err(QuickstartError::NotEmpty { path: d.to_owned() });
            }
            d.to_owned()
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("gantry-quickstart-")
                .tempdir()
                .map_err(io("create a temporary directory in", &std::env::temp_dir()))?;
            t.keep()
        }
    };
    let dir = fs::canonicalize(&dir).map_err(io("resolve", &dir))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).map_err(io("chmod", &dir))?;
    Ok(dir)
}

/// The first `PORTS` consecutive free ports on loopback from 18080 up.
fn free_port_range() -> Result<u16, QuickstartError> {
    let mut start = 18080u16;
    while start < 19080 {
        let held: Vec<TcpListener> = (start..start + PORTS)
            .map_while(|p| TcpListener::bind(("127.0.0.1", p)).ok())
            .collect();
        if held.len() == usize::from(PORTS) {
            return Ok(start);
        }
        start += PORTS;
    }
    Err(QuickstartError::NoFreePorts)
}

/// A free port on loopback for the front door (asked of the kernel by binding port 0),
/// outside the instances' range.
fn free_front_door_port(first_port: u16) -> Result<u16, QuickstartError> {
    let range = first_port..first_port + PORTS;
    let mut last = std::io::Error::other("every port offered was in the instances' range");
    for _ in 0..20 {
        match TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()) {
            Ok(addr) if !range.contains(&addr.port()) => return Ok(addr.port()),
            Ok(_) => {}
            Err(e) => last = e,
        }
    }
    Err(QuickstartError::NoFrontDoorPort(last))
}

/// The user instances run as: ours when not root (the agent then runs as us), else nobody.
fn instance_user() -> String {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return "nobody".to_owned();
    }
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => std::env::var("USER").unwrap_or_else(|_| "nobody".to_owned()),
    }
}

fn toml_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// The agent config quickstart writes (INTERFACES format; paths relative to the config file).
pub fn agent_config(
    first_port: u16,
    front_door_port: u16,
    user: &str,
    controller_fingerprint: &str,
) -> String {
    format!(
        r#"# Written by `gantry quickstart`. Paths are relative to this file.
agent_id = "{AGENT_ID}"
listen = "127.0.0.1:0"
data_dir = "data"

[tls]
ca = "pki/ca.pem"
cert = "pki/agent.pem"
key = "pki/agent.key"
client_fingerprints = [{fp}]

[audit]
signing_key = "keys/agent.key"
checkpoint_every = 64
checkpoint_interval = "60s"

[limits]
max_validity = "1h"
releases_kept = 5

[[keys]]
name = "deployer"
public_key = "keys/deployer.pub"
roles = ["deployer"]

[apps.{APP}]
user = {user}
# The front door: the app's address for its users; it sends each connection to an instance.
listen = "127.0.0.1:{front_door_port}"
# Two ports per instance: blue-green starts the new set beside the old one.
ports = "{first_port}-{last_port}"
max_instances = {MAX_INSTANCES}
stop_timeout = "10s"

[apps.{APP}.allow]
deploy = ["deployer"]
rollback = ["deployer"]
restart = ["deployer"]
stop = ["deployer"]
promote = ["deployer"]
abort = ["deployer"]
"#,
        fp = toml_str(controller_fingerprint),
        user = toml_str(user),
        last_port = first_port + PORTS - 1,
    )
}

/// Writes a release artifact: `bin/gantry-sample-app` (0755) and a README.
///
/// # Errors
///
/// I/O errors reading the binary or writing the archive.
pub fn package_sample(binary: &Path, readme: &str, out: &Path) -> std::io::Result<()> {
    let bin = fs::read(binary)?;
    let file = fs::File::create(out)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, mode, data) in [
        ("bin/gantry-sample-app", 0o755, bin.as_slice()),
        ("README", 0o644, readme.as_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, data)?;
    }
    let gz = tar.into_inner()?;
    let file = gz.finish()?;
    file.sync_all()
}

/// The last `lines` lines of a file, for error messages.
fn tail_of(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    if all.is_empty() {
        "(empty)".to_owned()
    } else {
        all[start..].join("\n")
    }
}

/// The agent process; stopped (SIGTERM, wait) on drop unless kept.
struct AgentProcess {
    child: Option<Child>,
}

impl AgentProcess {
    fn stop(&mut self) -> Option<String> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).ok()?);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + AGENT_STOP_DEADLINE;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status.to_string()),
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        child
            .wait()
            .ok()
            .map(|s| format!("{s} (killed after {}s)", AGENT_STOP_DEADLINE.as_secs()))
    }

    fn keep(&mut self) -> Option<u32> {
        self.child.take().map(|c| c.id())
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn start_agent(bin: &Path, dir: &Path) -> Result<(AgentProcess, SocketAddr), QuickstartError> {
    let log_path = dir.join("agent.log");
    let log = fs::File::create(&log_path).map_err(io("create", &log_path))?;
    let log2 = log.try_clone().map_err(io("open", &log_path))?;
    let config = dir.join("agent.toml");
    let child = Command::new(bin)
        .arg("run")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(io("start", bin))?;
    let mut agent = AgentProcess { child: Some(child) };
    let addr_file = dir.join("data/run/listen.addr");
    let deadline = Instant::now() + AGENT_START_DEADLINE;
    loop {
        if let Some(addr) = fs::read_to_string(&addr_file)
            .ok()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
        {
            return Ok((agent, addr));
        }
        let exited = agent
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            agent.child = None;
            return Err(QuickstartError::AgentExited {
                status: status.to_string(),
                tail: tail_of(&log_path, 20),
                log: log_path,
            });
        }
        if Instant::now() > deadline {
            return Err(QuickstartError::AgentTimeout {
                addr_file,
                tail: tail_of(&log_path, 20),
                log: log_path,
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A minimal HTTP/1.1 GET; returns (status code, body).
///
/// # Errors
///
/// I/O errors, or an answer that is not HTTP.
pub fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let (head, body) = raw.split_once("\r\n\r\n").ok_or_else(bad)?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(bad)?;
    Ok((code, body.to_owned()))
}

fn locate(
    flag_value: Option<&Path>,
    name: &'static str,
    flag: &'static str,
) -> Result<PathBuf, QuickstartError> {
    let path = match flag_value {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join(name)))
            .unwrap_or_else(|| PathBuf::from(name)),
    };
    if !path.is_file() {
        return Err(QuickstartError::MissingBinary {
            what: name,
            path,
            flag,
        });
    }
    Ok(path)
}

/// Everything one run needs.
struct Ctx {
    dir: PathBuf,
    settings: ConnSettings,
    key: SigningKey,
    agent_key: PublicKey,
}

impl Ctx {
    async fn connect(&self) -> Result<Agent, QuickstartError> {
        let mut agent = Agent::connect(&self.settings).await?;
        // The witness lives with this throw-away agent, not in the user's state directory.
        agent.witness_dir = Some(self.dir.join("state"));
        Ok(agent)
    }

    fn spec(&self, version: &str) -> JobSpecArgs {
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
            job_id: None,
            reason: format!("quickstart: deploy {version}"),
            rollout: RolloutArgs::default(),
            command: vec!["bin/gantry-sample-app".to_owned()],
        }
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
        let witnessed = crate::witness::load(&self.dir.join("state"), AGENT_ID)
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

/// `gantry quickstart`.
///
/// # Errors
///
/// [`QuickstartError`] naming the step that failed.
pub fn run(args: &QuickstartArgs) -> Result<Exit, QuickstartError> {
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
    println!(
        "made a CA and certificates in {}, keys in {}",
        dir.join("pki").display(),
        keys_dir.display()
    );
    println!("deployer key id {}", key.key_id());

    let first_port = free_port_range()?;
    let front_door_port = free_front_door_port(first_port)?;
    let front_door = SocketAddr::from(([127, 0, 0, 1], front_door_port));
    let user = instance_user();
    let config_path = dir.join("agent.toml");
    fs::write(
        &config_path,
        agent_config(
            first_port,
            front_door_port,
            &user,
            &pki.controller_fingerprint,
        ),
    )
    .map_err(io("write", &config_path))?;
    println!(
        "wrote {} (app {APP}: front door {front_door}, instances on ports {first_port}-{}, runs as {user})",
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
        },
        dir: dir.clone(),
        key,
        agent_key: agent_signing.public_key(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(io("start the async runtime for", &dir))?;
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

        ctx.audit().await?;
        if !args.keep_running {
            ctx.stop_app().await?;
        }
        Ok::<(), QuickstartError>(())
    });
    if let Err(e) = result {
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
    println!("  gantry audit verify --pubkey {d}/keys/agent.pub");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_app_ports_user_and_pin() {
        let c = agent_config(18080, 40123, "nobody", "ab");
        assert!(c.contains("ports = \"18080-18089\""));
        assert!(c.contains("\nlisten = \"127.0.0.1:40123\"\n"));
        assert!(c.contains("\nmax_instances = 2\n"));
        assert!(c.contains("\npromote = [\"deployer\"]\nabort = [\"deployer\"]\n"));
        assert!(c.contains("user = \"nobody\""));
        assert!(c.contains("client_fingerprints = [\"ab\"]"));
        assert!(c.contains("listen = \"127.0.0.1:0\""));
    }

    #[test]
    fn sample_packages_differ_by_readme() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::write(&bin, b"#!/bin/sh\n").unwrap();
        let (a, b) = (dir.path().join("a.tgz"), dir.path().join("b.tgz"));
        package_sample(&bin, "one", &a).unwrap();
        package_sample(&bin, "two", &b).unwrap();
        assert_ne!(hash_file(&a).unwrap().sha256, hash_file(&b).unwrap().sha256);
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(&a).unwrap()));
        let entries: Vec<(String, u32)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("bin/gantry-sample-app".to_owned(), 0o755),
                ("README".to_owned(), 0o644)
            ]
        );
    }
}
