//! The local agent quickstart runs: finding the binaries, starting `gantry-agent run` and
//! waiting for its address, stopping it; and a minimal HTTP GET for the deployed app.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::exit::Exit;

/// How long the agent gets to bind its port.
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

/// The agent process; stopped (SIGTERM, wait) on drop unless kept.
pub struct AgentProcess {
    child: Option<Child>,
}

impl AgentProcess {
    /// Stops the agent (SIGTERM, then SIGKILL after the deadline); its exit status.
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

    /// Leaves the agent running; its pid.
    pub fn keep(&mut self) -> Option<u32> {
        self.child.take().map(|c| c.id())
    }
}

impl Drop for AgentProcess {
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
pub fn start_agent(
    bin: &Path,
    dir: &Path,
) -> Result<(AgentProcess, SocketAddr), AgentProcessError> {
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
            return Err(AgentProcessError::AgentExited {
                status: status.to_string(),
                tail: tail_of(&log_path, 20),
                log: log_path,
            });
        }
        if Instant::now() > deadline {
            return Err(AgentProcessError::AgentTimeout {
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
