//! Real CI reports for the gate tests, made by real tools on a tiny Python project the harness
//! writes: JUnit XML from pytest (`--junitxml`), LCOV and Cobertura XML from coverage.py
//! (`coverage lcov`, `coverage xml`) and SARIF 2.1.0 from bandit (`-f sarif`).
//!
//! The tools come from PyPI: `.ci/run` installs them, and a machine without them gets them
//! installed here once per test process (`python3 -m pip install`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use anyhow::{Context, bail};

/// The PyPI packages the reports need.
pub const PIP_PACKAGES: [&str; 3] = ["pytest", "coverage", "bandit[sarif]"];

/// Which project the reports are made on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Project {
    /// Every test passes, nearly every line is covered, no finding above low.
    Healthy,
    /// One of three tests fails.
    FailingTest,
    /// The tests cover about half the lines.
    LowCoverage,
    /// A `subprocess` call with `shell=True`: a high-severity finding (bandit B602).
    ShellInjection,
}

/// The reports of one run.
#[derive(Debug, Clone)]
pub struct Reports {
    /// pytest's JUnit XML.
    pub junit: PathBuf,
    /// coverage.py's LCOV tracefile.
    pub lcov: PathBuf,
    /// coverage.py's Cobertura XML.
    pub cobertura: PathBuf,
    /// bandit's SARIF.
    pub sarif: PathBuf,
}

const CALC: &str = "\
def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def mul(a, b):
    return a * b
";

const UNTESTED: &str = "

def parse(text):
    parts = text.split(',')
    out = []
    for p in parts:
        p = p.strip()
        if not p:
            continue
        out.append(int(p))
    return out


def mean(values):
    if not values:
        return 0
    total = 0
    for v in values:
        total += v
    return total / len(values)
";

const SHELL: &str = "

import subprocess


def run(cmd):
    return subprocess.call(cmd, shell=True)
";

const TESTS: &str = "\
from calc import add, sub, mul


def test_add():
    assert add(1, 2) == 3


def test_sub():
    assert sub(3, 2) == 1


def test_mul():
    assert mul(2, 3) == 6
";

fn ensure_tools() -> anyhow::Result<()> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let probe = || {
            Command::new("python3")
                .args(["-c", "import pytest, coverage, bandit, sarif_om"])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if probe() {
            return Ok(());
        }
        let out = Command::new("python3")
            .args(["-m", "pip", "install", "-q", "--break-system-packages"])
            .args(PIP_PACKAGES)
            .output()
            .map_err(|e| format!("cannot run python3 -m pip: {e}"))?;
        if !out.status.success() || !probe() {
            return Err(format!(
                "pip install {} failed: {}",
                PIP_PACKAGES.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    });
    ready.clone().map_err(anyhow::Error::msg)
}

fn run(dir: &Path, args: &[&str], ok_codes: &[i32]) -> anyhow::Result<()> {
    let out = Command::new("python3")
        .args(args)
        .current_dir(dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .with_context(|| format!("cannot run python3 {args:?}"))?;
    let code = out.status.code().unwrap_or(-1);
    if !ok_codes.contains(&code) {
        bail!(
            "python3 {args:?} exited {code}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Writes `project` under `dir` and runs pytest under coverage.py and bandit on it.
///
/// # Errors
///
/// When the tools cannot be installed or run, or a report is not written.
pub fn python_reports(dir: &Path, project: Project) -> anyhow::Result<Reports> {
    ensure_tools()?;
    fs::create_dir_all(dir)?;
    let mut calc = CALC.to_owned();
    let mut tests = TESTS.to_owned();
    match project {
        Project::Healthy => {}
        Project::FailingTest => tests = tests.replace("mul(2, 3) == 6", "mul(2, 3) == 5"),
        Project::LowCoverage => calc.push_str(UNTESTED),
        Project::ShellInjection => calc.push_str(SHELL),
    }
    fs::write(dir.join("calc.py"), calc)?;
    fs::write(dir.join("test_calc.py"), tests)?;
    // pytest exits 1 when a test fails: that is the report this project is for.
    run(
        dir,
        &[
            "-m",
            "coverage",
            "run",
            "--include=calc.py",
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "--junitxml=junit.xml",
        ],
        &[0, 1],
    )?;
    run(dir, &["-m", "coverage", "lcov", "-o", "lcov.info"], &[0])?;
    run(dir, &["-m", "coverage", "xml", "-o", "cobertura.xml"], &[0])?;
    // bandit exits 1 when it finds anything.
    run(
        dir,
        &[
            "-m",
            "bandit",
            "-q",
            "-f",
            "sarif",
            "-o",
            "bandit.sarif",
            "calc.py",
        ],
        &[0, 1],
    )?;
    let reports = Reports {
        junit: dir.join("junit.xml"),
        lcov: dir.join("lcov.info"),
        cobertura: dir.join("cobertura.xml"),
        sarif: dir.join("bandit.sarif"),
    };
    for p in [
        &reports.junit,
        &reports.lcov,
        &reports.cobertura,
        &reports.sarif,
    ] {
        if !p.is_file() {
            bail!("{} was not written", p.display());
        }
    }
    Ok(reports)
}
