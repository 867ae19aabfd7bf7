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
//!   task reads every build partition.
//!
//! The remaining root becomes the final stage, whose partitions the client
//! fetches (a root `CoalescePartitionsExec` without a limit is dropped: the
//! client reads the partitions itself).
//!
//! Invariants: stage ids are dense and a stage's inputs have smaller ids, so
//! stages in id order are a topological order; no operator that runs all of
//! its input partitions from one output partition is left inside a stage.

use std::sync::Arc;

use datafusion::error::{DataFusionError, Result};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::replace_children_if_necessary;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use volley_dataflow::{ExchangeKind, JobId, ShuffleReaderExec, ShuffleWriterExec, StageId};

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
}

/// Cuts `plan` into stages; the last one is the final stage.
pub(crate) fn cut_into_stages(
    job_id: &JobId,
    plan: Arc<dyn ExecutionPlan>,
) -> Result<Vec<StagePlan>> {
    let mut cutter = StageCutter {
        job_id: job_id.clone(),
        stages: Vec::new(),
    };
    let root = match plan.downcast_ref::<CoalescePartitionsExec>() {
        Some(coalesce) if coalesce.fetch().is_none() => Arc::clone(coalesce.input()),
        _ => plan,
    };
    let root = cutter.cut(root)?;
    cutter.add_stage(root, None)?;
    Ok(cutter.stages)
}

struct StageCutter {
    job_id: JobId,
    stages: Vec<StagePlan>,
}

impl StageCutter {
    fn cut(&mut self, plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        let children = plan
            .children()
            .into_iter()
            .map(|child| self.cut(Arc::clone(child)))
            .collect::<Result<Vec<_>>>()?;

        if let Some(repartition) = plan.downcast_ref::<RepartitionExec>() {
            if repartition.preserve_order() {
                return Err(DataFusionError::NotImplemented(
                    "Volley cannot yet distribute an order-preserving repartition; \
                     set datafusion.optimizer.prefer_existing_sort = false"
                        .into(),
                ));
            }
            let [child] = <[_; 1]>::try_from(children).map_err(|_| {
                DataFusionError::Internal("RepartitionExec without exactly one child".into())
            })?;
            let partitioning = repartition.partitioning().clone();
            let partitions = partitioning.partition_count();
            let stage = self.add_stage(child, Some(partitioning))?;
            return Ok(Arc::new(ShuffleReaderExec::new_unresolved(
                stage,
                plan.schema(),
                partitions,
                ExchangeKind::Repartition,
            )));
        }

        if (plan.is::<CoalescePartitionsExec>() || plan.is::<SortPreservingMergeExec>())
            && let [child] = children.as_slice()
            // A reader can feed the merge directly: no stage needed.
            && child.output_partitioning().partition_count() > 1
            && !child.is::<ShuffleReaderExec>()
        {
            let partitions = child.output_partitioning().partition_count();
            let stage = self.add_stage(Arc::clone(child), None)?;
            let reader = ShuffleReaderExec::new_unresolved(
                stage,
                child.schema(),
                partitions,
                ExchangeKind::Passthrough,
            );
            return replace_children_if_necessary(plan, vec![Arc::new(reader)]);
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
        let id = StageId(self.stages.len() as u32);
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
        });
        Ok(id)
    }
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
