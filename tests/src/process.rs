//! Running a command with a deadline, and cleaning up processes a test left behind.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::{Pid, getpgid};

/// What a finished command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit code; -1 when a signal ended the process.
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl Output {
    /// stdout and stderr together, for searching a message wherever the program put it.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Every stdout line that parses as a JSON object (the `--json` event stream).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok())
            .filter(serde_json::Value::is_object)
            .collect()
    }

    /// The `{"type":"finished"}` event of a `--json` run, if any.
    pub fn finished(&self) -> Option<serde_json::Value> {
        self.json_lines()
            .into_iter()
            .rev()
            .find(|v| v["type"] == "finished")
    }

    /// The outcome of the finished event (`succeeded`, `failed`, `rolled_back`, `interrupted`).
    pub fn outcome(&self) -> Option<String> {
        self.finished()
            .and_then(|v| v["outcome"].as_str().map(str::to_owned))
    }

    /// Panics with everything the command printed unless it exited with `code`.
    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit code {code}, got {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }
}

/// Runs `cmd` to completion with piped output, killing it at `deadline`.
///
/// # Errors
///
/// When it cannot be started or does not finish in time (the error carries what it printed).
pub fn run(mut cmd: Command, deadline: Duration) -> anyhow::Result<Output> {
    let shown = format!("{cmd:?}");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_deadline(&mut child, deadline)?;
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            code: status.code().unwrap_or(-1),
            stdout,
            stderr,
        }),
        None => anyhow::bail!(
            "{shown} did not finish within {deadline:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}"
        ),
    }
}

fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Waits for `child` until `deadline`; kills it and returns `None` when time runs out.
///
/// # Errors
///
/// When waiting fails.
pub fn wait_deadline(
    child: &mut Child,
    deadline: Duration,
) -> anyhow::Result<Option<std::process::ExitStatus>> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// The CPU time of process `pid` so far: utime + stime from `/proc/PID/stat`, in clock
/// ticks (100 per second on Linux).
///
/// # Errors
///
/// When the process is gone or the file is not as expected.
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("odd /proc stat")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<u64>()?)
    };
    Ok(field(11)? + field(12)?)
}

/// SIGKILLs `pid`'s process group when it leads one (instances run in their own session),
/// otherwise `pid` alone. Never signals the test's own group.
pub fn kill_group(pid: u32) {
    let Ok(raw) = i32::try_from(pid) else { return };
    if raw <= 1 || pid == std::process::id() {
        return;
    }
    let pid = Pid::from_raw(raw);
    let own = getpgid(None).ok();
    match getpgid(Some(pid)) {
        Ok(pgid) if pgid == pid && Some(pgid) != own => {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        _ => {
            let _ = kill(pid, Signal::SIGKILL);
        }
    }
}

/// Kills every process that belongs to a test directory: one whose executable or working
/// directory lies under `root`, or whose command line names `root` (as a front door's
/// `--routes` file does), and every instance and front-door pid recorded in
/// `<data_dir>/apps/*/state.json`. `root` is a unique temp dir, so only processes the test
/// started (directly or through the agent) match.
pub fn kill_processes_under(root: &Path, data_dir: Option<&Path>) {
    if let Some(data) = data_dir {
        for pid in recorded_instance_pids(data) {
            kill_group(pid);
        }
    }
    for pid in processes_under(root) {
        kill_group(pid);
    }
}

/// The pids of the processes that belong to a test directory, as [`kill_processes_under`]
/// finds them: executable or working directory under `root`, or `root` named on the command
/// line. This process is never among them.
pub fn processes_under(root: &Path) -> Vec<u32> {
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id();
    let exact = root.as_os_str().as_encoded_bytes();
    let mut inside = exact.to_vec();
    inside.push(b'/');
    let mut found = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let p = entry.path();
        let under = |link: &str| fs::read_link(p.join(link)).is_ok_and(|t| t.starts_with(root));
        let named = fs::read(p.join("cmdline")).is_ok_and(|c| {
            c.split(|b| *b == 0)
                .any(|arg| arg == exact || contains(arg, &inside))
        });
        if under("exe") || under("cwd") || named {
            found.push(pid);
        }
    }
    found
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Instance and front-door pids from every `<data_dir>/apps/*/state.json`.
pub fn recorded_instance_pids(data_dir: &Path) -> Vec<u32> {
    let Ok(apps) = fs::read_dir(data_dir.join("apps")) else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for app in apps.flatten() {
        let Ok(bytes) = fs::read(app.path().join("state.json")) else {
            continue;
        };
        let Ok(state) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            continue;
        };
        if let Some(instances) = state["instances"].as_array() {
            pids.extend(
                instances
                    .iter()
                    .filter_map(|i| i["pid"].as_u64())
                    .filter_map(|p| u32::try_from(p).ok()),
            );
        }
        // The app's front door (`gantry-agent front-door`, run as the app's user).
        if let Some(pid) = state["front_door"]["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
        {
            pids.push(pid);
        }
    }
    pids
}

/// A `Command` for `program` with a cleared environment: `PATH`, `HOME` and `envs` only, plus
/// `GANTRY_LOG`/`RUST_BACKTRACE` when the test runner sets them (for debugging).
pub fn hermetic<I, K, V>(program: &Path, home: &Path, envs: I) -> Command
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("HOME", home)
        .env("RUST_BACKTRACE", "1");
    for passthrough in ["GANTRY_LOG"] {
        if let Some(v) = std::env::var_os(passthrough) {
            cmd.env(passthrough, v);
        }
    }
    cmd.envs(envs);
    cmd
}
