//! Quickstart's working directory and what it holds before the agent starts: the directory
//! itself, free ports for the sample app, the user its instances run as, the agent's config,
//! and the sample app's release packages.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gantry_policy::config::raw::{RawApp, RawConfig};
use gantry_policy::job::Action;

use crate::exit::Exit;

/// The agent id quickstart's PKI names.
pub const AGENT_ID: &str = "quickstart-agent";
/// The sample app's name in the agent's config.
pub const APP: &str = "sample";
/// Ports in the sample app's range: at least two per instance (a blue and a green slot).
pub const PORTS: u16 = 10;
/// The sample app's `max_instances`.
const MAX_INSTANCES: u16 = 2;
const _: () = assert!(PORTS >= 2 * MAX_INSTANCES);

/// Why the working directory could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// A directory or file could not be made.
    #[error("cannot {op} {}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--dir` exists and holds files.
    #[error("{} is not empty; quickstart needs a new or empty directory", path.display())]
    NotEmpty {
        /// The directory.
        path: PathBuf,
    },
    /// No range of ten free ports was found.
    #[error("no range of {PORTS} free ports between 18080 and 19079 on 127.0.0.1")]
    NoFreePorts,
    /// No free port for the front door or the OFREP endpoint was found.
    #[error("no free port on 127.0.0.1 for the sample app's front door or OFREP endpoint")]
    NoFrontDoorPort(#[source] std::io::Error),
    /// The agent's config could not be rendered as TOML.
    #[error("cannot render the agent's config")]
    RenderConfig(#[source] toml::ser::Error),
}

impl WorkspaceError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            WorkspaceError::Io { .. }
            | WorkspaceError::NotEmpty { .. }
            | WorkspaceError::NoFreePorts
            | WorkspaceError::NoFrontDoorPort(_)
            | WorkspaceError::RenderConfig(_) => Exit::Usage,
        }
    }
}

/// The error for `op` on `path`.
pub fn io<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> WorkspaceError + 'a {
    move |source| WorkspaceError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// The working directory: `--dir` (new or empty) or a fresh temporary one, mode 0711 so that
/// instances running as another user can reach their release directory.
pub fn work_dir(dir: Option<&Path>) -> Result<PathBuf, WorkspaceError> {
    let dir = match dir {
        Some(d) => {
            fs::create_dir_all(d).map_err(io("create", d))?;
            if fs::read_dir(d).map_err(io("read", d))?.next().is_some() {
                return Err(WorkspaceError::NotEmpty { path: d.to_owned() });
            }
            d.to_owned()
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("gantry-quickstart-")
                .tempdir()
                .map_err(io("create a temporary directory in", &std::env::temp_dir()))?;
            t.keep()
        }
    };
    let dir = fs::canonicalize(&dir).map_err(io("resolve", &dir))?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o711)).map_err(io("chmod", &dir))?;
    Ok(dir)
}

/// A range of ports this quickstart holds: no other quickstart on the host takes it while
/// the claim lives (an exclusive `flock` on a file in the temp directory), since probing
/// alone leaves a window between the probe and the agent binding the ports.
#[derive(Debug)]
pub struct PortClaim {
    /// The first port of the range.
    pub start: u16,
    _lock: nix::fcntl::Flock<fs::File>,
}

/// The first `PORTS` consecutive free ports on loopback from 18080 up that no other
/// quickstart has claimed.
pub fn free_port_range() -> Result<PortClaim, WorkspaceError> {
    let mut start = 18080u16;
    while start < 19080 {
        if let Some(lock) = claim(start) {
            let held: Vec<TcpListener> = (start..start + PORTS)
                .map_while(|p| TcpListener::bind(("127.0.0.1", p)).ok())
                .collect();
            if held.len() == usize::from(PORTS) {
                return Ok(PortClaim { start, _lock: lock });
            }
        }
        start += PORTS;
    }
    Err(WorkspaceError::NoFreePorts)
}

/// The lock of the range starting at `start`, or `None` when another quickstart holds it (or
/// the lock file cannot be used, which only means this range is skipped).
fn claim(start: u16) -> Option<nix::fcntl::Flock<fs::File>> {
    let path = std::env::temp_dir().join(format!("gantry-quickstart-ports-{start}.lock"));
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .ok()?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).ok()
}

/// A free port on loopback for the front door (asked of the kernel by binding port 0),
/// outside the instances' range.
pub fn free_front_door_port(first_port: u16) -> Result<u16, WorkspaceError> {
    free_port_outside(first_port, &[])
}

/// A free port on loopback (asked of the kernel by binding port 0) outside the instances'
/// range and other than `taken`.
pub fn free_port_outside(first_port: u16, taken: &[u16]) -> Result<u16, WorkspaceError> {
    let range = first_port..first_port + PORTS;
    let mut last = std::io::Error::other("every port offered was in the instances' range");
    for _ in 0..20 {
        match TcpListener::bind(("127.0.0.1", 0)).and_then(|l| l.local_addr()) {
            Ok(addr) if !range.contains(&addr.port()) && !taken.contains(&addr.port()) => {
                return Ok(addr.port());
            }
            Ok(_) => {}
            Err(e) => last = e,
        }
    }
    Err(WorkspaceError::NoFrontDoorPort(last))
}

