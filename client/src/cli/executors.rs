//! `volley executors`: the executors a scheduler knows, and waiting until
//! enough of them registered (for scripts that start a cluster).

use std::time::Duration;

use serde_json::{Value, json};
use volley_client::{ClientError, SchedulerClient, v1};

use super::connection::ClusterArgs;
use super::jobs::parse_duration;

/// Arguments of `volley executors`.
#[derive(Debug, clap::Args)]
pub(crate) struct ExecutorsArgs {
    #[command(flatten)]
    cluster: ClusterArgs,
    #[command(subcommand)]
    command: ExecutorsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum ExecutorsCommand {
    /// List the registered executors: id, address, slots, free slots,
    /// stored map outputs.
    List {
        /// Print JSON (an array of executors).
        #[arg(long)]
        json: bool,
    },
    /// Wait until at least COUNT executors are registered (exit 4 after
    /// --timeout); the scheduler itself may still be starting.
    Wait {
        /// Executors to wait for.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// Give up after this long, e.g. 30s, 5m.
        #[arg(long, value_parser = parse_duration, default_value = "60s")]
        timeout: Duration,
    },
}

fn executor_json(e: &v1::ExecutorInfo) -> Value {
    json!({
        "executor_id": e.executor_id,
        "endpoint": e.endpoint,
        "slots": e.slots,
        "free_slots": e.free_slots,
        "stored_outputs": e.stored_outputs,
    })
}

pub(crate) async fn run(args: ExecutorsArgs) -> Result<(), ClientError> {
    match args.command {
        ExecutorsCommand::List { json } => {
            let client = args.cluster.connect().await?;
            let executors = client.executors().await?;
            if json {
                println!(
                    "{}",
                    Value::Array(executors.iter().map(executor_json).collect())
                );
            } else {
                println!(
                    "{:<16} {:<32} {:>5} {:>5} {:>7}",
                    "id", "endpoint", "slots", "free", "outputs"
                );
                for e in &executors {
                    println!(
                        "{:<16} {:<32} {:>5} {:>5} {:>7}",
                        e.executor_id, e.endpoint, e.slots, e.free_slots, e.stored_outputs
                    );
                }
            }
            Ok(())
        }
        ExecutorsCommand::Wait { count, timeout } => {
            let link = args.cluster.connection.link()?;
            let deadline = tokio::time::Instant::now() + timeout;
            let waited = tokio::time::timeout_at(deadline, async {
                loop {
                    // The scheduler may not listen yet, and executors come
                    // one by one: ask again until enough are there.
                    if let Ok(client) =
                        SchedulerClient::connect_with(&args.cluster.scheduler, link.clone()).await
                        && let Ok(executors) = client.executors().await
                        && executors.len() >= count
                    {
                        return executors.len();
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
            match waited {
                Ok(n) => {
                    println!("{n} executors registered");
                    Ok(())
                }
                Err(_) => Err(ClientError::WaitTimedOut(format!(
                    "fewer than {count} executors registered at {} within {timeout:?}",
                    args.cluster.scheduler
                ))),
            }
        }
    }
}
