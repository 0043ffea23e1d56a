use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::*;
use crate::supervisor::{Backoff, Instance, InstanceSpec};

/// The agent's own identity, for exec probes in tests (no app user).
fn agent_identity() -> RunAs {
    RunAs::CurrentUser {
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
    }
}

async fn probe_as_agent(
    probe: &Probe,
    port: u16,
    release_dir: &Path,
    limit: Duration,
) -> Result<(), ProbeFailure> {
    probe_once(probe, port, release_dir, limit, &agent_identity()).await
}

async fn wait_as_agent(
    spec: &HealthSpec,
    port: u16,
    release_dir: &Path,
    instance: watch::Receiver<InstanceState>,
) -> Result<(), HealthError> {
    wait_healthy(spec, port, release_dir, instance, &agent_identity()).await
}

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
                let response =
                    format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
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
    probe_as_agent(&http("/health", None), ok, dir, T)
        .await
        .unwrap();
    probe_as_agent(&http("/health", Some(200)), ok, dir, T)
        .await
        .unwrap();
    let err = probe_as_agent(&http("/health", Some(204)), ok, dir, T)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "GET /health returned 200 (expected 204)");

    let unavailable = http_server(|_| 503).await;
    let err = probe_as_agent(&http("/health", None), unavailable, dir, T)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "GET /health returned 503 (expected 2xx)");
    probe_as_agent(&http("/health", Some(503)), unavailable, dir, T)
        .await
        .unwrap();
}

#[tokio::test]
async fn http_probe_reports_refused_timeouts_and_bad_paths() {
    let dir = Path::new("/");
    let port = closed_port().await;
    let err = probe_as_agent(&http("/health", None), port, dir, T)
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
    let err = probe_as_agent(&probe, silent_port, dir, Duration::from_millis(200)).await;
    assert_eq!(
        err.unwrap_err().to_string(),
        "GET /health timed out after 200ms"
    );

    let err = probe_as_agent(&http("health", None), port, dir, T)
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
    probe_as_agent(&Probe::Tcp, open, Path::new("/"), T)
        .await
        .unwrap();
    let closed = closed_port().await;
    let err = probe_as_agent(&Probe::Tcp, closed, Path::new("/"), T)
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
    let err = probe_as_agent(&probe, 18000, dir.path(), T)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "exec probe ./check.sh exited with code 1");
    std::fs::write(dir.path().join("ready"), "").unwrap();
    probe_as_agent(&probe, 18000, dir.path(), T).await.unwrap();
    probe_as_agent(&exec(&["sh", "-c", "exit 0"]), 1, dir.path(), T)
        .await
        .unwrap();
    let err = probe_as_agent(&exec(&[]), 1, dir.path(), T)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "exec probe has an empty command");
}

#[tokio::test]
async fn exec_probe_is_killed_on_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let probe = exec(&["sh", "-c", "sleep 30 & echo $! > bg.pid; sleep 30"]);
    let err = probe_as_agent(&probe, 1, dir.path(), Duration::from_millis(300))
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
    wait_as_agent(&spec, port, Path::new("/"), state)
        .await
        .unwrap();
}

#[tokio::test]
async fn wait_healthy_gives_up_at_the_deadline_naming_the_last_failure() {
    let port = http_server(|_| 503).await;
    let spec = health(http("/health", None), Duration::from_millis(400));
    let started = std::time::Instant::now();
    let (_tx, state) = running();
    let err = wait_as_agent(&spec, port, Path::new("/"), state)
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
    let err = wait_as_agent(&spec, port, Path::new("/"), state)
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
        slot: crate::state::Slot::Blue,
        release_dir: dir.path().to_owned(),
        command: vec!["sh".to_owned(), "-c".to_owned(), "exit 4".to_owned()],
        env: BTreeMap::new(),
        run_as: agent_identity(),
        log_dir: dir.path().join("logs"),
        stop_timeout: Duration::from_secs(5),
        role: crate::supervisor::Role::Instance,
        limits: None,
    };
    let backoff = Backoff {
        initial: Duration::from_secs(60),
        ..Backoff::default()
    };
    let instance = Instance::spawn(spec, backoff).await.unwrap();
    let health_spec = health(http("/health", None), Duration::from_secs(60));
    let started = std::time::Instant::now();
    let err = wait_as_agent(&health_spec, port, dir.path(), instance.state())
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
    let err = wait_as_agent(&health_spec, port, dir.path(), stopped)
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
    let err = wait_as_agent(&health_spec, port, dir.path(), looping)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "the instance is crash-looping (5 restarts, last: exited with code 4)"
    );
}
