//! The `volley` command line.

mod admin;
mod connection;
mod executors;
mod health;
mod jobs;
mod output;
mod progress;
mod shell;
mod sql;
mod submit;

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
