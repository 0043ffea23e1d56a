//! The `gantry` controller CLI: creates, signs and submits deploy jobs to a Gantry agent over
//! mutual TLS, follows them, and witnesses the agent's audit log.
//!
//! # Layout
//!
//! Data flows down the list; a module imports only those below it. Talking to the agent
//! (connect, sign, upload, submit, follow, witness) is the `gantry-client` crate; what is left
//! here is the command line and how things look to people.
//!
//! * [`error`]: [`CliError`], every command's error, and its exit code (above the commands).
//! * [`commands`]: one module per command; `run` dispatches to them. `submit` holds the steps
//!   the job commands share: the client's upload and follow, shown through `output`.
//! * [`evidence`]: CI reports (JUnit, LCOV, Cobertura, SARIF, benchmarks) measured against
//!   thresholds, for `gate evaluate`.
//! * [`conn`]: the connection flags to `gantry_client::ConnSettings`.
//! * [`output`]: progress bars on a terminal, JSON lines with `--json`, plain lines otherwise.
//! * [`flags`]: raw flag strings to typed values, errors naming the flag (stage two).
//! * [`cli`]: clap flags, raw (stage one).
//! * [`report`]: an error and its causes as people read them.
//! * [`exit`]: the exit codes (a contract) and what each [`gantry_client::Fault`] exits with.

#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod conn;
pub mod error;
pub mod evidence;
pub mod exit;
pub mod flags;
pub mod fleet_cli;
pub mod output;
pub mod report;

use cli::{
    AuditCommand, Cli, Command, FlagsCommand, GateCommand, JobCommand, ReleaseCommand,
    RolloutCommand,
};
use error::CliError;
use exit::Exit;
use fleet_cli::{FleetAuditCommand, FleetCommand};
use gantry_proto::v1::RolloutControl;

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
        Command::Job(JobCommand::Approve(a)) => {
            commands::job::approve_commented(&a.sign, a.comment.as_deref())
                .map(|()| Exit::Success)
                .map_err(Into::into)
        }
        Command::Job(JobCommand::Show(a)) => commands::job::show(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Rollout(RolloutCommand::Plan(a)) => commands::rollout::plan(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Rollout(RolloutCommand::Show(a)) => commands::rollout::show(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Rollout(RolloutCommand::Sign(a)) => commands::rollout::sign(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Rollout(RolloutCommand::Approve(a)) => {
            commands::rollout::approve(&a.sign, a.comment.as_deref())
                .map(|()| Exit::Success)
                .map_err(Into::into)
        }
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
        Command::History(a) => block_on(commands::history::run(a)),
        Command::Completions(a) => {
            commands::man::completions(a.shell, &mut std::io::stdout().lock());
            Ok(Exit::Success)
        }
        Command::Man(a) => commands::man::write_pages(&a.out)
            .map(|()| {
                println!("wrote the man pages to {}", a.out.display());
                Exit::Success
            })
            .map_err(Into::into),
        Command::Audit(AuditCommand::Tail(a)) => block_on(commands::audit::tail(a)),
        Command::Audit(AuditCommand::Verify(a)) => block_on(commands::audit::verify(a)),
        Command::Server(a) => block_on(commands::fleet::server::run(a)),
        Command::Rollout(RolloutCommand::Start(a)) => block_on(commands::fleet::rollout::start(a)),
        Command::Rollout(RolloutCommand::Status(a)) => {
            block_on(commands::fleet::rollout::status(a))
        }
        Command::Rollout(RolloutCommand::Pause(a)) => {
            block_on(commands::fleet::rollout::control(a, RolloutControl::Pause))
        }
        Command::Rollout(RolloutCommand::Resume(a)) => {
            block_on(commands::fleet::rollout::control(a, RolloutControl::Resume))
        }
        Command::Rollout(RolloutCommand::Abort(a)) => {
            block_on(commands::fleet::rollout::control(a, RolloutControl::Abort))
        }
        Command::Fleet(FleetCommand::Ls(a)) => block_on(commands::fleet::inventory::ls(a)),
        Command::Fleet(FleetCommand::Audit(FleetAuditCommand::Verify(a))) => {
            block_on(commands::fleet::inventory::verify(a))
        }
        Command::Fleet(FleetCommand::Audit(FleetAuditCommand::Tail(a))) => {
            block_on(commands::fleet::inventory::tail(a))
        }
        Command::Fleet(FleetCommand::Policy(a)) => block_on(commands::fleet::policy::show(a)),
        Command::Quickstart(a) => commands::quickstart::run(&a).map_err(Into::into),
        Command::Flags(FlagsCommand::Sign(a)) => commands::flagset::sign(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
        Command::Flags(FlagsCommand::Push(a)) => block_on(commands::flagset::push(a)),
        Command::Flags(FlagsCommand::Show(a)) => block_on(commands::flagset::show(a)),
        Command::Flags(FlagsCommand::Kill(a)) => block_on(commands::flagset::kill(a)),
        Command::Gate(GateCommand::Evaluate(a)) => commands::gate::evaluate(&a).map_err(Into::into),
        Command::Release(ReleaseCommand::Show(a)) => block_on(commands::release::show::show(a)),
        Command::Release(ReleaseCommand::Notes(a)) => commands::release::notes(&a)
            .map(|()| Exit::Success)
            .map_err(Into::into),
    }
}

/// Runs a command's future on a fresh runtime.
fn block_on<F, E>(fut: F) -> Result<Exit, CliError>
where
    F: std::future::Future<Output = Result<Exit, E>>,
    E: Into<CliError>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(CliError::Runtime)?;
    rt.block_on(fut).map_err(Into::into)
}
