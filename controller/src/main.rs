//! `gantry`: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use gantry_controller::cli::Cli;
use gantry_controller::exit::Exit;
use gantry_controller::report;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and --version are not errors; every other parse failure is usage (2).
            let _ = e.print();
            return if e.use_stderr() {
                Exit::Usage.into()
            } else {
                Exit::Success.into()
            };
        }
    };
    let json = cli.json();
    match gantry_controller::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            let exit = e.exit();
            if json {
                println!("{}", report::error_json(&e, exit as u8));
            }
            eprintln!("{}", report::error_block(&e));
            exit.into()
        }
    }
}
