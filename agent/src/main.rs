//! `gantry-agent`: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match gantry_agent::cli::run(gantry_agent::cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {:#}", gantry_agent::error::Chain(e.as_ref()));
            ExitCode::from(2)
        }
    }
}
