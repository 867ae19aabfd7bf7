//! How a DataFusion session runs queries on a Volley cluster.
//!
//! [`VolleyQueryPlanner`] replaces DataFusion's physical planner in the
//! client's session: instead of planning a query locally it wraps the
//! optimized logical plan in a [`DistributedQueryExec`]. Executing that node
//! submits the plan to the scheduler, follows the job, and streams the final
//! stage's partitions from the executors over Flight. So every DataFusion
//! API that executes a plan (`collect`, `show`, `execute_stream`, ...) runs
//! on the cluster, and its result streams while the job runs
//! (`result_stream`). Dropping the stream before the job ends cancels the
//! job; once read, the result is released from the executors.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::source_as_provider;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{DmlStatement, LogicalPlan, LogicalPlanBuilder, SortExpr, WriteOp};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use volley_dataflow::{apply_settings, changed_settings, encode_logical_plan};
use volley_executor::FlightChannels;
use volley_proto::v1;

use crate::analyze::ClusterAnalyzeExec;
use crate::client_tables::materialize_client_tables;
use crate::explain::explain_on_cluster;
use crate::result_stream::{RESULT_BUFFER_BATCHES, ResultJob, ResultMetrics, stream_job_result};
use crate::round_trip::check_round_trip;
use crate::scheduler_client::SchedulerClient;

/// Called with every status of every job a session runs.
pub type JobObserver = Arc<dyn Fn(&v1::JobStatus) + Send + Sync>;

/// What a session shares with the plans it runs.
#[derive(Clone)]
pub(crate) struct ClusterLink {
    pub(crate) scheduler: SchedulerClient,
    pub(crate) observer: Arc<Mutex<Option<JobObserver>>>,
    pub(crate) last_job: Arc<Mutex<Option<v1::JobStatus>>>,
    /// Check every plan's round trip to the scheduler (`round_trip`).
    pub(crate) check_round_trip: Arc<std::sync::atomic::AtomicBool>,
    /// Flight connections to executors, reused by every query's fetches.
    pub(crate) executor_channels: FlightChannels,
}

impl fmt::Debug for ClusterLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterLink")
            .field("scheduler", &self.scheduler.url())
            .finish()
    }
}

/// Plans every query as a [`DistributedQueryExec`]; EXPLAIN asks the
/// scheduler for the stages, EXPLAIN ANALYZE runs the query there and
/// describes them with metrics, DESCRIBE is answered locally.
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
            // EXPLAIN: the stages the cluster would run, planned there.
            LogicalPlan::Explain(explain) => {
                let (plan, settings) = self.encode_for_cluster(&explain.plan, session).await?;
                explain_on_cluster(&self.link.scheduler, explain, plan, settings, session).await
            }
            // EXPLAIN ANALYZE: the query runs on the cluster; the answer is
            // its stages with their operators' metrics.
            LogicalPlan::Analyze(analyze) => {
                let (plan, settings) = self.encode_for_cluster(&analyze.input, session).await?;
                let mut link = self.link.clone();
                link.last_job = Arc::new(Mutex::new(None));
                let input = DistributedQueryExec::new(
                    link.clone(),
                    plan,
                    settings,
                    Arc::clone(analyze.input.schema().inner()),
                );
                Ok(Arc::new(ClusterAnalyzeExec::new(
                    Arc::new(input),
                    link.last_job,
                    Arc::clone(&self.link.last_job),
                    Arc::clone(analyze.schema.inner()),
                )))
            }
            LogicalPlan::DescribeTable(_) => {
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
            // INSERT: the rows are computed on the cluster and land in the
            // client's table (an in-memory table lives here, not there).
            LogicalPlan::Dml(DmlStatement {
                target,
                op: WriteOp::Insert(insert_op),
                input,
                ..
            }) => {
                let provider = source_as_provider(target)?;
                // A table that declares its files' order (`WITH ORDER`)
                // gets its rows in that order, as DataFusion's sink
                // requires of its input; the cluster sorts them.
                let input = match declared_order(&provider) {
                    Some(order) => LogicalPlanBuilder::from(input.as_ref().clone())
                        .sort(order)?
                        .build()?,
                    None => input.as_ref().clone(),
                };
                let input = Box::pin(self.create_physical_plan(&input, session)).await?;
                provider.insert_into(session, input, *insert_op).await
            }
            // DELETE, UPDATE, TRUNCATE change the client's own tables.
            LogicalPlan::Dml(_) => {
                DefaultPhysicalPlanner::default()
                    .create_physical_plan(logical_plan, session)
                    .await
            }
            _ => {
                let (plan, settings) = self.encode_for_cluster(logical_plan, session).await?;
                let schema = Arc::clone(logical_plan.schema().inner());
                let mut exec = DistributedQueryExec::new(self.link.clone(), plan, settings, schema);
                exec.writes_files = matches!(logical_plan, LogicalPlan::Copy(_));
                Ok(Arc::new(exec))
            }
        }
    }
}

