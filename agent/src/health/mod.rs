//! Health probes (http, tcp, exec) and the wait for an instance to become healthy.
//!
//! Messages are written to end up in a job's final reason: a [`ProbeFailure`] says what was
//! probed and what came back ("GET /health returned 503 (expected 2xx)"), a [`HealthError`]
//! adds why waiting stopped ("...; not healthy within 10s"). Callers prefix the instance
//! ("instance 0 (port 18000): ").

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, sleep_until, timeout};

pub mod analysis;
pub mod compare;
pub mod prometheus;
pub mod sampler;
pub mod signals;
pub mod versus;
pub mod watch;

#[cfg(test)]
mod tests;

use crate::job::{HealthSpec, Probe};
use crate::supervisor::{INSTANCE_PATH, InstanceState, RunAs};

/// Why one probe failed. Self-contained: the cause is part of the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeFailure {
    /// The TCP connection to the instance failed.
    #[error("cannot connect to {addr}: {error}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The cause (part of the message).
        error: io::Error,
    },
    /// The HTTP exchange failed.
    #[error("GET {path}: {message}")]
    Http {
        /// The request path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// The response had the wrong status.
    #[error("GET {path} returned {status} (expected {})", ExpectedStatus(*expected))]
    Status {
        /// The request path.
        path: String,
        /// The status received.
        status: u16,
        /// The expected status; any 2xx if `None`.
        expected: Option<u16>,
    },
    /// The configured path is not a valid request target.
    #[error("health path {path:?} is not a valid request path")]
    BadPath {
        /// The path.
        path: String,
    },
    /// The probe took longer than its timeout.
    #[error("{what} timed out after {}", humantime::format_duration(*timeout))]
    TimedOut {
        /// What was probed ("GET /health", "connect to 127.0.0.1:18000", "exec check.sh").
        what: String,
        /// The timeout.
        timeout: Duration,
    },
    /// The exec probe has an empty command.
    #[error("exec probe has an empty command")]
    EmptyCommand,
    /// The exec probe's command could not be started.
    #[error("cannot run exec probe {command}: {error}")]
    ExecStart {
        /// The command.
        command: String,
        /// The cause (part of the message).
        error: io::Error,
    },
    /// The exec probe's command did not exit 0.
    #[error("exec probe {command} {status}")]
    ExecStatus {
        /// The command.
        command: String,
        /// How it ended ("exited with code 1").
        status: String,
    },
}

struct ExpectedStatus(Option<u16>);

impl fmt::Display for ExpectedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(code) => write!(f, "{code}"),
            None => f.write_str("2xx"),
        }
    }
}

/// Why an instance did not become (or stay) healthy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HealthError {
    /// The deadline passed before enough consecutive probes passed.
    #[error("{}; not healthy within {}", LastFailure(last.as_ref()), humantime::format_duration(*deadline))]
    NotHealthy {
        /// The deadline.
        deadline: Duration,
        /// The last probe failure, if any probe completed and failed.
        last: Option<ProbeFailure>,
    },
    /// After passing once, too many consecutive probes failed.
    #[error("{last}; {failures} consecutive probe failures after being healthy")]
    Unhealthy {
        /// Consecutive failures.
        failures: u32,
        /// The last failure.
        last: ProbeFailure,
    },
    /// The process exited before it was healthy.
    #[error("the instance {status} before it was healthy")]
    Exited {
        /// How it ended ("exited with code 1").
        status: String,
    },
    /// The instance is crash-looping.
    #[error("the instance is crash-looping ({restarts} restarts, last: {last_status})")]
    CrashLoop {
        /// Restarts so far.
        restarts: u32,
        /// How the last run ended.
        last_status: String,
    },
    /// The instance was stopped while waiting.
    #[error("the instance was stopped before it was healthy")]
    Stopped,
    /// While it was watched, the instance exited or restarted.
    #[error("it stopped running ({state})")]
    StoppedRunning {
        /// What it was doing then.
        state: String,
    },
    /// While it was watched, `failures` probes in a row failed.
    #[error("it became unhealthy ({failures} failed probe(s): {last})")]
    BecameUnhealthy {
        /// Consecutive failures.
        failures: u32,
        /// The last failure.
        last: ProbeFailure,
    },
    /// Healthy once, but not for the rollout's minimum healthy time.
    #[error("{why} within the minimum healthy time of {}", humantime::format_duration(*time))]
    NotHealthyFor {
        /// The minimum healthy time.
        time: Duration,
        /// What happened within it (part of the message).
        why: Box<HealthError>,
    },
}

struct LastFailure<'a>(Option<&'a ProbeFailure>);

impl fmt::Display for LastFailure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(failure) => write!(f, "{failure}"),
            None => f.write_str("no probe completed"),
        }
    }
}

/// Runs one probe against the instance on `port` within `limit`; exec probes run in
/// `release_dir` as `run_as` (the app's user, never the agent unless the app runs as it).
///
/// # Errors
///
/// [`ProbeFailure`] saying what was probed and what came back.
pub async fn probe_once(
    probe: &Probe,
    port: u16,
    release_dir: &Path,
    limit: Duration,
    run_as: &RunAs,
) -> Result<(), ProbeFailure> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match probe {
        Probe::Http {
            path,
            expect_status,
        } => {
            let what = format!("GET {path}");
            timeout(limit, http_probe(addr, path, *expect_status))
                .await
                .map_err(|_| ProbeFailure::TimedOut {
                    what,
                    timeout: limit,
                })?
        }
        Probe::Tcp => {
            let what = format!("connect to {addr}");
            match timeout(limit, TcpStream::connect(addr)).await {
                Ok(Ok(_stream)) => Ok(()),
                Ok(Err(error)) => Err(ProbeFailure::Connect { addr, error }),
                Err(_) => Err(ProbeFailure::TimedOut {
                    what,
                    timeout: limit,
                }),
            }
        }
        Probe::Exec { command } => exec_probe(command, port, release_dir, limit, run_as).await,
    }
}

