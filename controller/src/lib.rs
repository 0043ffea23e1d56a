//! The `gantry` controller CLI: creates, signs and submits deploy jobs to a Gantry agent over
//! mutual TLS, follows them, and witnesses the agent's audit log.
//!
//! # Layout
//!
//! * [`cli`]: clap flags, raw (stage one).
//! * [`flags`]: raw flag strings to typed values, errors naming the flag (stage two).
//! * [`client`]: the mTLS channel; gRPC statuses to typed errors (refusal vs. broken connection).
//! * [`output`]: progress bars on a terminal, JSON lines with `--json`, plain lines otherwise.
//! * [`witness`]: the newest signed audit checkpoint seen from each agent, kept on disk.
//! * [`commands`]: one module per command; `run` dispatches to them.
//! * [`exit`]: exit codes and the exhaustive error → exit code map.

#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod commands;
pub mod exit;
pub mod flags;
pub mod output;
pub mod witness;

use cli::{AuditCommand, Cli, Command, JobCommand};
use exit::{CliError, Exit};

/// Runs one parsed command line.
///
/// # Errors
///
/// [`CliError`], whose [`CliError::exit`] gives the exit code.
pub fn run(cli: Cli) -> Result<Exit, CliError> {
    match cli.command {
        Command::Keygen(a) => commands::keygen::run(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::DevPki(a) => commands::dev_pki::run(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Job(JobCommand::Create(a)) => commands::job::create(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Job(JobCommand::Sign(a)) => commands::job::sign(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Job(JobCommand::Approve(a)) => commands::job::approve(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Job(JobCommand::Show(a)) => commands::job::show(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Job(JobCommand::Submit(a)) => block_on(commands::submit::run_submit(a)),
        Command::Job(JobCommand::Watch(a)) => block_on(commands::submit::run_watch(a)),
        Command::Deploy(a) => block_on(commands::deploy::run(a)),
        Command::Rollback(a) => block_on(commands::rollback::rollback(a)),
        Command::Restart(a) => block_on(commands::rollback::simple(
            a,
            gantry_proto::v1::Action::Restart,
        )),
        Command::Stop(a) => block_on(commands::rollback::simple(
            a,
            gantry_proto::v1::Action::Stop,
        )),
        Command::Promote(a) => block_on(commands::rollback::simple(
            a,
            gantry_proto::v1::Action::Promote,
        )),
        Command::Abort(a) => block_on(commands::rollback::simple(
            a,
            gantry_proto::v1::Action::Abort,
        )),
        Command::Status(a) => block_on(commands::status::run(a)),
        Command::Audit(AuditCommand::Tail(a)) => block_on(commands::audit::tail(a)),
        Command::Audit(AuditCommand::Verify(a)) => block_on(commands::audit::verify(a)),
        Command::Quickstart(a) => commands::quickstart::run(&a).map_err(Into::into),
    }
}

/// Runs a command's future on a fresh runtime.
fn block_on<F>(fut: F) -> Result<Exit, CliError>
where
    F: std::future::Future<Output = Result<Exit, CliError>>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    rt.block_on(fut)
}
