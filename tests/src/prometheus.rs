//! A real Prometheus server scraping one agent's `/metrics` every second, for the Prometheus
//! gate's tests: its config and TSDB live in the test's temp dir, it listens on a free
//! loopback port, and dropping it kills it.

use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};

use crate::env::TestEnv;
use crate::probe::{free_port_range, http_get, wait_until};
use crate::process;

/// Where Debian's `prometheus` package puts the server.
pub const BINARY: &str = "/usr/bin/prometheus";

/// The server's binary, or why the test cannot run: `Err` says to skip (not installed and
/// not in CI); in CI (`CI=true`) a missing binary panics, since CI installs it.
///
/// # Errors
///
/// The skip message.
pub fn binary() -> Result<PathBuf, String> {
    let path = PathBuf::from(BINARY);
    if path.is_file() {
        return Ok(path);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{BINARY} is missing in CI: .ci/run installs Debian's prometheus package"
    );
    Err(format!(
        "SKIPPED: {BINARY} is not installed (apt-get install prometheus; CI installs it)"
    ))
}

/// A running Prometheus.
#[derive(Debug)]
pub struct Prometheus {
    child: Option<Child>,
    /// Its HTTP API.
    pub addr: SocketAddr,
    log: PathBuf,
}

impl Prometheus {
    /// Starts Prometheus on a free loopback port, scraping `target` (job `gantry`) every
    /// second, and waits until that target is up.
    ///
    /// # Errors
    ///
    /// When it cannot start, or the target is not up within 30 s.
    pub fn start(
        env: &TestEnv,
        program: &std::path::Path,
        target: SocketAddr,
    ) -> anyhow::Result<Self> {
        let dir = env.root.join("prometheus");
        fs::create_dir_all(dir.join("data"))?;
        let conf = dir.join("prometheus.yml");
        fs::write(
            &conf,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
                 - job_name: gantry\n    scrape_interval: 1s\n    scrape_timeout: 900ms\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )?;
        let port = *free_port_range(1)?.start();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = dir.join("prometheus.log");
        let out = fs::File::create(&log)?;
        let mut cmd = Command::new(program);
        cmd.arg(format!("--config.file={}", conf.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().context("cannot start prometheus")?;
        let mut p = Prometheus {
            child: Some(child),
            addr,
            log,
        };
        let up = wait_until(
            Duration::from_secs(30),
            "Prometheus scrapes the agent",
            || p.value("up{job=\"gantry\"}") == Some(1.0),
        );
        if let Err(e) = up {
            let exited = p.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            bail!("{e} (exit: {exited:?})\n{}", p.log_tail());
        }
        Ok(p)
    }

    /// The base URL a job names.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The single value of an instant query, if it has one.
    pub fn value(&self, query: &str) -> Option<f64> {
        let encoded: String = query
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let (status, body) =
            http_get(self.addr.port(), &format!("/api/v1/query?query={encoded}")).ok()?;
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let result = v["data"]["result"].as_array()?;
        result.first()?["value"][1].as_str()?.parse().ok()
    }

    /// The end of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        format!(
            "--- prometheus log {} (tail)\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_group(child.id());
            let _ = child.wait();
        }
    }
}