impl VolleyQueryPlanner {
    /// `logical_plan` as the cluster gets it: re-optimized under Volley's
    /// pinned settings, client tables materialized, encoded; with the
    /// settings the session changed.
    async fn encode_for_cluster(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<(Vec<u8>, HashMap<String, String>)> {
        let logical_plan = with_volley_settings(logical_plan, session)?;
        let logical_plan = materialize_client_tables(&logical_plan, session).await?;
        let plan = encode_logical_plan(&logical_plan)?;
        if self
            .link
            .check_round_trip
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            check_round_trip(&logical_plan, &plan, session).await?;
        }
        Ok((plan, changed_settings(session.config_options())))
    }
}

/// The plan as the client's optimizer makes it under the settings Volley
/// pins (`volley_dataflow::session_config`). A session that turned one of
/// them back on (say `SET datafusion.optimizer.
/// enable_physical_uncorrelated_scalar_subquery = true`) optimized the plan
/// for operators the cluster does not run; optimizing again with the pinned
/// settings rewrites it (scalar subqueries into joins).
fn with_volley_settings(plan: &LogicalPlan, session: &dyn Session) -> Result<LogicalPlan> {
    let Some(state) = session.as_any().downcast_ref::<SessionState>() else {
        return Ok(plan.clone());
    };
    let pinned = apply_settings(state.config().clone(), &std::collections::HashMap::new())?;
    if pinned
        .options()
        .optimizer
        .enable_physical_uncorrelated_scalar_subquery
        == state
            .config_options()
            .optimizer
            .enable_physical_uncorrelated_scalar_subquery
    {
        return Ok(plan.clone());
    }
    let mut pinned_state = state.clone();
    *pinned_state.config_mut() = pinned;
    pinned_state.optimize(plan)
}

/// The order a table's files are declared to have, if any: the first of
/// a listing table's `WITH ORDER` clauses.
fn declared_order(provider: &Arc<dyn TableProvider>) -> Option<Vec<SortExpr>> {
    provider
        .downcast_ref::<ListingTable>()
        .and_then(|table| table.options().file_sort_order.first().cloned())
        .filter(|order| !order.is_empty())
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
    metrics: ExecutionPlanMetricsSet,
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
            metrics: ExecutionPlanMetricsSet::new(),
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
            Err(volley_dataflow::volley_internal(
                "DistributedQueryExec takes no children",
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(volley_dataflow::volley_internal(format!(
                "DistributedQueryExec has one partition, not {partition}"
            )));
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(DataFusionError::Execution(
                "a Volley query must run inside a tokio runtime".into(),
            ));
        };
        let job = ResultJob {
            link: self.link.clone(),
            plan: Arc::clone(&self.plan),
            settings: self.settings.clone(),
            schema: Arc::clone(&self.schema),
            writes_files: self.writes_files,
            metrics: ResultMetrics {
                peak_buffered_batches: MetricBuilder::new(&self.metrics)
                    .gauge("peak_buffered_batches", partition),
                batches_before_job_end: MetricBuilder::new(&self.metrics)
                    .counter("batches_before_job_end", partition),
            },
        };
        let (tx, rx) = mpsc::channel(RESULT_BUFFER_BATCHES);
        // The job runs and its result is fetched in a task that ends (and
        // cancels or releases the job) when the stream is dropped.
        runtime.spawn(stream_job_result(job, tx));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            ReceiverStream::new(rx),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
