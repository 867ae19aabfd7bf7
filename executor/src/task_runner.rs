//! Running one task: the stage plan's partition, executed with DataFusion in
//! a task context that carries the executor's exchange, and its outcome as
//! the typed `TaskStatus` the scheduler expects.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionState;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, SortMergeJoinExec,
};
use datafusion::physical_plan::{ExecutionPlan, common};
use volley_dataflow::{
    ExchangeContext, ExchangeError, ExecutorId, OutputAttempt, ShuffleSource, ShuffleWriterExec,
    StreamedInputs, TrafficRecorder, apply_settings, classify_error, describe_files,
    find_exchange_error, input_files, query_error, session_config,
};
use volley_proto::v1;

use crate::operator_metrics::operator_metrics;
use crate::shuffle_store::{ShuffleStore, StoreSink};

/// What every task of an executor shares.
#[derive(Debug)]
pub(crate) struct TaskEnv {
    pub(crate) executor_id: ExecutorId,
    /// The executor's memory budget and slots, to size per-task reservations.
    pub(crate) memory_limit: usize,
    pub(crate) slots: usize,
    pub(crate) state: SessionState,
    /// Where the tasks' shuffle writers store their output.
    pub(crate) store: Arc<ShuffleStore>,
    pub(crate) source: Arc<dyn ShuffleSource>,
    /// The epoch of the scheduler this registration serves: with the stage
    /// attempt, it names every output the tasks write.
    pub(crate) epoch: u64,
}

/// Makes a decoded stage plan interruptible: a join can turn one input batch
/// into millions of output rows, and the operator above it consumes them in
/// one poll without ever yielding, so neither an abort (job cancelled) nor
/// anything else could interrupt the task. A [`CooperativeExec`] above every
/// join yields to the runtime every few batches, which is when an abort
/// takes effect.
pub(crate) fn make_interruptible(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan
        .transform_up(|node| {
            let is_join = node.is::<HashJoinExec>()
                || node.is::<NestedLoopJoinExec>()
                || node.is::<CrossJoinExec>()
                || node.is::<SortMergeJoinExec>();
            Ok(if is_join {
                Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>)
            } else {
                Transformed::no(node)
            })
        })?
        .data)
}

/// Runs `partition` of `plan` and reports the outcome.
/// The stage attempt's plan, as a task of it runs it.
pub(crate) struct StageRun {
    pub(crate) plan: Arc<dyn ExecutionPlan>,
    pub(crate) attempt: u32,
    /// Map outputs of the inputs it streams from, as they are announced.
    pub(crate) streamed: Arc<StreamedInputs>,
}

