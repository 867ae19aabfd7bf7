//! Cuts a DataFusion physical plan into stages.
//!
//! Algorithm: walk the plan bottom-up; at every exchange, the subtree below
//! becomes a stage rooted at a [`ShuffleWriterExec`] and is replaced by an
//! unresolved [`ShuffleReaderExec`]:
//! - `RepartitionExec` (hash, round robin, range): the child stage writes
//!   the repartition's partitioning; the reader has one partition per output
//!   partition and reads it from every map task;
//! - `CoalescePartitionsExec` / `SortPreservingMergeExec` over more than one
//!   partition: the child stage writes its partitions unsplit; the reader
//!   passes them through and the merge runs in the consuming stage. This is
//!   also how build sides of `CollectLeft` joins are broadcast: every probe
//!   task reads every build partition;
//! - the build side of a partitioned hash join that is the result of a
//!   `HAVING` (a filter over a grouping), when the join drops probe rows
//!   without a partner and `volley.runtime_filters` is on: it becomes a
//!   stage of its own whose partitions pass through unsplit, so that its
//!   few keys can filter the probe side's scans in other stages before
//!   they run (`runtime_filters`; TPC-H q18 at SF 10 and above). It is
//!   the one cut not at an exchange.
//!
//! The remaining root becomes the final stage, whose partitions the client
//! fetches (a root `CoalescePartitionsExec` without a limit is dropped: the
//! client reads the partitions itself).
//!
//! Invariants: stage ids are dense and a stage's inputs have smaller ids, so
//! stages in id order are a topological order; no operator that runs all of
//! its input partitions from one output partition is left inside a stage.

use std::sync::Arc;

use datafusion::common::{JoinType, NullEquality};
use datafusion::error::Result;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::recursive_query::RecursiveQueryExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use volley_dataflow::{
    ExchangeKind, FileOutputExec, JobId, OutputFormat, ShuffleReaderExec, ShuffleWriterExec,
    StageId,
};

/// One stage as planned: its plan (readers unresolved) and its shape.
#[derive(Debug)]
pub(crate) struct StagePlan {
    pub(crate) id: StageId,
    /// A [`ShuffleWriterExec`] over the stage's operators.
    pub(crate) plan: Arc<dyn ExecutionPlan>,
    /// Tasks: one per input partition of the writer.
    pub(crate) partitions: usize,
    /// Output partitions of each map output.
    pub(crate) output_partitions: usize,
    /// Stages whose output this stage reads.
    pub(crate) inputs: Vec<StageId>,
    /// Filters on this stage's scans from other stages' join build keys
    /// (`runtime_filters`): the stage waits for those stages to finish.
    pub(crate) filters: Vec<crate::runtime_filters::RuntimeFilter>,
    /// Whether it may start while the stages it reads still run
    /// (`volley.pipelined_exchange` of the session that planned it).
    pub(crate) pipelined: bool,
    /// Whether its outputs are dropped once every reader has finished
    /// (`volley.release_outputs`), rather than when the job ends.
    pub(crate) releases_outputs: bool,
}

/// Cuts `plan` into stages; the last one is the final stage. With `output`,
/// the final stage writes its partitions as files in that directory and
/// format (a [`FileOutputExec`] root) instead of keeping them for a client.
/// Stage ids start at `first_stage`: a script's statements number their
/// stages on from the last one's, so no two stages of a job share an id.
pub(crate) fn cut_into_stages(
    job_id: &JobId,
    plan: Arc<dyn ExecutionPlan>,
    output: Option<(String, OutputFormat)>,
    first_stage: u32,
    runtime_filters: bool,
) -> Result<Vec<StagePlan>> {
    let mut cutter = StageCutter {
        job_id: job_id.clone(),
        stages: Vec::new(),
        first: first_stage,
        runtime_filters,
    };
    let root = match plan.downcast_ref::<CoalescePartitionsExec>() {
        Some(coalesce) if coalesce.fetch().is_none() => Arc::clone(coalesce.input()),
        _ => plan,
    };
    let root = cutter.cut(root)?;
    match output {
        None => {
            cutter.add_stage(root, None)?;
        }
        Some((dir, format)) => {
            let id = cutter.next_id();
            let mut inputs = Vec::new();
            collect_input_stages(&root, &mut inputs);
            let partitions = root.output_partitioning().partition_count();
            cutter.stages.push(StagePlan {
                id,
                plan: Arc::new(FileOutputExec::try_new(root, dir, format)?),
                partitions,
                output_partitions: 1,
                inputs,
                filters: Vec::new(),
                pipelined: true,
                releases_outputs: true,
            });
        }
    }
    Ok(cutter.stages)
}

