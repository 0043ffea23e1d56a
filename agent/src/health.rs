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
use tokio::sync::watch;
use tokio::time::{Instant, sleep, sleep_until, timeout};

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

/// The agent's own identity, for exec probes run without an app user.
fn agent_identity() -> RunAs {
    RunAs::CurrentUser {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    }
}

/// Runs one probe against the instance on `port` (exec probes run in `release_dir` with the
/// agent's identity), within `timeout`.
///
/// # Errors
///
/// [`ProbeFailure`] saying what was probed and what came back.
pub async fn probe_once(
    probe: &Probe,
    port: u16,
    release_dir: &Path,
    timeout: Duration,
) -> Result<(), ProbeFailure> {
    probe_once_as(probe, port, release_dir, timeout, &agent_identity()).await
}

/// [`probe_once`], with exec probes run as `run_as` (the app's user).
///
/// # Errors
///
/// [`ProbeFailure`] saying what was probed and what came back.
pub async fn probe_once_as(
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
/// with the agent's identity; see [`wait_healthy_as`].
///
/// # Errors
///
/// [`HealthError`], naming the last probe failure where there is one.
pub async fn wait_healthy(
    spec: &HealthSpec,
    port: u16,
    release_dir: &Path,
    instance: watch::Receiver<InstanceState>,
) -> Result<(), HealthError> {
    wait_healthy_as(spec, port, release_dir, instance, &agent_identity()).await
}

/// [`wait_healthy`], with exec probes run as `run_as` (the app's user).
///
/// # Errors
///
/// [`HealthError`], naming the last probe failure where there is one.
pub async fn wait_healthy_as(
    spec: &HealthSpec,
    port: u16,
    release_dir: &Path,
    mut instance: watch::Receiver<InstanceState>,
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
            outcome = probe_once_as(&spec.probe, port, release_dir, spec.timeout, run_as) => outcome,
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
async fn state_failure(instance: &mut watch::Receiver<InstanceState>) -> HealthError {
    loop {
        if instance.changed().await.is_err() {
            return std::future::pending().await;
        }
        if let Err(err) = check_state(&instance.borrow_and_update()) {
            return err;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;
    use crate::supervisor::{Backoff, Instance, InstanceSpec};

    /// An HTTP server answering the n-th request (from 0) with `status(n)`; returns its port.
    async fn http_server(status: impl Fn(u32) -> u16 + Send + Sync + 'static) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = Arc::new(AtomicU32::new(0));
        let status = Arc::new(status);
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                let code = status(count.fetch_add(1, Ordering::SeqCst));
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let response = format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(response.as_bytes()).await;
                });
            }
        });
        port
    }

    /// A port nothing listens on.
    async fn closed_port() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }

    fn http(path: &str, expect_status: Option<u16>) -> Probe {
        Probe::Http {
            path: path.to_owned(),
            expect_status,
        }
    }

    fn exec(argv: &[&str]) -> Probe {
        Probe::Exec {
            command: argv.iter().map(|s| s.to_string()).collect(),
        }
    }

    const T: Duration = Duration::from_secs(2);

    fn health(probe: Probe, deadline: Duration) -> HealthSpec {
        HealthSpec {
            probe,
            interval: Duration::from_millis(50),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
            deadline,
        }
    }

    fn running() -> (watch::Sender<InstanceState>, watch::Receiver<InstanceState>) {
        watch::channel(InstanceState::Running {
            pid: 1,
            restarts: 0,
        })
    }

    #[tokio::test]
    async fn http_probe_checks_the_status() {
        let dir = Path::new("/");
        let ok = http_server(|_| 200).await;
        probe_once(&http("/health", None), ok, dir, T)
            .await
            .unwrap();
        probe_once(&http("/health", Some(200)), ok, dir, T)
            .await
            .unwrap();
        let err = probe_once(&http("/health", Some(204)), ok, dir, T)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "GET /health returned 200 (expected 204)");

        let unavailable = http_server(|_| 503).await;
        let err = probe_once(&http("/health", None), unavailable, dir, T)
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), "GET /health returned 503 (expected 2xx)");
        probe_once(&http("/health", Some(503)), unavailable, dir, T)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn http_probe_reports_refused_timeouts_and_bad_paths() {
        let dir = Path::new("/");
        let port = closed_port().await;
        let err = probe_once(&http("/health", None), port, dir, T)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("cannot connect to 127.0.0.1:{port}: ")),
            "{text}"
        );
        assert!(text.to_lowercase().contains("refused"), "{text}");
        // The cause is in the message, not repeated as a source.
        assert!(std::error::Error::source(&err).is_none());

        // Accepts but never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_port = silent.local_addr().unwrap().port();
        let probe = http("/health", None);
        let err = probe_once(&probe, silent_port, dir, Duration::from_millis(200)).await;
        assert_eq!(
            err.unwrap_err().to_string(),
            "GET /health timed out after 200ms"
        );

        let err = probe_once(&http("health", None), port, dir, T)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "health path \"health\" is not a valid request path"
        );
    }

    #[tokio::test]
    async fn tcp_probe_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().port();
        probe_once(&Probe::Tcp, open, Path::new("/"), T)
            .await
            .unwrap();
        let closed = closed_port().await;
        let err = probe_once(&Probe::Tcp, closed, Path::new("/"), T)
            .await
            .unwrap_err();
        assert!(matches!(err, ProbeFailure::Connect { .. }), "{err}");
    }

    #[tokio::test]
    async fn exec_probe_runs_in_the_release_dir() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("check.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\n[ \"$PORT\" = 18000 ] && [ -e ready ]\n",
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let probe = exec(&["./check.sh"]);
        let err = probe_once(&probe, 18000, dir.path(), T).await.unwrap_err();
        assert_eq!(err.to_string(), "exec probe ./check.sh exited with code 1");
        std::fs::write(dir.path().join("ready"), "").unwrap();
        probe_once(&probe, 18000, dir.path(), T).await.unwrap();
        probe_once(&exec(&["sh", "-c", "exit 0"]), 1, dir.path(), T)
            .await
            .unwrap();
        let err = probe_once(&exec(&[]), 1, dir.path(), T).await.unwrap_err();
        assert_eq!(err.to_string(), "exec probe has an empty command");
    }

    #[tokio::test]
    async fn exec_probe_is_killed_on_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let probe = exec(&["sh", "-c", "sleep 30 & echo $! > bg.pid; sleep 30"]);
        let err = probe_once(&probe, 1, dir.path(), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            err.to_string(),
            "exec probe sh -c sleep 30 & echo $! > bg.pid; sleep 30 timed out after 300ms"
        );
        // Its background child went with it (a zombie at most, until init reaps it).
        if let Ok(pid) = std::fs::read_to_string(dir.path().join("bg.pid")) {
            let stat_path = format!("/proc/{}/stat", pid.trim());
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            loop {
                let stat = std::fs::read_to_string(&stat_path).unwrap_or_default();
                let state = stat
                    .rsplit(')')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .next();
                if matches!(state, None | Some("Z")) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "background child runs: {stat}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }

    #[tokio::test]
    async fn wait_healthy_succeeds_after_consecutive_passes() {
        let port = http_server(|n| if n == 0 { 503 } else { 200 }).await;
        let spec = health(http("/health", None), Duration::from_secs(10));
        let (_tx, state) = running();
        wait_healthy(&spec, port, Path::new("/"), state)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn wait_healthy_gives_up_at_the_deadline_naming_the_last_failure() {
        let port = http_server(|_| 503).await;
        let spec = health(http("/health", None), Duration::from_millis(400));
        let started = std::time::Instant::now();
        let (_tx, state) = running();
        let err = wait_healthy(&spec, port, Path::new("/"), state)
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            err.to_string(),
            "GET /health returned 503 (expected 2xx); not healthy within 400ms"
        );
    }

    #[tokio::test]
    async fn wait_healthy_fails_when_healthy_once_then_failing() {
        let port = http_server(|n| if n == 0 { 200 } else { 503 }).await;
        let spec = health(http("/health", None), Duration::from_secs(10));
        let (_tx, state) = running();
        let err = wait_healthy(&spec, port, Path::new("/"), state)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "GET /health returned 503 (expected 2xx); 2 consecutive probe failures after being healthy"
        );
    }

    #[tokio::test]
    async fn wait_healthy_fails_fast_when_the_instance_crashes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let port = closed_port().await;
        let spec = InstanceSpec {
            app: crate::job::AppName::new("web").unwrap(),
            version: semver::Version::new(1, 0, 0),
            index: 0,
            port,
            release_dir: dir.path().to_owned(),
            command: vec!["sh".to_owned(), "-c".to_owned(), "exit 4".to_owned()],
            env: BTreeMap::new(),
            run_as: agent_identity(),
            log_dir: dir.path().join("logs"),
            stop_timeout: Duration::from_secs(5),
        };
        let backoff = Backoff {
            initial: Duration::from_secs(60),
            ..Backoff::default()
        };
        let instance = Instance::spawn(spec, backoff).await.unwrap();
        let health_spec = health(http("/health", None), Duration::from_secs(60));
        let started = std::time::Instant::now();
        let err = wait_healthy(&health_spec, port, dir.path(), instance.state())
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            err.to_string(),
            "the instance exited with code 4 before it was healthy"
        );
        instance.stop().await.unwrap();

        let (_tx, stopped) = watch::channel(InstanceState::Stopped);
        let err = wait_healthy(&health_spec, port, dir.path(), stopped)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the instance was stopped before it was healthy"
        );
        let (_tx, looping) = watch::channel(InstanceState::CrashLoop {
            restarts: 5,
            last_status: "exited with code 4".to_owned(),
        });
        let err = wait_healthy(&health_spec, port, dir.path(), looping)
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the instance is crash-looping (5 restarts, last: exited with code 4)"
        );
    }
}
