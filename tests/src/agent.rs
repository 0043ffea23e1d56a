//! A running `gantry-agent run --config agent.toml`.

use std::fs::{self, OpenOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::bins;
use crate::env::TestEnv;
use crate::process::{self, kill_processes_under, wait_deadline};

/// How long the agent gets to bind and write `run/listen.addr`.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long it gets to stop after SIGTERM.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// The agent process. Dropping it kills the agent and every instance started under the test
/// directory.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    /// Where the agent listens (from `<data_dir>/run/listen.addr`).
    pub addr: SocketAddr,
    /// Its stdout and stderr (appended across restarts).
    pub log: PathBuf,
    root: PathBuf,
    data_dir: PathBuf,
}

impl Agent {
    /// Starts the agent on `env`'s config and waits until it has written its address.
    ///
    /// # Errors
    ///
    /// When it cannot start, exits, or does not bind within [`START_DEADLINE`]; the error
    /// carries the tail of its log.
    pub fn start(env: &TestEnv) -> anyhow::Result<Agent> {
        let addr_file = env.data_dir.join("run").join("listen.addr");
        match fs::remove_file(&addr_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context(format!("cannot remove {}", addr_file.display())),
        }
        let log = env.root.join("agent.log");
        let out = OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = env.command(&bins::path(bins::GANTRY_AGENT)?);
        cmd.args(["run", "--config"])
            .arg(&env.config)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd.spawn().context("cannot start gantry-agent")?;
        let mut agent = Agent {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            root: env.root.clone(),
            data_dir: env.data_dir.clone(),
        };
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Some(addr) = fs::read_to_string(&addr_file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
            {
                agent.addr = addr;
                return Ok(agent);
            }
            if let Some(child) = agent.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                agent.child = None;
                bail!(
                    "gantry-agent exited with {status} before listening\n{}",
                    agent.log_tail()
                );
            }
            if Instant::now() >= end {
                bail!(
                    "gantry-agent did not write {} within {START_DEADLINE:?}\n{}",
                    addr_file.display(),
                    agent.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// The agent's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILLs the agent (only the agent: instances keep running) and reaps it.
    ///
    /// # Errors
    ///
    /// When it is not running or cannot be reaped.
    pub fn kill_9(&mut self) -> anyhow::Result<()> {
        let mut child = self.child.take().context("agent is not running")?;
        child.kill().context("cannot SIGKILL the agent")?;
        child.wait().context("cannot reap the agent")?;
        Ok(())
    }

    /// SIGTERMs the agent and waits for it to exit cleanly.
    ///
    /// # Errors
    ///
    /// When it is not running, does not exit within [`STOP_DEADLINE`] (it is killed then), or
    /// exits unsuccessfully.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("agent is not running")?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        kill(pid, Signal::SIGTERM).context("cannot SIGTERM the agent")?;
        match wait_deadline(&mut child, STOP_DEADLINE)? {
            Some(status) if status.success() => Ok(status),
            Some(status) => bail!(
                "gantry-agent exited with {status} on SIGTERM\n{}",
                self.log_tail()
            ),
            None => bail!(
                "gantry-agent ignored SIGTERM for {STOP_DEADLINE:?}\n{}",
                self.log_tail()
            ),
        }
    }

    /// The whole log.
    pub fn log_text(&self) -> String {
        fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last 40 lines of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = self.log_text();
        let lines: Vec<_> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- agent log {} (tail)\n{tail}", self.log.display())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        kill_processes_under(&self.root, Some(&self.data_dir));
        // The agent binary lives outside the test dir: kill instances it recorded, too.
        for pid in process::recorded_instance_pids(&self.data_dir) {
            process::kill_group(pid);
        }
    }
}
