//! `EXPLAIN` on a cluster: the scheduler plans the query exactly as it
//! would run it and describes its stages (`distributed_plan`). `EXPLAIN
//! VERBOSE` adds DataFusion's own logical and physical plans, as made in
//! this process, before it.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::Result;
use datafusion::logical_expr::{Explain, LogicalPlan};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};

use crate::scheduler_client::SchedulerClient;

/// The `plan_type` of the distributed plan's row.
pub const DISTRIBUTED_PLAN: &str = "distributed_plan";

/// The plan answering `explain`, whose inner plan was encoded for the
/// cluster as `plan` with `settings`.
pub(crate) async fn explain_on_cluster(
    scheduler: &SchedulerClient,
    explain: &Explain,
    plan: Vec<u8>,
    settings: HashMap<String, String>,
    session: &dyn Session,
) -> Result<Arc<dyn ExecutionPlan>> {
    let schema = Arc::clone(explain.schema.inner());
    let mut batches = Vec::new();
    if explain.verbose {
        // DataFusion's own plans of this process, as EXPLAIN VERBOSE shows
        // them without a cluster.
        let local = DefaultPhysicalPlanner::default()
            .create_physical_plan(&LogicalPlan::Explain(explain.clone()), session)
            .await?;
        batches.extend(collect(local, session.task_ctx()).await?);
    }
    let explained = scheduler
        .explain(plan, settings)
        .await
        .map_err(crate::ClientError::into_datafusion)?;
    let text = format!(
        "{} stage{}, planned for {} partitions\n{}",
        explained.stages,
        if explained.stages == 1 { "" } else { "s" },
        explained.target_partitions,
        explained.text
    );
    batches.push(RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(StringArray::from(vec![DISTRIBUTED_PLAN])),
            Arc::new(StringArray::from(vec![text])),
        ],
    )?);
    Ok(MemorySourceConfig::try_new_exec(&[batches], schema, None)?)
}
