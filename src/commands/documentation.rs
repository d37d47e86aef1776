//! `bundle completions SHELL` and `bundle manpage`: generated from the clap definition, so they list exactly
//! the flags `--help` does. Both print to stdout for the user to install (README, "Install").

use std::process::ExitCode;

use clap::CommandFactory as _;

use crate::commands::cli::Cli;
use crate::support::printer::Printer;

pub fn completions(printer: &Printer, shell: clap_complete::Shell) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "bundle", &mut out);
    printer.result_bytes(&out);
    ExitCode::SUCCESS
}

pub fn manpage(printer: &Printer) -> ExitCode {
    let mut out = Vec::new();
    match clap_mangen::Man::new(Cli::command()).render(&mut out) {
        Ok(()) => {
            printer.result_bytes(&out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            printer.error(&format!("cannot render the man page: {e}"), &[], None);
            ExitCode::from(1)
        }
    }
}
