//! Runtime filters across stages: a hash join's build side, once its stage
//! has finished, filters the scan that feeds the join's probe side, even
//! when that scan runs in another stage (`SET volley.runtime_filters`, on
//! by default).
//!
//! At planning ([`plan_runtime_filters`]) each hash join whose build input
//! is read from a stage (B) and whose probe key can be traced, column for
//! column, down to a Parquet scan (in the join's stage, or in a stage
//! below it that nothing else reads, through projections, filters,
//! group-by keys and the unpadded side of other joins) gets a
//! [`RuntimeFilter`]: B's shuffle writer summarizes the build key as it
//! writes (bounds and a Bloom filter, `volley_dataflow::key_filter`), and
//! the scan's stage waits for B to finish. When that stage is resolved
//! (`Job::resolve_ready_stages`) the merged summary becomes a predicate the
//! scan prunes row groups and pages with, and a filter right above the
//! scan drops the rows without a partner ([`apply_runtime_filters`]).
//!
//! Only joins where a probe row without a build partner cannot reach the
//! output get one: inner, left (outer, semi, anti but not null-aware) and
//! right semi joins, on keys where null equals nothing. A build key of a non-integer
//! type, a key computed by an expression, or a stage cycle gets none.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::NullEquality;
use datafusion::common::ScalarValue;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{JoinSide, JoinType};
use datafusion::config::ConfigOptions;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_plan::aggregates::AggregateExec;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::filter_pushdown::PushedDown;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::joins::utils::build_join_schema;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, StatisticsArgs, StatisticsContext};
use volley_dataflow::{
    KeySummary, ShuffleReaderExec, ShuffleWriterExec, StageId, bloom_bits_log2, summarizable,
};

use crate::stage_planner::StagePlan;

/// A filter on one scan of a stage, from the build keys another stage
/// writes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RuntimeFilter {
    /// The stage whose writer summarizes the build key.
    pub(crate) source: StageId,
    /// The summarized column of that writer's input.
    pub(crate) source_column: usize,
    /// Which scan of the filtered stage: its place among the stage plan's
    /// `DataSourceExec`s, in pre-order.
    pub(crate) scan: usize,
    /// The scan's output column the key is.
    pub(crate) scan_column: usize,
    /// The key's type there.
    pub(crate) data_type: DataType,
    /// Rows of the table the build keys are drawn from (by the statistics
    /// of the scan the build key traces to), when known: the keys' share
    /// of it is the share of probe rows a foreign key join lets through.
    pub(crate) build_table_rows: Option<usize>,
}

/// Where a join's probe key comes from: a scan, in some stage.
struct ProbeScan {
    stage: usize,
    scan: Arc<dyn ExecutionPlan>,
    column: usize,
}

