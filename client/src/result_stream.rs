//! Running one query job and streaming its result while it runs.
//!
//! The scheduler publishes each partition of the final stage as soon as its
//! task finishes; [`stream_job_result`] fetches those partitions from the
//! executors over Flight one at a time, in the order they finish, and hands
//! their batches to a bounded channel, so the client holds at most
//! [`RESULT_BUFFER_BATCHES`] batches whatever the size of the result, and the
//! first rows arrive before the job ends. A partition whose executor is lost
//! before any of its rows were returned is read again from wherever the
//! scheduler re-ran it; if the job already ended and nothing was returned
//! yet, the whole job runs again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, UInt64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::metrics::{Count, Gauge};
use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, warn};
use volley_dataflow::{JobId, PartitionLocation};
use volley_executor::fetch_location;

use crate::distributed_exec::ClusterLink;
use crate::error::ClientError;
use crate::scheduler_client::{SchedulerClient, is_terminal};

/// Batches the client buffers between the executors and the consumer.
pub(crate) const RESULT_BUFFER_BATCHES: usize = 2;

/// How often a query runs when its result is lost before any row of it
/// was returned.
const MAX_RESULT_ATTEMPTS: u32 = 3;

/// One query to run: the encoded plan and what to do with its result.
pub(crate) struct ResultJob {
    pub(crate) link: ClusterLink,
    pub(crate) plan: Arc<Vec<u8>>,
    pub(crate) settings: HashMap<String, String>,
    pub(crate) schema: SchemaRef,
    /// A COPY: when the executors wrote the files, the answer is the count
    /// of rows written.
    pub(crate) writes_files: bool,
    pub(crate) metrics: ResultMetrics,
}

/// What the client observed while streaming a result.
#[derive(Clone, Debug)]
pub(crate) struct ResultMetrics {
    /// Most batches waiting in the client's buffer at once.
    pub(crate) peak_buffered_batches: Gauge,
    /// Batches handed over before the job had ended.
    pub(crate) batches_before_job_end: Count,
}

/// Why one run of the job did not deliver its whole result.
enum RunError {
    /// A result partition was lost before any row of the query was returned
    /// and the job had ended: the job may run again.
    Lost(DataFusionError),
    /// The query failed; nothing to retry.
    Failed(DataFusionError),
    /// The consumer dropped the stream.
    Closed,
}

impl From<DataFusionError> for RunError {
    fn from(e: DataFusionError) -> Self {
        RunError::Failed(e)
    }
}

impl From<ClientError> for RunError {
    fn from(e: ClientError) -> Self {
        RunError::Failed(e.into_datafusion())
    }
}

/// Runs the job and sends its result batches to `tx`, or the error that
/// ended it.
pub(crate) async fn stream_job_result(job: ResultJob, tx: mpsc::Sender<Result<RecordBatch>>) {
    let mut emitted = false;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match run_once(&job, &tx, &mut emitted).await {
            Ok(()) | Err(RunError::Closed) => return,
            Err(RunError::Lost(e)) if !emitted && attempt < MAX_RESULT_ATTEMPTS => {
                warn!(error = %e, "a result partition was lost; running the job again");
            }
            Err(RunError::Lost(e) | RunError::Failed(e)) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
    }
}

