//! How a DataFusion session runs queries on a Volley cluster.
//!
//! [`VolleyQueryPlanner`] replaces DataFusion's physical planner in the
//! client's session: instead of planning a query locally it wraps the
//! optimized logical plan in a [`DistributedQueryExec`]. Executing that node
//! submits the plan to the scheduler, follows the job, and streams the final
//! stage's partitions from the executors over Flight. So every DataFusion
//! API that executes a plan (`collect`, `show`, `execute_stream`, ...) runs
//! on the cluster. Dropping the stream before the job ends cancels the job;
//! once read, the result is released from the executors.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, UInt64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::QueryPlanner;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion_proto::bytes::logical_plan_to_bytes;
use futures::{StreamExt, TryStreamExt};
use tracing::debug;
use volley_dataflow::{ExchangeError, JobId, PartitionLocation, changed_settings};
use volley_executor::{fetch_location, flight_channel};
use volley_proto::v1;

use crate::error::ClientError;
use crate::scheduler_client::SchedulerClient;

/// Called with every status of every job a session runs.
pub type JobObserver = Arc<dyn Fn(&v1::JobStatus) + Send + Sync>;

/// What a session shares with the plans it runs.
#[derive(Clone)]
pub(crate) struct ClusterLink {
    pub(crate) scheduler: SchedulerClient,
    pub(crate) observer: Arc<Mutex<Option<JobObserver>>>,
    pub(crate) last_job: Arc<Mutex<Option<v1::JobStatus>>>,
}

impl fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterLink")
            .field("scheduler", &self.scheduler.url())
            .finish()
    }
}

/// Plans every query as a [`DistributedQueryExec`], except EXPLAIN and
/// DESCRIBE, which DataFusion answers locally.
#[derive(Debug)]
pub struct VolleyQueryPlanner {
    link: ClusterLink,
}

impl VolleyQueryPlanner {
    pub(crate) fn new(link: ClusterLink) -> Self {
        Self { link }
    }
}

#[async_trait]
impl QueryPlanner for VolleyQueryPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match logical_plan {
            LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_) => {
                DefaultPhysicalPlanner::default()
                    .create_physical_plan(logical_plan, session)
                    .await
            }
            // The client's own catalog (SHOW TABLES, information_schema) is
            // answered where it lives.
            plan if reads_only_information_schema(plan) => {
                DefaultPhysicalPlanner::default()
                    .create_physical_plan(logical_plan, session)
                    .await
            }
            _ => {
                let plan = logical_plan_to_bytes(logical_plan)?.to_vec();
                let settings = changed_settings(session.config_options());
                let schema = Arc::clone(logical_plan.schema().inner());
                let mut exec = DistributedQueryExec::new(self.link.clone(), plan, settings, schema);
                exec.writes_files = matches!(logical_plan, LogicalPlan::Copy(_));
                Ok(Arc::new(exec))
            }
        }
    }
}

/// Does the plan scan tables, all of them in `information_schema`?
fn reads_only_information_schema(plan: &LogicalPlan) -> bool {
    let (mut scans, mut catalog_scans) = (0, 0);
    let _ = plan.apply(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            scans += 1;
            if scan.table_name.schema() == Some("information_schema") {
                catalog_scans += 1;
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    scans > 0 && scans == catalog_scans
}

/// A whole query, run as one job on the cluster; one output partition.
pub struct DistributedQueryExec {
    link: ClusterLink,
    plan: Arc<Vec<u8>>,
    settings: HashMap<String, String>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    /// A COPY: when the executors wrote the files, the answer is the count
    /// of rows written.
    writes_files: bool,
}

impl fmt::Debug for DistributedQueryExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributedQueryExec")
            .field("scheduler", &self.link.scheduler.url())
            .finish()
    }
}

impl DistributedQueryExec {
    pub(crate) fn new(
        link: ClusterLink,
        plan: Vec<u8>,
        settings: HashMap<String, String>,
        schema: SchemaRef,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            link,
            plan: Arc::new(plan),
            settings,
            schema,
            properties,
            writes_files: false,
        }
    }
}

impl DisplayAs for DistributedQueryExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DistributedQueryExec: scheduler={}",
            self.link.scheduler.url()
        )
    }
}

