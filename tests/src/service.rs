//! A fleet for tests of the controller service: several real agents (each its own
//! [`TestEnv`]: data dir, id, labels, ports), all trusting the first environment's human keys
//! and one orchestrator key, and `gantry server` processes over them (embedded store or a
//! PostgreSQL the test starts).

use std::fs::{self, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use gantry_policy::config::raw::RawConfig;

use crate::agent::Agent;
use crate::bins;
use crate::env::{Options, TestEnv};
use crate::fleet::{Orchestrator, trust_orchestrator};
use crate::process::{self, Output};

/// How long the service gets to open its store and listen.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// An agent to start: its id, its environment and its labels.
pub type Placed<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

/// One agent of the fleet.
pub struct Member {
    /// Its environment (its own PKI, data dir and ports).
    pub env: TestEnv,
    /// The running agent.
    pub agent: Agent,
}

/// Agents in rings, plus the service's PKI and orchestrator key (in the first env's root).
pub struct Fleet {
    /// The agents, in the order given.
    pub members: Vec<Member>,
    /// The orchestrator key the agents trust.
    pub orchestrator: Orchestrator,
    /// `gantry dev-pki` for the service: `ca.pem`, `agent.pem` (the service's certificate,
    /// named `gantry-server`), `controller.pem` (the operator's).
    pub pki: PathBuf,
    /// The port of the service's dial-in listener, when some agents dial out.
    pub dial_port: Option<u16>,
}

impl Fleet {
    /// Starts one agent per `(id, labels)`, all in environment `production`.
    ///
    /// # Errors
    /// When an environment or agent cannot be made or started.
    pub fn start(agents: &[(&str, &[(&str, &str)])]) -> anyhow::Result<Fleet> {
        let one_port = Options {
            ports: 1,
            ..Options::default()
        };
        Fleet::start_dialling(agents, &[], &one_port)
    }

    /// [`Fleet::start`], the agents named in `dialling` in dial-out mode: no `listen`,
    /// `[controller] dial` to the service's dial-in port (picked free now) and its name
    /// `gantry-server`, trusting the service's CA; each agent's environment made from
    /// `options` (its id replaced).
    ///
    /// # Errors
    /// As [`Fleet::start`].
    pub fn start_dialling(
        agents: &[(&str, &[(&str, &str)])],
        dialling: &[&str],
        options: &Options,
    ) -> anyhow::Result<Fleet> {
        let placed: Vec<_> = agents
            .iter()
            .map(|(id, labels)| (*id, "production", *labels))
            .collect();
        Fleet::start_placed(&placed, dialling, options)
    }

    /// [`Fleet::start`], `configure` adding to each agent's config (in the order given, its
    /// environment made, keys included) before it starts.
    ///
    /// # Errors
    /// As [`Fleet::start`], or what `configure` returns.
    pub fn start_configured(
        agents: &[(&str, &[(&str, &str)])],
        configure: &mut dyn FnMut(&TestEnv, RawConfig) -> anyhow::Result<RawConfig>,
    ) -> anyhow::Result<Fleet> {
        let placed: Vec<_> = agents
            .iter()
            .map(|(id, labels)| (*id, "production", *labels))
            .collect();
        let one_port = Options {
            ports: 1,
            ..Options::default()
        };
        Fleet::start_placed_with(&placed, &[], &one_port, configure)
    }

    /// [`Fleet::start`], each agent `(id, environment, labels)` in its own environment.
    ///
    /// # Errors
    /// As [`Fleet::start`].
    pub fn start_in_environments(agents: &[Placed<'_>]) -> anyhow::Result<Fleet> {
        let one_port = Options {
            ports: 1,
            ..Options::default()
        };
        Fleet::start_placed(agents, &[], &one_port)
    }

    fn start_placed(
        agents: &[Placed<'_>],
        dialling: &[&str],
        options: &Options,
    ) -> anyhow::Result<Fleet> {
        Fleet::start_placed_with(agents, dialling, options, &mut |_, raw| Ok(raw))
    }

    fn start_placed_with(
        agents: &[Placed<'_>],
        dialling: &[&str],
        options: &Options,
        configure: &mut dyn FnMut(&TestEnv, RawConfig) -> anyhow::Result<RawConfig>,
    ) -> anyhow::Result<Fleet> {
        let dial_port = if dialling.is_empty() {
            None
        } else {
            Some(free_port()?)
        };
        let mut envs = Vec::new();
        for (id, _, _) in agents {
            envs.push(TestEnv::with_options(Options {
                agent_id: (*id).to_owned(),
                ..options.clone()
            })?);
        }
        let first = &envs[0];
        let orchestrator = Orchestrator::create(first, "orchestrator")?;
        let pki = first.root.join("service-pki");
        first
            .gantry(&[
                "dev-pki",
                "--out",
                &pki.to_string_lossy(),
                "--agent-id",
                "gantry-server",
                "--client-name",
                "ops-1",
            ])?
            .assert_code(0);
        let mut members = Vec::new();
        for (i, env) in envs.into_iter().enumerate() {
            if i > 0 {
                // Every agent trusts the first environment's deployer and approver.
                for name in ["deployer", "approver"] {
                    for ext in ["pub", "key"] {
                        let file = format!("{name}.{ext}");
                        fs::copy(
                            members_root(&members, 0).join("keys").join(&file),
                            env.root.join("keys").join(&file),
                        )?;
                    }
                }
            }
            let mut raw = configure(&env, env.raw_config())?;
            trust_orchestrator(
                &mut raw,
                &orchestrator.pair.public,
                Some(agents[i].1),
                agents[i].2,
            );
            if let Some(port) = dial_port
                && dialling.contains(&env.agent_id.as_str())
            {
                raw = raw.dial(&format!("127.0.0.1:{port}"), "gantry-server");
                if let Some(c) = raw.controller.as_mut() {
                    c.ca = Some(pki.join("ca.pem").to_string_lossy().into_owned());
                }
            }
            env.write_raw_config(&raw)?;
            let agent = Agent::start(&env)?;
            members.push(Member { env, agent });
        }
        Ok(Fleet {
            members,
            orchestrator,
            pki,
            dial_port,
        })
    }

    /// The first environment (keys, artifacts, the service's files).
    pub fn env(&self) -> &TestEnv {
        &self.members[0].env
    }

    /// The member with agent id `id`.
    pub fn member(&self, id: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.env.agent_id == id)
            .unwrap_or(&self.members[0])
    }

    /// Writes `controller.toml` for a replica named `replica` with its data in `dir`.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn write_config(
        &self,
        dir: &Path,
        replica: &str,
        store: Option<&str>,
        lease: &str,
    ) -> anyhow::Result<PathBuf> {
        fs::create_dir_all(dir)?;
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let mut text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"{}\"\nreplica_id = \"{replica}\"\norchestrator_key = \"{}\"\n",
            s(&dir.join("data")),
            s(&self.orchestrator.pair.key),
        );
        if let Some(url) = store {
            text.push_str(&format!("store = \"{url}\"\n"));
        }
        text.push_str(&format!(
            "[tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nclient_names = [\"ops-1\"]\n\n[lease]\nperiod = \"{lease}\"\n\n[engine]\npoll = \"100ms\"\nretry = \"200ms\"\nrefresh = \"1s\"\n",
            s(&self.pki.join("ca.pem")),
            s(&self.pki.join("agent.pem")),
            s(&self.pki.join("agent.key")),
        ));
        if let Some(port) = self.dial_port {
            text.push_str(&format!("\n[dial]\nlisten = \"127.0.0.1:{port}\"\n"));
        }
        for m in &self.members {
            let addr = if m.agent.dials_out {
                String::new()
            } else {
                format!("addr = \"{}\"\n", m.agent.addr)
            };
            text.push_str(&format!(
                "\n[[agents]]\nid = \"{}\"\n{addr}ca = \"{}\"\nclient_cert = \"{}\"\nclient_key = \"{}\"\n",
                m.env.agent_id,
                s(&m.env.pki.ca),
                s(&m.env.pki.controller_cert),
                s(&m.env.pki.controller_key),
            ));
        }
        let path = dir.join("controller.toml");
        fs::write(&path, text)?;
        Ok(path)
    }
}

/// A loopback port free now (bound and released): the service binds it a moment later.
fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn members_root(members: &[Member], i: usize) -> PathBuf {
    members[i].env.root.clone()
}

/// A running `gantry server`.
pub struct Service {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its stdout and stderr (appended across restarts).
    pub log: PathBuf,
    config: PathBuf,
    home: PathBuf,
    pki: PathBuf,
}

impl Service {
    /// Starts `gantry server --config CONFIG` and waits until it listens.
    ///
    /// # Errors
    /// When it exits or does not listen within [`START_DEADLINE`].
    pub fn start(fleet: &Fleet, config: &Path) -> anyhow::Result<Service> {
        let log = config.with_file_name("server.log");
        let mut svc = Service {
            child: None,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            config: config.to_owned(),
            home: fleet.env().home.clone(),
            pki: fleet.pki.clone(),
        };
        svc.restart()?;
        Ok(svc)
    }

    /// Starts it again (after [`Service::kill_9`]).
    ///
    /// # Errors
    /// As [`Service::start`].
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let before = self.log_text().len();
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut cmd = process::hermetic(
            &bins::path(bins::GANTRY)?,
            &self.home,
            [("GANTRY_LOG", "info")],
        );
        cmd.args(["server", "--config"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        self.child = Some(cmd.spawn().context("cannot start gantry server")?);
        let end = Instant::now() + START_DEADLINE;
        loop {
            let text = self.log_text();
            if let Some(addr) = text[before.min(text.len())..]
                .lines()
                .find_map(|l| l.strip_prefix("gantry server ready on "))
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            {
                self.addr = addr;
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                self.child = None;
                bail!("gantry server exited with {status}\n{}", self.log_tail());
            }
            if Instant::now() >= end {
                bail!(
                    "gantry server did not listen within {START_DEADLINE:?}\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// SIGKILLs it.
    ///
    /// # Errors
    /// When it is not running.
    pub fn kill_9(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("gantry server is not running")?;
        child.kill().context("cannot SIGKILL gantry server")?;
        child.wait().context("cannot reap gantry server")?;
        Ok(())
    }

    /// Sends `sig` (SIGSTOP, SIGCONT).
    ///
    /// # Errors
    /// When it is not running.
    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let child = self
            .child
            .as_ref()
            .context("gantry server is not running")?;
        kill(Pid::from_raw(i32::try_from(child.id())?), sig)?;
        Ok(())
    }

    /// Its pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `gantry ARGS --server ADDR` with the operator's certificate.
    ///
    /// # Errors
    /// When it cannot run or does not finish within a minute.
    pub fn gantry(&self, args: &[&str]) -> anyhow::Result<Output> {
        process::run(self.command(args)?, Duration::from_secs(120))
    }

    /// The service's own audit entries (`fleet audit tail --service --json`), oldest first.
    ///
    /// # Errors
    /// When the command fails or prints a line that is not JSON.
    pub fn audit_entries(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let out = self.gantry(&[
            "fleet",
            "audit",
            "tail",
            "--service",
            "--json",
            "--last",
            "100000",
        ])?;
        if out.code != 0 {
            bail!("fleet audit tail --service failed: {}", out.all());
        }
        let mut entries = Vec::new();
        for line in out.stdout.lines() {
            let mut v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
            if v.get("entry").is_some() {
                v = v["entry"].take();
            }
            entries.push(v);
        }
        Ok(entries)
    }

    /// The `Command` of [`Self::gantry`], to start in the background.
    ///
    /// # Errors
    /// When the `gantry` binary is missing.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<std::process::Command> {
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        let envs = [
            ("GANTRY_SERVER".to_owned(), self.addr.to_string()),
            ("GANTRY_CA".to_owned(), s(self.pki.join("ca.pem"))),
            ("GANTRY_CERT".to_owned(), s(self.pki.join("controller.pem"))),
            (
                "GANTRY_CERT_KEY".to_owned(),
                s(self.pki.join("controller.key")),
            ),
        ];
        let mut cmd = process::hermetic(&bins::path(bins::GANTRY)?, &self.home, envs);
        cmd.args(args);
        Ok(cmd)
    }

    /// Where its dashboard listens (`[dashboard]` in its config), from the line it printed at
    /// its last start.
    pub fn dashboard_addr(&self) -> Option<SocketAddr> {
        self.log_text()
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("gantry server dashboard on http://"))
            .and_then(|rest| rest.trim().strip_suffix("/dashboard"))
            .and_then(|a| a.parse().ok())
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// How many job events of dispatched jobs it has logged so far.
    pub fn job_events(&self) -> usize {
        self.log_text()
            .lines()
            .filter(|l| l.contains("job event"))
            .count()
    }

    /// The last 40 lines of the log.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<_> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- server log {} (tail)\n{tail}", self.log.display())
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped replica is woken so it does not linger stopped if the kill is missed.
            let _ = kill(
                Pid::from_raw(i32::try_from(child.id()).unwrap_or(0)),
                Signal::SIGCONT,
            );
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
