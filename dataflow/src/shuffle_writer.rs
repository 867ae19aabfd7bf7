//! `ShuffleWriterExec`: the root of every stage plan. Task `p` of a stage runs
//! input partition `p`, splits its batches by the stage's output
//! partitioning (hash, round robin, range, or none: one output per map task),
//! coalesces the pieces back to full-size batches, and hands them to the
//! executor's [`ShuffleSink`](crate::ShuffleSink) under the map output id
//! `(job, stage, p)`. Its own output is one small batch of per-partition
//! statistics the executor reports to the scheduler.
//!
//! Invariant: the hash function is DataFusion's `BatchPartitioner`, the one
//! `RepartitionExec` uses, so both sides of a partitioned join agree on
//! which rows land in which partition.

use std::fmt;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, UInt32Array, UInt64Array};
use datafusion::arrow::compute::BatchCoalescer;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    self, BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::repartition::BatchPartitioner;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::StreamExt;

use crate::error::volley_internal;
use crate::exchange_io::{ExchangeContext, PartitionStats};
use crate::ids::{JobId, MapOutputId, StageId};
use crate::key_filter::KeySummarizer;

/// The schema of the statistics batch a stage root produces.
pub(crate) static STATS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("output_partition", DataType::UInt32, false),
        Field::new("rows", DataType::UInt64, false),
        Field::new("bytes", DataType::UInt64, false),
    ]))
});

/// Writes one stage's output for the next stages to read.
#[derive(Debug)]
pub struct ShuffleWriterExec {
    job_id: JobId,
    stage_id: StageId,
    input: Arc<dyn ExecutionPlan>,
    partitioning: Option<Partitioning>,
    properties: Arc<PlanProperties>,
    /// Rows written and the time spent splitting and writing them.
    metrics: ExecutionPlanMetricsSet,
    /// Input columns whose values each task summarizes for runtime
    /// filters, and the size of their Bloom filters.
    summarize: Vec<usize>,
    summary_bits_log2: u32,
}

impl ShuffleWriterExec {
    /// A writer of `input`'s partitions; `partitioning` splits each map
    /// output (`None`: keep each map output whole, as output partition 0).
    pub fn try_new(
        job_id: JobId,
        stage_id: StageId,
        input: Arc<dyn ExecutionPlan>,
        partitioning: Option<Partitioning>,
    ) -> Result<Self> {
        if let Some(Partitioning::UnknownPartitioning(_)) = partitioning {
            return Err(volley_internal(
                "a shuffle writer needs a concrete partitioning",
            ));
        }
        let properties = stats_properties(&input);
        Ok(Self {
            job_id,
            stage_id,
            input,
            partitioning,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
            summarize: Vec::new(),
            summary_bits_log2: 0,
        })
    }

    /// This writer, also summarizing input columns `columns` (a join's
    /// build keys) in Bloom filters of `2^bits_log2` bits, for runtime
    /// filters (`key_filter`).
    pub fn with_key_summaries(&self, columns: Vec<usize>, bits_log2: u32) -> Self {
        Self {
            job_id: self.job_id.clone(),
            stage_id: self.stage_id,
            input: Arc::clone(&self.input),
            partitioning: self.partitioning.clone(),
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
            summarize: columns,
            summary_bits_log2: bits_log2,
        }
    }

    /// The input columns each task summarizes, and their filters' size.
    pub fn key_summaries(&self) -> (&[usize], u32) {
        (&self.summarize, self.summary_bits_log2)
    }

    /// The job this stage belongs to.
    pub fn job_id(&self) -> &JobId {
        &self.job_id
    }

    /// The stage this writer is the root of.
    pub fn stage_id(&self) -> StageId {
        self.stage_id
    }

    /// The stage's plan below the writer.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }

    /// How each map output is split (`None`: not split).
    pub fn partitioning(&self) -> Option<&Partitioning> {
        self.partitioning.as_ref()
    }

    /// How many output partitions each map output has.
    pub fn output_partition_count(&self) -> usize {
        self.partitioning
            .as_ref()
            .map_or(1, Partitioning::partition_count)
    }

    /// Reads the statistics batches a writer task produced.
    pub fn stats_from_batches(batches: &[RecordBatch]) -> Result<Vec<PartitionStats>> {
        let mut stats = Vec::new();
        for batch in batches {
            let downcast = |i: usize| {
                batch
                    .column(i)
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .ok_or_else(|| volley_internal("malformed shuffle writer statistics"))
            };
            let (rows, bytes) = (downcast(1)?, downcast(2)?);
            for i in 0..batch.num_rows() {
                stats.push(PartitionStats {
                    rows: rows.value(i),
                    bytes: bytes.value(i),
                });
            }
        }
        Ok(stats)
    }
}

