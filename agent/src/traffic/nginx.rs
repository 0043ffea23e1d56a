//! An existing nginx as the router: the table becomes an `upstream` block in a file nginx
//! includes, and a configured command (typically `nginx -s reload`) makes nginx reread it.
//!
//! nginx has no weight 0 and no per-backend drain timer: a backend out of rotation (weight 0
//! or draining) is written as `down`, and nginx's own graceful reload lets the old workers
//! finish their open connections (bounded by nginx's `worker_shutdown_timeout`).
//!
//! `nginx -s reload` only signals the master and returns; the master reads the configuration
//! and starts new workers some time later. With `pid_file` set, an apply is in effect only once
//! the master has a worker that was not there before the reload (nginx starts new workers
//! only after it has read the new configuration), so a backend taken out of rotation is not
//! stopped while nginx still sends it new connections.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::router::{check_generation, write_readable};
use super::{Applied, BackendAddrs, BoxFuture, RouteTable, Router, Stats, TrafficError};

/// The comment line that carries the table itself, so `current` can read it back.
const TABLE_MARKER: &str = "# gantry-route-table: ";
/// How much of a failed command's stderr goes into the error.
const STDERR_TAIL: usize = 2048;

/// nginx, seen from the agent.
#[derive(Debug, Clone)]
pub struct Nginx {
    /// The upstream's name (what `proxy_pass http://NAME;` or `proxy_pass NAME;` refers to).
    pub upstream: String,
    /// The file nginx includes (e.g. `/etc/nginx/conf.d/gantry-web.upstream.conf`).
    pub upstream_file: PathBuf,
    /// Run before the reload; a non-zero exit restores the previous file and fails the
    /// apply (e.g. `["nginx", "-t", "-q"]`). `nginx -s reload` itself exits 0 even when the
    /// master then refuses the new configuration, so a check is recommended.
    pub check_command: Option<Vec<String>>,
    /// Makes nginx reread its configuration (e.g. `["nginx", "-s", "reload"]`); argv, no
    /// shell.
    pub reload_command: Vec<String>,
    /// nginx's pid file (its `pid` directive): when set, an apply waits, up to
    /// `command_timeout`, until the master has started a new worker after the reload.
    pub pid_file: Option<PathBuf>,
    /// Limit for each command, and for the wait for new workers.
    pub command_timeout: Duration,
    /// Which backend addresses a table may name.
    pub backend_addrs: BackendAddrs,
}

impl Nginx {
    /// An adapter writing `upstream_file` and running `reload_command`, with no check
    /// command, loopback-only backends and a 30 s command timeout.
    pub fn new(upstream: &str, upstream_file: PathBuf, reload_command: Vec<String>) -> Self {
        Self {
            upstream: upstream.to_owned(),
            upstream_file,
            check_command: None,
            reload_command,
            pid_file: None,
            command_timeout: Duration::from_secs(30),
            backend_addrs: BackendAddrs::LoopbackOnly,
        }
    }

    /// The upstream file's text for `table`.
    ///
    /// # Errors
    ///
    /// [`TrafficError::Unsupported`] for an empty table (nginx needs at least one server),
    /// a holding table (nginx cannot hold connections) or an upstream name nginx would not
    /// take.
    pub fn render(&self, table: &RouteTable) -> Result<String, TrafficError> {
        let unsupported = |what: String| TrafficError::Unsupported {
            router: "nginx",
            what,
        };
        if !valid_upstream_name(&self.upstream) {
            return Err(unsupported(format!(
                "upstream name {:?} must be letters, digits, '-' and '_'",
                self.upstream
            )));
        }
        if table.holding {
            return Err(unsupported(
                "nginx cannot hold new connections while no server is up; route to the old backends until the new ones listen"
                    .to_owned(),
            ));
        }
        if table.backends.is_empty() {
            return Err(unsupported(
                "an upstream needs at least one server; list the old backends as draining instead"
                    .to_owned(),
            ));
        }
        // serde_json::to_string never emits a newline, and ids and addresses have none.
        let json = serde_json::to_string(table).unwrap_or_default();
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "# Written by gantry-agent; the next deploy overwrites it."
        );
        let _ = writeln!(out, "{TABLE_MARKER}{json}");
        let _ = writeln!(out, "upstream {} {{", self.upstream);
        for b in &table.backends {
            if b.in_rotation() {
                let _ = writeln!(
                    out,
                    "    server {} weight={};  # {}",
                    b.addr, b.weight, b.id
                );
            } else {
                let why = if b.draining { "draining" } else { "weight 0" };
                let _ = writeln!(out, "    server {} down;  # {} ({why})", b.addr, b.id);
            }
        }
        let _ = writeln!(out, "}}");
        Ok(out)
    }

    async fn apply_table(&self, table: RouteTable) -> Result<Applied, TrafficError> {
        let started = Instant::now();
        table
            .validate(&self.backend_addrs, None)
            .map_err(|problem| TrafficError::InvalidRoutes {
                path: self.upstream_file.clone(),
                problem,
            })?;
        let text = self.render(&table)?;
        check_generation(self.current(), &self.upstream_file, table.generation)?;
        let previous = match fs::read(&self.upstream_file) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(TrafficError::WriteRoutes(crate::state::StateError::Read {
                    path: self.upstream_file.clone(),
                    source,
                }));
            }
        };
        write_readable(&self.upstream_file, text.as_bytes())?;
        let mut result = Ok(());
        if let Some(check) = &self.check_command {
            result = run(check, self.command_timeout).await;
        }
        if result.is_ok() {
            result = self.reload().await;
        }
        if let Err(e) = result {
            // Put back what nginx was running, so a later unrelated reload does not pick up
            // the refused table.
            let restored = match previous {
                Some(bytes) => write_readable(&self.upstream_file, &bytes),
                None => fs::remove_file(&self.upstream_file).or(Ok(())),
            };
            if let Err(r) = restored {
                tracing::warn!(
                    "cannot restore {} after a failed reload: {}",
                    self.upstream_file.display(),
                    crate::error::reason(&r)
                );
            }
            return Err(e);
        }
        Ok(Applied {
            generation: table.generation,
            took: started.elapsed(),
        })
    }
}

