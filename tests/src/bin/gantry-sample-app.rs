//! The sample app Gantry's tests and `gantry quickstart` deploy.
//!
//! An HTTP/1 server on `127.0.0.1:$PORT`:
//!
//! * `GET /` answers `<GANTRY_APP> <GANTRY_VERSION> instance <GANTRY_INSTANCE>\n`; when
//!   `GANTRY_OFREP_URL` is set (the app has `[apps.NAME.flags]`), a second line shows the flag
//!   `banner` as the agent's OFREP endpoint evaluates it for targeting key `sample-user`:
//!   `banner: VALUE (variant VARIANT, reason REASON)`, or, when the evaluation fails, the
//!   code default the way an OpenFeature SDK returns it:
//!   `banner: Welcome (code default, reason ERROR: CODE DETAILS)`,
//! * `GET /version` answers the version,
//! * `GET /health` answers 200 `ok`.
//!
//! `SAMPLE_MODE` makes it misbehave on purpose, so that tests can watch the agent roll back:
//! `crash-at-start` (exit 3 at once), `never-healthy` (`/health` answers 503),
//! `unhealthy-after=SECS`, `slow-start=SECS` (binds only after SECS), `crash-under-load=N`
//! (exit 4 after N requests), `errors=PCT` (`GET /` answers 500, with the banner, to PCT
//! percent of requests, spread evenly), `latency=MS` (`GET /` answers after MS milliseconds), `memory=MIB` (holds MIB mebibytes
//! resident, allocated and written at start). When `SAMPLE_MODE` is unset, a `sample-mode` file in the working
//! directory (the release directory) is read instead, so a test can build a broken release.
//! SIGTERM or SIGINT ends it gracefully with exit 0.
//!
//! `SAMPLE_PROBE` lists accesses to try at start, comma-separated, each `read=PATH` (open
//! read-only and read a byte), `append=PATH` (open an existing file for appending, write
//! nothing), `create=DIR` (create and remove a file in DIR) or `list=DIR`; `GET /probe` answers
//! one line per probe, `<op> <path> <result>`, the result `ok` or the errno name (`EACCES`).
//! The security tests use it to show what an app can reach of the agent's files. `spawn=N`
//! starts N child processes (this program, sleeping) one after the other, then kills them all;
//! its result is `ok`, or the errno of the spawn that failed and how many had started
//! (`EAGAIN after 3`): the resource tests use it to show the instance's process limit.

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// Exit code of `crash-at-start`.
const CRASH_AT_START: u8 = 3;
/// Exit code of `crash-under-load`.
const CRASH_UNDER_LOAD: u8 = 4;
/// Exit code for a bad environment (no or bad `PORT`, unknown `SAMPLE_MODE`).
const USAGE: u8 = 2;
/// The argument a `spawn=N` probe starts its children with.
const SLEEP_ARG: &str = "--sleep-as-probe-child";
/// How long open connections get to finish after SIGTERM.
const DRAIN: Duration = Duration::from_secs(5);

/// How this instance misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    CrashAtStart,
    NeverHealthy,
    UnhealthyAfter(Duration),
    SlowStart(Duration),
    CrashUnderLoad(u64),
    Errors(u64),
    Latency(Duration),
    Memory(usize),
}

impl Mode {
    fn parse(raw: &str) -> Result<Mode, String> {
        let secs = |v: &str| {
            v.parse::<u64>()
                .map(Duration::from_secs)
                .map_err(|e| format!("SAMPLE_MODE {raw:?}: {e}"))
        };
        match raw.split_once('=') {
            None if raw.is_empty() || raw == "normal" => Ok(Mode::Normal),
            None if raw == "crash-at-start" => Ok(Mode::CrashAtStart),
            None if raw == "never-healthy" => Ok(Mode::NeverHealthy),
            Some(("unhealthy-after", v)) => secs(v).map(Mode::UnhealthyAfter),
            Some(("slow-start", v)) => secs(v).map(Mode::SlowStart),
            Some(("crash-under-load", v)) => v
                .parse()
                .map(Mode::CrashUnderLoad)
                .map_err(|e| format!("SAMPLE_MODE {raw:?}: {e}")),
            Some(("errors", v)) => match v.parse::<u64>() {
                Ok(p) if p <= 100 => Ok(Mode::Errors(p)),
                _ => Err(format!("SAMPLE_MODE {raw:?}: not a percent")),
            },
            Some(("latency", v)) => v
                .parse()
                .map(|ms| Mode::Latency(Duration::from_millis(ms)))
                .map_err(|e| format!("SAMPLE_MODE {raw:?}: {e}")),
            Some(("memory", v)) => v
                .parse()
                .map(Mode::Memory)
                .map_err(|e| format!("SAMPLE_MODE {raw:?}: {e}")),
            _ => Err(format!("unknown SAMPLE_MODE {raw:?}")),
        }
    }
}