/// Runs `partition` of `stage`'s plan and reports the outcome.
pub(crate) async fn run_task(
    env: Arc<TaskEnv>,
    stage: StageRun,
    partition: usize,
    settings: Arc<HashMap<String, String>>,
    task_name: String,
) -> v1::task_status::Result {
    let traffic = Arc::new(TrafficRecorder::default());
    let plan = Arc::clone(&stage.plan);
    let exchange = Arc::new(ExchangeContext {
        executor_id: env.executor_id.clone(),
        // Named with the attempt, so a superseded attempt's late output
        // never replaces the current one's, and no reader gets another
        // attempt's rows.
        sink: Arc::new(StoreSink::new(
            Arc::clone(&env.store),
            OutputAttempt::new(env.epoch, stage.attempt),
        )),
        source: Arc::clone(&env.source),
        traffic: Arc::clone(&traffic),
        streamed: stage.streamed,
        key_summaries: Default::default(),
    });
    let outcome = match execute(
        &env,
        Arc::clone(&plan),
        Arc::clone(&exchange),
        partition,
        &settings,
        task_name,
    )
    .await
    {
        Ok(stats) => v1::task_status::Result::Success(v1::TaskSuccess {
            partition_rows: stats.iter().map(|s| s.rows).collect(),
            partition_bytes: stats.iter().map(|s| s.bytes).collect(),
            fetches: traffic
                .snapshot()
                .into_iter()
                .map(|(from, bytes, fetches)| v1::FetchStat {
                    from_executor: from.to_string(),
                    bytes,
                    fetches,
                })
                .collect(),
            operators: operator_metrics(&plan),
            key_summaries: exchange.take_key_summaries(),
        }),
        Err(e) => {
            let mut failure = failure_from_error(&e);
            // DataFusion's decoders do not always say which file they were
            // reading; the task knows which files it was given.
            if let Some(v1::task_failure::Reason::ExecutionFailed(failed)) = &mut failure.reason {
                let files = input_files(&plan, partition);
                if failed.kind == v1::ErrorKind::User as i32
                    && !files.is_empty()
                    && !files
                        .iter()
                        .any(|f| failed.message.contains(f.trim_start_matches('/')))
                {
                    let reading = format!(" (while reading {})", describe_files(&files));
                    failed.message.push_str(&reading);
                    if let Some(query_error) = &mut failed.query_error {
                        query_error.message.push_str(&reading);
                    }
                }
            }
            v1::task_status::Result::Failure(failure)
        }
    };
    let metrics = env.store.metrics();
    for (from, bytes, _) in traffic.snapshot() {
        metrics.shuffle_read(from == env.executor_id, bytes);
    }
    match &outcome {
        v1::task_status::Result::Success(_) => metrics.task_ended(true),
        v1::task_status::Result::Failure(failure) => {
            metrics.task_ended(false);
            if matches!(
                failure.reason,
                Some(v1::task_failure::Reason::FetchFailed(_))
            ) {
                metrics.fetch_failures.inc();
            }
        }
    }
    outcome
}

async fn execute(
    env: &TaskEnv,
    plan: Arc<dyn ExecutionPlan>,
    exchange: Arc<ExchangeContext>,
    partition: usize,
    settings: &HashMap<String, String>,
    task_name: String,
) -> Result<Vec<volley_dataflow::PartitionStats>> {
    let mut config = apply_settings(session_config(), settings)?;
    // A sort reserves memory up front for merging its spills; DataFusion's
    // default (10 MiB) assumes one query owns the pool, while here every
    // slot runs a task on the same budget. Unless the user set it, keep the
    // reservations of all slots within a quarter of the budget.
    if !settings.contains_key("datafusion.execution.sort_spill_reservation_bytes") {
        let execution = &mut config.options_mut().execution;
        let share = env.memory_limit / (4 * env.slots.max(1));
        execution.sort_spill_reservation_bytes = execution.sort_spill_reservation_bytes.min(share);
    }
    let config = config.with_extension(exchange);
    let context = Arc::new(
        TaskContext::from(&env.state)
            .with_session_config(config)
            .with_task_id(task_name),
    );
    let stream = plan.execute(partition, context)?;
    let batches = common::collect(stream).await?;
    ShuffleWriterExec::stats_from_batches(&batches)
}

/// The typed failure the scheduler acts on; never a string to be parsed.
pub(crate) fn failure_from_error(error: &datafusion::error::DataFusionError) -> v1::TaskFailure {
    let reason = match find_exchange_error(error) {
        Some(ExchangeError::FetchFailed { location, reason }) => {
            v1::task_failure::Reason::FetchFailed(v1::FetchFailed {
                executor_id: location.executor_id.to_string(),
                map_stage: location.map_output.stage_id.0,
                map_partition: location.map_output.map_partition,
                message: reason.clone(),
            })
        }
        _ => v1::task_failure::Reason::ExecutionFailed(v1::ExecutionFailed {
            kind: classify_error(error) as i32,
            message: error.to_string(),
            query_error: query_error(error),
        }),
    };
    v1::TaskFailure {
        reason: Some(reason),
    }
}

/// The failure reported for a task that panicked.
pub(crate) fn panic_failure(task_name: &str, panic: &str) -> v1::TaskFailure {
    v1::TaskFailure {
        reason: Some(v1::task_failure::Reason::ExecutionFailed(
            v1::ExecutionFailed {
                kind: v1::ErrorKind::Internal as i32,
                message: format!("task {task_name} panicked: {panic}"),
                query_error: None,
            },
        )),
    }
}
