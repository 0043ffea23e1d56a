//! A throw-away PostgreSQL server for tests: `initdb` into the test's temp dir, listening on a
//! free loopback port, stopped (immediately) when dropped. As root, the server runs as the
//! unprivileged `postgres` user through `runuser`, since PostgreSQL refuses to run as root.
//! Built for this crate's tests and, with the `test-util` feature, for the e2e harness.

#![allow(
    clippy::unwrap_used,
    reason = "test support: a failure to start the test server is a failed test"
)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running test server.
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// The newest `/usr/lib/postgresql/<major>/bin` holding `initdb`.
fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let major: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn run(bin: &Path, tool: &str, args: &[&str], cwd: &Path) {
    let exe = bin.join(tool);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let out = cmd.args(args).current_dir(cwd).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PgServer {
    /// Starts one, or returns `None` (saying so loudly) when no PostgreSQL is installed.
    pub fn start() -> Option<Self> {
        Self::start_with(false)
    }

    /// Starts one that also takes TLS connections (`ssl = on`), with a certificate for
    /// `127.0.0.1` and `localhost` from a CA made here; returns it and that CA's PEM file.
    pub fn start_tls() -> Option<(Self, PathBuf)> {
        let server = Self::start_with(true)?;
        let ca = server.dir.path().join("ca.pem");
        Some((server, ca))
    }

    fn start_with(tls: bool) -> Option<Self> {
        let Some(bin) = bin_dir() else {
            eprintln!(
                "\n*** SKIPPED: no PostgreSQL binaries under /usr/lib/postgresql/*/bin; the \
                 PostgreSQL store conformance tests did not run (apt-get install -y postgresql) ***\n"
            );
            return None;
        };
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
            let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
            nix::unistd::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let data = dir.path().join("data");
        let data_s = data.to_str().unwrap();
        run(
            &bin,
            "initdb",
            &[
                "-D",
                data_s,
                "-U",
                "gantry",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            dir.path(),
        );
        let mut opts = format!(
            "-p {port} -h 127.0.0.1 -k {} -F -c fsync=off",
            dir.path().display()
        );
        if tls {
            write_server_cert(dir.path(), &data);
            opts.push_str(" -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key");
        }
        let log = dir.path().join("server.log");
        run(
            &bin,
            "pg_ctl",
            &[
                "-D",
                data_s,
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
            dir.path(),
        );
        Some(Self { dir, bin, port })
    }

    /// The connection URL.
    pub fn url(&self) -> String {
        format!("postgres://gantry@127.0.0.1:{}/postgres", self.port)
    }
}

/// A CA (`dir/ca.pem`) and a server certificate for `127.0.0.1` and `localhost` signed by it,
/// written where the server reads them (`data/server.crt`, `data/server.key`, the key 0600 and
/// owned by the server's user).
fn write_server_cert(dir: &Path, data: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    use std::os::unix::fs::PermissionsExt;
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::default();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "gantry test PostgreSQL CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, &ca_key);
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    let crt = data.join("server.crt");
    let k = data.join("server.key");
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
    if is_root() {
        let user = nix::unistd::User::from_name("postgres").unwrap().unwrap();
        for f in [&crt, &k] {
            nix::unistd::chown(f, Some(user.uid), Some(user.gid)).unwrap();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let exe = self.bin.join("pg_ctl");
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        // A server left running would outlive the test; nothing more to do if this fails.
        let _ = cmd
            .arg("-D")
            .arg(&data)
            .args(["-m", "immediate", "-w", "stop"])
            .current_dir(self.dir.path())
            .output();
    }
}