/// One access tried at start, and what the kernel said.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Probe {
    op: String,
    path: String,
    result: String,
}

/// Parses `SAMPLE_PROBE` (see the module docs).
fn parse_probes(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split(',')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((op @ ("read" | "append" | "create" | "list" | "spawn"), path))
                if !path.is_empty() =>
            {
                Ok((op.to_owned(), path.to_owned()))
            }
            _ => Err(format!("SAMPLE_PROBE entry {p:?} is not OP=PATH")),
        })
        .collect()
}

/// The errno's name of `e` (`EACCES`), or its text when it has none.
fn errno_name(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(n) => format!("{:?}", nix::errno::Errno::from_raw(n)),
        None => e.to_string(),
    }
}

/// Starts up to `n` sleeping children, then kills and reaps them: `ok`, or the errno of the
/// spawn that failed and how many had started.
fn spawn_children(n: &str) -> String {
    let Ok(n) = n.parse::<usize>() else {
        return format!("{n:?} is not a count");
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return errno_name(&e),
    };
    let mut children = Vec::new();
    let mut outcome = "ok".to_owned();
    for _ in 0..n {
        match std::process::Command::new(&exe).arg(SLEEP_ARG).spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                outcome = format!("{} after {}", errno_name(&e), children.len());
                break;
            }
        }
    }
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
    outcome
}

/// Tries one access; `ok` or the errno's name.
fn probe(op: &str, path: &str) -> String {
    use std::io::{Read, Write as _};
    if op == "spawn" {
        return spawn_children(path);
    }
    let outcome = match op {
        "read" => std::fs::File::open(path).and_then(|mut f| f.read(&mut [0u8; 1]).map(drop)),
        "append" => std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .and_then(|mut f| f.write_all(b"")),
        "create" => {
            let file = std::path::Path::new(path).join(format!(".probe-{}", std::process::id()));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&file)
                .and_then(|_| std::fs::remove_file(&file))
        }
        _ => std::fs::read_dir(path).map(drop),
    };
    match outcome {
        Ok(()) => "ok".to_owned(),
        Err(e) => errno_name(&e),
    }
}

/// The flag `GET /` shows, and the value it shows when the flag cannot be evaluated.
const FLAG: &str = "banner";
const FLAG_CODE_DEFAULT: &str = "Welcome";
/// How long `GET /` waits for the flag's evaluation.
const OFREP_TIMEOUT: Duration = Duration::from_secs(1);

/// What every request handler shares.
struct App {
    /// The agent's OFREP endpoint (`GANTRY_OFREP_URL`).
    ofrep: Option<String>,
    /// The answer of `GET /probe`.
    probes: String,
    banner: String,
    version: String,
    mode: Mode,
    started: Instant,
    requests: AtomicU64,
    /// Set to the exit code when the app decides to crash.
    crash: watch::Sender<Option<u8>>,
}

impl App {
    fn healthy(&self) -> bool {
        match self.mode {
            Mode::NeverHealthy => false,
            Mode::UnhealthyAfter(after) => self.started.elapsed() < after,
            _ => true,
        }
    }