/// Aborts the spawned connection driver when the probe ends (or is cancelled).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn http_probe(
    addr: SocketAddr,
    path: &str,
    expected: Option<u16>,
) -> Result<(), ProbeFailure> {
    let http_err = |e: hyper::Error| ProbeFailure::Http {
        path: path.to_owned(),
        message: e.to_string(),
    };
    let uri: hyper::Uri = path
        .parse()
        .ok()
        .filter(|u: &hyper::Uri| u.scheme().is_none() && path.starts_with('/'))
        .ok_or_else(|| ProbeFailure::BadPath {
            path: path.to_owned(),
        })?;
    let request = hyper::Request::get(uri)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::USER_AGENT, "gantry-agent-health")
        .body(Empty::<Bytes>::new())
        .map_err(|_| ProbeFailure::BadPath {
            path: path.to_owned(),
        })?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|error| ProbeFailure::Connect { addr, error })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    let _driver = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender.send_request(request).await.map_err(http_err)?;
    let status = response.status().as_u16();
    let ok = match expected {
        Some(code) => status == code,
        None => response.status().is_success(),
    };
    if ok {
        Ok(())
    } else {
        Err(ProbeFailure::Status {
            path: path.to_owned(),
            status,
            expected,
        })
    }
}

async fn exec_probe(
    argv: &[String],
    port: u16,
    release_dir: &Path,
    limit: Duration,
    run_as: &RunAs,
) -> Result<(), ProbeFailure> {
    let display = argv.join(" ");
    let env = BTreeMap::from([
        ("PATH".to_owned(), INSTANCE_PATH.to_owned()),
        ("PORT".to_owned(), port.to_string()),
    ]);
    let mut cmd = crate::supervisor::command(release_dir, argv, &env, run_as)
        .ok_or(ProbeFailure::EmptyCommand)?;
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|error| ProbeFailure::ExecStart {
        command: display.clone(),
        error,
    })?;
    match timeout(limit, child.wait()).await {
        Ok(Ok(status)) if status.success() => Ok(()),
        Ok(Ok(status)) => Err(ProbeFailure::ExecStatus {
            command: display,
            status: crate::supervisor::describe_exit(status),
        }),
        Ok(Err(error)) => Err(ProbeFailure::ExecStart {
            command: display,
            error,
        }),
        Err(_) => {
            // The probe runs in its own session: kill everything it started.
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.wait().await;
            Err(ProbeFailure::TimedOut {
                what: format!("exec probe {display}"),
                timeout: limit,
            })
        }
    }
}

/// Probes every `interval`; Ok after `healthy_threshold` consecutive passes; Err on
/// `unhealthy_threshold` consecutive failures after a probe passed once, on `deadline`, or as
/// soon as the instance exits, crash-loops or is stopped (watch receiver). Exec probes run
/// as `run_as` (the app's user).
///
/// # Errors
///
/// [`HealthError`], naming the last probe failure where there is one.
pub async fn wait_healthy(
    spec: &HealthSpec,
    port: u16,
    release_dir: &Path,
    mut instance: tokio::sync::watch::Receiver<InstanceState>,
    run_as: &RunAs,
) -> Result<(), HealthError> {
    let deadline = Instant::now() + spec.deadline;
    let not_healthy = |last: Option<ProbeFailure>| HealthError::NotHealthy {
        deadline: spec.deadline,
        last,
    };
    let (mut passes, mut failures, mut passed_once) = (0u32, 0u32, false);
    let mut last = None;
    loop {
        check_state(&instance.borrow_and_update())?;
        let outcome = tokio::select! {
            outcome = probe_once(&spec.probe, port, release_dir, spec.timeout, run_as) => outcome,
            err = state_failure(&mut instance) => return Err(err),
            () = sleep_until(deadline) => return Err(not_healthy(last)),
        };
        match outcome {
            Ok(()) => {
                passes += 1;
                failures = 0;
                passed_once = true;
                if passes >= spec.healthy_threshold.max(1) {
                    return Ok(());
                }
            }
            Err(failure) => {
                passes = 0;
                failures += 1;
                if passed_once && failures >= spec.unhealthy_threshold.max(1) {
                    return Err(HealthError::Unhealthy {
                        failures,
                        last: failure,
                    });
                }
                last = Some(failure);
            }
        }
        tokio::select! {
            () = sleep(spec.interval) => {}
            err = state_failure(&mut instance) => return Err(err),
            () = sleep_until(deadline) => return Err(not_healthy(last)),
        }
    }
}

/// Err for a state in which the instance can no longer become healthy.
fn check_state(state: &InstanceState) -> Result<(), HealthError> {
    match state {
        InstanceState::Starting | InstanceState::Running { .. } => Ok(()),
        InstanceState::Exited { status, .. } => Err(HealthError::Exited {
            status: status.clone(),
        }),
        InstanceState::CrashLoop {
            restarts,
            last_status,
        } => Err(HealthError::CrashLoop {
            restarts: *restarts,
            last_status: last_status.clone(),
        }),
        InstanceState::Stopped => Err(HealthError::Stopped),
    }
}

/// Resolves when the instance exits, crash-loops or is stopped; never if it is no longer
/// supervised (the probes decide then).
async fn state_failure(instance: &mut tokio::sync::watch::Receiver<InstanceState>) -> HealthError {
    loop {
        if instance.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Err(err) = check_state(&instance.borrow_and_update()) {
            return err;
        }
    }
}
