//! The front door as the supervisor runs it: the real `gantry-agent front-door` process,
//! reloaded by SIGHUP through the agent's `FrontDoor` router, drained by SIGTERM.

// Test code: a failed setup step should panic with its error.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gantry_agent::state::write_atomic;
use gantry_agent::traffic::{Backend, FrontDoor, ProcessId, ReloadVia, RouteTable, Router, Stats};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const DEADLINE: Duration = Duration::from_secs(10);

/// A backend that sends its name on a line, then echoes.
async fn backend(name: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if stream
                    .write_all(format!("{name}\n").as_bytes())
                    .await
                    .is_ok()
                {
                    let (mut r, mut w) = stream.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
        }
    });
    addr
}

struct Conn {
    stream: BufReader<TcpStream>,
    backend: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let mut stream = BufReader::new(TcpStream::connect(addr).await?);
        let mut backend = String::new();
        if stream.read_line(&mut backend).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        backend.pop();
        Ok(Conn { stream, backend })
    }

    async fn echo(&mut self, msg: &str) -> std::io::Result<()> {
        self.stream
            .get_mut()
            .write_all(format!("{msg}\n").as_bytes())
            .await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        assert_eq!(line, format!("{msg}\n"));
        Ok(())
    }
}

fn table(generation: u64, backends: &[(&str, SocketAddr)]) -> RouteTable {
    RouteTable::new(
        generation,
        backends
            .iter()
            .map(|&(id, addr)| Backend::new(id, addr, 1))
            .collect(),
    )
}

/// Kills the process if the test ends early.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_front_door(routes: &Path, stats: &Path) -> Killed {
    let child = Command::new(env!("CARGO_BIN_EXE_gantry-agent"))
        .arg("front-door")
        .arg("--routes")
        .arg(routes)
        .args(["--listen", "127.0.0.1:0", "--stats"])
        .arg(stats)
        .stdin(Stdio::null())
        // Its own process group, like the supervisor's instances.
        .process_group(0)
        .spawn()
        .unwrap();
    Killed(child)
}

async fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + DEADLINE;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn sighup_switches_and_sigterm_drains_then_exits_zero() {
    let (a, b) = (backend("a").await, backend("b").await);
    let dir = tempfile::tempdir().unwrap();
    let routes = dir.path().join("routes.json");
    let stats = dir.path().join("stats.json");
    write_atomic(&routes, &table(1, &[("a", a)]).to_bytes()).unwrap();
    let mut door = spawn_front_door(&routes, &stats);
    let pid = door.0.id();
    let listen = wait_for("the front door's stats", || {
        Stats::load(&stats)
            .ok()
            .flatten()
            .filter(|s| s.pid == pid)
            .and_then(|s| s.listen)
    })
    .await;
    let process = ProcessId::of(pid).unwrap();
    let router = FrontDoor::new(
        routes.clone(),
        stats.clone(),
        ReloadVia::signal(move || Some(process)),
    );

    let mut open = Conn::open(listen).await.unwrap();
    assert_eq!(open.backend, "a");
    router.apply(table(2, &[("b", b)])).await.unwrap();
    for _ in 0..3 {
        assert_eq!(Conn::open(listen).await.unwrap().backend, "b");
    }
    open.echo("across the reload").await.unwrap();

    // SIGTERM: no new connections, the open one finishes, then exit 0.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    wait_for("the listener to close", || {
        std::net::TcpStream::connect(listen).is_err().then_some(())
    })
    .await;
    open.echo("while draining").await.unwrap();
    assert!(
        door.0.try_wait().unwrap().is_none(),
        "exited before the drain"
    );
    drop(open);
    let status = wait_for("the front door to exit", || door.0.try_wait().unwrap()).await;
    assert!(status.success(), "{status}");
    let last = Stats::load(&stats).unwrap().unwrap();
    assert!(!last.accepting);
    assert_eq!(last.generation, 2);
    // 3 requests, plus any probe that connected while waiting for the listener to close.
    assert!(last.backends["b"].total >= 3, "{last:?}");
}

#[tokio::test]
async fn it_refuses_to_start_without_a_valid_route_table() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gantry-agent"))
        .arg("front-door")
        .arg("--routes")
        .arg(dir.path().join("missing.json"))
        .args(["--listen", "127.0.0.1:0", "--stats"])
        .arg(dir.path().join("stats.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot read route table") && stderr.contains("missing.json"),
        "{stderr}"
    );
}