    /// The status and body of an answer (without the flag line).
    fn handle(&self, req: &Request<Incoming>) -> (StatusCode, String) {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        if let Mode::CrashUnderLoad(limit) = self.mode
            && n >= limit
        {
            self.crash.send_replace(Some(CRASH_UNDER_LOAD));
        }
        let (status, body) = match (req.method(), req.uri().path()) {
            // Request n fails when n * pct / 100 reaches a new integer: pct in every 100.
            (&Method::GET, "/") if matches!(self.mode, Mode::Errors(p) if n * p / 100 > (n - 1) * p / 100) => {
                (StatusCode::INTERNAL_SERVER_ERROR, self.banner.clone())
            }
            (&Method::GET, "/") => (StatusCode::OK, self.banner.clone()),
            (&Method::GET, "/version") => (StatusCode::OK, format!("{}\n", self.version)),
            (&Method::GET, "/probe") => (StatusCode::OK, self.probes.clone()),
            (&Method::GET, "/health") if self.healthy() => (StatusCode::OK, "ok\n".to_owned()),
            (&Method::GET, "/health") => {
                (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n".to_owned())
            }
            _ => (StatusCode::NOT_FOUND, "not found\n".to_owned()),
        };
        (status, body)
    }
}

/// The flag line of `GET /` (see the module docs).
async fn flag_line(base: &str) -> String {
    match tokio::time::timeout(OFREP_TIMEOUT, evaluate(base)).await {
        Ok(Ok(v)) => {
            let value = match &v["value"] {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let text = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
            format!(
                "{FLAG}: {value} (variant {}, reason {})\n",
                text("variant"),
                text("reason")
            )
        }
        Ok(Err(e)) => format!("{FLAG}: {FLAG_CODE_DEFAULT} (code default, reason ERROR: {e})\n"),
        Err(_) => format!(
            "{FLAG}: {FLAG_CODE_DEFAULT} (code default, reason ERROR: no answer within 1s)\n"
        ),
    }
}

/// `POST {base}/ofrep/v1/evaluate/flags/banner` over HTTP/1.1: the answer's JSON when it is
/// `200`, else its `errorCode` and `errorDetails`.
async fn evaluate(base: &str) -> Result<serde_json::Value, String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base
        .strip_prefix("http://")
        .ok_or_else(|| format!("GANTRY_OFREP_URL {base:?} is not http://HOST:PORT"))?
        .trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| format!("cannot connect to {host}: {e}"))?;
    let body = r#"{"context":{"targetingKey":"sample-user"}}"#;
    let req = format!(
        "POST /ofrep/v1/evaluate/flags/{FLAG} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(|e| format!("cannot send to {host}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| format!("cannot read from {host}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, rest) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| "the answer is not HTTP".to_owned())?;
    let v: serde_json::Value =
        serde_json::from_str(rest).map_err(|e| format!("the answer is not JSON: {e}"))?;
    if head.starts_with("HTTP/1.1 200") {
        Ok(v)
    } else {
        Err(format!(
            "{}: {}",
            v["errorCode"].as_str().unwrap_or("GENERAL"),
            v["errorDetails"].as_str().unwrap_or_default()
        ))
    }
}

fn main() -> ExitCode {
    // A child of a `spawn=N` probe: it only has to exist for a while.
    if std::env::args().nth(1).as_deref() == Some(SLEEP_ARG) {
        std::thread::sleep(Duration::from_secs(60));
        return ExitCode::SUCCESS;
    }
    let env = |k: &str| std::env::var(k).unwrap_or_default();
    let mut raw_mode = env("SAMPLE_MODE");
    if raw_mode.is_empty() {
        raw_mode = std::fs::read_to_string("sample-mode")
            .unwrap_or_default()
            .trim()
            .to_owned();
    }
    let mode = match Mode::parse(&raw_mode) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("gantry-sample-app: {e}");
            return ExitCode::from(USAGE);
        }
    };
    // Written, so that every page is resident; held until the process ends.
    let ballast = match mode {
        Mode::Memory(mib) => vec![1u8; mib << 20],
        _ => Vec::new(),
    };
    std::hint::black_box(&ballast);
    if mode == Mode::CrashAtStart {
        eprintln!("gantry-sample-app: crashing at start (SAMPLE_MODE=crash-at-start)");
        return ExitCode::from(CRASH_AT_START);
    }
    let port: u16 = match env("PORT").parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!(
                "gantry-sample-app: PORT {:?} is not a port: {e}",
                env("PORT")
            );
            return ExitCode::from(USAGE);
        }
    };
    let probes = match parse_probes(&env("SAMPLE_PROBE")) {
        Ok(list) => list
            .iter()
            .map(|(op, path)| Probe {
                result: probe(op, path),
                op: op.clone(),
                path: path.clone(),
            })
            .map(|p| format!("{} {} {}\n", p.op, p.path, p.result))
            .collect::<String>(),
        Err(e) => {
            eprintln!("gantry-sample-app: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let (app_name, version) = (env("GANTRY_APP"), env("GANTRY_VERSION"));
    let (crash, crashed) = watch::channel(None);
    let ofrep = std::env::var("GANTRY_OFREP_URL")
        .ok()
        .filter(|u| !u.is_empty());
    let app = Arc::new(App {
        ofrep,
        probes,
        banner: format!("{app_name} {version} instance {}\n", env("GANTRY_INSTANCE")),
        version,
        mode,
        started: Instant::now(),
        requests: AtomicU64::new(0),
        crash,
    });
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gantry-sample-app: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(app, port, crashed)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("gantry-sample-app: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Serves until SIGTERM/SIGINT (returns 0) or a deliberate crash (returns its code).
async fn serve(
    app: Arc<App>,
    port: u16,
    mut crashed: watch::Receiver<Option<u8>>,
) -> std::io::Result<u8> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    if let Mode::SlowStart(delay) = app.mode {
        // The point of this mode is to be late: the agent's health deadline is under test.
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = term.recv() => return Ok(0),
            _ = int.recv() => return Ok(0),
        }
    }
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr).await?;
    println!(
        "gantry-sample-app: {} listening on {addr}",
        app.banner.trim_end()
    );
    let (shutdown, _) = watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let code = loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let app = Arc::clone(&app);
                let mut stop = shutdown.subscribe();
                conns.spawn(async move {
                    let svc = service_fn(move |req| {
                        let (status, mut body) = app.handle(&req);
                        let delay = match app.mode {
                            Mode::Latency(d) if req.uri().path() == "/" => d,
                            _ => Duration::ZERO,
                        };
                        let ofrep = app
                            .ofrep
                            .clone()
                            .filter(|_| req.method() == Method::GET && req.uri().path() == "/");
                        async move {
                            // Only when asked: a sleep, even of zero, yields to the crash in
                            // crash-under-load before this answer is written.
                            if !delay.is_zero() {
                                tokio::time::sleep(delay).await;
                            }
                            if let Some(base) = ofrep {
                                body.push_str(&flag_line(&base).await);
                            }
                            let mut resp = Response::new(Full::new(Bytes::from(body)));
                            *resp.status_mut() = status;
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            _ = crashed.changed() => {
                let code = (*crashed.borrow()).unwrap_or(CRASH_UNDER_LOAD);
                eprintln!("gantry-sample-app: crashing after {} requests", app.requests.load(Ordering::SeqCst));
                return Ok(code);
            }
            _ = term.recv() => break 0,
            _ = int.recv() => break 0,
        }
    };
    drop(listener);
    shutdown.send_replace(true);
    let _ = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    println!("gantry-sample-app: stopped");
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse() {
        assert_eq!(Mode::parse(""), Ok(Mode::Normal));
        assert_eq!(Mode::parse("crash-at-start"), Ok(Mode::CrashAtStart));
        assert_eq!(Mode::parse("never-healthy"), Ok(Mode::NeverHealthy));
        assert_eq!(
            Mode::parse("unhealthy-after=3"),
            Ok(Mode::UnhealthyAfter(Duration::from_secs(3)))
        );
        assert_eq!(
            Mode::parse("slow-start=2"),
            Ok(Mode::SlowStart(Duration::from_secs(2)))
        );
        assert_eq!(
            Mode::parse("crash-under-load=5"),
            Ok(Mode::CrashUnderLoad(5))
        );
        assert_eq!(Mode::parse("errors=2"), Ok(Mode::Errors(2)));
        assert_eq!(
            Mode::parse("latency=300"),
            Ok(Mode::Latency(Duration::from_millis(300)))
        );
        assert_eq!(Mode::parse("memory=96"), Ok(Mode::Memory(96)));
        assert!(Mode::parse("errors=101").is_err());
        assert!(Mode::parse("slow-start=x").is_err());
        assert!(Mode::parse("explode").is_err());
    }

    #[test]
    fn probes_parse_and_report_the_errno() {
        assert_eq!(
            parse_probes("read=/a,append=/b"),
            Ok(vec![
                ("read".to_owned(), "/a".to_owned()),
                ("append".to_owned(), "/b".to_owned())
            ])
        );
        assert!(parse_probes("write=/a").is_err());
        assert!(parse_probes("read=").is_err());
        assert_eq!(probe("read", "/nonexistent/x"), "ENOENT");
        let dir = tempfile::tempdir().unwrap();
        let dir_s = dir.path().to_str().unwrap();
        assert_eq!(probe("create", dir_s), "ok");
        assert_eq!(probe("list", dir_s), "ok");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
