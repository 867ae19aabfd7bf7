//! `volley`: the Volley command line (see `volley --help`).

mod cli;

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    cli::exit_quietly_on_a_closed_pipe();
    let _telemetry = volley_dataflow::init_logging("volley", "warn");
    cli::main().await
}
