//! One test's world: a temp dir with throw-away PKI, Ed25519 keys and an `agent.toml`.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use gantry_policy::config::raw::{RawApp, RawConfig, RawNginx};
use gantry_policy::job::Action;
use nix::unistd::{Uid, User};

use crate::bins;
use crate::probe::free_port_range;
use crate::process::{self, Output};

/// How long a one-shot command (keygen, dev-pki, audit verify ...) may take.
pub const SHORT: Duration = Duration::from_secs(60);

/// The CA and certificates made by `gantry dev-pki`.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The directory holding them.
    pub dir: PathBuf,
    /// CA certificate (both sides trust it).
    pub ca: PathBuf,
    /// CA private key.
    pub ca_key: PathBuf,
    /// The agent's certificate (DNS SAN = agent id).
    pub agent_cert: PathBuf,
    /// The agent's TLS key.
    pub agent_key: PathBuf,
    /// The controller's client certificate.
    pub controller_cert: PathBuf,
    /// The controller's TLS key.
    pub controller_key: PathBuf,
}

/// An Ed25519 key pair made by `gantry keygen --out PREFIX`.
#[derive(Debug, Clone)]
pub struct KeyPair {
    /// `PREFIX.key`: PKCS#8 PEM, mode 0600.
    pub key: PathBuf,
    /// `PREFIX.pub`: SPKI PEM.
    pub public: PathBuf,
}

/// Every key a test uses.
#[derive(Debug, Clone)]
pub struct Keys {
    /// Role `deployer`: may deploy, roll back, restart and stop `web`.
    pub deployer: KeyPair,
    /// The agent's own audit-checkpoint key.
    pub agent: KeyPair,
    /// Role `approver`.
    pub approver: KeyPair,
    /// Role `viewer` only: may do nothing to `web`.
    pub viewer: KeyPair,
    /// Not in the agent's config at all.
    pub attacker: KeyPair,
}

/// Knobs of the generated `agent.toml`.
#[derive(Debug, Clone)]
pub struct Options {
    /// `agent_id`, also the DNS SAN of the agent's certificate.
    pub agent_id: String,
    /// `limits.max_job_bytes`.
    pub max_job_bytes: usize,
    /// `limits.max_validity`, humantime.
    pub max_validity: String,
    /// `limits.max_artifact_bytes`.
    pub max_artifact_bytes: u64,
    /// `apps.web.max_instances`. Without a router `web` gets this many consecutive ports; with
    /// one, twice as many (a blue and a green slot).
    pub ports: u16,
    /// `apps.web.approvals`.
    pub approvals: u32,
    /// `audit.checkpoint_every`.
    pub checkpoint_every: u64,
    /// `apps.web.stop_timeout`, humantime.
    pub stop_timeout: String,
    /// Where `web`'s connections go: nowhere (hot deploys only), its own front door, or nginx.
    pub router: Router,
    /// `apps.web.mode = "http"`: the front door counts HTTP requests (with [`Router::FrontDoor`]).
    pub http: bool,
    /// `[metrics] listen` on a free loopback port ([`TestEnv::metrics`]).
    pub metrics: bool,
}

/// The traffic router of app `web`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Router {
    /// No `listen`: instances are reached on their own ports; only hot deploys.
    #[default]
    None,
    /// `listen` on a free loopback port: the agent's front door.
    FrontDoor,
    /// An nginx the test runs (see [`crate::nginx`]); `listen` is nginx's address and
    /// `[apps.web.nginx]` names its upstream file and reload/check commands.
    Nginx,
}

impl Options {
    /// Defaults, with `web` behind its front door, `max_instances` of `instances`.
    pub fn front_door(instances: u16) -> Options {
        Options {
            ports: instances,
            router: Router::FrontDoor,
            ..Options::default()
        }
    }

    /// Defaults, with `web` behind an nginx the test starts, `max_instances` of `instances`.
    pub fn nginx(instances: u16) -> Options {
        Options {
            ports: instances,
            router: Router::Nginx,
            ..Options::default()
        }
    }
}

