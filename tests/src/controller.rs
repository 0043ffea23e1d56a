//! The `gantry` CLI pointed at one agent through its connection environment variables.

use std::path::Path;
use std::time::Duration;

use crate::agent::Agent;
use crate::bins;
use crate::env::TestEnv;
use crate::process::{self, Output};

/// How long a controller command that talks to the agent may take (a deploy waits for health).
pub const DEADLINE: Duration = Duration::from_secs(180);

/// Runs `gantry` with `GANTRY_AGENT`, `GANTRY_AGENT_ID`, `GANTRY_CA`, `GANTRY_CERT` and
/// `GANTRY_CERT_KEY` set for one agent, in the test's hermetic environment.
#[derive(Debug, Clone)]
pub struct Controller {
    envs: Vec<(String, String)>,
    root: std::path::PathBuf,
    home: std::path::PathBuf,
}

impl Controller {
    /// A controller for `agent` of `env`.
    pub fn new(env: &TestEnv, agent: &Agent) -> Controller {
        let s = |p: &Path| p.to_string_lossy().into_owned();
        Controller {
            envs: vec![
                ("GANTRY_AGENT".to_owned(), agent.addr.to_string()),
                ("GANTRY_AGENT_ID".to_owned(), env.agent_id.clone()),
                ("GANTRY_CA".to_owned(), s(&env.pki.ca)),
                ("GANTRY_CERT".to_owned(), s(&env.pki.controller_cert)),
                ("GANTRY_CERT_KEY".to_owned(), s(&env.pki.controller_key)),
                ("GANTRY_STATE_DIR".to_owned(), s(&env.state_dir)),
            ],
            root: env.root.clone(),
            home: env.home.clone(),
        }
    }

    /// Runs `gantry ARGS` and waits up to [`DEADLINE`].
    ///
    /// # Errors
    ///
    /// When it cannot be started or does not finish in time.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<Output> {
        process::run(self.command(args)?, DEADLINE)
    }

    /// The `gantry ARGS` command [`Controller::run`] runs, to spawn and signal it.
    ///
    /// # Errors
    ///
    /// When the `gantry` binary is not built.
    pub fn command(&self, args: &[&str]) -> anyhow::Result<std::process::Command> {
        let mut cmd = process::hermetic(&bins::path(bins::GANTRY)?, &self.home, self.envs.clone());
        cmd.current_dir(&self.root).args(args);
        Ok(cmd)
    }
}
