//! `ShuffleReaderExec`: the leaf that stands in a stage plan where an
//! exchange was cut out. The scheduler creates it unresolved and resolves it
//! (fills in where every piece of its input stage's output lives) once that
//! stage has finished, just before the consuming stage is launched.
//!
//! Two kinds of exchange:
//! - repartition: reader partition `j` reads output partition `j` of every
//!   map task (a hash or round-robin shuffle), one after the other, or, for
//!   an order-preserving repartition (whose promised properties order each
//!   partition), merged by that order;
//! - passthrough: reader partition `i` reads map task `i`'s only output, so
//!   the consumer (a coalesce or a sort-preserving merge) sees its input's
//!   partitions unchanged.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::DataFusionError;
use datafusion::error::Result;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::LexOrdering;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::coop::make_cooperative;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::sorts::streaming_merge::StreamingMergeBuilder;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::error::ExchangeError;
use crate::error::volley_internal;
use crate::exchange_io::ExchangeContext;
use crate::ids::StageId;
use crate::location::PartitionLocation;
use crate::streamed_inputs::PieceFilter;

/// How a reader's partitions map onto its input stage's outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Reader partition `j` reads output partition `j` of every map task.
    Repartition,
    /// Reader partition `i` reads map task `i`'s single output.
    Passthrough,
}

/// Where a reader's pieces come from.
#[derive(Debug, Clone)]
enum Pieces {
    /// Not known yet: the reader cannot run.
    Unresolved,
    /// Every piece, per reader partition: the input stage had finished.
    Resolved(Vec<Vec<PartitionLocation>>),
    /// The input stage of this many map tasks was running: its map outputs
    /// are announced while the reader runs.
    Streamed(usize),
}

/// Reads the output of a stage: finished, or (pipelined) still running.
#[derive(Debug)]
pub struct ShuffleReaderExec {
    input_stage: StageId,
    schema: SchemaRef,
    kind: ExchangeKind,
    pieces: Pieces,
    properties: Arc<PlanProperties>,
    /// Rows read.
    metrics: ExecutionPlanMetricsSet,
}

impl ShuffleReaderExec {
    /// An unresolved reader of `input_stage` standing where an exchange
    /// was cut out. `promised` are the properties of the plan it replaces
    /// (the repartition's, or the merged child's): its partitioning, and
    /// the orderings, constants and equivalences each partition has. The
    /// exchange keeps them (a partition's rows are read in the order they
    /// were written, and a repartition's map outputs in map order), and
    /// operators above rely on them: an interleaving union needs its
    /// inputs' hash partitioning, a window its input's ordering.
    pub fn new_unresolved(
        input_stage: StageId,
        promised: &PlanProperties,
        kind: ExchangeKind,
    ) -> Self {
        let properties = Arc::new(PlanProperties::new(
            promised.equivalence_properties().clone(),
            promised.output_partitioning().clone(),
            EmissionType::Incremental,
            Boundedness::Bounded,
        ));
        Self {
            input_stage,
            schema: Arc::clone(promised.equivalence_properties().schema()),
            kind,
            pieces: Pieces::Unresolved,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// This reader resolved: `locations[p]` lists the pieces partition `p`
    /// reads. An error if they are not one list per partition.
    pub fn with_locations(&self, locations: Vec<Vec<PartitionLocation>>) -> Result<Self> {
        if locations.len() != self.partition_count() {
            return Err(ExchangeError::Internal(format!(
                "the reader of stage {} has {} partitions, not {}",
                self.input_stage,
                self.partition_count(),
                locations.len()
            ))
            .into());
        }
        Ok(self.with_pieces(Pieces::Resolved(locations)))
    }

    /// This reader resolved against an input stage of `map_tasks` tasks
    /// that is still running: it reads each map output as it is announced.
    pub fn streamed(&self, map_tasks: usize) -> Self {
        self.with_pieces(Pieces::Streamed(map_tasks))
    }

    fn with_pieces(&self, pieces: Pieces) -> Self {
        Self {
            input_stage: self.input_stage,
            schema: Arc::clone(&self.schema),
            kind: self.kind,
            pieces,
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }

    /// The map tasks of the input stage, when this reader is streamed.
    pub fn streamed_map_tasks(&self) -> Option<usize> {
        match self.pieces {
            Pieces::Streamed(map_tasks) => Some(map_tasks),
            _ => None,
        }
    }

    /// The stage whose output this reads.
    pub fn input_stage(&self) -> StageId {
        self.input_stage
    }

    /// How partitions map onto the input stage's outputs.
    pub fn kind(&self) -> ExchangeKind {
        self.kind
    }

    /// The schema of the rows read.
    pub fn schema_ref(&self) -> &SchemaRef {
        &self.schema
    }

    /// Where each partition's pieces live, once resolved (not streamed).
    pub fn locations(&self) -> Option<&[Vec<PartitionLocation>]> {
        match &self.pieces {
            Pieces::Resolved(locations) => Some(locations),
            _ => None,
        }
    }

    /// How many partitions this reader has.
    pub fn partition_count(&self) -> usize {
        self.properties.partitioning.partition_count()
    }
}

/// Opens one piece of a partition, recording the traffic it brings.
async fn fetch_piece(
    exchange: Arc<ExchangeContext>,
    location: PartitionLocation,
    schema: SchemaRef,
) -> Result<impl futures::Stream<Item = Result<datafusion::arrow::record_batch::RecordBatch>>> {
    let stream = exchange.source.fetch(&location, schema).await?;
    let traffic = Arc::clone(&exchange.traffic);
    traffic.record_fetch(&location.executor_id);
    let from = location.executor_id.clone();
    Ok(stream
        .inspect_ok(move |batch| traffic.record_bytes(&from, batch.get_array_memory_size() as u64)))
}

impl ShuffleReaderExec {
    /// Reads each sorted run of `partition` (one per map output: `runs`
    /// yields its pieces) as a stream of its own and merges them by
    /// `ordering`.
    fn merge_sorted_runs(
        &self,
        runs: Vec<BoxStream<'static, Result<PartitionLocation>>>,
        ordering: &LexOrdering,
        partition: usize,
        context: &Arc<TaskContext>,
        exchange: Arc<ExchangeContext>,
    ) -> Result<SendableRecordBatchStream> {
        let streams = runs
            .into_iter()
            .map(|run| {
                let exchange = Arc::clone(&exchange);
                let schema = Arc::clone(&self.schema);
                let stream = run
                    .and_then(move |location| {
                        fetch_piece(Arc::clone(&exchange), location, Arc::clone(&schema))
                    })
                    .try_flatten();
                Box::pin(RecordBatchStreamAdapter::new(
                    Arc::clone(&self.schema),
                    stream,
                )) as SendableRecordBatchStream
            })
            .collect();
        let reservation = MemoryConsumer::new(format!("ShuffleReaderMerge[{partition}]"))
            .register(&context.runtime_env().memory_pool);
        StreamingMergeBuilder::new()
            .with_streams(streams)
            .with_schema(Arc::clone(&self.schema))
            .with_expressions(ordering)
            .with_metrics(BaselineMetrics::new(&self.metrics, partition))
            .with_batch_size(context.session_config().batch_size())
            .with_reservation(reservation)
            .build()
    }
}

impl DisplayAs for ShuffleReaderExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "ShuffleReaderExec: input_stage={}, partitions={}, kind={:?}{}",
            self.input_stage,
            self.partition_count(),
            self.kind,
            match self.pieces {
                Pieces::Resolved(_) => "",
                Pieces::Streamed(_) => ", streamed",
                Pieces::Unresolved => ", unresolved",
            }
        )
    }
}