struct StageCutter {
    job_id: JobId,
    stages: Vec<StagePlan>,
    first: u32,
    /// Cut `HAVING` build sides of partitioned joins into stages of their
    /// own, for runtime filters to use.
    runtime_filters: bool,
}

impl StageCutter {
    fn next_id(&self) -> StageId {
        StageId(self.first + self.stages.len() as u32)
    }

    fn cut(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        // A recursive query runs whole in one task: its terms share the
        // work table in memory, and the recursive term runs once per
        // iteration, so nothing inside it may become a stage.
        if plan.is::<RecursiveQueryExec>() {
            return Ok(plan);
        }
        let children = plan
            .children()
            .into_iter()
            .map(|child| self.cut(Arc::clone(child)))
            .collect::<Result<Vec<_>>>()?;

        if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
            // An order-preserving repartition promises each partition
            // sorted: its reader merges the sorted pieces of the map tasks.
            let [child] = <[_; 1]>::try_from(children).map_err(|_| {
                volley_dataflow::volley_internal("RepartitionExec without exactly one child")
            })?;
            let partitioning = repartition.partitioning().clone();
            let stage = self.add_stage(child, Some(partitioning))?;
            return Ok(Arc::new(ShuffleReaderExec::new_unresolved(
                stage,
                plan.properties(),
                ExchangeKind::Repartition,
            )));
        }

        if (plan.is::<CoalescePartitionsExec>() || plan.is::<SortPreservingMergeExec>())
            && let [child] = children.as_slice()
            // A reader can feed the merge directly: no stage needed.
            && child.output_partitioning().partition_count() > 1
            && !child.is::<ShuffleReaderExec>()
        {
            let stage = self.add_stage(Arc::clone(child), None)?;
            let reader = ShuffleReaderExec::new_unresolved(
                stage,
                child.properties(),
                ExchangeKind::Passthrough,
            );
            return replace_children_if_necessary(plan, vec![Arc::new(reader)]);
        }

        if self.runtime_filters
            && let Some(join) = plan.downcast_ref::<HashJoinExec>()
            && *join.partition_mode() == PartitionMode::Partitioned
            && matches!(
                join.join_type(),
                JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi
            )
            && join.null_equality() == NullEquality::NullEqualsNothing
            && let [build, probe] = children.as_slice()
            && is_having_result(build)
        {
            let stage = self.add_stage(Arc::clone(build), None)?;
            let reader = ShuffleReaderExec::new_unresolved(
                stage,
                build.properties(),
                ExchangeKind::Passthrough,
            );
            return replace_children_if_necessary(plan, vec![Arc::new(reader), Arc::clone(probe)]);
        }

        if children.is_empty() {
            Ok(plan)
        } else {
            replace_children_if_necessary(plan, children)
        }
    }

    fn add_stage(
        &mut self,
        input: Arc<dyn ExecutionPlan>,
        partitioning: Option<datafusion::physical_expr::Partitioning>,
    ) -> Result<StageId> {
        let id = self.next_id();
        let mut inputs = Vec::new();
        collect_input_stages(&input, &mut inputs);
        let partitions = input.output_partitioning().partition_count();
        let writer = ShuffleWriterExec::try_new(self.job_id.clone(), id, input, partitioning)?;
        let output_partitions = writer.output_partition_count();
        self.stages.push(StagePlan {
            id,
            plan: Arc::new(writer),
            partitions,
            output_partitions,
            inputs,
            filters: Vec::new(),
            pipelined: true,
            releases_outputs: true,
        });
        Ok(id)
    }
}