impl Nginx {
    /// Runs the reload command; with a pid file, waits until the master has a new worker.
    async fn reload(&self) -> Result<(), TrafficError> {
        let Some(pid_file) = &self.pid_file else {
            return run(&self.reload_command, self.command_timeout).await;
        };
        let master = master_pid(pid_file)?;
        let before = children_of(master);
        run(&self.reload_command, self.command_timeout).await?;
        let deadline = Instant::now() + self.command_timeout;
        loop {
            if children_of(master).difference(&before).next().is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(TrafficError::NginxNotReloaded {
                    pid: master,
                    timeout: self.command_timeout,
                });
            }
            tokio::time::sleep(RELOAD_POLL).await;
        }
    }
}

/// How often an apply looks for nginx's new workers.
const RELOAD_POLL: Duration = Duration::from_millis(5);

/// The pid in nginx's pid file.
pub(super) fn master_pid(path: &Path) -> Result<i32, TrafficError> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let text = fs::read_to_string(path).map_err(|source| TrafficError::NginxPid {
        path: path.to_owned(),
        source,
    })?;
    match text.trim().parse::<i32>() {
        Ok(pid) if pid > 1 => Ok(pid),
        _ => Err(TrafficError::NginxPid {
            path: path.to_owned(),
            source: invalid("not a process id"),
        }),
    }
}

/// The processes whose parent is `parent` (nginx's workers and helpers), from `/proc`.
pub(super) fn children_of(parent: i32) -> BTreeSet<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return BTreeSet::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// The parent pid in `/proc/PID/stat` (the field after the state, past the command's `)`).
fn parent_of(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

impl Router for Nginx {
    fn name(&self) -> &'static str {
        "nginx"
    }

    fn apply(&self, table: RouteTable) -> BoxFuture<'_, Result<Applied, TrafficError>> {
        Box::pin(self.apply_table(table))
    }

    fn current(&self) -> Result<Option<RouteTable>, TrafficError> {
        let text = match fs::read_to_string(&self.upstream_file) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TrafficError::ReadRoutes {
                    path: self.upstream_file.clone(),
                    source,
                });
            }
        };
        let Some(json) = text.lines().find_map(|l| l.strip_prefix(TABLE_MARKER)) else {
            // Written by hand or by something else: nothing to continue from.
            return Ok(None);
        };
        RouteTable::from_bytes(
            json.as_bytes(),
            &self.upstream_file,
            &self.backend_addrs,
            None,
        )
        .map(Some)
    }

    fn stats(&self) -> Result<Stats, TrafficError> {
        Err(TrafficError::StatsUnsupported { router: "nginx" })
    }
}

fn valid_upstream_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Runs `argv` to completion within `timeout`; Ok when it exits 0.
async fn run(argv: &[String], timeout: Duration) -> Result<(), TrafficError> {
    let command = argv.join(" ");
    let Some((program, args)) = argv.split_first() else {
        return Err(TrafficError::CommandSpawn {
            command,
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
        });
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| TrafficError::CommandSpawn {
            command: command.clone(),
            source,
        })?;
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => return Err(TrafficError::CommandSpawn { command, source }),
        Err(_) => return Err(TrafficError::CommandTimeout { command, timeout }),
    };
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stderr = stderr.trim();
    let tail_start = stderr
        .char_indices()
        .rev()
        .nth(STDERR_TAIL)
        .map_or(0, |(i, _)| i);
    Err(TrafficError::CommandFailed {
        command,
        status: crate::supervisor::describe_exit(output.status),
        stderr: stderr[tail_start..].to_owned(),
    })
}