/// The files of the nginx a test runs in front of `web` (all under `<root>/nginx/`).
#[derive(Debug, Clone)]
pub struct NginxFiles {
    /// The directory holding them (nginx's `-p` prefix).
    pub dir: PathBuf,
    /// `nginx.conf`: an http proxy on [`TestEnv::listen`] to `upstream web`.
    pub conf: PathBuf,
    /// The upstream file the agent writes, included by `nginx.conf`.
    pub upstream: PathBuf,
    /// The master's pid file.
    pub pid: PathBuf,
    /// The error log.
    pub error_log: PathBuf,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            agent_id: "agent-1".to_owned(),
            max_job_bytes: 65_536,
            max_validity: "1h".to_owned(),
            max_artifact_bytes: 64 << 20,
            ports: 4,
            approvals: 0,
            checkpoint_every: 64,
            stop_timeout: "5s".to_owned(),
            router: Router::None,
            http: false,
            metrics: false,
        }
    }
}

/// A temp dir (mode 0711) holding `pki/`, `keys/`, `agent.toml`, `data/`, `home/` and the
/// controller's state dir. Dropping it kills every process started under it, then deletes it.
#[derive(Debug)]
pub struct TestEnv {
    /// The root; removed on drop.
    pub root: PathBuf,
    /// The agent id.
    pub agent_id: String,
    /// Certificates.
    pub pki: Pki,
    /// Signing keys.
    pub keys: Keys,
    /// `<root>/agent.toml`.
    pub config: PathBuf,
    /// `<root>/data`, the agent's data dir.
    pub data_dir: PathBuf,
    /// The ports of app `web` (instance i listens on the i-th).
    pub ports: RangeInclusive<u16>,
    /// The user `web` runs as.
    pub app_user: String,
    /// `HOME` of every child process.
    pub home: PathBuf,
    /// `GANTRY_STATE_DIR` of the controller (its witness store).
    pub state_dir: PathBuf,
    /// The options the config was written with.
    pub options: Options,
    /// `apps.web.listen`: the front door's (or nginx's) address, with a router.
    pub listen: Option<SocketAddr>,
    /// `[metrics] listen`, when [`Options::metrics`].
    pub metrics: Option<SocketAddr>,
    /// The nginx files, with [`Router::Nginx`].
    pub nginx: Option<NginxFiles>,
    _dir: tempfile::TempDir,
}

impl TestEnv {
    /// A new environment with the default [`Options`].
    ///
    /// # Errors
    ///
    /// When a binary is missing or `gantry dev-pki` / `gantry keygen` fails.
    pub fn new() -> anyhow::Result<TestEnv> {
        TestEnv::with_options(Options::default())
    }