/// Whether `plan` is a filter over a grouping (a `HAVING`), under
/// projections: few rows, computed from a whole table.
fn is_having_result(plan: &Arc<dyn ExecutionPlan>) -> bool {
    let below_projections = |mut plan: &Arc<dyn ExecutionPlan>| {
        while let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
            plan = projection.input();
        }
        Arc::clone(plan)
    };
    below_projections(plan)
        .downcast_ref::<FilterExec>()
        .is_some_and(|filter| below_projections(filter.input()).is::<AggregateExec>())
}

fn collect_input_stages(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<StageId>) {
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        if !out.contains(&reader.input_stage()) {
            out.push(reader.input_stage());
        }
        return;
    }
    for child in plan.children() {
        collect_input_stages(child, out);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::common::tree_node::TreeNode;
    use datafusion::error::Result;
    use datafusion::physical_plan::displayable;

    use super::*;
    use crate::test_support::stages;

    fn reader_kinds(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<(StageId, ExchangeKind, usize)>) {
        if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
            out.push((
                reader.input_stage(),
                reader.kind(),
                reader.partition_count(),
            ));
        }
        for child in plan.children() {
            reader_kinds(child, out);
        }
    }

    #[tokio::test]
    async fn a_grouped_aggregation_is_cut_at_its_hash_repartition() -> Result<()> {
        // SELECT k % 3, count(*) FROM t GROUP BY k % 3
        let stages = stages("SELECT k % 3 AS g, count(*) FROM t GROUP BY k % 3").await?;
        assert_eq!(stages.len(), 2, "{stages:#?}");
        let (map, last) = (&stages[0], &stages[1]);
        assert_eq!((map.partitions, map.output_partitions), (4, 4));
        assert!(map.inputs.is_empty());
        let writer = map
            .plan
            .downcast_ref::<ShuffleWriterExec>()
            .expect("writer root");
        assert!(matches!(
            writer.partitioning(),
            Some(datafusion::physical_expr::Partitioning::Hash(_, 4))
        ));
        assert_eq!(last.inputs, vec![StageId(0)]);
        let mut readers = Vec::new();
        reader_kinds(&last.plan, &mut readers);
        assert_eq!(readers, vec![(StageId(0), ExchangeKind::Repartition, 4)]);
        Ok(())
    }

    #[tokio::test]
    async fn a_global_sort_merges_sorted_partitions_in_a_one_task_final_stage() -> Result<()> {
        // SELECT k FROM t ORDER BY k DESC
        let stages = stages("SELECT k FROM t ORDER BY k DESC").await?;
        assert_eq!(stages.len(), 2, "{stages:#?}");
        assert_eq!(stages[0].partitions, 4);
        assert_eq!(
            stages[0].output_partitions, 1,
            "sorted partitions pass through unsplit"
        );
        let last = &stages[1];
        assert_eq!(last.partitions, 1);
        let text = displayable(last.plan.as_ref()).indent(false).to_string();
        assert!(text.contains("SortPreservingMergeExec"), "{text}");
        let mut readers = Vec::new();
        reader_kinds(&last.plan, &mut readers);
        assert_eq!(readers, vec![(StageId(0), ExchangeKind::Passthrough, 4)]);
        Ok(())
    }

    #[tokio::test]
    async fn no_stage_keeps_an_operator_that_reads_all_partitions_of_its_input() -> Result<()> {
        // A join, an aggregation and a sort: every exchange must be cut.
        let stages = stages(
            "SELECT a.v, count(*) FROM t a JOIN t b ON a.k = b.k + 1 GROUP BY a.v ORDER BY 2 DESC",
        )
        .await?;
        fn check(plan: &Arc<dyn ExecutionPlan>) {
            assert!(
                !plan.is::<RepartitionExec>(),
                "a repartition was left in a stage"
            );
            if plan.is::<CoalescePartitionsExec>() || plan.is::<SortPreservingMergeExec>() {
                let child = plan.children()[0];
                assert!(
                    child.output_partitioning().partition_count() == 1
                        || child.is::<ShuffleReaderExec>(),
                    "a merge runs its input in the same task"
                );
            }
            for child in plan.children() {
                check(child);
            }
        }
        for stage in &stages {
            check(&stage.plan);
            assert!(
                stage.inputs.iter().all(|i| *i < stage.id),
                "inputs come first"
            );
        }
        assert!(stages.len() >= 4, "{}", stages.len());
        Ok(())
    }

    #[tokio::test]
    async fn a_left_join_with_a_small_build_side_is_repartitioned_not_collected() -> Result<()> {
        // SELECT small.k, count(t.k) FROM small LEFT JOIN t ON small.k = t.k GROUP BY small.k
        // DataFusion would collect `small` into every task and lose its
        // unmatched rows; both sides must be hash-partitioned instead.
        let sql = "SELECT small.k, t.v FROM small LEFT JOIN t ON small.k = t.k";
        let raw = crate::test_support::datafusion_context()?
            .sql(sql)
            .await?
            .create_physical_plan()
            .await?;
        let raw_text = displayable(raw.as_ref()).indent(false).to_string();
        assert!(
            raw_text.contains("mode=CollectLeft"),
            "precondition: {raw_text}"
        );
        let plan = crate::test_support::physical(sql).await?;
        let text = displayable(plan.as_ref()).indent(false).to_string();
        assert!(!text.contains("mode=CollectLeft"), "{text}");
        // And DataFusion's own plan is refused, should it ever get through.
        let err = crate::partition_safety::check_independent_partitions(&raw)
            .expect_err("a collected left join over several probe partitions");
        assert!(err.to_string().contains("unmatched build rows"), "{err}");
        Ok(())
    }

    /// Each stage of `sql`, checked as the scheduler checks a job's
    /// stages, encoded and decoded as an executor would: the decoded plan
    /// must read the same as the one sent.
    async fn stages_over_the_wire(sql: &str) -> Result<Vec<Arc<dyn ExecutionPlan>>> {
        stages_decoded(sql, true).await
    }

    /// [`stages_over_the_wire`], comparing the plan text only if `strict`
    /// (a recursive query's terms come back with a no-op cast to the
    /// query's schema).
    async fn stages_decoded(sql: &str, strict: bool) -> Result<Vec<Arc<dyn ExecutionPlan>>> {
        let ctx = crate::test_support::context()?;
        let stages = stages(sql).await?;
        crate::planning::check_stages(&stages, ctx.state().config())?;
        let mut decoded = Vec::new();
        for stage in &stages {
            let bytes = volley_dataflow::encode_plan(Arc::clone(&stage.plan))?;
            let plan = volley_dataflow::decode_plan(&bytes, &ctx.task_ctx())?;
            if !strict {
                decoded.push(plan);
                continue;
            }
            assert_eq!(
                displayable(plan.as_ref()).indent(true).to_string(),
                displayable(stage.plan.as_ref()).indent(true).to_string(),
                "stage {} changed on the wire",
                stage.id
            );
            decoded.push(plan);
        }
        Ok(decoded)
    }

    #[tokio::test]
    async fn a_union_of_aggregates_grouped_again_keeps_its_hash_partitioning_across_the_cut()
    -> Result<()> {
        // The union interleaves its inputs because both are hash-partitioned
        // on k; once cut, its inputs are readers, which must promise the
        // same partitioning (before: "Assertion failed: can_interleave").
        let sql = "SELECT k, sum(c) FROM (SELECT k, count(*) AS c FROM t GROUP BY k \
                   UNION ALL SELECT k, count(*) AS c FROM t GROUP BY k) GROUP BY k";
        let plan = crate::test_support::physical(sql).await?;
        let text = displayable(plan.as_ref()).indent(false).to_string();
        assert!(text.contains("InterleaveExec"), "precondition: {text}");
        stages_over_the_wire(sql).await?;
        Ok(())
    }

    #[tokio::test]
    async fn a_window_over_a_constant_partition_key_survives_the_wire() -> Result<()> {
        // SELECT count(*) OVER (PARTITION BY k ORDER BY k) FROM t WHERE k = 1
        // The window needs k ordered, which holds because k is constant
        // after the filter; the reader above the cut must say so too
        // (before: "Expects PARTITION BY expression to be ordered").
        stages_over_the_wire(
            "SELECT count(*) OVER (PARTITION BY k ORDER BY k) FROM (SELECT * FROM t WHERE k = 1)",
        )
        .await?;
        Ok(())
    }

    #[tokio::test]
    async fn ignore_nulls_and_reversed_window_calls_survive_the_wire() -> Result<()> {
        // lag over k ASC shares the sort of the window over k DESC, so
        // DataFusion evaluates it reversed, as lead; datafusion-proto drops
        // both that and IGNORE NULLS, which changed answers.
        let sql = "SELECT lag(v, 2, 'def') IGNORE NULLS OVER (ORDER BY k) AS x, \
                   sum(k) OVER (ORDER BY k DESC ROWS BETWEEN UNBOUNDED PRECEDING AND \
                   UNBOUNDED FOLLOWING) AS s FROM t";
        let decoded = stages_over_the_wire(sql).await?;
        let mut calls = Vec::new();
        for plan in &decoded {
            let _ = Arc::clone(plan).transform_down(|node| {
                if let Some(window) =
                    node.downcast_ref::<datafusion::physical_plan::windows::BoundedWindowAggExec>()
                {
                    calls.extend(window.window_expr().iter().map(|e| format!("{e:?}")));
                }
                if let Some(window) =
                    node.downcast_ref::<datafusion::physical_plan::windows::WindowAggExec>()
                {
                    calls.extend(window.window_expr().iter().map(|e| format!("{e:?}")));
                }
                Ok(datafusion::common::tree_node::Transformed::no(node))
            });
        }
        let lag = calls
            .iter()
            .find(|c| c.contains("WindowUDFExpr"))
            .expect("a lag or lead call");
        assert!(lag.contains("ignore_nulls: true"), "{lag}");
        assert!(lag.contains("ReversedWindowUdf"), "{lag}");
        Ok(())
    }

    #[tokio::test]
    async fn a_window_aggregate_with_a_filter_is_refused_at_planning() -> Result<()> {
        // datafusion-proto 55 drops FILTER from window aggregates, which
        // then counted every row; until it can travel, the job is refused.
        let ctx = crate::test_support::context()?;
        let stages =
            stages("SELECT k, count(*) FILTER (WHERE k > 100) OVER () AS c FROM t").await?;
        let err =
            crate::planning::check_stages(&stages, ctx.state().config()).expect_err("refused");
        assert!(
            err.to_string().contains("window aggregate with FILTER"),
            "{err}"
        );
        Ok(())
    }

    #[tokio::test]
    async fn empty_grouping_sets_survive_the_wire() -> Result<()> {
        // datafusion-proto 55 flattens grouping sets to one flag per group
        // expression, so sets of none vanished and the query returned no
        // row instead of one per set.
        let decoded =
            stages_over_the_wire("SELECT count(*) FROM t GROUP BY GROUPING SETS ((), ())").await?;
        let mut sets = Vec::new();
        for plan in &decoded {
            let _ = Arc::clone(plan).transform_down(|node| {
                if let Some(aggregate) =
                    node.downcast_ref::<datafusion::physical_plan::aggregates::AggregateExec>()
                    && aggregate.group_expr().expr().is_empty()
                {
                    sets.push(aggregate.group_expr().groups().len());
                }
                Ok(datafusion::common::tree_node::Transformed::no(node))
            });
        }
        assert_eq!(sets, vec![2], "{sets:?}");
        Ok(())
    }

    #[tokio::test]
    async fn a_recursive_query_stays_whole_in_one_stage_and_survives_the_wire() -> Result<()> {
        // Its terms share the work table in memory and the recursive term
        // runs once per iteration: nothing inside may become a stage.
        let decoded = stages_decoded(
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 3) \
             SELECT count(*) FROM r JOIN t ON t.k = r.n",
            false,
        )
        .await?;
        let recursive: Vec<_> = decoded
            .iter()
            .filter(|plan| {
                displayable(plan.as_ref())
                    .indent(false)
                    .to_string()
                    .contains("RecursiveQueryExec")
            })
            .collect();
        assert_eq!(recursive.len(), 1, "one stage holds the recursive query");
        let text = displayable(recursive[0].as_ref()).indent(false).to_string();
        assert!(text.contains("WorkTableExec"), "{text}");
        Ok(())
    }
}
