//! The `bundle` binary: parse the command line, run the command, print errors, return the exit code.

use std::process::ExitCode;

use clap::Parser;

use bundle::cli::{Cli, Command};
use bundle::commands::{self, Context};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        let ctx = Context::new(&cli.global)?;
        let work = async {
            match cli.command {
                Command::Export(args) => commands::export::run(&ctx, args).await,
                Command::Verify(args) => commands::verify::run(&ctx, args).await,
                Command::Import(args) => commands::import::run(&ctx, args).await,
                Command::Inspect(args) => commands::inspect::run(&ctx, args).await,
                Command::Images(args) => commands::images::run(&ctx, args).await,
            }
        };
        // On Ctrl-C or SIGTERM the command's future is dropped, which removes its temporary files.
        tokio::select! {
            r = work => r.map(|()| ExitCode::SUCCESS),
            () = interrupted() => {
                eprintln!("error: interrupted; nothing was left under the output name (an import can be re-run to finish)");
                Ok(ExitCode::from(130))
            }
        }
    });
    // Blocking tasks (archive writing) may still hold files; do not wait for them.
    runtime.shutdown_background();
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  Caused by: {cause}");
            }
            if let Some(hint) = commands::hint_for(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(1)
        }
    }
}

async fn interrupted() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
