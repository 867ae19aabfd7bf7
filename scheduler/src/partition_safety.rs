//! Physical optimizer rules that make a single-node plan correct when each
//! of its partitions runs as a separate task, possibly in another process.
//!
//! DataFusion's `CollectLeft` hash join and its nested-loop join share state
//! across the output partitions of one plan instance: every probe partition
//! marks the build rows it matched in one bitmap, and the last partition to
//! finish emits the build rows a left, full, semi, anti or mark join owes at
//! the end. Run as separate tasks, no partition is ever "last" and those rows
//! are lost. So, inside DataFusion's own optimizer (where its requirement
//! enforcement then adds the exchanges, sorts and merges every operator
//! above needs, instead of a rewrite after the fact breaking them):
//! - [`IndependentPartitions`], right after `JoinSelection`, turns such a
//!   `CollectLeft` hash join into a `Partitioned` one (both sides are then
//!   hash-partitioned on the join keys, and each build row lives in exactly
//!   one partition, which emits it); a null-aware anti join (`NOT IN`),
//!   which must see the whole probe side, and such a nested-loop join get a
//!   [`SinglePartitionExec`] above their probe side, a marker that requires
//!   one partition, so the requirement enforcement gathers it;
//! - [`RemoveSinglePartitionMarkers`], at the end, drops the markers (each
//!   sits above the one-partition merge it made, and changes nothing).
//!
//! Invariant: after these rules no operator in the plan relies on seeing all
//! partitions of its own plan instance, except through an exchange.

use std::fmt;
use std::sync::Arc;

use datafusion::common::JoinType;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{Partitioning, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::joins::{HashJoinExec, NestedLoopJoinExec, PartitionMode};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    PlanProperties,
};
use volley_dataflow::volley_internal;

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

/// The rule that makes joins safe to run one partition per task (see the
/// module doc). Runs right after DataFusion's `JoinSelection`.
#[derive(Debug, Default)]
pub(crate) struct IndependentPartitions;

