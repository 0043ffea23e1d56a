//! `gantry`: parse, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;
use gantry_controller::cli::Cli;
use gantry_controller::exit::Exit;

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
    match gantry_controller::run(cli) {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("error: {e}");
            let mut last = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                // Some wrappers (tonic's transport errors) repeat their cause's text.
                let text = cause.to_string();
                if text != last {
                    eprintln!("  caused by: {text}");
                }
                last = text;
                source = cause.source();
            }
            e.exit().into()
        }
    }
}
