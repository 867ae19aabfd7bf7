//! Rewrites that make a single-node physical plan correct when each of its
//! partitions runs as a separate task, possibly in another process.
//!
//! DataFusion's `CollectLeft` hash join and its nested-loop join share state
//! across the output partitions of one plan instance: every probe partition
//! marks the build rows it matched in one bitmap, and the last partition to
//! finish emits the build rows a left, full, semi, anti or mark join owes at
//! the end. Run as separate tasks, no partition is ever "last" and those rows
//! are lost. So such joins are rewritten:
//! - a `CollectLeft` hash join becomes a `Partitioned` one, both sides
//!   hash-repartitioned on the join keys (each build row then lives in exactly
//!   one partition, which emits it);
//! - a null-aware anti join (`NOT IN`), which must see the whole probe side,
//!   and a nested-loop join get their probe side coalesced into one partition.
//!
//! Invariant: after this pass no operator in the plan relies on seeing all
//! partitions of its own plan instance, except through an exchange.

use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::error::Result;
use datafusion::physical_expr::Partitioning;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};

/// Does the join emit build-side rows after all probing is done?
fn emits_build_rows_at_end(join_type: JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Left
            | JoinType::LeftAnti
            | JoinType::LeftSemi
            | JoinType::LeftMark
            | JoinType::Full
    )
}

/// Applies the rewrites above to the whole plan.
pub(crate) fn make_partitions_independent(
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Arc<dyn ExecutionPlan>> {
    Ok(plan.transform_up(rewrite_node)?.data)
}

fn rewrite_node(node: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if let Some(join) = node.downcast_ref::<HashJoinExec>() {
        let probe_partitions = join.right().output_partitioning().partition_count();
        if *join.partition_mode() != PartitionMode::CollectLeft
            || !emits_build_rows_at_end(*join.join_type())
            || probe_partitions <= 1
        {
            return Ok(Transformed::no(node));
        }
        let children = if join.null_aware {
            vec![
                Arc::clone(join.left()),
                Arc::new(CoalescePartitionsExec::new(Arc::clone(join.right()))) as _,
            ]
        } else {
            let build = match join.left().downcast_ref::<CoalescePartitionsExec>() {
                Some(coalesce) => Arc::clone(coalesce.input()),
                None => Arc::clone(join.left()),
            };
            let (left_keys, right_keys) = join
                .on()
                .iter()
                .map(|(l, r)| (Arc::clone(l), Arc::clone(r)))
                .unzip();
            vec![
                Arc::new(RepartitionExec::try_new(
                    build,
                    Partitioning::Hash(left_keys, probe_partitions),
                )?) as _,
                Arc::new(RepartitionExec::try_new(
                    Arc::clone(join.right()),
                    Partitioning::Hash(right_keys, probe_partitions),
                )?) as _,
            ]
        };
        let mode = if join.null_aware {
            PartitionMode::CollectLeft
        } else {
            PartitionMode::Partitioned
        };
        let rewritten = join
            .builder()
            .with_partition_mode(mode)
            .with_new_children(children)?
            .recompute_properties()
            .reset_state()
            .build_exec()?;
        return Ok(Transformed::yes(rewritten));
    }
    if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>()
        && emits_build_rows_at_end(*join.join_type())
        && join.right().output_partitioning().partition_count() > 1
    {
        let children = vec![
            Arc::clone(join.left()),
            Arc::new(CoalescePartitionsExec::new(Arc::clone(join.right()))) as _,
        ];
        return Ok(Transformed::yes(replace_children_if_necessary(
            node, children,
        )?));
    }
    Ok(Transformed::no(node))
}
