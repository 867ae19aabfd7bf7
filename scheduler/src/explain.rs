//! `EXPLAIN` of the distributed plan: a query planned exactly as a submitted
//! job would be (same session, same rules, same cut into stages), described
//! stage by stage, inputs first, without running anything.
//!
//! Each stage's header names its tasks, the stages it reads and how (the
//! exchange), and where its output goes; its operators follow, indented as
//! DataFusion's own `EXPLAIN` shows them.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use datafusion::error::Result;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, Partitioning, displayable};
use volley_dataflow::{
    ExchangeKind, FileOutputExec, JobId, ShuffleReaderExec, ShuffleWriterExec, StageId,
    decode_logical_plan,
};
use volley_proto::v1;

use crate::partition_sizing::plan_sized;
use crate::planning::plan_stages;
use crate::planning_session::PlanningSessions;
use crate::runtime_filters::describe_filter;
use crate::stage_planner::StagePlan;

/// Plans `request` as [`crate::planning`] plans a job with
/// `target_partitions`, and describes its stages.
pub(crate) async fn explain_job(
    request: v1::ExplainJobRequest,
    target_partitions: usize,
    planning: &PlanningSessions,
) -> Result<v1::ExplainJobResponse> {
    let target_partitions = target_partitions.max(1);
    let ctx = planning.for_job(target_partitions, &request.settings)?;
    let logical = decode_logical_plan(&request.logical_plan, &ctx.task_ctx())?;
    let (physical, state) = plan_sized(&logical, &ctx.state()).await?;
    let job_id = JobId::from("explain");
    let (_, stages) = plan_stages(&job_id, physical, None, state.config(), 0)?;
    Ok(v1::ExplainJobResponse {
        text: describe_stages(&stages),
        stages: stages.len() as u32,
        target_partitions: state.config().target_partitions() as u32,
    })
}

/// How a stage's output reaches the stage that reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exchange {
    /// Hash-partitioned on keys: consumer task `j` reads partition `j` of
    /// every producer task.
    Hash,
    /// Round-robin or range repartitioned likewise.
    Repartition,
    /// Every consumer task reads every producer task's output (the build
    /// side of a join collected in each task).
    Broadcast,
    /// The only consumer task reads and merges every output.
    Gather,
    /// Consumer task `i` reads producer task `i`'s output as it is.
    PassThrough,
}

impl Exchange {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Exchange::Hash => "hash",
            Exchange::Repartition => "repartition",
            Exchange::Broadcast => "broadcast",
            Exchange::Gather => "gather",
            Exchange::PassThrough => "pass-through",
        }
    }
}

/// What [`exchanges`] needs of a stage: planned or running.
pub(crate) struct StageShape<'a> {
    pub(crate) id: StageId,
    pub(crate) plan: &'a Arc<dyn ExecutionPlan>,
    pub(crate) tasks: usize,
}

/// The readers in `plan`: (input stage, whether a merge above it reads all
/// of its partitions in one task, the reader's kind).
fn readers(
    plan: &Arc<dyn ExecutionPlan>,
    merged: bool,
    out: &mut Vec<(StageId, bool, ExchangeKind)>,
) {
    if let Some(reader) = plan.downcast_ref::<ShuffleReaderExec>() {
        out.push((reader.input_stage(), merged, reader.kind()));
        return;
    }
    let merges = plan.is::<CoalescePartitionsExec>() || plan.is::<SortPreservingMergeExec>();
    for child in plan.children() {
        readers(child, merged || merges, out);
    }
}

