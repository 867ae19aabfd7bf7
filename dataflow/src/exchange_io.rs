//! The seam between the exchange operators and the executor that runs them.
//! [`ShuffleWriterExec`](crate::ShuffleWriterExec) and
//! [`ShuffleReaderExec`](crate::ShuffleReaderExec) only know these traits;
//! the executor implements them (its shuffle store, its Flight client) and
//! hands them to every task in an [`ExchangeContext`] installed as a
//! session-config extension.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::Result;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};

use crate::error::ExchangeError;
use crate::ids::{ExecutorId, MapOutputId};
use crate::location::PartitionLocation;
use crate::streamed_inputs::StreamedInputs;
use volley_proto::v1;

/// Rows and bytes of one output partition of a map output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Rows written.
    pub rows: u64,
    /// Bytes written, as Arrow memory size.
    pub bytes: u64,
}

/// Where shuffle writers put map outputs.
pub trait ShuffleSink: Send + Sync + Debug {
    /// Starts writing the map output `id`, split into `output_partitions`.
    /// Any earlier output under the same id is replaced when this one
    /// finishes.
    fn open(
        &self,
        id: MapOutputId,
        schema: SchemaRef,
        output_partitions: usize,
    ) -> Result<Box<dyn MapOutputWriter>>;
}

/// Writes one map output; dropped without [`MapOutputWriter::finish`], it
/// leaves nothing behind.
pub trait MapOutputWriter: Send {
    /// Appends a batch to one output partition.
    fn write(&mut self, output_partition: usize, batch: RecordBatch) -> Result<()>;
    /// Makes the output readable and returns per-partition statistics.
    fn finish(self: Box<Self>) -> Result<Vec<PartitionStats>>;
    /// Bytes of data written to files so far because memory refused them
    /// (0 for a writer that keeps everything where it was asked to).
    fn spilled_bytes(&self) -> u64 {
        0
    }
}

/// Where shuffle readers get map outputs from.
#[async_trait]
pub trait ShuffleSource: Send + Sync + Debug {
    /// Streams one piece of a map output, from this executor's store or
    /// over the network. A piece that cannot be reached is an
    /// [`ExchangeError::FetchFailed`] naming it.
    async fn fetch(
        &self,
        location: &PartitionLocation,
        schema: SchemaRef,
    ) -> std::result::Result<SendableRecordBatchStream, ExchangeError>;
}

/// Shuffle bytes a task read, by the executor that served them.
#[derive(Debug, Default)]
pub struct TrafficRecorder {
    by_executor: Mutex<HashMap<ExecutorId, (u64, u64)>>,
}

impl TrafficRecorder {
    /// Records that a piece was fetched from `from`.
    pub fn record_fetch(&self, from: &ExecutorId) {
        self.update(from, |entry| entry.1 += 1);
    }

    /// Records `bytes` read from `from`.
    pub fn record_bytes(&self, from: &ExecutorId, bytes: u64) {
        self.update(from, |entry| entry.0 += bytes);
    }

    fn update(&self, from: &ExecutorId, f: impl FnOnce(&mut (u64, u64))) {
        // A poisoned lock only means another reader panicked mid-update;
        // the counts are still usable.
        let mut map = self
            .by_executor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(map.entry(from.clone()).or_default());
    }

    /// `(executor, bytes, fetches)` for every executor read from.
    pub fn snapshot(&self) -> Vec<(ExecutorId, u64, u64)> {
        let map = self
            .by_executor
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.iter()
            .map(|(id, (bytes, fetches))| (id.clone(), *bytes, *fetches))
            .collect()
    }
}

/// What the executor gives every task so exchange operators can run.
#[derive(Debug)]
pub struct ExchangeContext {
    /// The executor running the task.
    pub executor_id: ExecutorId,
    /// Where shuffle writers store output.
    pub sink: Arc<dyn ShuffleSink>,
    /// Where shuffle readers read input.
    pub source: Arc<dyn ShuffleSource>,
    /// Bytes read, by serving executor.
    pub traffic: Arc<TrafficRecorder>,
    /// Map outputs of input stages still running when the task's stage
    /// started (pipelined exchange), as the scheduler announces them.
    pub streamed: Arc<StreamedInputs>,
    /// What the task's writer summarized of its build keys (runtime
    /// filters), for its status.
    pub key_summaries: Mutex<Vec<v1::KeySummary>>,
}

impl ExchangeContext {
    /// Keeps a writer's key summaries for the task's status.
    pub fn add_key_summaries(&self, summaries: impl IntoIterator<Item = v1::KeySummary>) {
        self.key_summaries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(summaries);
    }

    /// The key summaries the task's writer made.
    pub fn take_key_summaries(&self) -> Vec<v1::KeySummary> {
        std::mem::take(&mut *self.key_summaries.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The exchange context of a task.
    pub fn from_task(context: &TaskContext) -> std::result::Result<Arc<Self>, ExchangeError> {
        context
            .session_config()
            .get_extension::<ExchangeContext>()
            .ok_or(ExchangeError::MissingContext)
    }
}
