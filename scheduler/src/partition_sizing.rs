//! How many partitions a job is planned with, from the bytes its scans read.
//!
//! A job is planned for the cluster's slots (or `--target-partitions`). A
//! hash join's build side cannot spill, and each task holds its partition's
//! share of it: at TPC-H SF 100 on two executors, two partitions of q18 and
//! q21 ran out of memory where sixteen completed. So when a job's scans
//! read more than `volley.partition_bytes` of files per partition, it is
//! planned again with enough partitions, rounded up to a multiple of what it
//! was planned for, so tasks fill every slot in whole waves. Only the file
//! sizes are used: the same files plan the same way, and a restarted
//! scheduler plans a stored job as it was planned. A job that sets
//! `datafusion.execution.target_partitions` itself keeps it (unless it also
//! sets `volley.partition_bytes`).

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use tracing::info;
use volley_dataflow::volley_options;
use volley_proto::limits;

use crate::planning::with_table_paths;

/// The physical plan of `logical` and the session it was planned in: the
/// given one, or a copy with more partitions when the plan's scans read
/// more than `volley.partition_bytes` per partition (see the module).
pub(crate) async fn plan_sized(
    logical: &LogicalPlan,
    state: &SessionState,
) -> Result<(Arc<dyn ExecutionPlan>, SessionState)> {
    let physical = plan(logical, state).await?;
    let planned = state.config().target_partitions();
    let per_partition = volley_options(state.config()).partition_bytes;
    let read = scan_bytes(&physical);
    let Some(partitions) = sized_partitions(read, per_partition, planned) else {
        return Ok((physical, state.clone()));
    };
    info!(
        scan_bytes = read,
        per_partition,
        planned,
        partitions,
        "the job's scans are large for its partitions; planned again with more"
    );
    let mut sized = state.clone();
    sized.config_mut().options_mut().execution.target_partitions = partitions;
    let physical = plan(logical, &sized).await?;
    Ok((physical, sized))
}

async fn plan(logical: &LogicalPlan, state: &SessionState) -> Result<Arc<dyn ExecutionPlan>> {
    DefaultPhysicalPlanner::default()
        .create_physical_plan(logical, state)
        .await
        .map_err(|e| with_table_paths(e, logical))
}

/// The partitions for scans reading `bytes` of files at most
/// `per_partition` each, in multiples of `planned`; `None` to keep
/// `planned` (it is enough, or sizing is off: `per_partition` 0).
fn sized_partitions(bytes: u64, per_partition: u64, planned: usize) -> Option<usize> {
    if per_partition == 0 || planned == 0 {
        return None;
    }
    let needed = usize::try_from(bytes.div_ceil(per_partition)).unwrap_or(usize::MAX);
    if needed <= planned {
        return None;
    }
    let partitions = needed
        .div_ceil(planned)
        .saturating_mul(planned)
        .min(limits::MAX_PARTITIONS);
    (partitions > planned).then_some(partitions)
}

/// Bytes of files the plan's scans read: each file's byte range, or the
/// whole file.
fn scan_bytes(plan: &Arc<dyn ExecutionPlan>) -> u64 {
    let mut bytes = 0u64;
    let _ = plan.apply(|node| {
        if let Some(config) = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>())
        {
            for file in config.file_groups.iter().flat_map(|group| group.iter()) {
                let size = match &file.range {
                    Some(range) => u64::try_from(range.end - range.start).unwrap_or(0),
                    None => file.object_meta.size,
                };
                bytes = bytes.saturating_add(size);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    bytes
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::record_batch::RecordBatch;
    use datafusion::dataframe::DataFrameWriteOptions;
    use datafusion::physical_plan::ExecutionPlanProperties;
    use datafusion::prelude::{ParquetReadOptions, SessionContext};
    use volley_dataflow::session_config;

    use super::*;

    #[test]
    fn partitions_grow_in_multiples_of_the_planned_ones_and_only_when_needed() {
        let gib = 1 << 30;
        assert_eq!(sized_partitions(3 * gib, 2 * gib, 2), None, "two suffice");
        assert_eq!(sized_partitions(5 * gib, 2 * gib, 2), Some(4));
        assert_eq!(sized_partitions(40 * gib, 2 * gib, 2), Some(20));
        assert_eq!(sized_partitions(40 * gib, 2 * gib, 3), Some(21));
        assert_eq!(sized_partitions(40 * gib, 0, 2), None, "sizing is off");
        assert_eq!(
            sized_partitions(u64::MAX, 1, 2),
            Some(limits::MAX_PARTITIONS)
        );
    }

    /// A session over `files` Parquet files of 100k rows each, planned for
    /// two partitions with `settings`.
    async fn session(
        dir: &std::path::Path,
        files: usize,
        settings: &[(&str, &str)],
    ) -> Result<SessionContext> {
        let writer = SessionContext::new();
        for n in 0..files {
            let batch = RecordBatch::try_from_iter([(
                "v",
                Arc::new(Int64Array::from_iter_values(0..100_000)) as _,
            )])?;
            writer
                .read_batch(batch)?
                .write_parquet(
                    &dir.join(format!("part-{n}.parquet")).to_string_lossy(),
                    DataFrameWriteOptions::new(),
                    None,
                )
                .await?;
        }
        let mut config = session_config().with_target_partitions(2);
        for (key, value) in settings {
            config.options_mut().set(key, value)?;
        }
        let ctx = SessionContext::new_with_config(config);
        ctx.register_parquet("t", &dir.to_string_lossy(), ParquetReadOptions::default())
            .await?;
        Ok(ctx)
    }

    async fn planned_partitions(ctx: &SessionContext, sql: &str) -> Result<(usize, usize)> {
        let logical = ctx
            .state()
            .optimize(&ctx.sql(sql).await?.into_unoptimized_plan())?;
        let (physical, state) = plan_sized(&logical, &ctx.state()).await?;
        Ok((
            state.config().target_partitions(),
            physical.output_partitioning().partition_count(),
        ))
    }

    #[tokio::test]
    async fn a_job_whose_scans_read_more_than_its_partitions_hold_is_planned_with_more()
    -> Result<()> {
        let dir = tempfile::tempdir()?;
        let one_file = {
            let ctx = session(dir.path(), 8, &[]).await?;
            let physical = ctx
                .sql("SELECT v FROM t")
                .await?
                .create_physical_plan()
                .await?;
            scan_bytes(&physical) / 8
        };
        assert!(one_file > 0);
        let per_partition = (one_file + one_file / 2).to_string();
        // Eight files of which a partition may read one and a half: six
        // partitions, the multiple of two that holds them.
        let ctx = session(
            dir.path(),
            0,
            &[("volley.partition_bytes", per_partition.as_str())],
        )
        .await?;
        let sql = "SELECT v % 7 AS k, count(*) FROM t GROUP BY v % 7";
        assert_eq!(planned_partitions(&ctx, sql).await?, (6, 6));
        // Sizing off, or a partition count the job set itself: kept.
        let off = session(dir.path(), 0, &[("volley.partition_bytes", "0")]).await?;
        assert_eq!(planned_partitions(&off, sql).await?, (2, 2));
        let default = session(dir.path(), 0, &[]).await?;
        assert_eq!(
            planned_partitions(&default, sql).await?,
            (2, 2),
            "a few MB fit the default"
        );
        Ok(())
    }
}