impl ExecutionPlan for DistributedQueryExec {
    fn name(&self) -> &str {
        "DistributedQueryExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.is_empty() {
            Ok(self)
        } else {
            Err(DataFusionError::Internal(
                "DistributedQueryExec takes no children".into(),
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!(
                "DistributedQueryExec has one partition, not {partition}"
            )));
        }
        let link = self.link.clone();
        let plan = Arc::clone(&self.plan);
        let settings = self.settings.clone();
        let schema = Arc::clone(&self.schema);
        let writes_files = self.writes_files;
        let run = async move {
            // A result lives on the executors until read. If one of them dies
            // between the job's end and the client opening its partitions,
            // the job runs again: nothing has been returned yet.
            let mut attempt = 0;
            loop {
                attempt += 1;
                let (status, guard) = run_job(&link, &plan, &settings).await?;
                if writes_files && !status.output_files.is_empty() {
                    // The executors wrote the rows; the answer is their count.
                    let count: ArrayRef = Arc::new(UInt64Array::from(vec![status.rows_out]));
                    let batch = RecordBatch::try_new(Arc::clone(&schema), vec![count])?;
                    return Ok(Box::pin(futures::stream::once(async move { Ok(batch) }))
                        as futures::stream::BoxStream<'static, Result<RecordBatch>>);
                }
                let job_id = guard.job_id.clone();
                debug!(job_id = %job_id, partitions = status.result.len(), "fetching result");
                match open_result(&status, Arc::clone(&schema)).await {
                    Ok(streams) => {
                        return Ok::<_, DataFusionError>(result_stream(
                            streams,
                            Arc::clone(&schema),
                            guard,
                        ));
                    }
                    Err(e) if attempt < MAX_RESULT_ATTEMPTS => {
                        tracing::warn!(job_id = %job_id, error = %e, "a result partition was lost; running the job again");
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            futures::stream::once(run).try_flatten(),
        )))
    }
}

fn is_final(status: &v1::JobStatus) -> bool {
    crate::scheduler_client::is_terminal(status.state)
}

/// Streams the result partitions in order, a few opened ahead.
/// How often a query runs when its result is lost before it can be read.
const MAX_RESULT_ATTEMPTS: u32 = 3;

/// Submits the plan and follows the job to its successful end.
async fn run_job(
    link: &ClusterLink,
    plan: &Arc<Vec<u8>>,
    settings: &HashMap<String, String>,
) -> Result<(v1::JobStatus, JobGuard)> {
    let job_id = link
        .scheduler
        .submit(plan.as_ref().clone(), settings.clone(), String::new())
        .await
        .map_err(ClientError::into_datafusion)?;
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
    let last_job = Arc::clone(&link.last_job);
    let outcome = link
        .scheduler
        .wait(&job_id, |status| {
            if let Some(observer) = &observer {
                observer(status);
            }
            if is_final(status) {
                *last_job.lock().unwrap_or_else(|p| p.into_inner()) = Some(status.clone());
            }
        })
        .await;
    guard.finished = true;
    let status = outcome.map_err(ClientError::into_datafusion)?;
    Ok((status, guard))
}

/// Opens every result partition (one Flight stream each) before any row is
/// returned, so a lost partition is found while the job can still be rerun.
async fn open_result(
    status: &v1::JobStatus,
    schema: SchemaRef,
) -> std::result::Result<Vec<SendableRecordBatchStream>, ExchangeError> {
    let mut channels: HashMap<String, tonic::transport::Channel> = HashMap::new();
    let mut opening = Vec::new();
    for location in status.result.iter().map(PartitionLocation::from) {
        let channel = match channels.get(&location.endpoint) {
            Some(channel) => channel.clone(),
            None => {
                let channel =
                    flight_channel(&location.endpoint).map_err(|e| ExchangeError::FetchFailed {
                        location: location.clone(),
                        reason: e.to_string(),
                    })?;
                channels.insert(location.endpoint.clone(), channel.clone());
                channel
            }
        };
        let schema = Arc::clone(&schema);
        opening.push(async move { fetch_location(channel, &location, schema).await });
    }
    futures::future::try_join_all(opening).await
}

/// Streams the opened result partitions in order.
fn result_stream(
    streams: Vec<SendableRecordBatchStream>,
    schema: SchemaRef,
    guard: JobGuard,
) -> futures::stream::BoxStream<'static, Result<RecordBatch>> {
    let stream = futures::stream::iter(streams).flatten().map(move |batch| {
        // Keep the guard alive until the stream is dropped.
        let _ = &guard;
        batch.map(|b| conform(b, &schema))
    });
    Box::pin(stream)
}

/// Gives a batch the schema the client planned (names and nullability as
/// DataFusion's logical plan has them) when only metadata differs.
fn conform(batch: RecordBatch, schema: &SchemaRef) -> RecordBatch {
    if batch.schema() == *schema {
        return batch;
    }
    RecordBatch::try_new(Arc::clone(schema), batch.columns().to_vec()).unwrap_or(batch)
}

/// Cancels the job if the query is dropped before it ends; releases its
/// result from the executors once it has been read.
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
            let outcome = if finished {
                scheduler.release(&job_id).await
            } else {
                scheduler.cancel(&job_id).await.map(|_| ())
            };
            if let Err(e) = outcome {
                debug!(job_id = %job_id, error = %e, "could not release or cancel job");
            }
        });
    }
}