/// The user instances run as: ours when not root (the agent then runs as us), else nobody.
pub fn instance_user() -> String {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return "nobody".to_owned();
    }
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => std::env::var("USER").unwrap_or_else(|_| "nobody".to_owned()),
    }
}

/// The agent config quickstart writes, built with the agent's own config types (paths relative
/// to the config file): controllers pinned by fingerprint, one deployer key, and the sample app
/// behind its front door with every action allowed to the deployer.
pub fn agent_config(
    first_port: u16,
    front_door_port: u16,
    user: &str,
    controller_fingerprint: &str,
) -> RawConfig {
    let last_port = first_port + PORTS - 1;
    let mut app = RawApp::new(user, &format!("{first_port}-{last_port}"));
    app.max_instances = u32::from(MAX_INSTANCES);
    app.listen = Some(format!("127.0.0.1:{front_door_port}"));
    let app = Action::ALL
        .into_iter()
        .fold(app, |app, action| app.allow(action, &["deployer"]));
    let mut raw = RawConfig::new(AGENT_ID)
        .client_fingerprint(controller_fingerprint)
        .key("deployer", "keys/deployer.pub", &["deployer"])
        .app(APP, app);
    raw.limits.max_validity = "1h".to_owned();
    raw.limits.releases_kept = 5;
    raw
}

/// `raw` as the file quickstart writes: a comment saying where it came from, then the TOML.
///
/// # Errors
///
/// [`WorkspaceError::RenderConfig`] when the TOML serializer fails (not expected for the
/// config types).
pub fn agent_config_text(raw: &RawConfig) -> Result<String, WorkspaceError> {
    let toml = raw.to_toml().map_err(WorkspaceError::RenderConfig)?;
    Ok(format!(
        "# Written by `gantry quickstart`. Paths are relative to this file.\n\
         # apps.{APP}.listen is the front door: the app's address for its users; it sends each\n\
         # connection to an instance. Two ports per instance: blue-green starts the new set\n\
         # beside the old one.\n\n{toml}"
    ))
}

/// Writes a release artifact: `bin/gantry-sample-app` (0755) and a README.
///
/// # Errors
///
/// I/O errors reading the binary or writing the archive.
pub fn package_sample(binary: &Path, readme: &str, out: &Path) -> std::io::Result<()> {
    let bin = fs::read(binary)?;
    let file = fs::File::create(out)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, mode, data) in [
        ("bin/gantry-sample-app", 0o755, bin.as_slice()),
        ("README", 0o644, readme.as_bytes()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(mode);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, data)?;
    }
    let gz = tar.into_inner()?;
    let file = gz.finish()?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::job::spec::hash_file;

    #[test]
    fn config_names_the_app_ports_user_and_pin() {
        let c = agent_config_text(&agent_config(18080, 40123, "nobody", "ab")).unwrap();
        assert!(c.contains("ports = \"18080-18089\""));
        assert!(c.contains("\nlisten = \"127.0.0.1:40123\"\n"));
        assert!(c.contains("\nmax_instances = 2\n"));
        // The allow table is written in key order; the two rights a front door adds are there.
        assert!(c.contains("\n[apps.sample.allow]\nabort = [\"deployer\"]\n"));
        assert!(c.contains("\npromote = [\"deployer\"]\n"));
        assert!(c.contains("user = \"nobody\""));
        assert!(c.contains("client_fingerprints = [\"ab\"]"));
        assert!(c.contains("listen = \"127.0.0.1:0\""));
        assert!(c.starts_with("# Written by `gantry quickstart`."));
        // What the agent reads back is what was built, every action allowed to the deployer.
        let back: RawConfig = toml::from_str(&c).unwrap();
        assert_eq!(back, agent_config(18080, 40123, "nobody", "ab"));
        let allow = &back.apps[APP].allow;
        for action in Action::ALL {
            assert_eq!(allow[action.as_str()], ["deployer"], "{}", action.as_str());
        }
    }

    #[test]
    fn sample_packages_differ_by_readme() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::write(&bin, b"#!/bin/sh\n").unwrap();
        let (a, b) = (dir.path().join("a.tgz"), dir.path().join("b.tgz"));
        package_sample(&bin, "one", &a).unwrap();
        package_sample(&bin, "two", &b).unwrap();
        assert_ne!(hash_file(&a).unwrap().sha256, hash_file(&b).unwrap().sha256);
        let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(&a).unwrap()));
        let entries: Vec<(String, u32)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![
                ("bin/gantry-sample-app".to_owned(), 0o755),
                ("README".to_owned(), 0o644)
            ]
        );
    }
}
