//! `volley-scheduler`: runs a Volley scheduler until interrupted.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use volley_scheduler::{SchedulerConfig, SchedulerServer};

/// Volley's scheduler: plans jobs into stages and places their tasks on executors.
#[derive(Debug, Parser)]
#[command(name = "volley-scheduler", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one; the chosen address is
    /// printed on stdout).
    #[arg(long, env = "VOLLEY_SCHEDULER_BIND", default_value = "127.0.0.1:50050")]
    bind: SocketAddr,
    /// Partitions per stage (default: the cluster's total slots).
    #[arg(long, env = "VOLLEY_TARGET_PARTITIONS")]
    target_partitions: Option<usize>,
    /// Seconds without a heartbeat after which an executor is declared lost.
    #[arg(long, env = "VOLLEY_EXECUTOR_TIMEOUT_SECS", default_value_t = 10.0)]
    executor_timeout_secs: f64,
    /// Seconds a running job waits for executors when none is left before
    /// it fails.
    #[arg(long, env = "VOLLEY_NO_EXECUTOR_GRACE_SECS", default_value_t = 30.0)]
    no_executor_grace_secs: f64,
}

#[tokio::main]
async fn main() -> ExitCode {
    volley_dataflow::init_logging("info");
    let args = Args::parse();
    let config = SchedulerConfig {
        bind: args.bind,
        target_partitions: args.target_partitions,
        executor_timeout: Duration::from_secs_f64(args.executor_timeout_secs.max(0.1)),
        no_executor_grace: Duration::from_secs_f64(args.no_executor_grace_secs.max(0.0)),
        ..SchedulerConfig::default()
    };
    let server = match SchedulerServer::start(config).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("volley-scheduler: cannot start on {}: {e}", args.bind);
            return ExitCode::from(1);
        }
    };
    println!("volley-scheduler listening on {}", server.addr());
    let _ = std::io::stdout().flush();
    tokio::select! {
        result = server.wait() => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("volley-scheduler: {e}");
                ExitCode::from(1)
            }
        },
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}
