//! Tests of the traffic layer: route tables, the front door in front of real backends, the
//! agent's side of the protocol, and the nginx adapter: the shared fixtures here, the tests in
//! `tests/<module>.rs`.

use std::collections::BTreeMap;

use std::fs;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use std::path::{Path, PathBuf};

use std::sync::Arc;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use tokio::net::{TcpListener, TcpStream};

use tokio::task::JoinHandle;

use super::front_door::{FrontDoorHandle, FrontDoorOptions, FrontDoorServer};

use super::*;

use crate::state::write_atomic;

const DEADLINE: Duration = Duration::from_secs(10);

fn lo(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn table(generation: u64, backends: &[(&str, SocketAddr, u32, bool)]) -> RouteTable {
    RouteTable::new(
        generation,
        backends
            .iter()
            .map(|&(id, addr, weight, draining)| Backend {
                id: id.to_owned(),
                addr,
                weight,
                draining,
                cohort: None,
            })
            .collect(),
    )
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Backends: each connection gets the backend's name on a line, then an echo of what it sends.

struct TestBackend {
    addr: SocketAddr,
    accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A backend on a free loopback port that counts its connections and hands each to `serve`.
async fn spawn_backend<F, Fut>(serve: F) -> TestBackend
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    spawn_backend_on(TcpListener::bind(lo(0)).await.unwrap(), serve)
}

/// [`spawn_backend`] on `listener`.
fn spawn_backend_on<F, Fut>(listener: TcpListener, serve: F) -> TestBackend
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&accepted);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve(stream));
        }
    });
    TestBackend {
        addr,
        accepted,
        task,
    }
}

/// A TCP backend that greets each connection with its name, then echoes.
async fn backend(name: &'static str) -> TestBackend {
    backend_on(TcpListener::bind(lo(0)).await.unwrap(), name)
}

/// [`backend`] on `listener`.
fn backend_on(listener: TcpListener, name: &'static str) -> TestBackend {
    spawn_backend_on(listener, move |mut stream: TcpStream| async move {
        if stream
            .write_all(format!("{name}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
        let (mut r, mut w) = stream.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
    })
}

/// A port free a moment ago (for a server the test starts itself); nothing holds it.
async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind(lo(0)).await.unwrap();
    listener.local_addr().unwrap()
}

/// An address whose connections are refused for as long as the returned socket lives: bound
/// (so no other test's listener can take the port) but not listening.
fn refusing_addr() -> (SocketAddr, tokio::net::TcpSocket) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(lo(0)).unwrap();
    let addr = socket.local_addr().unwrap();
    (addr, socket)
}

/// A client connection through the front door, knowing which backend it reached.
struct Conn {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    backend: String,
}

impl Conn {
    async fn open(addr: SocketAddr) -> std::io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        let (r, writer) = stream.into_split();
        let mut reader = BufReader::new(r);
        let mut backend = String::new();
        reader.read_line(&mut backend).await?;
        if backend.is_empty() {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        backend.pop();
        Ok(Conn {
            reader,
            writer,
            backend,
        })
    }

    async fn echo(&mut self, msg: &str) -> std::io::Result<()> {
        self.writer.write_all(format!("{msg}\n").as_bytes()).await?;
        let mut line = String::new();
        self.reader.read_line(&mut line).await?;
        if line != format!("{msg}\n") {
            return Err(std::io::Error::other(format!("echo {line:?} for {msg:?}")));
        }
        Ok(())
    }

    /// Waits until the front door closes the connection (EOF or reset).
    async fn closed(mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(DEADLINE, self.reader.read_to_end(&mut rest)).await,
            Ok(Ok(0) | Err(_))
        )
    }
}

/// One request: connect, read the backend's name, one echo round trip, close.
async fn request(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = Conn::open(addr).await?;
    conn.echo("ping").await?;
    Ok(conn.backend)
}

// ---------------------------------------------------------------------------------------------
// A front door running in this process.

struct Door {
    _dir: tempfile::TempDir,
    routes: PathBuf,
    stats: PathBuf,
    handle: FrontDoorHandle,
    run: JoinHandle<Result<(), TrafficError>>,
}

impl Door {
    async fn start(initial: &RouteTable) -> Door {
        Door::start_in(initial, crate::config::FrontDoorMode::Tcp).await
    }

    async fn start_in(initial: &RouteTable, mode: crate::config::FrontDoorMode) -> Door {
        let dir = tempfile::tempdir().unwrap();
        let routes = dir.path().join("routes.json");
        let stats = dir.path().join("stats.json");
        write_atomic(&routes, &initial.to_bytes()).unwrap();
        let mut opts = FrontDoorOptions::new(routes.clone(), lo(0), stats.clone());
        opts.stats_interval = Duration::from_millis(50);
        opts.mode = mode;
        let server = FrontDoorServer::bind(opts).await.unwrap();
        let handle = server.handle();
        let run = tokio::spawn(server.run());
        let door = Door {
            _dir: dir,
            routes,
            stats,
            handle,
            run,
        };
        let stats = door.stats.clone();
        wait_until("the first stats file", || stats.exists()).await;
        door
    }

    fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    fn router(&self) -> FrontDoor {
        FrontDoor::new(
            self.routes.clone(),
            self.stats.clone(),
            ReloadVia::InProcess(self.handle.clone()),
        )
    }

    fn stats(&self) -> Stats {
        Stats::load(&self.stats).unwrap().unwrap()
    }
}

async fn tally(addr: SocketAddr, n: usize) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for _ in 0..n {
        *counts.entry(request(addr).await.unwrap()).or_insert(0) += 1;
    }
    counts
}

mod front_door;
mod http_mode;
mod nginx;
mod route_table;
mod router;
