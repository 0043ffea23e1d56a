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
    /// Where the agent listens (from `<data_dir>/run/listen.addr`); `127.0.0.1:0` for an
    /// agent in dial-out mode, which listens on nothing.
    pub addr: SocketAddr,
    /// In dial-out mode: it wrote `run/dial.state` instead of `run/listen.addr`.
    pub dials_out: bool,
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
        Agent::start_program(env, &bins::path(bins::GANTRY_AGENT)?)
    }

    /// Starts the agent again on `env` (with more `run` flags) after [`Agent::kill_9`] or
    /// [`Agent::terminate`], in place: dropping the old value would kill the app instances and
    /// every process under the test root (the service too).
    ///
    /// # Errors
    ///
    /// When it still runs, or as [`Agent::start`].
    pub fn restart(&mut self, env: &TestEnv, flags: &[&str]) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the agent still runs; kill or terminate it first");
        }
        let program = bins::path(bins::GANTRY_AGENT)?;
        let new = Agent::start_as(env, &[], &program, &env.root, &env.config, flags)?;
        let old = std::mem::replace(self, new);
        // Not dropped: it has no process left, and its Drop would kill everything under root.
        std::mem::forget(old);
        Ok(())
    }

    /// [`Agent::start`] with another agent binary (an older release, a stand-in).
    ///
    /// # Errors
    ///
    /// As [`Agent::start`].
    pub fn start_program(env: &TestEnv, program: &std::path::Path) -> anyhow::Result<Agent> {
        Agent::start_as(env, &[], program, &env.root, &env.config, &[])
    }

    /// [`Agent::start_program`] run through `wrapper` (a program and its arguments, then the
    /// agent's command line): `setpriv` to start it as another user with capabilities.
    ///
    /// # Errors
    ///
    /// As [`Agent::start`].
    pub fn start_wrapped(
        env: &TestEnv,
        wrapper: &[&str],
        program: &std::path::Path,
    ) -> anyhow::Result<Agent> {
        Agent::start_as(env, wrapper, program, &env.root, &env.config, &[])
    }

    /// [`Agent::start`] the way the README's "deploy by hand" does it: from the directory
    /// above the test's root, with `--config <root name>/agent.toml`, a relative path.
    ///
    /// # Errors
    ///
    /// As [`Agent::start`], and when the root has no parent.
    pub fn start_with_relative_config(env: &TestEnv) -> anyhow::Result<Agent> {
        let parent = env.root.parent().context("the test root has no parent")?;
        let relative = env
            .config
            .strip_prefix(parent)
            .context("the config is not under the root's parent")?;
        Agent::start_as(
            env,
            &[],
            &bins::path(bins::GANTRY_AGENT)?,
            parent,
            relative,
            &[],
        )
    }

    /// Starts `[wrapper...] program run --config <config>` in `cwd` and waits until it has
    /// written its address.
    fn start_as(
        env: &TestEnv,
        wrapper: &[&str],
        program: &std::path::Path,
        cwd: &std::path::Path,
        config: &std::path::Path,
        flags: &[&str],
    ) -> anyhow::Result<Agent> {
        let addr_file = env.data_dir.join("run").join("listen.addr");
        let dial_file = env.data_dir.join("run").join("dial.state");
        for file in [&addr_file, &dial_file] {
            match fs::remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).context(format!("cannot remove {}", file.display())),
            }
        }
        let log = env.root.join("agent.log");
        let out = OpenOptions::new().create(true).append(true).open(&log)?;
        let mut cmd = match wrapper.split_first() {
            Some((head, rest)) => {
                let mut cmd = env.command(std::path::Path::new(head));
                cmd.args(rest).arg(program);
                cmd
            }
            None => env.command(program),
        };
        cmd.current_dir(cwd)
            .args(["run", "--config"])
            .arg(config)
            .args(flags)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let child = cmd.spawn().context("cannot start gantry-agent")?;
        let mut agent = Agent {
            child: Some(child),
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dials_out: false,
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
            if dial_file.exists() {
                agent.dials_out = true;
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

    /// Waits until the agent exits by itself (`--exit-on-disconnect-after`), within `deadline`.
    ///
    /// # Errors
    ///
    /// When it is not running or still runs at the deadline.
    pub fn wait_exit(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("agent is not running")?;
        match wait_deadline(&mut child, deadline)? {
            Some(status) => Ok(status),
            None => {
                self.child = Some(child);
                bail!(
                    "gantry-agent still runs after {deadline:?}\n{}",
                    self.log_tail()
                )
            }
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;
    use crate::probe::wait_until;

    /// A stand-in agent: starts one "instance" in its own session, records it in state.json,
    /// writes listen.addr and exits 0 on SIGTERM.
    const FAKE_AGENT: &str = r#"#!/bin/sh
data="$(dirname "$3")/data"
mkdir -p "$data/run" "$data/apps/web"
setsid sleep 1000 &
echo "{\"instances\":[{\"pid\":$!}]}" > "$data/apps/web/state.json"
trap 'exit 0' TERM
echo 127.0.0.1:7 > "$data/run/listen.addr"
while :; do sleep 0.1; done
"#;

    fn fake(env: &TestEnv) -> std::path::PathBuf {
        let path = env.root.join("fake-agent");
        fs::write(&path, FAKE_AGENT).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn alive(pid: u32) -> bool {
        fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    }

    fn instance_pid(env: &TestEnv) -> u32 {
        process::recorded_instance_pids(&env.data_dir)[0]
    }

    #[test]
    fn start_terminate_and_drop_leave_nothing_running() {
        let env = TestEnv::new().unwrap();
        let program = fake(&env);
        let mut agent = Agent::start_program(&env, &program).unwrap();
        assert_eq!(agent.addr.to_string(), "127.0.0.1:7");
        let first = instance_pid(&env);
        assert!(alive(first));
        agent.terminate().unwrap();
        assert!(alive(first), "instances outlive the agent");

        let agent = Agent::start_program(&env, &program).unwrap();
        let second = instance_pid(&env);
        let agent_pid = agent.pid().unwrap();
        drop(agent);
        for pid in [second, agent_pid] {
            wait_until(Duration::from_secs(5), "the process is gone", || {
                !alive(pid)
            })
            .unwrap();
        }
        // The first instance is not in state.json any more, but it runs under the test dir.
        let root = env.root.clone();
        drop(env);
        wait_until(Duration::from_secs(5), "the first instance is gone", || {
            !alive(first)
        })
        .unwrap();
        assert!(!Path::new(&root).exists());
    }

    #[test]
    fn start_reports_an_agent_that_exits() {
        let env = TestEnv::new().unwrap();
        let err = Agent::start_program(&env, Path::new("/bin/false")).unwrap_err();
        assert!(err.to_string().contains("before listening"), "{err}");
    }
}