impl ExecutionPlan for ShuffleReaderExec {
    fn name(&self) -> &str {
        "ShuffleReaderExec"
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
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
        if children.is_empty() {
            Ok(self)
        } else {
            Err(volley_internal(
                "ShuffleReaderExec is a leaf and takes no children",
            ))
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let exchange = ExchangeContext::from_task(&context)?;
        let ordering = match self.kind {
            ExchangeKind::Repartition => self.properties.output_ordering().cloned(),
            ExchangeKind::Passthrough => None,
        };
        let pieces: BoxStream<'static, Result<PartitionLocation>> = match &self.pieces {
            Pieces::Unresolved => {
                return Err(ExchangeError::Unresolved(self.input_stage.0).into());
            }
            Pieces::Resolved(locations) => {
                let pieces = locations.get(partition).cloned().ok_or_else(|| {
                    volley_internal(format!(
                        "shuffle reader of stage {} has no partition {partition}",
                        self.input_stage
                    ))
                })?;
                // An order-preserving repartition: each map task's piece is
                // sorted, and the reader merges them, as the repartition
                // did in one process.
                if let Some(ordering) = &ordering
                    && pieces.len() > 1
                {
                    let runs = pieces
                        .into_iter()
                        .map(|piece| futures::stream::once(async move { Ok(piece) }).boxed())
                        .collect();
                    return self.merge_sorted_runs(runs, ordering, partition, &context, exchange);
                }
                futures::stream::iter(pieces.into_iter().map(Ok)).boxed()
            }
            Pieces::Streamed(map_tasks) => {
                let announced = &exchange.streamed;
                let part = partition as u32;
                let stage = self.input_stage;
                if let Some(ordering) = &ordering {
                    // One sorted run per map output, each waiting for its own.
                    let runs = (0..*map_tasks as u32)
                        .map(|map| {
                            announced
                                .pieces(stage, *map_tasks, PieceFilter::Map(map, Some(part)))
                                .map_err(DataFusionError::from)
                                .boxed()
                        })
                        .collect();
                    return self.merge_sorted_runs(runs, ordering, partition, &context, exchange);
                }
                let filter = match self.kind {
                    ExchangeKind::Repartition => PieceFilter::OutputPartition(part),
                    ExchangeKind::Passthrough => PieceFilter::Map(part, None),
                };
                announced
                    .pieces(stage, *map_tasks, filter)
                    .map_err(DataFusionError::from)
                    .boxed()
            }
        };
        let schema = Arc::clone(&self.schema);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let stream = pieces
            .and_then(move |location| {
                fetch_piece(Arc::clone(&exchange), location, Arc::clone(&schema))
            })
            .try_flatten()
            .inspect_ok(move |batch| output_rows.add(batch.num_rows()));
        // Local pieces are always ready; a cooperative stream still gives
        // the runtime a turn now and then.
        Ok(make_cooperative(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            stream,
        ))))
    }
}