/// Every edge of the stage graph: (consumer, input, how it is read).
pub(crate) fn exchanges(stages: &[StageShape<'_>]) -> Vec<(StageId, StageId, Exchange)> {
    let writer_of = |id: StageId| {
        stages
            .iter()
            .find(|s| s.id == id)
            .and_then(|s| s.plan.downcast_ref::<ShuffleWriterExec>())
            .and_then(ShuffleWriterExec::partitioning)
    };
    let mut edges = Vec::new();
    for stage in stages {
        let mut found = Vec::new();
        readers(stage.plan, false, &mut found);
        for (input, merged, kind) in found {
            let exchange = match kind {
                ExchangeKind::Repartition => match writer_of(input) {
                    Some(Partitioning::Hash(..)) => Exchange::Hash,
                    _ => Exchange::Repartition,
                },
                ExchangeKind::Passthrough if merged && stage.tasks > 1 => Exchange::Broadcast,
                ExchangeKind::Passthrough if merged => Exchange::Gather,
                ExchangeKind::Passthrough => Exchange::PassThrough,
            };
            edges.push((stage.id, input, exchange));
        }
    }
    edges
}

/// Where a stage's output goes, from its root: its writer's partitioning,
/// or the files it writes.
pub(crate) fn output_of(plan: &Arc<dyn ExecutionPlan>) -> String {
    if let Some(output) = plan.downcast_ref::<FileOutputExec>() {
        return format!("files in {}", output.dir());
    }
    let Some(writer) = plan.downcast_ref::<ShuffleWriterExec>() else {
        return "kept for the client".into();
    };
    match writer.partitioning() {
        Some(Partitioning::Hash(keys, n)) => {
            let keys: Vec<String> = keys.iter().map(ToString::to_string).collect();
            format!("hash on [{}] into {n} partitions", keys.join(", "))
        }
        Some(Partitioning::RoundRobinBatch(n)) => format!("round robin into {n} partitions"),
        Some(other) => format!("{other}"),
        None => "unsplit".into(),
    }
}

/// The text of a distributed plan: one block per stage, in id order
/// (inputs first); the last stage is the final one.
pub(crate) fn describe_stages(stages: &[StagePlan]) -> String {
    let shapes: Vec<StageShape<'_>> = stages
        .iter()
        .map(|s| StageShape {
            id: s.id,
            plan: &s.plan,
            tasks: s.partitions,
        })
        .collect();
    let mut consumers: BTreeMap<StageId, Vec<(StageId, Exchange)>> = BTreeMap::new();
    let mut inputs: BTreeMap<StageId, Vec<(StageId, Exchange)>> = BTreeMap::new();
    for (consumer, input, exchange) in exchanges(&shapes) {
        consumers
            .entry(input)
            .or_default()
            .push((consumer, exchange));
        inputs.entry(consumer).or_default().push((input, exchange));
    }
    let last = stages.last().map(|s| s.id);
    let mut text = String::new();
    for stage in stages {
        let n = stage.partitions;
        let final_mark = if Some(stage.id) == last {
            " (final)"
        } else {
            ""
        };
        let _ = write!(
            text,
            "Stage {}{final_mark}: {n} task{}",
            stage.id,
            if n == 1 { "" } else { "s" }
        );
        if let Some(read) = inputs.get(&stage.id) {
            let read: Vec<String> = read
                .iter()
                .map(|(input, exchange)| format!("stage {input} ({})", exchange.name()))
                .collect();
            let _ = write!(text, "; reads {}", read.join(", "));
        }
        text.push('\n');
        let destination = match consumers.get(&stage.id) {
            Some(readers) => {
                let readers: Vec<String> = readers
                    .iter()
                    .map(|(reader, exchange)| format!("stage {reader} ({})", exchange.name()))
                    .collect();
                format!("{}, read by {}", output_of(&stage.plan), readers.join(", "))
            }
            None if stage.plan.is::<FileOutputExec>() => output_of(&stage.plan),
            None => "returned to the client".into(),
        };
        let _ = writeln!(text, "  output: {destination}");
        for filter in &stage.filters {
            let _ = writeln!(
                text,
                "  runtime filter: {}",
                describe_filter(filter, stages)
            );
        }
        for line in displayable(stage.plan.as_ref())
            .indent(false)
            .to_string()
            .lines()
        {
            let _ = writeln!(text, "  {line}");
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::stages;

    #[tokio::test]
    async fn a_grouped_aggregate_explains_as_a_hash_exchange_into_a_final_stage() -> Result<()> {
        let planned = stages(
            "SELECT b, count(*) FROM (VALUES (1, 'x'), (2, 'y'), (3, 'x')) AS t(a, b) GROUP BY b",
        )
        .await?;
        let text = describe_stages(&planned);
        assert!(text.starts_with("Stage 0: "), "{text}");
        assert!(text.contains("output: hash on [b@0] into"), "{text}");
        assert!(text.contains("read by stage 1 (hash)"), "{text}");
        assert!(text.contains("Stage 1 (final): "), "{text}");
        assert!(text.contains("reads stage 0 (hash)"), "{text}");
        assert!(text.contains("output: returned to the client"), "{text}");
        assert!(text.contains("    AggregateExec: mode=Partial"), "{text}");
        Ok(())
    }
}