impl PhysicalOptimizerRule for IndependentPartitions {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Even with one target partition, a union has one per input.
        Ok(plan.transform_up(rewrite_join)?.data)
    }

    fn name(&self) -> &str {
        "volley_independent_partitions"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

fn rewrite_join(node: Arc<dyn ExecutionPlan>) -> Result<Transformed<Arc<dyn ExecutionPlan>>> {
    if let Some(join) = node.downcast_ref::<HashJoinExec>() {
        if *join.partition_mode() != PartitionMode::CollectLeft
            || !emits_build_rows_at_end(*join.join_type())
        {
            return Ok(Transformed::no(node));
        }
        // A probe side of one partition is kept so, as DataFusion planned
        // it (one task probes, and its rows keep their order), like the
        // probe side of a null-aware anti join.
        if join.null_aware || join.right().output_partitioning().partition_count() <= 1 {
            if join.right().is::<SinglePartitionExec>() {
                return Ok(Transformed::no(node));
            }
            let children = vec![
                Arc::clone(join.left()),
                Arc::new(SinglePartitionExec::new(Arc::clone(join.right()))) as _,
            ];
            return Ok(Transformed::yes(replace_children_if_necessary(
                node, children,
            )?));
        }
        // The build side as it was before any gathering: the requirement
        // enforcement partitions it by the keys.
        let build = match join.left().downcast_ref::<CoalescePartitionsExec>() {
            Some(coalesce) => Arc::clone(coalesce.input()),
            None => Arc::clone(join.left()),
        };
        let rewritten = join
            .builder()
            .with_partition_mode(PartitionMode::Partitioned)
            .with_new_children(vec![build, Arc::clone(join.right())])?
            .recompute_properties()
            .reset_state()
            .build_exec()?;
        return Ok(Transformed::yes(rewritten));
    }
    if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>()
        && emits_build_rows_at_end(*join.join_type())
        && !join.right().is::<SinglePartitionExec>()
    {
        let children = vec![
            Arc::clone(join.left()),
            Arc::new(SinglePartitionExec::new(Arc::clone(join.right()))) as _,
        ];
        return Ok(Transformed::yes(replace_children_if_necessary(
            node, children,
        )?));
    }
    Ok(Transformed::no(node))
}

/// Refuses a plan in which an operator would rely on sibling partitions:
/// a join that emits build rows at the end (see the module doc) whose
/// probe side has several partitions. After [`IndependentPartitions`] none
/// should be left; this checks the plan that will run, so that a rule of
/// DataFusion's that multiplied a probe side afterwards, or a new join
/// kind, is refused instead of losing rows.
pub(crate) fn check_independent_partitions(plan: &Arc<dyn ExecutionPlan>) -> Result<()> {
    let whole = plan;
    plan.apply(|node| {
        let shared = if let Some(join) = node.downcast_ref::<HashJoinExec>() {
            *join.partition_mode() == PartitionMode::CollectLeft
                && emits_build_rows_at_end(*join.join_type())
                && join.right().output_partitioning().partition_count() > 1
        } else if let Some(join) = node.downcast_ref::<NestedLoopJoinExec>() {
            emits_build_rows_at_end(*join.join_type())
                && join.right().output_partitioning().partition_count() > 1
        } else {
            false
        };
        if shared {
            return Err(volley_internal(format!(
                "{} would emit its unmatched build rows from several tasks in\n{}",
                node.name(),
                datafusion::physical_plan::displayable(whole.as_ref()).indent(true)
            )));
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(())
}

/// The rule that drops the [`SinglePartitionExec`] markers once DataFusion
/// has met their requirement. Runs last, before `SanityCheckPlan`.
#[derive(Debug, Default)]
pub(crate) struct RemoveSinglePartitionMarkers;

impl PhysicalOptimizerRule for RemoveSinglePartitionMarkers {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(plan
            .transform_up(|node| match node.downcast_ref::<SinglePartitionExec>() {
                Some(marker) => {
                    let input = Arc::clone(&marker.input);
                    if input.output_partitioning().partition_count() != 1 {
                        return Err(volley_internal(
                            "a one-partition marker was left above several partitions",
                        ));
                    }
                    Ok(Transformed::yes(input))
                }
                None => Ok(Transformed::no(node)),
            })?
            .data)
    }

    fn name(&self) -> &str {
        "volley_remove_single_partition_markers"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A planning-time marker: "this input must be one partition". DataFusion's
/// requirement enforcement puts a merge below it; it never runs.
#[derive(Debug)]
pub(crate) struct SinglePartitionExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl SinglePartitionExec {
    fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let properties = Arc::new(PlanProperties::new(
            input.equivalence_properties().clone(),
            Partitioning::UnknownPartitioning(1),
            input.pipeline_behavior(),
            input.boundedness(),
        ));
        Self { input, properties }
    }
}

impl DisplayAs for SinglePartitionExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SinglePartitionExec")
    }
}

impl ExecutionPlan for SinglePartitionExec {
    fn name(&self) -> &str {
        "SinglePartitionExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
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
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(Self::new(input))),
            Err(_) => Err(volley_internal("SinglePartitionExec takes one child")),
        }
    }

    fn execute(
        &self,
        _partition: usize,
        _context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        Err(volley_internal(
            "a planning marker (SinglePartitionExec) reached execution",
        ))
    }
}

/// DataFusion's physical optimizer rules with Volley's inserted: after
/// `JoinSelection` and before `SanityCheckPlan`.
pub(crate) fn volley_physical_optimizer_rules() -> Vec<Arc<dyn PhysicalOptimizerRule + Send + Sync>>
{
    let mut rules = Vec::new();
    for rule in datafusion::physical_optimizer::optimizer::PhysicalOptimizer::new().rules {
        if rule.name() == "SanityCheckPlan" {
            rules.push(Arc::new(RemoveSinglePartitionMarkers) as _);
        }
        let after = rule.name() == "join_selection";
        rules.push(rule);
        if after {
            rules.push(Arc::new(IndependentPartitions) as _);
        }
    }
    rules
}
