//! The agent's command line: the daemon and the operator's local commands.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use gantry_proto::keys::{PublicKey, write_keypair};

use crate::audit::AuditError;
use crate::error::reason;
use crate::telemetry::{self, LogFormat};

/// Gantry's deploy agent: obeys only signed jobs its local policy trusts.
#[derive(Debug, Parser)]
#[command(name = "gantry-agent", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The agent's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent (mutual-TLS gRPC: listening on `listen`, or over the one connection it
    /// dials to the controller service with `[controller] dial`) until SIGTERM or SIGINT; app
    /// instances keep running.
    Run {
        /// The agent's TOML config.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Write operational logs to daily-rolling files here instead of stderr.
        #[arg(long, value_name = "DIR")]
        log_dir: Option<PathBuf>,
        /// Operational log format (the audit log is always JSON Lines).
        #[arg(long, value_enum, default_value = "plain")]
        log_format: Format,
        /// Dial-out mode (`[controller] dial`) only: once the link to the controller service
        /// has been down this long (e.g. `90s`, `5m`), stop and exit non-zero so the service
        /// manager sees it; app instances keep running. Overrides
        /// `[controller] exit_on_disconnect_after`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        exit_on_disconnect_after: Option<std::time::Duration>,
    },
    /// Check a config and report every problem at once (parse errors first: the other checks
    /// run once the file parses).
    CheckConfig {
        /// The agent's TOML config.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the effective permissions: every key, its roles, what it may do to which app,
    /// and what each app runs as, listens on and is limited to.
    Policy {
        /// The agent's TOML config.
        #[arg(long, value_name = "FILE")]
        config: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Read or verify the audit log.
    Audit {
        /// What to do with it.
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Generate an Ed25519 key pair: PREFIX.key (PKCS#8, mode 0600) and PREFIX.pub (SPKI).
    Keygen {
        /// Path prefix of the two files.
        #[arg(long, value_name = "PREFIX")]
        out: PathBuf,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write a man page for `gantry-agent` and each of its subcommands into DIR
    /// (`gantry-agent.1`, `gantry-agent-run.1`, ...), creating DIR when needed.
    Man {
        /// The directory to write the pages to (e.g. /usr/local/share/man/man1).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Run an app's front door, the TCP proxy in front of its instances (started by the
    /// agent's supervisor; see docs/traffic.md). SIGHUP rereads the route table; SIGTERM drains.
    #[command(hide = true)]
    FrontDoor {
        /// The route table the agent writes.
        #[arg(long, value_name = "FILE")]
        routes: PathBuf,
        /// The app's address to listen on.
        #[arg(long, value_name = "ADDR")]
        listen: std::net::SocketAddr,
        /// Where to write the counters and the applied generation.
        #[arg(long, value_name = "FILE")]
        stats: PathBuf,
        /// A non-loopback address backends may use (repeatable).
        #[arg(long = "allow-backend", value_name = "IP")]
        allow_backend: Vec<std::net::IpAddr>,
        /// `tcp` (connections) or `http` (also requests, status classes and latency).
        #[arg(long, value_name = "MODE", default_value = "tcp", value_parser = parse_mode)]
        mode: crate::config::FrontDoorMode,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be more than 0".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(format!(
            "{s:?} is not a duration like \"30s\" or \"5m\": {e}"
        )),
    }
}

fn parse_mode(s: &str) -> Result<crate::config::FrontDoorMode, String> {
    crate::config::FrontDoorMode::parse(s).ok_or_else(|| format!("{s:?} is not tcp or http"))
}

/// `gantry-agent audit ...`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the hash chain and checkpoint signatures; names the first bad seq. A directory
    /// without a log file is an error, never "ok".
    Verify {
        /// Where the log is.
        #[command(flatten)]
        log: LogDir,
        /// The agent's public key; without it (and without --config) checkpoint signatures are
        /// not checked. With --config, the public half of the config's `audit.signing_key`.
        #[arg(long, value_name = "FILE")]
        pubkey: Option<PathBuf>,
    },
    /// Print the last entries, one readable line each.
    Tail {
        /// Where the log is.
        #[command(flatten)]
        log: LogDir,
        /// Keep printing new entries as they are written.
        #[arg(short, long)]
        follow: bool,
        /// How many entries to print first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Print the raw JSON lines.
        #[arg(long)]
        json: bool,
    },
}

/// Where `audit verify` and `audit tail` find the log: a directory, or the agent's config.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct LogDir {
    /// The audit directory (`<data_dir>/audit`).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The agent's TOML config: the log is in its `<data_dir>/audit`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

impl LogDir {
    /// The audit directory, and the config when one was named.
    fn resolve(self) -> anyhow::Result<(PathBuf, Option<crate::config::Config>)> {
        match (self.dir, self.config) {
            (Some(dir), _) => Ok((dir, None)),
            (None, Some(config)) => {
                let cfg = crate::daemon::load_config(&config)?;
                Ok((cfg.data_dir.join("audit"), Some(cfg)))
            }
            (None, None) => anyhow::bail!("name the log with --dir DIR or --config FILE"),
        }
    }
}

/// The key checkpoints are checked against: `--pubkey`, else the public half of the config's
/// `audit.signing_key`, else none.
fn checkpoint_key(
    pubkey: Option<&std::path::Path>,
    config: Option<&crate::config::Config>,
) -> anyhow::Result<Option<(PublicKey, String)>> {
    if let Some(path) = pubkey {
        let key = PublicKey::read_pem_file(path).context("cannot read the agent's public key")?;
        return Ok(Some((key, path.display().to_string())));
    }
    let Some(cfg) = config else { return Ok(None) };
    let path = &cfg.audit.signing_key;
    let key = gantry_proto::keys::SigningKey::read_pem_file(path).with_context(|| {
        format!(
            "cannot read audit.signing_key {} to check checkpoints (or pass --pubkey)",
            path.display()
        )
    })?;
    Ok(Some((
        key.public_key(),
        format!("the public half of {}", path.display()),
    )))
}

/// Operational log format.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    /// Readable lines.
    Plain,
    /// JSON objects.
    Json,
}

/// Exit code: the audit log failed verification.
const EXIT_VERIFY_FAILED: u8 = 1;
/// Exit code: bad usage, config or input.
const EXIT_USAGE: u8 = 2;

/// Runs a parsed command line.
///
/// # Errors
///
/// Any failure, with context; `main` prints the chain and exits 2.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run {
            config,
            log_dir,
            log_format,
            exit_on_disconnect_after,
        } => {
            let format = match log_format {
                Format::Plain => LogFormat::Plain,
                Format::Json => LogFormat::Json,
            };
            let _guard = telemetry::init(log_dir.as_deref(), format);
            let mut config = crate::daemon::load_config(&config)?;
            if let Some(after) = exit_on_disconnect_after {
                let Some(dial) = config.controller.as_mut() else {
                    anyhow::bail!(
                        "--exit-on-disconnect-after needs dial-out mode: {} has `listen`, not `[controller] dial`",
                        config.path.display()
                    );
                };
                dial.exit_on_disconnect_after = Some(after);
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(crate::daemon::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CheckConfig { config } => match crate::config::Config::load(&config) {
            Ok(cfg) => {
                // The same file checks `run` makes before it starts.
                let unsafe_files = crate::fsguard::problems(&cfg)?;
                if !unsafe_files.is_empty() {
                    eprintln!("{} is not safe to run with:", config.display());
                    for problem in &unsafe_files {
                        eprintln!("  {problem}");
                    }
                }
                let unreachable = crate::reach::unreachable_apps(&cfg);
                if !unreachable.is_empty() {
                    eprintln!("{}: apps out of their users' reach:", config.display());
                    for app in &unreachable {
                        eprintln!("  {app}");
                    }
                }
                // The TLS material as `run` loads it: a certificate that does not match its key
                // fails here, not after the agent has started.
                let tls = crate::server::tls::server_config(
                    &crate::daemon::tls_material(&cfg),
                    std::sync::Arc::new(crate::server::handshake::HandshakeRefusals::new()),
                );
                if let Err(e) = &tls {
                    eprintln!("{}: {}", config.display(), reason(e));
                }
                if !unsafe_files.is_empty() || !unreachable.is_empty() || tls.is_err() {
                    return Ok(ExitCode::from(EXIT_USAGE));
                }
                println!(
                    "ok: {} is valid ({} key(s), {} app(s))",
                    config.display(),
                    cfg.policy.keys.len(),
                    cfg.policy.apps.len()
                );
                Ok(ExitCode::SUCCESS)
            }
            Err(problems) => {
                eprintln!("{} is not valid:\n{problems}", config.display());
                Ok(ExitCode::from(EXIT_USAGE))
            }
        },
        Command::Policy { config, json } => {
            let cfg = crate::daemon::load_config(&config)?;
            print!("{}", crate::config::render_policy(&cfg, json));
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            command: AuditCommand::Verify { log, pubkey },
        } => {
            let (dir, cfg) = log.resolve()?;
            let key = checkpoint_key(pubkey.as_deref(), cfg.as_ref())?;
            match crate::audit::verify_dir(&dir, key.as_ref().map(|(k, _)| k)) {
                Ok(summary) => {
                    let checkpoints = match summary.last_checkpoint_seq {
                        Some(seq) => {
                            format!("{} checkpoint(s), last at seq {seq}", summary.checkpoints)
                        }
                        None => "no checkpoint".to_owned(),
                    };
                    println!(
                        "ok: {} entries in {}, last seq {}, {checkpoints}{}",
                        summary.entries,
                        dir.display(),
                        summary.last_seq,
                        match &key {
                            Some((_, from)) => format!(", signatures verified with {from}"),
                            None => ", signatures NOT checked (no --pubkey)".to_owned(),
                        }
                    );
                    if summary.unsealed_after_checkpoint > 0 {
                        println!(
                            "note: the last {} entries follow the last checkpoint; a cut there is only detectable by a witness",
                            summary.unsealed_after_checkpoint
                        );
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Err(e @ (AuditError::NoLog { .. } | AuditError::ListDir { .. })) => {
                    Err(anyhow::Error::new(e).context("nothing to verify"))
                }
                Err(e) => {
                    eprintln!("audit log FAILED verification: {}", reason(&e));
                    Ok(ExitCode::from(EXIT_VERIFY_FAILED))
                }
            }
        }
        Command::Audit {
            command:
                AuditCommand::Tail {
                    log,
                    follow,
                    lines,
                    json,
                },
        } => {
            let (dir, _) = log.resolve()?;
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            crate::audit::tail(&dir, lines, follow, json, &mut out)
                .with_context(|| format!("cannot read the audit log in {}", dir.display()))?;
            out.flush().ok();
            Ok(ExitCode::SUCCESS)
        }
        Command::Keygen { out } => {
            let (key, private, public) = write_keypair(&out)?;
            println!("wrote {} and {}", private.display(), public.display());
            println!("key id: {}", key.key_id());
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let stdout = std::io::stdout();
            clap_complete::generate(shell, &mut cmd, "gantry-agent", &mut stdout.lock());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => {
            write_man_pages(&out)?;
            println!("wrote the man pages to {}", out.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::FrontDoor {
            routes,
            listen,
            stats,
            allow_backend,
            mode,
        } => {
            let _guard = telemetry::init(None, LogFormat::Plain);
            let mut opts = crate::traffic::front_door::FrontDoorOptions::new(routes, listen, stats);
            opts.backend_addrs = crate::traffic::BackendAddrs::with_extra(allow_backend);
            opts.mode = mode;
            crate::traffic::front_door::run_process(opts)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Writes a man page per visible command into `out` (created when missing).
///
/// # Errors
///
/// When the directory or a page cannot be written.
pub fn write_man_pages(out: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), out)
        .with_context(|| format!("cannot write the man pages to {}", out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every visible command path, as man page file names (`gantry-agent-audit-verify.1`).
    fn page_names(cmd: &clap::Command, prefix: &str, out: &mut Vec<String>) {
        let name = if prefix.is_empty() {
            cmd.get_name().to_owned()
        } else {
            format!("{prefix}-{}", cmd.get_name())
        };
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() != "help" {
                page_names(sub, &name, out);
            }
        }
        out.push(format!("{name}.1"));
    }

    #[test]
    fn every_subcommand_has_a_man_page() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("man1");
        write_man_pages(&out).unwrap();
        let mut want = Vec::new();
        page_names(&<Cli as clap::CommandFactory>::command(), "", &mut want);
        assert!(want.len() >= 10, "{want:?}");
        for page in &want {
            let text = std::fs::read_to_string(out.join(page))
                .unwrap_or_else(|e| panic!("no page {page}: {e}"));
            assert!(
                text.starts_with(".ie") || text.contains(".TH"),
                "{page}: {text}"
            );
        }
        assert!(want.contains(&"gantry-agent-audit-verify.1".to_owned()));
        assert!(
            !out.join("gantry-agent-front-door.1").exists(),
            "hidden commands get no page"
        );
    }

    #[test]
    fn completions_name_every_subcommand() {
        let mut cmd = <Cli as clap::CommandFactory>::command();
        let mut buf = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut cmd,
            "gantry-agent",
            &mut buf,
        );
        let text = String::from_utf8(buf).unwrap();
        for sub in [
            "run",
            "check-config",
            "policy",
            "audit",
            "keygen",
            "completions",
            "man",
        ] {
            assert!(
                text.contains(sub),
                "{sub} missing from the bash completions"
            );
        }
    }
}