    /// A new environment whose config follows `options`.
    ///
    /// # Errors
    ///
    /// As [`TestEnv::new`].
    pub fn with_options(options: Options) -> anyhow::Result<TestEnv> {
        let dir = tempfile::Builder::new().prefix("gantry-e2e-").tempdir()?;
        let root = dir.path().to_owned();
        // An unprivileged app user must be able to traverse into its release directory.
        fs::set_permissions(&root, fs::Permissions::from_mode(0o711))?;
        let home = root.join("home");
        let state_dir = root.join("controller-state");
        for d in [&home, &state_dir, &root.join("keys")] {
            fs::create_dir_all(d)?;
        }
        let pki_dir = root.join("pki");
        let slots = if options.router == Router::None { 1 } else { 2 };
        let listen = match options.router {
            Router::None => None,
            Router::FrontDoor | Router::Nginx => Some(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                *free_port_range(1)?.start(),
            ))),
        };
        let metrics = if options.metrics {
            Some(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                *free_port_range(1)?.start(),
            )))
        } else {
            None
        };
        let nginx = (options.router == Router::Nginx).then(|| {
            let dir = root.join("nginx");
            NginxFiles {
                conf: dir.join("nginx.conf"),
                upstream: dir.join("upstream.conf"),
                pid: dir.join("nginx.pid"),
                error_log: dir.join("error.log"),
                dir,
            }
        });
        let mut env = TestEnv {
            agent_id: options.agent_id.clone(),
            pki: Pki {
                ca: pki_dir.join("ca.pem"),
                ca_key: pki_dir.join("ca.key"),
                agent_cert: pki_dir.join("agent.pem"),
                agent_key: pki_dir.join("agent.key"),
                controller_cert: pki_dir.join("controller.pem"),
                controller_key: pki_dir.join("controller.key"),
                dir: pki_dir,
            },
            keys: Keys {
                deployer: key_paths(&root, "deployer"),
                agent: key_paths(&root, "agent"),
                approver: key_paths(&root, "approver"),
                viewer: key_paths(&root, "viewer"),
                attacker: key_paths(&root, "attacker"),
            },
            config: root.join("agent.toml"),
            data_dir: root.join("data"),
            ports: free_port_range(options.ports * slots)?,
            app_user: app_user()?,
            home,
            state_dir,
            options,
            listen,
            metrics,
            nginx,
            root,
            _dir: dir,
        };
        let pki = env.pki.dir.to_string_lossy().into_owned();
        env.gantry(&["dev-pki", "--out", &pki, "--agent-id", &env.agent_id])?
            .assert_code(0);
        for name in ["deployer", "agent", "approver", "viewer", "attacker"] {
            let prefix = env.root.join("keys").join(name);
            env.gantry(&["keygen", "--out", &prefix.to_string_lossy()])?
                .assert_code(0);
        }
        for p in [
            &env.pki.ca,
            &env.pki.agent_cert,
            &env.keys.deployer.key,
            &env.keys.agent.public,
        ] {
            if !p.is_file() {
                bail!("{} was not created", p.display());
            }
        }
        env.write_config()?;
        if env.nginx.is_some() {
            crate::nginx::write_config(&env)?;
        }
        Ok(env)
    }

    /// Writes `agent.toml` from [`TestEnv::options`]; call again after changing them.
    ///
    /// # Errors
    ///
    /// When the file cannot be written.
    pub fn write_config(&mut self) -> anyhow::Result<()> {
        self.write_raw_config(&self.raw_config())
    }

    /// Writes `raw` as this environment's `agent.toml` (a test's edit of [`Self::raw_config`]).
    ///
    /// # Errors
    ///
    /// When it cannot be rendered or written.
    pub fn write_raw_config(&self, raw: &RawConfig) -> anyhow::Result<()> {
        let text = raw.to_toml().context("cannot render agent.toml")?;
        fs::write(&self.config, text)
            .with_context(|| format!("cannot write {}", self.config.display()))
    }

    /// The `agent.toml` this environment uses, as the agent's own config types.
    pub fn raw_config(&self) -> RawConfig {
        let o = &self.options;
        let mut raw = RawConfig::new(&self.agent_id)
            .client_name("controller")
            .key("deployer", "keys/deployer.pub", &["deployer"])
            .key("approver", "keys/approver.pub", &["approver"])
            .key("viewer", "keys/viewer.pub", &["viewer"]);
        raw.audit.checkpoint_every = o.checkpoint_every;
        raw.audit.min_free_bytes = 1024 * 1024;
        raw.limits.max_job_bytes = u64::try_from(o.max_job_bytes).unwrap_or(u64::MAX);
        raw.limits.max_artifact_bytes = o.max_artifact_bytes;
        raw.limits.max_validity.clone_from(&o.max_validity);

        let mut web = RawApp::new(
            &self.app_user,
            &format!("{}-{}", self.ports.start(), self.ports.end()),
        );
        web.max_instances = u32::from(o.ports);
        web.stop_timeout.clone_from(&o.stop_timeout);
        web.approvals = o.approvals;
        web.listen = self.listen.map(|a| a.to_string());
        if o.http {
            web.mode = Some("http".to_owned());
        }
        web = [
            Action::Deploy,
            Action::Rollback,
            Action::Restart,
            Action::Stop,
        ]
        .into_iter()
        .fold(web, |app, action| app.allow(action, &["deployer"]));
        if self.listen.is_some() {
            web = web
                .allow(Action::Promote, &["deployer"])
                .allow(Action::Abort, &["deployer"]);
        }
        web.nginx = self.nginx.as_ref().map(nginx_section);
        raw.metrics = self
            .metrics
            .map(|a| gantry_policy::config::raw::RawMetrics {
                listen: a.to_string(),
            });
        raw.app("web", web)
    }

    /// The port of instance `index` of `web`.
    pub fn port(&self, index: u16) -> u16 {
        self.ports.start() + index
    }

    /// `<data_dir>/apps/web/releases`.
    pub fn releases_dir(&self) -> PathBuf {
        self.data_dir.join("apps").join("web").join("releases")
    }

    /// Runs `gantry ARGS` without connection settings (keygen, dev-pki, job create/sign/show).
    ///
    /// # Errors
    ///
    /// When it cannot be started or exceeds [`SHORT`].
    pub fn gantry(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = self.command(&bins::path(bins::GANTRY)?);
        cmd.args(args);
        process::run(cmd, SHORT)
    }

    /// Issues another controller client certificate from this environment's CA with
    /// `gantry dev-pki --out <pki dir> --add-client NAME`: `<pki dir>/NAME.pem` (DNS SAN and CN
    /// `name`) and its key `<pki dir>/NAME.key`, returned as (certificate, key). The agent admits
    /// it only once `name` is in `tls.client_names` or its fingerprint in
    /// `tls.client_fingerprints`.
    ///
    /// # Errors
    ///
    /// When `gantry` cannot be run or exits non-zero (its output is in the error), e.g. for a
    /// name already issued.
    pub fn add_controller_cert(&self, name: &str) -> anyhow::Result<(PathBuf, PathBuf)> {
        let pki = self.pki.dir.to_string_lossy().into_owned();
        let out = self.gantry(&["dev-pki", "--out", &pki, "--add-client", name])?;
        if out.code != 0 {
            bail!(
                "gantry dev-pki --add-client {name} exited {}\n--- stdout\n{}\n--- stderr\n{}",
                out.code,
                out.stdout,
                out.stderr
            );
        }
        let paths = (
            self.pki.dir.join(format!("{name}.pem")),
            self.pki.dir.join(format!("{name}.key")),
        );
        for p in [&paths.0, &paths.1] {
            if !p.is_file() {
                bail!(
                    "gantry dev-pki --add-client {name} did not create {}",
                    p.display()
                );
            }
        }
        Ok(paths)
    }

    /// Runs `gantry-agent ARGS` (audit verify, audit tail, check-config, policy, keygen).
    ///
    /// # Errors
    ///
    /// When it cannot be started or exceeds [`SHORT`].
    pub fn agent_cmd(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut cmd = self.command(&bins::path(bins::GANTRY_AGENT)?);
        cmd.args(args);
        process::run(cmd, SHORT)
    }

    /// A hermetic command for `program`, run in the root with `HOME` and `GANTRY_STATE_DIR` set.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd =
            process::hermetic(program, &self.home, [("GANTRY_STATE_DIR", &self.state_dir)]);
        cmd.current_dir(&self.root);
        cmd
    }

    /// A recursive listing of `<data_dir>/apps` (path, size, is-dir), to show nothing changed.
    pub fn apps_snapshot(&self) -> Vec<(PathBuf, u64, bool)> {
        let mut out = Vec::new();
        walk(&self.data_dir.join("apps"), &mut out);
        out.sort();
        out
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        process::kill_processes_under(&self.root, Some(&self.data_dir));
    }
}

