//! Helpers for the scheduler's unit tests: plan SQL over an in-memory table
//! of four partitions into stages, as the scheduler would.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use volley_dataflow::{JobId, session_config};

use crate::planning::prepare_for_tasks;
use crate::planning_session::PlanningSessions;
use crate::stage_planner::{StagePlan, cut_into_stages};

/// A scheduler's planning session with table `t(k BIGINT, v VARCHAR)` in
/// four partitions and table `small(k BIGINT)` in one.
pub(crate) fn context() -> Result<SessionContext> {
    let ctx = PlanningSessions::new(Arc::new(RuntimeEnv::default()))
        .context(session_config().with_target_partitions(4));
    register_tables(&ctx)?;
    Ok(ctx)
}

/// The same tables in a plain single-node DataFusion session.
pub(crate) fn datafusion_context() -> Result<SessionContext> {
    let ctx = SessionContext::new_with_config(session_config().with_target_partitions(4));
    register_tables(&ctx)?;
    Ok(ctx)
}

fn register_tables(ctx: &SessionContext) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Utf8, true),
    ]));
    let partitions = (0..4)
        .map(|p| {
            let keys: Vec<i64> = (0..100).map(|i| i * 4 + p).collect();
            let values: Vec<String> = keys.iter().map(|k| format!("v{}", k % 7)).collect();
            Ok(vec![RecordBatch::try_new(
                Arc::clone(&schema),
                vec![
                    Arc::new(Int64Array::from(keys)),
                    Arc::new(StringArray::from(values)),
                ],
            )?])
        })
        .collect::<Result<Vec<_>>>()?;
    ctx.register_table(
        "t",
        Arc::new(MemTable::try_new(Arc::clone(&schema), partitions)?),
    )?;
    let small_schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, false)]));
    let small = RecordBatch::try_new(
        Arc::clone(&small_schema),
        vec![Arc::new(Int64Array::from(vec![1, 2, 3]))],
    )?;
    ctx.register_table(
        "small",
        Arc::new(MemTable::try_new(small_schema, vec![vec![small]])?),
    )?;
    Ok(())
}

/// The physical plan of `sql`, as the scheduler makes it for tasks.
pub(crate) async fn physical(sql: &str) -> Result<Arc<dyn ExecutionPlan>> {
    let ctx = context()?;
    let plan = ctx.sql(sql).await?.create_physical_plan().await?;
    prepare_for_tasks(plan, ctx.state().config())
}

/// The stages of `sql`.
pub(crate) async fn stages(sql: &str) -> Result<Vec<StagePlan>> {
    stages_from(sql, 0).await
}

/// [`stages`], numbered from `first` (a later statement of a script).
pub(crate) async fn stages_from(sql: &str, first: u32) -> Result<Vec<StagePlan>> {
    cut_into_stages(
        &JobId::from("test-job"),
        physical(sql).await?,
        None,
        first,
        true,
    )
}