/// The properties of a stage root: one statistics batch per input partition.
pub(crate) fn stats_properties(input: &Arc<dyn ExecutionPlan>) -> Arc<PlanProperties> {
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(Arc::clone(&STATS_SCHEMA)),
        Partitioning::UnknownPartitioning(input.output_partitioning().partition_count()),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// The statistics batch a stage root produces.
pub(crate) fn stats_batch(stats: &[PartitionStats]) -> Result<RecordBatch> {
    let partitions: ArrayRef = Arc::new(UInt32Array::from_iter_values(0..stats.len() as u32));
    let rows: ArrayRef = Arc::new(UInt64Array::from_iter_values(stats.iter().map(|s| s.rows)));
    let bytes: ArrayRef = Arc::new(UInt64Array::from_iter_values(stats.iter().map(|s| s.bytes)));
    Ok(RecordBatch::try_new(
        Arc::clone(&STATS_SCHEMA),
        vec![partitions, rows, bytes],
    )?)
}

impl DisplayAs for ShuffleWriterExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.partitioning {
            Some(p) => write!(
                f,
                "ShuffleWriterExec: stage={}, partitioning={p}",
                self.stage_id
            )?,
            None => write!(
                f,
                "ShuffleWriterExec: stage={}, partitioning=none",
                self.stage_id
            )?,
        }
        if !self.summarize.is_empty() {
            let schema = self.input.schema();
            let names: Vec<&str> = self
                .summarize
                .iter()
                .filter_map(|c| schema.fields().get(*c).map(|f| f.name().as_str()))
                .collect();
            write!(f, ", key_summaries=[{}]", names.join(", "))?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ShuffleWriterExec {
    fn name(&self) -> &str {
        "ShuffleWriterExec"
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        if let Some(Partitioning::Hash(exprs, _)) = &self.partitioning {
            for expr in exprs {
                if f(expr)? == TreeNodeRecursion::Stop {
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(volley_internal("ShuffleWriterExec takes exactly one child"));
        }
        let writer = Self::try_new(
            self.job_id.clone(),
            self.stage_id,
            children.swap_remove(0),
            self.partitioning.clone(),
        )?;
        // A stage's readers are resolved by rebuilding the plan above them:
        // the key summaries its runtime filters need go along.
        Ok(Arc::new(if self.summarize.is_empty() {
            writer
        } else {
            writer.with_key_summaries(self.summarize.clone(), self.summary_bits_log2)
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let exchange = ExchangeContext::from_task(&context)?;
        let mut input = self.input.execute(partition, Arc::clone(&context))?;
        let input_schema = self.input.schema();
        let id = MapOutputId {
            job_id: self.job_id.clone(),
            stage_id: self.stage_id,
            map_partition: partition as u32,
        };
        let output_partitions = self.output_partition_count();
        let mut partitioner = match &self.partitioning {
            Some(p) => Some(BatchPartitioner::try_new(
                p.clone(),
                metrics::Time::new(),
                partition,
                self.input.output_partitioning().partition_count(),
            )?),
            None => None,
        };
        let batch_size = context.session_config().batch_size();
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let spilled_bytes = MetricBuilder::new(&self.metrics).spilled_bytes(partition);
        let spill_count = MetricBuilder::new(&self.metrics).spill_count(partition);
        let mut summarizers: Vec<KeySummarizer> = self
            .summarize
            .iter()
            .map(|column| {
                KeySummarizer::new(
                    *column,
                    self.input.output_partitioning().partition_count(),
                    self.summary_bits_log2,
                )
            })
            .collect();
        let write = async move {
            let mut writer =
                exchange
                    .sink
                    .open(id, Arc::clone(&input_schema), output_partitions)?;
            let mut coalescers: Vec<BatchCoalescer> = (0..output_partitions)
                .map(|_| BatchCoalescer::new(Arc::clone(&input_schema), batch_size))
                .collect();
            let mut push = |out: usize, batch: RecordBatch| -> Result<()> {
                let coalescer = &mut coalescers[out];
                coalescer.push_batch(batch)?;
                while let Some(done) = coalescer.next_completed_batch() {
                    writer.write(out, done)?;
                }
                Ok(())
            };
            while let Some(batch) = input.next().await {
                let batch = batch?;
                // Operators that always have a batch ready never return
                // Pending; yield now and then so the executor's control
                // stream (heartbeats) and Flight service keep running.
                tokio::task::consume_budget().await;
                if batch.num_rows() == 0 {
                    continue;
                }
                baseline.record_output(batch.num_rows());
                let _timer = baseline.elapsed_compute().timer();
                for summarizer in &mut summarizers {
                    summarizer.add(batch.columns())?;
                }
                match partitioner.as_mut() {
                    Some(p) => p.partition(batch, &mut push)?,
                    None => push(0, batch)?,
                }
            }
            for (out, coalescer) in coalescers.iter_mut().enumerate() {
                coalescer.finish_buffered_batch()?;
                while let Some(done) = coalescer.next_completed_batch() {
                    writer.write(out, done)?;
                }
            }
            let spilled = writer.spilled_bytes();
            if spilled > 0 {
                spilled_bytes.add(spilled as usize);
                spill_count.add(1);
            }
            let stats = writer.finish()?;
            exchange.add_key_summaries(summarizers.into_iter().map(KeySummarizer::finish));
            stats_batch(&stats)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&STATS_SCHEMA),
            futures::stream::once(write),
        )))
    }
}
