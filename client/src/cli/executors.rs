//! `volley executors`: the executors a scheduler knows, and waiting until
//! enough of them registered (for scripts that start a cluster).

use std::time::Duration;

use serde_json::{Value, json};
use volley_client::{ClientError, SchedulerClient, v1};
use volley_proto::executor_state_name;

use super::connection::ClusterArgs;
use super::jobs::parse_duration;
use super::json_report::print_json;
use super::progress::human_bytes;

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
    /// List the registered executors: id, address, state (active,
    /// draining), slots, running tasks, memory pool use, stored map outputs.
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
    /// Drain an executor (role admin): it takes no new tasks, finishes its
    /// running ones, serves its stored output until the jobs that read it
    /// are done, then stops.
    Drain {
        /// The executor's id (see `volley executors list`).
        executor_id: String,
        /// Wait until it has left the cluster (exit 4 after --timeout).
        #[arg(long)]
        wait: bool,
        /// With --wait, give up after this long, e.g. 30s, 5m.
        #[arg(long, value_parser = parse_duration, default_value = "10m")]
        timeout: Duration,
    },
}

fn executor_json(e: &v1::ExecutorInfo) -> Value {
    json!({
        "executor_id": e.executor_id,
        "endpoint": e.endpoint,
        "slots": e.slots,
        "free_slots": e.free_slots,
        "running_tasks": e.running_tasks,
        "memory_reserved": e.memory_reserved,
        "memory_limit": e.memory_limit,
        "shuffle_memory_bytes": e.shuffle_memory_bytes,
        "shuffle_disk_bytes": e.shuffle_disk_bytes,
        "shuffle_spilled_bytes": e.shuffle_spilled_bytes,
        "stored_outputs": e.stored_outputs,
        "state": executor_state_name(e.state),
    })
}

pub(crate) async fn run(args: ExecutorsArgs) -> Result<(), ClientError> {
    match args.command {
        ExecutorsCommand::List { json } => {
            let client = args.cluster.connect().await?;
            let executors = client.executors().await?;
            if json {
                print_json(&Value::Array(executors.iter().map(executor_json).collect()));
            } else {
                println!(
                    "{:<16} {:<32} {:<9} {:>5} {:>7} {:>21} {:>7}",
                    "id", "endpoint", "state", "slots", "running", "memory", "outputs"
                );
                for e in &executors {
                    let memory = format!(
                        "{} / {}",
                        human_bytes(e.memory_reserved),
                        human_bytes(e.memory_limit)
                    );
                    println!(
                        "{:<16} {:<32} {:<9} {:>5} {:>7} {:>21} {:>7}",
                        e.executor_id,
                        e.endpoint,
                        executor_state_name(e.state),
                        e.slots,
                        e.running_tasks,
                        memory,
                        e.stored_outputs
                    );
                }
            }
            Ok(())
        }
        ExecutorsCommand::Wait { count, timeout } => {
            let link = args.cluster.connection.link()?;
            let url = args.cluster.url()?;
            let deadline = tokio::time::Instant::now() + timeout;
            let waited = tokio::time::timeout_at(deadline, async {
                loop {
                    // The scheduler may not listen yet, and executors come
                    // one by one: ask again until enough are there.
                    if let Ok(client) = SchedulerClient::connect_with(&url, link.clone()).await
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
                    "fewer than {count} executors registered at {url} within {timeout:?}"
                ))),
            }
        }
        ExecutorsCommand::Drain {
            executor_id,
            wait,
            timeout,
        } => {
            let client = args.cluster.connect().await?;
            client.drain_executor(&executor_id).await?;
            if !wait {
                println!("executor {executor_id} is draining");
                return Ok(());
            }
            let deadline = tokio::time::Instant::now() + timeout;
            let left = tokio::time::timeout_at(deadline, async {
                loop {
                    let executors = client.executors().await?;
                    if !executors.iter().any(|e| e.executor_id == executor_id) {
                        return Ok::<(), ClientError>(());
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
            .await;
            match left {
                Ok(result) => {
                    result?;
                    println!("executor {executor_id} drained and left");
                    Ok(())
                }
                Err(_) => Err(ClientError::WaitTimedOut(format!(
                    "executor {executor_id} was still draining after {timeout:?}"
                ))),
            }
        }
    }
}
