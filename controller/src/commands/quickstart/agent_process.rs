//! The local daemons quickstart runs: finding the binaries, starting `gantry-agent run` (and,
//! for `--fleet`, `gantry server`) and waiting for its address, stopping it; and a minimal
//! HTTP GET for the deployed app.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::exit::Exit;

/// How long a daemon gets to bind its port.
const AGENT_START_DEADLINE: Duration = Duration::from_secs(20);
/// How long the agent gets to stop after SIGTERM.
const AGENT_STOP_DEADLINE: Duration = Duration::from_secs(15);

/// Why the local agent could not be found or started.
#[derive(Debug, thiserror::Error)]
pub enum AgentProcessError {
    /// Its log could not be made, or it could not be started.
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
    /// The agent (or the service) exited while starting.
    #[error("the {what} exited while starting ({status}); the end of {}:\n{tail}", log.display())]
    AgentExited {
        /// Which daemon: "agent web-1", "controller service".
        what: String,
        /// Its exit status.
        status: String,
        /// Its log.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
    /// The agent (or the service) did not say where it listens in time.
    #[error("the {what} did not {awaited} within {}s; the end of {}:\n{tail}", AGENT_START_DEADLINE.as_secs(), log.display())]
    AgentTimeout {
        /// Which daemon.
        what: String,
        /// What was awaited ("write data/run/listen.addr").
        awaited: String,
        /// Its log.
        log: PathBuf,
        /// The end of the log.
        tail: String,
    },
}

impl AgentProcessError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            AgentProcessError::Io { .. } | AgentProcessError::MissingBinary { .. } => Exit::Usage,
            AgentProcessError::AgentExited { .. } | AgentProcessError::AgentTimeout { .. } => {
                Exit::JobFailed
            }
        }
    }
}

fn io<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> AgentProcessError + 'a {
    move |source| AgentProcessError::Io {
        op,
        path: path.to_owned(),
        source,
    }
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

/// A daemon quickstart started (an agent, or the controller service); stopped (SIGTERM, wait)
/// on drop unless kept.
pub struct Daemon {
    child: Option<Child>,
}

impl Daemon {
    /// Stops the daemon (SIGTERM, then SIGKILL after the deadline); its exit status.
    pub fn stop(&mut self) -> Option<String> {
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

    /// Leaves the daemon running; its pid.
    pub fn keep(&mut self) -> Option<u32> {
        self.child.take().map(|c| c.id())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Starts `bin run --config DIR/agent.toml`, logging to DIR/agent.log, and waits for the
/// address it writes.
///
/// # Errors
///
/// [`AgentProcessError`]: it cannot be started, exits, or does not bind in time.
pub fn start_agent(bin: &Path, dir: &Path) -> Result<(Daemon, SocketAddr), AgentProcessError> {
    let addr_file = dir.join("data/run/listen.addr");
    let what = format!("agent in {}", dir.display());
    let mut cmd = Command::new(bin);
    cmd.arg("run").arg("--config").arg(dir.join("agent.toml"));
    spawn(
        cmd,
        bin,
        &dir.join("agent.log"),
        &what,
        &format!("write {}", addr_file.display()),
        |_| {
            fs::read_to_string(&addr_file)
                .ok()
                .and_then(|s| s.trim().parse::<SocketAddr>().ok())
        },
    )
}

/// Starts `gantry server --config DIR/controller.toml` (`gantry` is `bin`), logging to
/// DIR/server.log, and waits for its "gantry server ready on ADDR" line.
///
/// # Errors
///
/// [`AgentProcessError`]: it cannot be started, exits, or does not listen in time.
pub fn start_service(bin: &Path, dir: &Path) -> Result<(Daemon, SocketAddr), AgentProcessError> {
    let mut cmd = Command::new(bin);
    cmd.arg("server")
        .arg("--config")
        .arg(dir.join("controller.toml"));
    spawn(
        cmd,
        bin,
        &dir.join("server.log"),
        "controller service",
        "say \"gantry server ready on ADDR\"",
        |log| {
            log.lines()
                .find_map(|l| l.strip_prefix("gantry server ready on "))
                .and_then(|a| a.trim().parse::<SocketAddr>().ok())
        },
    )
}

/// Spawns `cmd` with stdout and stderr to `log_path` and polls `ready` (given the log's text)
/// until it yields the daemon's address, the daemon exits, or the deadline passes.
fn spawn(
    mut cmd: Command,
    bin: &Path,
    log_path: &Path,
    what: &str,
    awaited: &str,
    ready: impl Fn(&str) -> Option<SocketAddr>,
) -> Result<(Daemon, SocketAddr), AgentProcessError> {
    let log = fs::File::create(log_path).map_err(io("create", log_path))?;
    let log2 = log.try_clone().map_err(io("open", log_path))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(io("start", bin))?;
    let mut daemon = Daemon { child: Some(child) };
    let deadline = Instant::now() + AGENT_START_DEADLINE;
    loop {
        if let Some(addr) = ready(&fs::read_to_string(log_path).unwrap_or_default()) {
            return Ok((daemon, addr));
        }
        let exited = daemon
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten());
        if let Some(status) = exited {
            daemon.child = None;
            return Err(AgentProcessError::AgentExited {
                what: what.to_owned(),
                status: status.to_string(),
                tail: tail_of(log_path, 20),
                log: log_path.to_owned(),
            });
        }
        if Instant::now() > deadline {
            return Err(AgentProcessError::AgentTimeout {
                what: what.to_owned(),
                awaited: awaited.to_owned(),
                tail: tail_of(log_path, 20),
                log: log_path.to_owned(),
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

/// The binary `name`: `flag_value`, else beside this executable.
///
/// # Errors
///
/// [`AgentProcessError::MissingBinary`] naming `flag`.
pub fn locate(
    flag_value: Option<&Path>,
    name: &'static str,
    flag: &'static str,
) -> Result<PathBuf, AgentProcessError> {
    let path = match flag_value {
        Some(p) => p.to_owned(),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| e.parent().map(|d| d.join(name)))
            .unwrap_or_else(|| PathBuf::from(name)),
    };
    if !path.is_file() {
        return Err(AgentProcessError::MissingBinary {
            what: name,
            path,
            flag,
        });
    }
    Ok(path)
}
