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
use futures::{StreamExt, TryStreamExt};

use crate::error::ExchangeError;
use crate::error::volley_internal;
use crate::exchange_io::ExchangeContext;
use crate::ids::StageId;
use crate::location::PartitionLocation;

/// How a reader's partitions map onto its input stage's outputs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExchangeKind {
    /// Reader partition `j` reads output partition `j` of every map task.
    Repartition,
    /// Reader partition `i` reads map task `i`'s single output.
    Passthrough,
}

/// Reads the output of a finished stage.
#[derive(Debug)]
pub struct ShuffleReaderExec {
    input_stage: StageId,
    schema: SchemaRef,
    kind: ExchangeKind,
    locations: Option<Vec<Vec<PartitionLocation>>>,
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
            locations: None,
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
        Ok(Self {
            input_stage: self.input_stage,
            schema: Arc::clone(&self.schema),
            kind: self.kind,
            locations: Some(locations),
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
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

    /// Where each partition's pieces live, once resolved.
    pub fn locations(&self) -> Option<&[Vec<PartitionLocation>]> {
        self.locations.as_deref()
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
    /// Reads each piece of `partition` as a stream of its own and merges
    /// them by `ordering`.
    fn merge_sorted_pieces(
        &self,
        pieces: Vec<PartitionLocation>,
        ordering: &LexOrdering,
        partition: usize,
        context: &Arc<TaskContext>,
        exchange: Arc<ExchangeContext>,
    ) -> Result<SendableRecordBatchStream> {
        let streams = pieces
            .into_iter()
            .map(|location| {
                let stream = futures::stream::once(fetch_piece(
                    Arc::clone(&exchange),
                    location,
                    Arc::clone(&self.schema),
                ))
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
            if self.locations.is_some() {
                ""
            } else {
                ", unresolved"
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
        let locations = self
            .locations
            .as_ref()
            .ok_or(ExchangeError::Unresolved(self.input_stage.0))?;
        let pieces = locations.get(partition).cloned().ok_or_else(|| {
            volley_internal(format!(
                "shuffle reader of stage {} has no partition {partition}",
                self.input_stage
            ))
        })?;
        // An order-preserving repartition: each map task's piece is sorted,
        // and the reader merges them, as the repartition did in one process.
        if self.kind == ExchangeKind::Repartition
            && pieces.len() > 1
            && let Some(ordering) = self.properties.output_ordering()
        {
            return self.merge_sorted_pieces(pieces, ordering, partition, &context, exchange);
        }
        let schema = Arc::clone(&self.schema);
        let output_rows = MetricBuilder::new(&self.metrics).output_rows(partition);
        let stream = futures::stream::iter(pieces)
            .then(move |location| fetch_piece(Arc::clone(&exchange), location, Arc::clone(&schema)))
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
