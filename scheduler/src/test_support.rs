//! Helpers for the scheduler's unit tests: plan SQL over an in-memory table
//! of four partitions into stages, as the scheduler would.

use std::sync::Arc;

use datafusion::arrow::array::{Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use volley_dataflow::{JobId, session_config};

use crate::partition_safety::make_partitions_independent;
use crate::stage_planner::{StagePlan, cut_into_stages};

/// A session with table `t(k BIGINT, v VARCHAR)` in four partitions and
/// table `small(k BIGINT)` in one.
pub(crate) fn context() -> Result<SessionContext> {
    let ctx = SessionContext::new_with_config(session_config().with_target_partitions(4));
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
    Ok(ctx)
}

/// The physical plan of `sql`, made safe for separate tasks.
pub(crate) async fn physical(sql: &str) -> Result<Arc<dyn ExecutionPlan>> {
    let plan = context()?.sql(sql).await?.create_physical_plan().await?;
    make_partitions_independent(plan)
}

/// The stages of `sql`.
pub(crate) async fn stages(sql: &str) -> Result<Vec<StagePlan>> {
    cut_into_stages(&JobId::from("test-job"), physical(sql).await?, None)
}