/// `[apps.web.nginx]`: the upstream file, and `nginx -s reload` / `nginx -t` on the test's
/// own config (never the system's).
fn nginx_section(n: &NginxFiles) -> RawNginx {
    let argv = |head: &[&str]| {
        let program = crate::nginx::binary().unwrap_or_else(|| PathBuf::from("nginx"));
        let mut v = vec![program.to_string_lossy().into_owned()];
        v.extend(head.iter().map(|s| (*s).to_owned()));
        for (flag, path) in [("-p", &n.dir), ("-c", &n.conf), ("-e", &n.error_log)] {
            v.push(flag.to_owned());
            v.push(path.to_string_lossy().into_owned());
        }
        v
    };
    RawNginx {
        upstream_file: n.upstream.to_string_lossy().into_owned(),
        reload_command: argv(&["-s", "reload"]),
        check_command: Some(argv(&["-t", "-q"])),
        pid_file: Some(n.pid.to_string_lossy().into_owned()),
    }
}

fn walk(dir: &Path, out: &mut Vec<(PathBuf, u64, bool)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(meta) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        out.push((e.path(), meta.len(), meta.is_dir()));
        if meta.is_dir() {
            walk(&e.path(), out);
        }
    }
}

fn key_paths(root: &Path, name: &str) -> KeyPair {
    let keys = root.join("keys");
    KeyPair {
        key: keys.join(format!("{name}.key")),
        public: keys.join(format!("{name}.pub")),
    }
}

/// The current user's name, or `nobody` when the tests run as root.
fn app_user() -> anyhow::Result<String> {
    let uid = Uid::current();
    if uid.is_root() {
        return Ok("nobody".to_owned());
    }
    let user = User::from_uid(uid)
        .with_context(|| format!("cannot look up uid {uid}"))?
        .with_context(|| format!("uid {uid} has no passwd entry"))?;
    Ok(user.name)
}
