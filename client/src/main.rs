//! `volley`: the Volley command line (see `volley --help`).

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    volley_dataflow::init_logging("warn");
    let cli = cli::Cli::parse();
    match cli.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {}", cli::one_line(&e));
            ExitCode::from(e.exit_code())
        }
    }
}
