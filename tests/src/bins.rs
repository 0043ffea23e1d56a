//! Paths of the binaries under test.
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for the test's own package, so the agent and the
//! controller are found beside the test executable: tests run from `target/<profile>/deps/`,
//! binaries live in `target/<profile>/`.

use std::path::PathBuf;

use anyhow::{Context, bail};

/// The controller CLI.
pub const GANTRY: &str = "gantry";
/// The agent daemon.
pub const GANTRY_AGENT: &str = "gantry-agent";
/// The sample app.
pub const SAMPLE_APP: &str = "gantry-sample-app";

/// `target/<profile>/`, found from the running test executable.
///
/// # Errors
///
/// When the current executable's path cannot be read.
pub fn target_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the test executable's path")?;
    let mut dir = exe
        .parent()
        .context("test executable has no parent directory")?
        .to_owned();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    Ok(dir)
}

/// The path of the built binary `name`.
///
/// # Errors
///
/// When it is missing, with the command that builds it.
pub fn path(name: &str) -> anyhow::Result<PathBuf> {
    let path = target_dir()?.join(name);
    if !path.is_file() {
        bail!(
            "{} not found: run cargo build --workspace --bins first",
            path.display()
        );
    }
    Ok(path)
}
