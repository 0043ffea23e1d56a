//! A real nginx in front of app `web`, for the nginx router: its config lives in the test's
//! temp dir (pid file, error log and temp paths included), so nothing touches a system nginx.
//!
//! `nginx.conf` is an http proxy on [`TestEnv::listen`] to `upstream web`, which the upstream
//! file (written by the agent) defines. Until the first deploy, a placeholder upstream points
//! at the first instance port.

use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::unistd::Uid;

use crate::env::{NginxFiles, TestEnv};
use crate::probe::wait_until;
use crate::process;

/// Where nginx is installed, if it is (`PATH`, then `/usr/sbin` and `/sbin`).
pub fn binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
}

fn files(env: &TestEnv) -> anyhow::Result<&NginxFiles> {
    env.nginx
        .as_ref()
        .context("this TestEnv has no nginx router (use Options::nginx)")
}

/// Writes `nginx.conf` and a placeholder upstream file into `<root>/nginx/`.
///
/// # Errors
///
/// When the files cannot be written.
pub fn write_config(env: &TestEnv) -> anyhow::Result<()> {
    let n = files(env)?;
    let listen = env.listen.context("nginx needs TestEnv::listen")?;
    fs::create_dir_all(n.dir.join("temp"))?;
    let p = |path: &std::path::Path| path.to_string_lossy().into_owned();
    // Workers run as root when the tests do (the temp dir is root's); otherwise as the user.
    let user = if Uid::current().is_root() {
        "user root;\n"
    } else {
        ""
    };
    let temp = p(&n.dir.join("temp"));
    let conf = format!(
        r#"# nginx for one Gantry end-to-end test; every path is inside the test's temp dir.
{user}daemon off;
master_process on;
worker_processes 2;
pid {pid};
error_log {error_log} warn;
# Old workers finish their requests after a reload, but not forever.
worker_shutdown_timeout 10s;

events {{
    worker_connections 1024;
}}

http {{
    access_log off;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;

    include {upstream};

    server {{
        listen {listen};
        location / {{
            proxy_pass http://web;
            proxy_next_upstream error timeout http_502;
            proxy_connect_timeout 1s;
        }}
    }}
}}
"#,
        pid = p(&n.pid),
        error_log = p(&n.error_log),
        upstream = p(&n.upstream),
    );
    fs::write(&n.conf, conf).with_context(|| format!("cannot write {}", n.conf.display()))?;
    let placeholder = format!(
        "# placeholder until the agent's first deploy\nupstream web {{\n    server 127.0.0.1:{};\n}}\n",
        env.port(0)
    );
    fs::write(&n.upstream, placeholder)
        .with_context(|| format!("cannot write {}", n.upstream.display()))?;
    Ok(())
}

/// A running nginx master (in its own process group, with its workers). Dropping it kills
/// the group.
#[derive(Debug)]
pub struct Nginx {
    child: Option<Child>,
    error_log: PathBuf,
}

impl Nginx {
    /// Starts nginx on `env`'s config (foreground master, own process group) and waits until
    /// it accepts connections on [`TestEnv::listen`].
    ///
    /// # Errors
    ///
    /// When nginx is missing, its config is refused, or it does not listen within 20 s.
    pub fn start(env: &TestEnv) -> anyhow::Result<Nginx> {
        let n = files(env)?;
        let listen = env.listen.context("nginx needs TestEnv::listen")?;
        let program = binary().context("nginx is not installed")?;
        let args = |head: &[&str]| {
            let mut cmd = Command::new(&program);
            cmd.args(head)
                .arg("-p")
                .arg(&n.dir)
                .arg("-c")
                .arg(&n.conf)
                .arg("-e")
                .arg(&n.error_log);
            cmd
        };
        let check = process::run(args(&["-t", "-q"]), Duration::from_secs(30))?;
        if check.code != 0 {
            bail!("nginx -t refused {}:\n{}", n.conf.display(), check.all());
        }
        let mut cmd = args(&[]);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().context("cannot start nginx")?;
        let mut nginx = Nginx {
            child: Some(child),
            error_log: n.error_log.clone(),
        };
        let up = wait_until(Duration::from_secs(20), "nginx listens", || {
            TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok()
        });
        if let Err(e) = up {
            let exited = nginx
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            bail!("{e} (exit: {exited:?})\n{}", nginx.log_tail());
        }
        Ok(nginx)
    }

    /// The end of nginx's error log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = fs::read_to_string(&self.error_log).unwrap_or_default();
        let lines: Vec<_> = text.lines().collect();
        format!(
            "--- nginx error log {} (tail)\n{}",
            self.error_log.display(),
            lines[lines.len().saturating_sub(30)..].join("\n")
        )
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_group(child.id());
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::thread;

    use super::*;
    use crate::env::Options;
    use crate::load::fetch_version;

    /// Answers `web <version> instance 0` to every request on `port`, one per connection.
    fn serve(port: u16, version: &'static str) {
        let listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 0 && line != "\r\n" {
                    line.clear();
                }
                let body = format!("web {version} instance 0\n");
                let _ = write!(
                    reader.get_mut(),
                    "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
            }
        });
    }

    #[test]
    fn nginx_proxies_to_the_upstream_file_and_reloads_with_the_configured_command() {
        if binary().is_none() {
            eprintln!("SKIPPED: nginx is not installed");
            return;
        }
        let env = TestEnv::with_options(Options::nginx(2)).unwrap();
        let config = env.config.to_string_lossy().into_owned();
        env.agent_cmd(&["check-config", "--config", &config])
            .unwrap()
            .assert_code(0);
        serve(env.port(0), "1.0.0");
        serve(env.port(1), "2.0.0");
        let nginx = Nginx::start(&env).unwrap();
        let listen = env.listen.unwrap();
        let timeout = Duration::from_secs(5);
        assert_eq!(fetch_version(listen, timeout).unwrap(), "1.0.0");

        // What the agent's reload command does, run the same way.
        let n = env.nginx.as_ref().unwrap();
        fs::write(
            &n.upstream,
            format!(
                "upstream web {{\n    server 127.0.0.1:{};\n}}\n",
                env.port(1)
            ),
        )
        .unwrap();
        let raw = env.raw_config();
        let reload = &raw.apps["web"].nginx.as_ref().unwrap().reload_command;
        let mut cmd = Command::new(&reload[0]);
        cmd.args(&reload[1..]);
        process::run(cmd, Duration::from_secs(30))
            .unwrap()
            .assert_code(0);
        wait_until(Duration::from_secs(10), "nginx routes to 2.0.0", || {
            fetch_version(listen, timeout).is_ok_and(|v| v == "2.0.0")
        })
        .unwrap_or_else(|e| panic!("{e}\n{}", nginx.log_tail()));
    }
}