/// Plans the runtime filters of a job's stages: sets them on the stages
/// they filter and makes the build stages' writers summarize their keys.
pub(crate) fn plan_runtime_filters(stages: &mut [StagePlan]) -> Result<()> {
    let mut summarize: Vec<Vec<usize>> = vec![Vec::new(); stages.len()];
    for consumer in 0..stages.len() {
        let mut joins = Vec::new();
        stages[consumer].plan.apply(|node| {
            if node.is::<HashJoinExec>() {
                joins.push(Arc::clone(node));
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        for node in joins {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                continue;
            };
            // A null-aware anti join (NOT IN) answers differently when the
            // probe side holds a null key: its probe rows all count.
            if !filters_probe_side(join.join_type())
                || join.null_equality() != NullEquality::NullEqualsNothing
                || join.null_aware
            {
                continue;
            }
            let Some((build, probe)) = join.on().iter().find_map(|(l, r)| {
                let (l, r) = (l.downcast_ref::<Column>()?, r.downcast_ref::<Column>()?);
                let data_type = join.left().schema().field(l.index()).data_type().clone();
                summarizable(&data_type).then_some((l.index(), r.index()))
            }) else {
                continue;
            };
            let Some((source, source_column)) = build_reader(join.left(), build) else {
                continue;
            };
            let Some(source_index) = index_of(stages, source) else {
                continue;
            };
            // Keys of a whole table (a foreign key's target) would let
            // every probe row through: only a selective build side filters.
            if !selective(stages, source_index) {
                continue;
            }
            let Some(found) = probe_scan(stages, consumer, join.right(), probe) else {
                continue;
            };
            // The filtered stage waits for the build stage: never one the
            // build stage itself waits for.
            if found.stage == source_index || depends_on(stages, source_index, found.stage) {
                continue;
            }
            let data_type = found.scan.schema().field(found.column).data_type().clone();
            if !summarizable(&data_type) {
                continue;
            }
            let Some(scan) = scan_ordinal(&stages[found.stage].plan, &found.scan) else {
                continue;
            };
            let filter = RuntimeFilter {
                source,
                source_column,
                scan,
                scan_column: found.column,
                data_type,
                build_table_rows: build_table_rows(stages, source_index, source_column),
            };
            if !stages[found.stage].filters.contains(&filter) {
                stages[found.stage].filters.push(filter);
            }
            if !summarize[source_index].contains(&source_column) {
                summarize[source_index].push(source_column);
            }
        }
    }
    for (stage, columns) in stages.iter_mut().zip(summarize) {
        if columns.is_empty() {
            continue;
        }
        let Some(writer) = stage.plan.downcast_ref::<ShuffleWriterExec>() else {
            continue;
        };
        // Each task folds its filter to fit the rows it wrote (times the
        // stage's tasks), within the largest size.
        stage.plan =
            Arc::new(writer.with_key_summaries(columns, bloom_bits_log2(Some(usize::MAX))));
    }
    Ok(())
}

/// Joins whose output no probe row without a build partner reaches.
fn filters_probe_side(join_type: &JoinType) -> bool {
    matches!(
        join_type,
        JoinType::Inner
            | JoinType::Left
            | JoinType::LeftSemi
            | JoinType::LeftAnti
            | JoinType::RightSemi
    )
}

fn index_of(stages: &[StagePlan], id: StageId) -> Option<usize> {
    stages.iter().position(|s| s.id == id)
}

/// Whether stage `stage`, or a stage it reads, drops rows: a filter, a
/// join, or a scan with a predicate.
fn selective(stages: &[StagePlan], stage: usize) -> bool {
    let mut found = false;
    let _ = stages[stage].plan.apply(|node| {
        let scan_predicate = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>())
            .is_some_and(|config| config.file_source().filter().is_some());
        found = node.is::<FilterExec>() || node.is::<HashJoinExec>() || scan_predicate;
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
        || stages[stage]
            .inputs
            .iter()
            .filter_map(|input| index_of(stages, *input))
            .any(|input| selective(stages, input))
}

/// Whether stage `from` reads, directly or not, stage `to`.
fn depends_on(stages: &[StagePlan], from: usize, to: usize) -> bool {
    let mut pending = vec![from];
    let mut seen = vec![false; stages.len()];
    while let Some(stage) = pending.pop() {
        for input in &stages[stage].inputs {
            let Some(i) = index_of(stages, *input) else {
                continue;
            };
            if i == to {
                return true;
            }
            if !seen[i] {
                seen[i] = true;
                pending.push(i);
            }
        }
    }
    false
}

/// The stage and its writer's input column that column `column` of a
/// build side reads, when the build side is a reader of another stage.
fn build_reader(plan: &Arc<dyn ExecutionPlan>, column: usize) -> Option<(StageId, usize)> {
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        return Some((reader.input_stage(), column));
    }
    if plan.is::<CoalescePartitionsExec>() {
        return build_reader(plan.children().first()?, column);
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        return build_reader(projection.input(), projected_column(projection, column)?);
    }
    None
}

/// The input column that output column `column` of `projection` passes
/// on unchanged, if it does.
fn projected_column(projection: &ProjectionExec, column: usize) -> Option<usize> {
    let expr = &projection.expr().get(column)?.expr;
    expr.downcast_ref::<Column>().map(Column::index)
}

/// Traces column `column` of `plan` (in stage `stage`) down to the scan
/// column it is, through operators that pass it unchanged.
fn probe_scan(
    stages: &[StagePlan],
    stage: usize,
    plan: &Arc<dyn ExecutionPlan>,
    column: usize,
) -> Option<ProbeScan> {
    if plan.is::<DataSourceExec>() {
        return Some(ProbeScan {
            stage,
            scan: Arc::clone(plan),
            column,
        });
    }
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        // Filtering the stage below filters what every reader of it gets:
        // only a stage this reader alone reads.
        if readers_of(stages, reader.input_stage()) != 1 {
            return None;
        }
        let input = index_of(stages, reader.input_stage())?;
        let writer = stages[input].plan.downcast_ref::<ShuffleWriterExec>()?;
        return probe_scan(stages, input, writer.input(), column);
    }
    if plan.is::<CoalescePartitionsExec>() {
        return probe_scan(stages, stage, plan.children().first()?, column);
    }
    if let Some(join) = plan.downcast_ref::<HashJoinExec>() {
        let (side, source) = join_input_column(join, column)?;
        let input = match side {
            JoinSide::Left => join.left(),
            JoinSide::Right => join.right(),
            JoinSide::None => return None,
        };
        return probe_scan(stages, stage, input, source);
    }
    if let Some(projection) = plan.downcast_ref::<ProjectionExec>() {
        let source = projected_column(projection, column)?;
        return probe_scan(stages, stage, projection.input(), source);
    }
    if let Some(filter) = plan.downcast_ref::<FilterExec>() {
        let source = match filter.projection() {
            Some(projection) => *projection.get(column)?,
            None => column,
        };
        return probe_scan(stages, stage, filter.input(), source);
    }
    if let Some(aggregate) = plan.downcast_ref::<AggregateExec>() {
        let groups = aggregate.group_expr();
        if groups.has_grouping_set() {
            return None;
        }
        let source = groups.expr().get(column)?.0.downcast_ref::<Column>()?;
        return probe_scan(stages, stage, aggregate.input(), source.index());
    }
    None
}

/// The input side and column that output column `column` of `join` is,
/// when every output row carries that input row's value unchanged: a side
/// the join never pads with nulls (both sides of an inner join, the left
/// of a left join or left semi, anti or mark join, the right likewise).
/// A probe row of the join above that the filter drops would reach no
/// output through this join either, so filtering the side's rows keeps
/// the answer.
fn join_input_column(join: &HashJoinExec, column: usize) -> Option<(JoinSide, usize)> {
    let column = match &join.projection {
        Some(projection) => *projection.get(column)?,
        None => column,
    };
    let (_, indices) = build_join_schema(
        &join.left().schema(),
        &join.right().schema(),
        join.join_type(),
    );
    let from = indices.get(column)?;
    let kept = match from.side {
        JoinSide::Left => matches!(
            join.join_type(),
            JoinType::Inner
                | JoinType::Left
                | JoinType::LeftSemi
                | JoinType::LeftAnti
                | JoinType::LeftMark
        ),
        JoinSide::Right => matches!(
            join.join_type(),
            JoinType::Inner
                | JoinType::Right
                | JoinType::RightSemi
                | JoinType::RightAnti
                | JoinType::RightMark
        ),
        JoinSide::None => false,
    };
    kept.then_some((from.side, from.index))
}

/// How many readers, in all the stages, read stage `id`.
fn readers_of(stages: &[StagePlan], id: StageId) -> usize {
    let mut readers = 0;
    for stage in stages {
        let _ = stage.plan.apply(|node| {
            if node
                .downcast_ref::<ShuffleReaderExec>()
                .is_some_and(|reader| reader.input_stage() == id)
            {
                readers += 1;
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    readers
}

/// Rows of the scan that column `column` of stage `stage`'s writer input
/// traces to, by its statistics.
fn build_table_rows(stages: &[StagePlan], stage: usize, column: usize) -> Option<usize> {
    let writer = stages[stage].plan.downcast_ref::<ShuffleWriterExec>()?;
    let found = probe_scan(stages, stage, writer.input(), column)?;
    let statistics = StatisticsContext::new()
        .compute(found.scan.as_ref(), &StatisticsArgs::new())
        .ok()?;
    statistics.num_rows.get_value().copied()
}

/// The place of `scan` among `plan`'s scans, in pre-order.
fn scan_ordinal(plan: &Arc<dyn ExecutionPlan>, scan: &Arc<dyn ExecutionPlan>) -> Option<usize> {
    let mut ordinal = 0;
    let mut found = None;
    let _ = plan.apply(|node| {
        if node.is::<DataSourceExec>() {
            if Arc::ptr_eq(node, scan) {
                found = Some(ordinal);
                return Ok(TreeNodeRecursion::Stop);
            }
            ordinal += 1;
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// A Bloom filter with more of its bits set is not worth evaluating.
const MAX_FILL: f64 = 0.5;

/// Nor is a filter expected to let more than this share of rows through
/// ([`expected_pass`]): evaluating it costs more than the rows it drops
/// save. Measured on TPC-H q22 (customers with a balance above average,
/// about a third of them, filtering orders): 17 ns a row more for a third
/// fewer rows, a loss. At SF 1, q21's orders of status F (half of them,
/// but an eighth of the order keys' span) filtering lineitem cost more
/// than they saved, and made the scan wait for them.
const MAX_PASS: f64 = 0.2;

/// The share of probe rows `summary` is expected to let through: its keys
/// over the values the probe column spans, or over the rows of the table
/// the keys were drawn from (a foreign key's target, whose keys are
/// sparse in their span), whichever is larger.
fn expected_pass(
    scan: &Arc<dyn ExecutionPlan>,
    filter: &RuntimeFilter,
    summary: &KeySummary,
) -> Option<f64> {
    let keys = summary.distinct_estimate();
    let by_domain = probe_domain(scan, filter.scan_column).map(|domain| keys / domain);
    let by_table = filter
        .build_table_rows
        .map(|rows| keys / (rows as f64).max(1.0));
    match (by_domain, by_table) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// How many values the scan's column `column` spans by its statistics
/// (`None` when they do not say).
fn probe_domain(scan: &Arc<dyn ExecutionPlan>, column: usize) -> Option<f64> {
    let statistics = StatisticsContext::new()
        .compute(scan.as_ref(), &StatisticsArgs::new())
        .ok()?;
    let column = statistics.column_statistics.get(column)?;
    let bound = |v: &ScalarValue| match v.cast_to(&DataType::Int64).ok()? {
        ScalarValue::Int64(Some(v)) => Some(v),
        _ => None,
    };
    let low = bound(column.min_value.get_value()?)?;
    let high = bound(column.max_value.get_value()?)?;
    Some((high as f64 - low as f64 + 1.0).max(1.0))
}

/// `plan` (a stage's, being resolved) with each filter whose build
/// summary is known applied to its scan: the scan prunes by it (Parquet
/// statistics) and a `FilterExec` right above the scan drops the rows.
/// Returns the plan and how many filters were applied.
pub(crate) fn apply_runtime_filters(
    plan: Arc<dyn ExecutionPlan>,
    filters: &[(RuntimeFilter, KeySummary)],
) -> Result<(Arc<dyn ExecutionPlan>, usize)> {
    let mut applied = 0;
    let mut ordinal = 0;
    // The scan gets the predicate to prune row groups and pages by the
    // bounds; rows are filtered by a `FilterExec` above it. Filtering in
    // the Parquet decoder (pushdown_filters) was measured three times
    // slower on TPC-H q4: the surviving rows are scattered, and decoding
    // many short runs costs more than decoding everything and filtering.
    let mut options = ConfigOptions::default();
    options.execution.parquet.pushdown_filters = false;
    let plan = plan
        .transform_down(|node| {
            if !node.is::<DataSourceExec>() {
                return Ok(Transformed::no(node));
            }
            let this = ordinal;
            ordinal += 1;
            // The most selective first: each filter above it tests only
            // the rows the ones below let through.
            let mut chosen: Vec<(f64, Arc<dyn PhysicalExpr>)> = Vec::new();
            for (filter, summary) in filters.iter().filter(|(f, _)| f.scan == this) {
                if summary.fill() > MAX_FILL {
                    continue;
                }
                let pass = expected_pass(&node, filter, summary);
                if pass.is_some_and(|pass| pass > MAX_PASS) {
                    continue;
                }
                let field = node.schema().field(filter.scan_column).clone();
                let key = Arc::new(Column::new(field.name(), filter.scan_column));
                chosen.push((
                    pass.unwrap_or(MAX_PASS),
                    summary.predicate(key, &filter.data_type)?,
                ));
            }
            chosen.sort_by(|a, b| a.0.total_cmp(&b.0));
            let predicates: Vec<Arc<dyn PhysicalExpr>> =
                chosen.into_iter().map(|(_, predicate)| predicate).collect();
            if predicates.is_empty() {
                return Ok(Transformed::no(node));
            }
            applied += predicates.len();
            let Some(scan) = node.downcast_ref::<DataSourceExec>() else {
                return Ok(Transformed::no(node));
            };
            let pushed = scan
                .data_source()
                .try_pushdown_filters(predicates.clone(), &options)?;
            let scanned: Arc<dyn ExecutionPlan> = match pushed.updated_node {
                Some(source) => Arc::new(DataSourceExec::new(source)),
                None => Arc::clone(&node),
            };
            let left: Vec<Arc<dyn PhysicalExpr>> = predicates
                .into_iter()
                .zip(pushed.filters)
                .filter(|(_, p)| matches!(p, PushedDown::No))
                .map(|(predicate, _)| predicate)
                .collect();
            let mut filtered = scanned;
            for predicate in left {
                filtered = Arc::new(FilterExec::try_new(predicate, filtered)?);
            }
            Ok(Transformed::new(filtered, true, TreeNodeRecursion::Jump))
        })?
        .data;
    Ok((plan, applied))
}

/// A filter as `EXPLAIN` shows it: which column of which scan, by which
/// stage's keys.
pub(crate) fn describe_filter(filter: &RuntimeFilter, stages: &[StagePlan]) -> String {
    let key = index_of(stages, filter.source)
        .and_then(|i| stages[i].plan.downcast_ref::<ShuffleWriterExec>())
        .map(|w| {
            w.input()
                .schema()
                .field(filter.source_column)
                .name()
                .clone()
        })
        .unwrap_or_else(|| format!("column {}", filter.source_column));
    format!(
        "scan {} keeps the rows whose column {} is among stage {}'s {} keys (the scan waits for that stage)",
        filter.scan, filter.scan_column, filter.source, key
    )
}
