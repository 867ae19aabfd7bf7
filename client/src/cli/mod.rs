//! The `volley` command line.

mod admin;
mod completion;
mod connection;
mod executors;
mod health;
mod jobs;
mod json_report;
mod output;
mod progress;
mod shell;
mod sql;
mod submit;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use volley_client::{ClientError, find_client_error};

/// Exit codes, the same for every subcommand.
pub(crate) const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a query or job failed
  2  bad usage
  3  scheduler unreachable
  4  timed out
  5  cancelled
  6  not authenticated, or not allowed";

/// Volley: distributed SQL on DataFusion.
#[derive(Debug, Parser)]
#[command(name = "volley", version, after_help = EXIT_CODES)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run SQL on a Volley cluster, or on an embedded one; an interactive
    /// shell when no SQL is given on a terminal.
    #[command(after_help = EXIT_CODES)]
    Sql(sql::SqlArgs),
    /// Submit a SQL script as a detached batch job.
    #[command(after_help = EXIT_CODES)]
    Submit(submit::SubmitArgs),
    /// List, inspect, wait for and cancel jobs.
    #[command(after_help = EXIT_CODES)]
    Jobs(jobs::JobsArgs),
    /// List, wait for, and drain executors.
    #[command(after_help = EXIT_CODES)]
    Executors(executors::ExecutorsArgs),
    /// Whether a scheduler or executor serves (its gRPC health service);
    /// for scripts and Kubernetes probes.
    #[command(after_help = EXIT_CODES)]
    Health(health::HealthArgs),
    /// Manage a scheduler's users file.
    Users(admin::UsersArgs),
    /// Make the secret a scheduler shares with its executors.
    Secret(admin::SecretArgs),
    /// Make development TLS certificates.
    Certs(admin::CertsArgs),
}

impl Cli {
    pub(crate) async fn run(self) -> Result<(), ClientError> {
        match self.command {
            Command::Sql(args) => sql::run(args).await,
            Command::Submit(args) => submit::run(args).await,
            Command::Jobs(args) => jobs::run(args).await,
            Command::Executors(args) => executors::run(args).await,
            Command::Health(args) => health::run(args).await,
            Command::Users(args) => admin::run_users(args),
            Command::Secret(args) => admin::run_secret(args),
            Command::Certs(args) => admin::run_certs(args),
        }
    }
}

/// An error as one line, without DataFusion's wrapping of Volley's own errors.
pub(crate) fn one_line(error: &ClientError) -> String {
    let inner = match error {
        ClientError::Query(e) => find_client_error(e).map(ToString::to_string),
        _ => None,
    };
    let text = inner.unwrap_or_else(|| error.to_string());
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Runs `volley` with the process's arguments; the exit code is the
/// documented one. With `--json`, stdout carries one JSON value whatever
/// happens, bad usage included.
pub(crate) async fn main() -> ExitCode {
    let json = json_report::wants_json(std::env::args_os());
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if json && e.use_stderr() => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            let message = first.trim_start_matches("error: ").to_string();
            json_report::print_json(&json_report::error_object("usage", &message, 2));
            let _ = e.print();
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    match cli.run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::from(CLOSED_PIPE),
        Err(e) => {
            let message = one_line(&e);
            if json {
                json_report::print_error_unless_printed(&e, &message);
            }
            eprintln!("Error: {message}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The exit status of a Unix tool whose output pipe closed (128 + SIGPIPE),
/// as a shell reports `seq 1000000 | head -1` for `seq`.
const CLOSED_PIPE: u8 = 141;

/// Makes writing into a closed pipe (`volley jobs list | head -1`) end the
/// process quietly with status 141, as for any Unix tool, instead of
/// `println!`'s panic. SIGPIPE itself stays ignored, as the standard
/// library sets it: the process also writes to sockets, where a vectored
/// write to a closed connection would raise it.
pub(crate) fn exit_quietly_on_a_closed_pipe() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(i32::from(CLOSED_PIPE));
        }
        default(info);
    }));
}

/// Whether `error` is a write into a closed pipe (stdout or a `\o` file
/// piped onward), which is how a reader like `head` says it has enough.
fn is_broken_pipe(error: &ClientError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::BrokenPipe
        {
            return true;
        }
        source = e.source();
    }
    // Arrow's writers keep only the text of the I/O error.
    error.to_string().contains("Broken pipe (os error 32)")
}
