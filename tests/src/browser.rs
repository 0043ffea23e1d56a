//! A real headless browser (Debian's `chromium`) for the dashboard tests: the DOM a page has
//! once its scripts ran (`--dump-dom`), and a screenshot kept as a CI artifact.
//!
//! Chromium is found at `$GANTRY_CHROMIUM`, `/usr/bin/chromium` or as `chromium` on `PATH`.
//! Without it a test skips with a message, except under `CI=true`, where it fails (CI installs
//! it). It runs with `--no-sandbox` (CI runs as root, where Chromium's sandbox refuses to
//! start) and its own profile directory in the test's temp dir.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::Context;

use crate::process::{Output, run};

/// How long one Chromium run may take (a loaded CI machine starts it slowly).
const DEADLINE: Duration = Duration::from_secs(90);

/// A Chromium binary and the profile directory it runs with.
#[derive(Debug, Clone)]
pub struct Browser {
    bin: PathBuf,
    profile: PathBuf,
}

fn find() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GANTRY_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let usual = PathBuf::from("/usr/bin/chromium");
    if usual.is_file() {
        return Some(usual);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("chromium"))
        .find(|p| p.is_file())
}

impl Browser {
    /// Chromium with a profile under `dir`; `None` (after saying why) when it is not
    /// installed and this is not CI.
    ///
    /// # Panics
    ///
    /// Under `CI=true` when Chromium is missing.
    pub fn find_or_skip(test: &str, dir: &Path) -> Option<Browser> {
        let Some(bin) = find() else {
            let msg = format!(
                "{test}: chromium is not installed (apt-get install --no-install-recommends chromium; CI installs it)"
            );
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "{msg}: required under CI"
            );
            eprintln!("SKIPPED {msg}");
            return None;
        };
        Some(Browser {
            bin,
            profile: dir.join("chromium-profile"),
        })
    }

    fn run(&self, args: &[String]) -> anyhow::Result<Output> {
        let mut cmd = Command::new(&self.bin);
        cmd.args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
        ])
        .arg(format!("--user-data-dir={}", self.profile.display()))
        .args(args)
        .env("HOME", self.profile.parent().unwrap_or(&self.profile));
        let out = run(cmd, DEADLINE)?;
        anyhow::ensure!(
            out.code == 0,
            "chromium exited {}\n--- stderr\n{}",
            out.code,
            out.stderr
        );
        Ok(out)
    }

    /// The DOM of `url` after its scripts ran for `budget` of virtual time.
    ///
    /// # Errors
    ///
    /// When Chromium fails or takes too long.
    pub fn dump_dom(&self, url: &str, budget: Duration) -> anyhow::Result<String> {
        let out = self.run(&[
            format!("--virtual-time-budget={}", budget.as_millis()),
            "--dump-dom".to_owned(),
            url.to_owned(),
        ])?;
        Ok(out.stdout)
    }

    /// A 1280×900 screenshot of `url` after `budget` of virtual time, written to `path`.
    ///
    /// # Errors
    ///
    /// When Chromium fails or wrote nothing.
    pub fn screenshot(&self, url: &str, budget: Duration, path: &Path) -> anyhow::Result<()> {
        self.run(&[
            format!("--virtual-time-budget={}", budget.as_millis()),
            "--window-size=1280,900".to_owned(),
            format!("--screenshot={}", path.display()),
            url.to_owned(),
        ])?;
        let len = std::fs::metadata(path)
            .with_context(|| format!("no screenshot at {}", path.display()))?
            .len();
        anyhow::ensure!(len > 0, "an empty screenshot at {}", path.display());
        Ok(())
    }
}

/// Where a test keeps what CI should keep: `$GANTRY_CI_ARTIFACTS` (created) when set, else
/// `fallback` (the test's temp dir).
///
/// # Errors
///
/// When the directory cannot be created.
pub fn artifacts_dir(fallback: &Path) -> anyhow::Result<PathBuf> {
    match std::env::var_os("GANTRY_CI_ARTIFACTS") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
            Ok(dir)
        }
        _ => Ok(fallback.to_owned()),
    }
}