/// One submission of the job, streaming partitions as they are published.
async fn run_once(
    job: &ResultJob,
    tx: &mpsc::Sender<Result<RecordBatch>>,
    emitted: &mut bool,
) -> std::result::Result<(), RunError> {
    let link = &job.link;
    let job_id = link
        .scheduler
        .submit_retrying(
            job.plan.as_ref().clone(),
            job.settings.clone(),
            String::new(),
        )
        .await?;
    let mut guard = JobGuard {
        scheduler: link.scheduler.clone(),
        job_id: job_id.clone(),
        finished: false,
    };
    let observer = link
        .observer
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut updates = Box::pin(link.scheduler.watch(&job_id).await?);
    // By map partition of the final stage: read, waiting to be read, and
    // locations that failed (ignored until the scheduler publishes another).
    let mut read: HashSet<u32> = HashSet::new();
    let mut pending: BTreeMap<u32, PartitionLocation> = BTreeMap::new();
    let mut failed: HashMap<u32, PartitionLocation> = HashMap::new();
    let mut ended = false;
    loop {
        // Take every status update that is ready; wait for one only when
        // there is nothing to read.
        while !ended {
            let next = if pending.is_empty() {
                updates.next().await
            } else {
                match updates.next().now_or_never() {
                    Some(next) => next,
                    None => break,
                }
            };
            let Some(status) = next else {
                return Err(link.scheduler.status_stream_ended(&job_id).into());
            };
            let status = status?;
            if let Some(observer) = &observer {
                observer(&status);
            }
            if is_terminal(status.state) {
                ended = true;
                guard.finished = true;
                *link.last_job.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
                if let Some(failure) = ClientError::from_failed_job(&status) {
                    return Err(failure.into());
                }
                if job.writes_files && !status.output_files.is_empty() {
                    // The executors wrote the rows; the answer is their count.
                    let count: ArrayRef = Arc::new(UInt64Array::from(vec![status.rows_out]));
                    let batch = RecordBatch::try_new(Arc::clone(&job.schema), vec![count])
                        .map_err(DataFusionError::from)?;
                    let _ = tx.send(Ok(batch)).await;
                    return Ok(());
                }
            }
            for location in status.result.iter().map(PartitionLocation::from) {
                let partition = location.map_output.map_partition;
                if !read.contains(&partition) && failed.get(&partition) != Some(&location) {
                    pending.insert(partition, location);
                }
            }
        }
        let Some((partition, location)) = pending.pop_first() else {
            if ended {
                if let Some(partition) = failed.keys().find(|p| !read.contains(p)) {
                    return Err(RunError::Lost(DataFusionError::Execution(format!(
                        "result partition {partition} of job {job_id} could not be read"
                    ))));
                }
                return Ok(());
            }
            continue;
        };
        debug!(job_id = %job_id, partition, executor = %location.executor_id, "fetching result partition");
        let mut partition_emitted = false;
        match read_partition(job, &location, tx, &mut partition_emitted, ended).await {
            Ok(()) => {
                read.insert(partition);
            }
            Err(RunError::Failed(e)) if !partition_emitted => {
                // Wait for the scheduler to re-run the partition elsewhere;
                // once the job has ended, it will not.
                debug!(job_id = %job_id, partition, error = %e, "result partition lost");
                link.executor_channels.forget(&location.endpoint);
                failed.insert(partition, location);
                if ended {
                    return Err(RunError::Lost(e));
                }
            }
            Err(e) => return Err(e),
        }
        *emitted |= partition_emitted;
    }
}

/// Streams one result partition into `tx`.
async fn read_partition(
    job: &ResultJob,
    location: &PartitionLocation,
    tx: &mpsc::Sender<Result<RecordBatch>>,
    emitted: &mut bool,
    job_ended: bool,
) -> std::result::Result<(), RunError> {
    let channel = job
        .link
        .executor_channels
        .get(&location.endpoint, job.link.scheduler.link())
        .map_err(|e| RunError::Failed(DataFusionError::Execution(e)))?;
    let mut stream = fetch_location(
        channel,
        location,
        Arc::clone(&job.schema),
        job.link.scheduler.link(),
    )
    .await
    .map_err(|e| RunError::Failed(e.into()))?;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| {
            if *emitted {
                e.context(format!(
                    "result partition {} was lost after some of its rows were returned; \
                     run the query again",
                    location.map_output.map_partition
                ))
            } else {
                e
            }
        })?;
        let batch = conform(batch, &job.schema)?;
        if tx.send(Ok(batch)).await.is_err() {
            return Err(RunError::Closed);
        }
        *emitted = true;
        let buffered = RESULT_BUFFER_BATCHES - tx.capacity();
        job.metrics.peak_buffered_batches.set_max(buffered);
        if !job_ended {
            job.metrics.batches_before_job_end.add(1);
        }
    }
    Ok(())
}

/// Gives a batch the schema the client planned (names and nullability as
/// DataFusion's logical plan has them) when only metadata differs. A null
/// in a column the plan declares non-nullable is the error single-node
/// DataFusion raises building that batch (`INSERT` of a NULL into a NOT
/// NULL column): a consumer that trusted the declaration would otherwise
/// store the null as a default value.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    if batch.schema() == *schema {
        return Ok(batch);
    }
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !field.is_nullable() && column.logical_null_count() > 0 {
            return Err(ArrowError::InvalidArgumentError(format!(
                "Column '{}' is declared as non-nullable but contains null values",
                field.name()
            ))
            .into());
        }
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec()).unwrap_or(batch))
}

/// Cancels the job if the query is dropped before it ends; releases its
/// result from the executors once it ended.
struct JobGuard {
    scheduler: SchedulerClient,
    job_id: JobId,
    finished: bool,
}

impl Drop for JobGuard {
    fn drop(&mut self) {
        let scheduler = self.scheduler.clone();
        let job_id = self.job_id.clone();
        let finished = self.finished;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        // Best effort: if this fails the scheduler's result TTL cleans up.
        runtime.spawn(async move {
            // A job that ended while this client was not looking cannot be
            // cancelled any more: release its result instead.
            let outcome = if finished {
                scheduler.release(&job_id).await
            } else {
                match scheduler.cancel(&job_id).await {
                    Ok(false) => scheduler.release(&job_id).await,
                    other => other.map(|_| ()),
                }
            };
            if let Err(e) = outcome {
                debug!(job_id = %job_id, error = %e, "could not release or cancel job");
            }
        });
    }
}
