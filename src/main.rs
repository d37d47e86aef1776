//! The `bundle` binary: parse the command line, run the command, print errors, return the exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    bundle::commands::run(bundle::commands::cli::Cli::parse())
}
