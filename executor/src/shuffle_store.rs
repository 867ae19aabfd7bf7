//! The executor's shuffle store: every map output its tasks wrote, kept
//! addressable by `(job, stage, map partition)` until the scheduler says the
//! job no longer needs it.
//!
//! Memory is a budget: each output's batches are accounted in the executor's
//! DataFusion memory pool (`try_grow`) and in the store's own shuffle
//! budget (`--shuffle-memory`: all outputs held in memory together). When
//! either refuses, or one output would hold more than [`MAX_OUTPUT_SHARE`]
//! of the pool (stored outputs cannot be asked to spill later, so running
//! operators must keep room), the writer spills everything it holds, and
//! all it writes afterwards, to Arrow IPC files under the work directory
//! (by default uncompressed until the executor holds a quarter of its
//! memory budget in spill files, then LZ4, switching file by file:
//! [`SpillCompression`]), in pieces of at most about `MAX_MESSAGE_BYTES`,
//! as a Flight reader would get them. A writer dropped before `finish` (a
//! failed or cancelled task) deletes its files; a finished output's files
//! go when the output is removed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tracing::{debug, warn};

use crate::flight_encode::{data_bytes, message_pieces};
use crate::metrics::ExecutorMetrics;
use crate::spill_codec::{SpillCompression, SpillLedger};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::ipc::CompressionType;
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::{FileWriter, IpcWriteOptions};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use futures::stream::BoxStream;
use volley_dataflow::{
    ExchangeError, JobId, MapOutputId, MapOutputWriter, OutputAttempt, PartitionStats, ShuffleSink,
    StageId, from_wire, to_wire, wire_schema,
};

#[derive(Debug)]
enum StoredPartition {
    Memory(Vec<RecordBatch>),
    /// Spill files, read in order (an uncompressed one may be followed by
    /// an LZ4 one: [`SpillCompression::Lz4Past`]).
    Files(Vec<SpilledFile>),
}

/// A finished spill file and its size on disk.
#[derive(Debug)]
struct SpilledFile {
    path: PathBuf,
    bytes: u64,
}

/// Bytes of shuffle output all writers and stored outputs of an executor
/// may hold in memory together.
#[derive(Debug)]
struct ShuffleBudget {
    limit: usize,
    held: AtomicUsize,
}

impl ShuffleBudget {
    fn try_take(&self, bytes: usize) -> bool {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|total| *total <= self.limit)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
    }
}

#[derive(Debug)]
struct StoredOutput {
    schema: SchemaRef,
    partitions: Vec<StoredPartition>,
    /// Rows and bytes of each partition, as reported when it was written.
    stats: Vec<PartitionStats>,
    /// The attempt that wrote it: a later attempt's output replaces it, an
    /// earlier one's never does, and a reader naming another attempt is
    /// refused.
    attempt: OutputAttempt,
    /// Holds the pool memory of the in-memory partitions until dropped.
    _reservation: MemoryReservation,
    /// And their share of the shuffle budget.
    budget: Arc<ShuffleBudget>,
    budget_held: usize,
    /// And the data of its spill files, in the executor's count of it.
    spill_ledger: Arc<SpillLedger>,
    spill_held: u64,
}

impl Drop for StoredOutput {
    fn drop(&mut self) {
        self.budget.give_back(self.budget_held);
        self.spill_ledger.give_back(self.spill_held);
        for partition in &self.partitions {
            if let StoredPartition::Files(files) = partition {
                for file in files {
                    let _ = std::fs::remove_file(&file.path);
                }
            }
        }
    }
}

/// Map outputs held by one executor.
/// The largest share of the memory pool one map output keeps in memory
/// (1/4): a sort-preserving merge over spilled runs, for one, needs a batch
/// of every run while its own output is being stored.
pub(crate) const MAX_OUTPUT_SHARE: usize = 4;

#[derive(Debug)]
pub(crate) struct ShuffleStore {
    outputs: Mutex<HashMap<MapOutputId, Arc<StoredOutput>>>,
    pool: Arc<dyn MemoryPool>,
    /// Bytes one map output may keep in memory.
    max_output_memory: usize,
    budget: Arc<ShuffleBudget>,
    spill_compression: SpillCompression,
    /// Data held in spill files, which `spill_compression` may depend on.
    spill_ledger: Arc<SpillLedger>,
    dir: PathBuf,
    /// What `/metrics` exports; the store is what every part of the
    /// executor shares.
    metrics: ExecutorMetrics,
}

impl ShuffleStore {
    /// A store in `dir` whose outputs keep at most `shuffle_memory` bytes in
    /// memory together, and spill the rest with `spill_compression`.
    pub(crate) fn new(
        pool: Arc<dyn MemoryPool>,
        dir: PathBuf,
        shuffle_memory: usize,
        spill_compression: SpillCompression,
    ) -> Self {
        let max_output_memory = match pool.memory_limit() {
            MemoryLimit::Finite(bytes) => bytes / MAX_OUTPUT_SHARE,
            _ => usize::MAX,
        };
        Self {
            outputs: Mutex::new(HashMap::new()),
            pool,
            max_output_memory,
            budget: Arc::new(ShuffleBudget {
                limit: shuffle_memory,
                held: AtomicUsize::new(0),
            }),
            spill_compression,
            spill_ledger: Arc::new(SpillLedger::default()),
            dir,
            metrics: ExecutorMetrics::new(),
        }
    }

    /// The executor's metrics.
    pub(crate) fn metrics(&self) -> &ExecutorMetrics {
        &self.metrics
    }

    /// Bytes of shuffle output held in memory now.
    pub(crate) fn memory_held(&self) -> usize {
        self.budget.held.load(Ordering::Acquire)
    }

    /// Bytes of shuffle output held in spill files now.
    pub(crate) fn disk_held(&self) -> u64 {
        self.outputs()
            .values()
            .flat_map(|output| &output.partitions)
            .map(|partition| match partition {
                StoredPartition::Files(files) => files.iter().map(|f| f.bytes).sum(),
                StoredPartition::Memory(_) => 0,
            })
            .sum()
    }

    /// Bytes of data (before compression) in spill files now, of running
    /// writers and stored outputs.
    pub(crate) fn spilled_data_held(&self) -> u64 {
        self.spill_ledger.held()
    }

    fn outputs(&self) -> MutexGuard<'_, HashMap<MapOutputId, Arc<StoredOutput>>> {
        self.outputs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Streams one output partition of attempt `attempt`'s output of map
    /// task `id`; `None` if this executor does not hold that attempt's
    /// output (none, or another attempt's).
    pub(crate) fn read(
        &self,
        id: &MapOutputId,
        attempt: OutputAttempt,
        partition: usize,
    ) -> Option<(SchemaRef, BoxStream<'static, Result<RecordBatch>>)> {
        let output = Arc::clone(self.outputs().get(id)?);
        if output.attempt != attempt {
            debug!(%id, held = %output.attempt, asked = %attempt, "a read of another attempt's output refused");
            return None;
        }
        let schema = Arc::clone(&output.schema);
        let stream: BoxStream<'static, Result<RecordBatch>> = match output.partitions.get(partition)
        {
            None => Box::pin(futures::stream::empty()),
            Some(StoredPartition::Memory(batches)) => {
                // Batches share their buffers: no copy.
                Box::pin(futures::stream::iter(batches.clone().into_iter().map(Ok)))
            }
            Some(StoredPartition::Files(files)) => {
                let paths = files.iter().map(|f| f.path.clone()).collect();
                file_batches(paths, output)
            }
        };
        Some((schema, stream))
    }

    /// Drops a job's outputs (of the given stages, or all if empty).
    ///
    /// The outputs leave the store at once; their memory and files are
    /// freed off the runtime (on a multi-thread one), since unlinking
    /// gigabytes of spill files can block: the caller is the control loop,
    /// which also sends heartbeats. A whole job's directory is renamed
    /// away first, so a later task of the same job spills into a new one
    /// that the removal cannot reach; if it cannot be moved, it is removed
    /// at once instead, while the caller waits.
    pub(crate) fn remove_job(&self, job_id: &JobId, stages: &[StageId]) -> usize {
        let mut outputs = self.outputs();
        let mut removed = Vec::new();
        outputs.retain(|id, output| {
            let gone = id.job_id == *job_id && (stages.is_empty() || stages.contains(&id.stage_id));
            if gone {
                removed.push(Arc::clone(output));
            }
            !gone
        });
        drop(outputs);
        let count = removed.len();
        // Only a well-formed id names a directory: `join` with an absolute
        // path or `..` would reach outside the work dir.
        let job_dir =
            (stages.is_empty() && job_id.is_well_formed()).then(|| self.dir.join(job_id.as_str()));
        let trash = job_dir.and_then(|dir| {
            let trash = self.dir.join(format!(".removed-{}", uuid_suffix()));
            match std::fs::rename(&dir, &trash) {
                Ok(()) => Some(trash),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => {
                    // Removing the live directory later could take spill
                    // files of a task of this job that starts meanwhile:
                    // remove it now, before any such task can write.
                    warn!(job = %job_id, error = %e, "could not move a job's shuffle directory away; removing it in place");
                    let _ = std::fs::remove_dir_all(&dir);
                    None
                }
            }
        });
        in_the_background(move || {
            drop(removed);
            if let Some(trash) = trash {
                let _ = std::fs::remove_dir_all(trash);
            }
        });
        count
    }
}

impl ShuffleStore {
    /// Drops every output: the scheduler that placed them no longer knows
    /// this executor (it lost it, and re-ran what it needed elsewhere).
    pub(crate) fn clear(&self) -> usize {
        let jobs: HashSet<JobId> = self.outputs().keys().map(|id| id.job_id.clone()).collect();
        jobs.iter().map(|job| self.remove_job(job, &[])).sum()
    }

    /// How many map outputs are held.
    pub(crate) fn len(&self) -> usize {
        self.outputs().len()
    }

    /// Every map output held, with its sizes: what a restarted scheduler
    /// may take over.
    pub(crate) fn held(&self) -> Vec<volley_proto::v1::HeldOutput> {
        self.outputs()
            .iter()
            .map(|(id, output)| volley_proto::v1::HeldOutput {
                job_id: id.job_id.to_string(),
                stage_id: id.stage_id.0,
                map_partition: id.map_partition,
                partition_rows: output.stats.iter().map(|s| s.rows).collect(),
                partition_bytes: output.stats.iter().map(|s| s.bytes).collect(),
                attempt: Some(output.attempt.into()),
            })
            .collect()
    }
}

/// A spilled partition's batches, from each of its files in order, each
/// batch read and decoded (and each file opened) on tokio's blocking pool
/// when there is a runtime. The Flight service streams them on the runtime
/// that carries the executor's heartbeats (and, embedded, the scheduler):
/// reading a disk busy with writeback, and decompressing, held it for over
/// 20 s at TPC-H SF 100. No thread is held between batches, so a slow
/// reader costs none.
fn file_batches(
    paths: VecDeque<PathBuf>,
    output: Arc<StoredOutput>,
) -> BoxStream<'static, Result<RecordBatch>> {
    // Keeps the output (and so its files) alive while reading.
    let start = Some(SpillReader {
        paths,
        reader: None,
    });
    Box::pin(futures::stream::unfold(start, move |state| {
        let output = Arc::clone(&output);
        async move {
            let mut state = state?;
            let next = match tokio::runtime::Handle::try_current() {
                Ok(runtime) => runtime
                    .spawn_blocking(move || (state.next_batch(), state))
                    .await
                    .map_err(|e| volley_dataflow::volley_internal(format!("spill read: {e}"))),
                Err(_) => Ok((state.next_batch(), state)),
            };
            match next {
                Ok((Some(Ok(batch)), state)) => Some((
                    from_wire(batch, &output.schema).map_err(DataFusionError::from),
                    Some(state),
                )),
                Ok((Some(Err(e)), _)) | Err(e) => Some((Err(e), None)),
                Ok((None, _)) => None,
            }
        }
    }))
}

/// Where a read of a spilled partition is: the files still to open and the
/// one being read.
struct SpillReader {
    paths: VecDeque<PathBuf>,
    reader: Option<FileReader<BufReader<File>>>,
}

impl SpillReader {
    /// The next batch as written (in its wire schema), opening the next
    /// file when one ends; `None` after the last.
    fn next_batch(&mut self) -> Option<Result<RecordBatch>> {
        loop {
            if self.reader.is_none() {
                let path = self.paths.pop_front()?;
                match read_file(&path) {
                    Ok(reader) => self.reader = Some(reader),
                    Err(e) => return Some(Err(e)),
                }
            }
            match self.reader.as_mut()?.next() {
                Some(batch) => return Some(batch.map_err(DataFusionError::from)),
                None => self.reader = None,
            }
        }
    }
}

fn read_file(path: &Path) -> Result<FileReader<BufReader<File>>> {
    let file = File::open(path).map_err(|e| {
        DataFusionError::from(ExchangeError::ResourcesExhausted(format!(
            "spilled shuffle file {} is unreadable: {e}",
            path.display()
        )))
    })?;
    Ok(FileReader::try_new(BufReader::new(file), None)?)
}

/// The store as the [`ShuffleSink`] the shuffle writers of one task write
/// to, tagged with the task's attempt.
#[derive(Debug)]
pub(crate) struct StoreSink {
    store: Arc<ShuffleStore>,
    attempt: OutputAttempt,
}

impl StoreSink {
    /// Writers of a task of attempt `attempt`.
    pub(crate) fn new(store: Arc<ShuffleStore>, attempt: OutputAttempt) -> Self {
        Self { store, attempt }
    }
}

impl ShuffleSink for StoreSink {
    fn open(
        &self,
        id: MapOutputId,
        schema: SchemaRef,
        output_partitions: usize,
    ) -> Result<Box<dyn MapOutputWriter>> {
        let reservation = MemoryConsumer::new(format!("ShuffleOutput[{id}]"))
            .with_can_spill(true)
            .register(&self.store.pool);
        Ok(Box::new(StoreWriter {
            store: Arc::clone(&self.store),
            attempt: self.attempt,
            id,
            schema,
            reservation: Some(reservation),
            budget_held: 0,
            memory: vec![Vec::new(); output_partitions],
            files: (0..output_partitions).map(|_| None).collect(),
            closed: (0..output_partitions).map(|_| Vec::new()).collect(),
            stats: vec![PartitionStats::default(); output_partitions],
            spilled: false,
            spilled_bytes: 0,
            finished: false,
        }))
    }
}

struct SpillFile {
    path: PathBuf,
    writer: FileWriter<BufWriter<File>>,
    /// The schema the file is written in (see `file_for`).
    wire: SchemaRef,
    /// Its compression.
    codec: Option<CompressionType>,
}

impl SpillFile {
    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        let batch = to_wire(batch, &self.wire).map_err(|e| spill_error(&self.path, e))?;
        // Read back in the pieces a Flight reader would get, so a reader's
        // memory does not depend on where its input was kept.
        for piece in message_pieces(&batch) {
            self.writer
                .write(&piece)
                .map_err(|e| spill_error(&self.path, e))?;
        }
        Ok(())
    }

    /// Writes the file's footer: it is complete and readable.
    /// A file it cannot finish is removed.
    fn finish(mut self) -> Result<SpilledFile> {
        if let Err(e) = self.writer.finish() {
            let _ = std::fs::remove_file(&self.path);
            return Err(spill_error(&self.path, e));
        }
        let bytes = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        Ok(SpilledFile {
            path: self.path,
            bytes,
        })
    }
}

struct StoreWriter {
    store: Arc<ShuffleStore>,
    /// The attempt of the task writing.
    attempt: OutputAttempt,
    id: MapOutputId,
    schema: SchemaRef,
    reservation: Option<MemoryReservation>,
    /// Bytes of the shuffle budget this writer's in-memory batches hold.
    budget_held: usize,
    memory: Vec<Vec<RecordBatch>>,
    /// The spill file each partition is writing, if any.
    files: Vec<Option<SpillFile>>,
    /// The files each partition finished before it (at most one: an
    /// uncompressed file followed by an LZ4 one).
    closed: Vec<Vec<SpilledFile>>,
    stats: Vec<PartitionStats>,
    spilled: bool,
    /// Bytes of data written to spill files, also counted in the store's
    /// ledger until `finish` hands them to the stored output.
    spilled_bytes: u64,
    finished: bool,
}

fn spill_error(path: &Path, e: impl std::fmt::Display) -> DataFusionError {
    ExchangeError::ResourcesExhausted(format!(
        "cannot spill shuffle output to {}: {e}",
        path.display()
    ))
    .into()
}

impl StoreWriter {
    /// The file partition `out` spills to now: its open one, unless the
    /// executor has since passed the mark where spills are compressed and
    /// that one is not (then it is finished, and a new one opened).
    fn file_for(&mut self, out: usize) -> Result<&mut SpillFile> {
        let compression = self.store.spill_compression;
        let held = self.store.spill_ledger.held();
        if let Some(open) = self.files[out].take_if(|f| compression.rotates(f.codec, held)) {
            let done = open.finish()?;
            debug!(id = %self.id, out, file = %done.path.display(), "spill file closed: the executor's spills are now compressed");
            self.closed[out].push(done);
        }
        if self.files[out].is_none() {
            let dir = self
                .store
                .dir
                .join(self.id.job_id.as_str())
                .join(self.id.stage_id.to_string());
            std::fs::create_dir_all(&dir).map_err(|e| spill_error(&dir, e))?;
            let path = dir.join(format!(
                "map{}-{}-out{out}-{}.arrow",
                self.id.map_partition,
                self.attempt,
                uuid_suffix()
            ));
            let file = File::create(&path).map_err(|e| spill_error(&path, e))?;
            let codec = compression.codec(held);
            let options = IpcWriteOptions::default().try_with_compression(codec)?;
            // Spill files are Arrow IPC: columns it cannot write travel as
            // their wire type, and are cast back when read.
            let wire = wire_schema(&self.schema);
            let file = BufWriter::with_capacity(SPILL_WRITE_BUFFER, file);
            let writer = FileWriter::try_new_with_options(file, &wire, options)
                .map_err(|e| spill_error(&path, e))?;
            self.files[out] = Some(SpillFile {
                path,
                writer,
                wire,
                codec,
            });
        }
        self.files[out]
            .as_mut()
            .ok_or_else(|| volley_dataflow::volley_internal("spill file vanished"))
    }

    /// Takes room for `size` more bytes in memory: within one output's
    /// share, the shuffle budget and the pool. Takes nothing if any refuses.
    fn try_hold(&mut self, size: usize) -> bool {
        let Some(reservation) = &self.reservation else {
            return false;
        };
        if reservation.size() + size > self.store.max_output_memory
            || !self.store.budget.try_take(size)
        {
            return false;
        }
        if reservation.try_grow(size).is_err() {
            self.store.budget.give_back(size);
            return false;
        }
        self.budget_held += size;
        true
    }

    fn spill_all(&mut self) -> Result<()> {
        for out in 0..self.memory.len() {
            let batches = std::mem::take(&mut self.memory[out]);
            for batch in batches {
                let data = data_size(&batch);
                self.file_for(out)?.write(batch)?;
                self.count_spilled(data);
            }
        }
        if let Some(reservation) = &self.reservation {
            reservation.free();
        }
        self.store
            .budget
            .give_back(std::mem::take(&mut self.budget_held));
        self.spilled = true;
        Ok(())
    }

    /// Counts `data` bytes written to a spill file.
    fn count_spilled(&mut self, data: u64) {
        self.store.metrics.shuffle_bytes_spilled.inc_by(data);
        self.spilled_bytes += data;
        self.store.spill_ledger.add(data);
    }
}

/// Bytes buffered before a spill file is written to: a piece of a batch
/// at a time, not 8 KiB.
const SPILL_WRITE_BUFFER: usize = 1 << 20;

/// Runs file work that may block (a write the kernel throttles while the
/// disk is busy with writeback can take seconds) without holding a worker
/// of a multi-thread runtime: the runtime hands this worker's other tasks,
/// among them heartbeats and Flight streams, to another thread.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    match multi_thread_runtime() {
        Some(_) => tokio::task::block_in_place(work),
        None => work(),
    }
}

/// The runtime this runs on, if it is a multi-thread one (where blocking
/// work can be handed off; a current-thread runtime has no other worker).
fn multi_thread_runtime() -> Option<tokio::runtime::Handle> {
    tokio::runtime::Handle::try_current()
        .ok()
        .filter(|runtime| runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// Runs `work` on the blocking pool of a multi-thread runtime, without
/// waiting for it; anywhere else, now.
fn in_the_background(work: impl FnOnce() + Send + 'static) {
    match multi_thread_runtime() {
        Some(runtime) => drop(runtime.spawn_blocking(work)),
        None => work(),
    }
}

/// The bytes of data a batch holds (not the capacity of its buffers).
fn data_size(batch: &RecordBatch) -> u64 {
    data_bytes(batch) as u64
}

fn uuid_suffix() -> String {
    // Two attempts of one map task may write at once; never share a file.
    volley_dataflow::JobId::new_random().to_string()
}

impl MapOutputWriter for StoreWriter {
    fn write(&mut self, output_partition: usize, batch: RecordBatch) -> Result<()> {
        let size = batch.get_array_memory_size();
        let stats = self.stats.get_mut(output_partition).ok_or_else(|| {
            volley_dataflow::volley_internal(format!("no output partition {output_partition}"))
        })?;
        let data = data_size(&batch);
        stats.rows += batch.num_rows() as u64;
        stats.bytes += data;
        self.store.metrics.shuffle_bytes_written.inc_by(data);
        if !self.spilled {
            if self.try_hold(size) {
                self.memory[output_partition].push(batch);
                return Ok(());
            }
            off_the_runtime(|| self.spill_all())?;
        }
        off_the_runtime(|| self.file_for(output_partition)?.write(batch))?;
        self.count_spilled(data);
        Ok(())
    }

    fn spilled_bytes(&self) -> u64 {
        self.spilled_bytes
    }

    fn finish(mut self: Box<Self>) -> Result<Vec<PartitionStats>> {
        let mut partitions = Vec::with_capacity(self.memory.len());
        for out in 0..self.memory.len() {
            if let Some(open) = self.files[out].take() {
                let done = off_the_runtime(|| open.finish())?;
                self.closed[out].push(done);
            }
            let files = std::mem::take(&mut self.closed[out]);
            partitions.push(if files.is_empty() {
                StoredPartition::Memory(std::mem::take(&mut self.memory[out]))
            } else {
                StoredPartition::Files(files)
            });
        }
        let reservation = self
            .reservation
            .take()
            .ok_or_else(|| volley_dataflow::volley_internal("shuffle writer finished twice"))?;
        let output = StoredOutput {
            schema: Arc::clone(&self.schema),
            partitions,
            stats: self.stats.clone(),
            attempt: self.attempt,
            _reservation: reservation,
            budget: Arc::clone(&self.store.budget),
            budget_held: std::mem::take(&mut self.budget_held),
            spill_ledger: Arc::clone(&self.store.spill_ledger),
            spill_held: std::mem::take(&mut self.spilled_bytes),
        };
        self.finished = true;
        let mut outputs = self.store.outputs();
        match outputs.get(&self.id) {
            // A leftover task of a superseded attempt finished late: the
            // current attempt's output stays (this one is dropped, freeing
            // its memory and files).
            Some(current) if current.attempt > self.attempt => {
                debug!(id = %self.id, attempt = %self.attempt, current = %current.attempt, "output of a superseded attempt dropped");
            }
            _ => {
                outputs.insert(self.id.clone(), Arc::new(output));
            }
        }
        drop(outputs);
        Ok(std::mem::take(&mut self.stats))
    }
}

impl Drop for StoreWriter {
    fn drop(&mut self) {
        self.store
            .budget
            .give_back(std::mem::take(&mut self.budget_held));
        self.store
            .spill_ledger
            .give_back(std::mem::take(&mut self.spilled_bytes));
        if !self.finished {
            for file in self.files.iter_mut().filter_map(Option::take) {
                let _ = std::fs::remove_file(&file.path);
            }
            for file in self.closed.iter().flatten() {
                let _ = std::fs::remove_file(&file.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use futures::TryStreamExt;

    use super::*;

    fn batch(n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(0..n))]).unwrap()
    }

    /// A store in `dir` over `pool`, keeping `shuffle_memory` bytes in memory
    /// and spilling uncompressed.
    fn store(pool: &Arc<dyn MemoryPool>, dir: &Path, shuffle_memory: usize) -> Arc<ShuffleStore> {
        Arc::new(ShuffleStore::new(
            Arc::clone(pool),
            dir.to_path_buf(),
            shuffle_memory,
            SpillCompression::Never,
        ))
    }

    /// Stage attempt `n` under the first scheduler.
    fn a(n: u32) -> OutputAttempt {
        OutputAttempt::new(1, n)
    }

    fn id(map: u32) -> MapOutputId {
        MapOutputId {
            job_id: JobId::from("job"),
            stage_id: StageId(1),
            map_partition: map,
        }
    }

    #[test]
    fn removing_a_job_whose_id_is_a_path_deletes_nothing_outside_the_work_dir() -> Result<()> {
        let work = tempfile::tempdir()?;
        let victim = tempfile::tempdir()?;
        std::fs::write(victim.path().join("precious"), "x")?;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 20));
        let store = store(&pool, work.path(), usize::MAX);
        store.remove_job(&JobId::from(victim.path().to_string_lossy().as_ref()), &[]);
        store.remove_job(&JobId::from("../.."), &[]);
        assert!(victim.path().join("precious").exists());
        assert!(work.path().exists());
        Ok(())
    }

    #[tokio::test]
    async fn outputs_past_the_memory_budget_spill_to_files_and_read_back_whole() -> Result<()> {
        let dir = tempfile::tempdir()?;
        // Room for about one batch of 10k i64s, not three.
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(100_000));
        let store = store(&pool, dir.path(), usize::MAX);
        let mut writer =
            StoreSink::new(Arc::clone(&store), a(0)).open(id(0), batch(1).schema(), 2)?;
        for _ in 0..3 {
            writer.write(1, batch(10_000))?;
        }
        // Every batch went to the file: the first once the second was
        // refused, the later ones directly. The writer's operator reports it.
        assert_eq!(writer.spilled_bytes(), 3 * 10_000 * 8);
        let stats = writer.finish()?;
        assert_eq!(stats[1].rows, 30_000);
        assert_eq!(pool.reserved(), 0, "spilled output holds no pool memory");
        let (_, stream) = store.read(&id(0), a(0), 1).expect("stored");
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 30_000);
        assert_eq!(store.remove_job(&JobId::from("job"), &[]), 1);
        assert!(store.read(&id(0), a(0), 1).is_none());
        Ok(())
    }

    /// A batch of `rows` zeros from `first` on: LZ4 shrinks it to almost
    /// nothing, and the values say where it was written.
    fn counted(first: i64, rows: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
        let values = Int64Array::from_iter_values((first..first + rows).map(|v| v / 1_000_000));
        RecordBatch::try_new(schema, vec![Arc::new(values)]).expect("one column")
    }

    #[tokio::test]
    async fn a_partition_spilling_uncompressed_goes_on_in_lz4_once_the_executor_passes_the_mark()
    -> Result<()> {
        let dir = tempfile::tempdir()?;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        let one_batch = 10_000 * 8;
        // No shuffle memory: everything spills. Uncompressed until three
        // batches' data is held in spill files.
        let store = Arc::new(ShuffleStore::new(
            Arc::clone(&pool),
            dir.path().to_path_buf(),
            0,
            SpillCompression::Lz4Past(3 * one_batch),
        ));
        let mut writer =
            StoreSink::new(Arc::clone(&store), a(0)).open(id(0), counted(0, 1).schema(), 1)?;
        for n in 0..3 {
            writer.write(0, counted(n * 10_000, 10_000))?;
        }
        assert_eq!(walk(dir.path()).len(), 1, "one uncompressed file so far");
        for n in 3..10 {
            writer.write(0, counted(n * 10_000, 10_000))?;
        }
        assert_eq!(store.spilled_data_held(), 10 * one_batch);
        writer.finish()?;
        let mut sizes: Vec<u64> = walk(dir.path())
            .iter()
            .map(|p| std::fs::metadata(p).map(|m| m.len()))
            .collect::<std::io::Result<_>>()?;
        sizes.sort_unstable();
        assert_eq!(sizes.len(), 2, "the partition went on in a second file");
        assert!(
            sizes[1] >= 3 * one_batch,
            "the first three batches are uncompressed: {sizes:?}"
        );
        assert!(
            sizes[0] < one_batch,
            "the last seven are LZ4 (they would take {} bytes): {sizes:?}",
            7 * one_batch
        );
        assert_eq!(store.disk_held(), sizes.iter().sum::<u64>());
        // Read back whole and in the order written, across both files.
        let (_, stream) = store.read(&id(0), a(0), 0).expect("stored");
        let back: Vec<RecordBatch> = stream.try_collect().await?;
        let whole = datafusion::arrow::compute::concat_batches(&back[0].schema(), &back)?;
        assert_eq!(whole, counted(0, 100_000));
        store.remove_job(&JobId::from("job"), &[]);
        assert_eq!(
            store.spilled_data_held(),
            0,
            "a removed output gives its count back"
        );
        assert!(walk(dir.path()).is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn a_writer_dropped_after_its_spills_rotated_removes_both_files_and_its_count()
    -> Result<()> {
        let dir = tempfile::tempdir()?;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        let store = Arc::new(ShuffleStore::new(
            Arc::clone(&pool),
            dir.path().to_path_buf(),
            0,
            SpillCompression::Lz4Past(1),
        ));
        let mut writer =
            StoreSink::new(Arc::clone(&store), a(0)).open(id(0), counted(0, 1).schema(), 1)?;
        writer.write(0, counted(0, 10_000))?;
        writer.write(0, counted(0, 10_000))?;
        assert_eq!(walk(dir.path()).len(), 2);
        drop(writer);
        assert!(walk(dir.path()).is_empty());
        assert_eq!(store.spilled_data_held(), 0);
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_removed_jobs_files_go_in_the_background_and_a_later_task_of_it_keeps_its_own()
    -> Result<()> {
        let dir = tempfile::tempdir()?;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 30));
        let store = store_at(&pool, dir.path());
        let mut writer =
            StoreSink::new(Arc::clone(&store), a(0)).open(id(0), batch(1).schema(), 1)?;
        writer.write(0, batch(10_000))?;
        writer.finish()?;
        assert_eq!(store.remove_job(&JobId::from("job"), &[]), 1);
        assert!(
            store.read(&id(0), a(0), 0).is_none(),
            "gone from the store at once"
        );
        assert!(
            !dir.path().join("job").exists(),
            "the job's directory is moved away at once"
        );
        // The scheduler runs a task of the same job here again.
        let mut again =
            StoreSink::new(Arc::clone(&store), a(1)).open(id(0), batch(1).schema(), 1)?;
        again.write(0, batch(7))?;
        again.finish()?;
        // The removal finishes...
        let removing = |entry: &std::fs::DirEntry| {
            entry.file_name().to_string_lossy().starts_with(".removed-")
        };
        while std::fs::read_dir(dir.path())?
            .flatten()
            .any(|e| removing(&e))
        {
            tokio::task::yield_now().await;
        }
        // ...and the new output's file is still there.
        assert_eq!(rows_of(&store, &id(0), a(1)).await?, 7);
        assert_eq!(walk(dir.path()).len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_spilled_dictionary_of_dictionaries_reads_back_with_its_type() -> Result<()> {
        // Arrow IPC cannot write it as it is; it is spilled unpacked.
        use datafusion::arrow::array::{ArrayRef, StringArray};
        use datafusion::arrow::compute::cast;
        let inner = DataType::Dictionary(Box::new(DataType::UInt32), Box::new(DataType::Utf8));
        let nested = DataType::Dictionary(Box::new(DataType::Int32), Box::new(inner.clone()));
        let strings: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "a"]));
        let column = cast(&cast(&strings, &inner)?, &nested)?;
        let batch = RecordBatch::try_from_iter([("d", column)])?;
        let dir = tempfile::tempdir()?;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 20));
        // No shuffle memory: everything spills.
        let store = store(&pool, dir.path(), 0);
        let mut writer = StoreSink::new(Arc::clone(&store), a(0)).open(id(0), batch.schema(), 1)?;
        writer.write(0, batch.clone())?;
        writer.finish()?;
        let (_, stream) = store.read(&id(0), a(0), 0).expect("stored");
        let back: Vec<RecordBatch> = stream.try_collect().await?;
        assert_eq!(back, vec![batch]);
        Ok(())
    }

    #[tokio::test]
    async fn one_output_keeps_at_most_a_quarter_of_the_budget_in_memory() -> Result<()> {
        let dir = tempfile::tempdir()?;
        // The pool could hold all five batches; one output may hold one.
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1_000_000));
        let store = store(&pool, dir.path(), usize::MAX);
        let mut writer =
            StoreSink::new(Arc::clone(&store), a(0)).open(id(1), batch(1).schema(), 1)?;
        for _ in 0..5 {
            writer.write(0, batch(10_000))?;
        }
        let stats = writer.finish()?;
        assert_eq!(stats[0].rows, 50_000);
        assert_eq!(pool.reserved(), 0, "the output went to a file");
        assert!(!walk(dir.path()).is_empty());
        Ok(())
    }

    #[tokio::test]
    async fn outputs_past_the_shuffle_budget_spill_and_removed_outputs_free_it() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(100_000_000));
        let one_batch = batch(10_000).get_array_memory_size();
        // Room in the budget for two batches; the pool could hold hundreds.
        let store = store(&pool, dir.path(), 2 * one_batch + 1);
        let mut first =
            StoreSink::new(Arc::clone(&store), a(0)).open(id(4), batch(1).schema(), 1)?;
        first.write(0, batch(10_000))?;
        first.finish()?;
        assert_eq!(store.memory_held(), one_batch);
        assert!(walk(dir.path()).is_empty(), "the first output fits");

        let mut second =
            StoreSink::new(Arc::clone(&store), a(0)).open(id(5), batch(1).schema(), 1)?;
        second.write(0, batch(10_000))?;
        second.write(0, batch(10_000))?;
        second.finish()?;
        assert_eq!(store.memory_held(), one_batch, "the second output spilled");
        assert_eq!(walk(dir.path()).len(), 1);
        let (_, stream) = store.read(&id(5), a(0), 0).expect("stored");
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 20_000);

        store.remove_job(&JobId::from("job"), &[]);
        assert_eq!(
            store.memory_held(),
            0,
            "removed outputs give their budget back"
        );
        assert_eq!(pool.reserved(), 0);
        Ok(())
    }

    async fn rows_of(
        store: &ShuffleStore,
        id: &MapOutputId,
        attempt: OutputAttempt,
    ) -> Result<usize> {
        let (_, stream) = store.read(id, attempt, 0).expect("stored");
        let batches: Vec<RecordBatch> = stream.try_collect().await?;
        Ok(batches.iter().map(|b| b.num_rows()).sum())
    }

    #[tokio::test]
    async fn a_late_writer_of_a_superseded_attempt_never_replaces_the_current_output() -> Result<()>
    {
        let dir = tempfile::tempdir()?;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(100_000_000));
        let store = store(&pool, dir.path(), usize::MAX);
        // Attempt 0's task starts, the stage is re-planned, attempt 1's task
        // finishes first; attempt 0's finishes late.
        let mut old = StoreSink::new(Arc::clone(&store), a(0)).open(id(7), batch(1).schema(), 1)?;
        old.write(0, batch(5))?;
        let mut new = StoreSink::new(Arc::clone(&store), a(1)).open(id(7), batch(1).schema(), 1)?;
        new.write(0, batch(3))?;
        new.finish()?;
        old.finish()?;
        assert_eq!(
            rows_of(&store, &id(7), a(1)).await?,
            3,
            "attempt 1's output stays"
        );
        assert!(
            store.read(&id(7), a(0), 0).is_none(),
            "attempt 0's output is gone"
        );
        // A later attempt replaces an earlier one's.
        let mut newer =
            StoreSink::new(Arc::clone(&store), a(2)).open(id(7), batch(1).schema(), 1)?;
        newer.write(0, batch(4))?;
        newer.finish()?;
        assert_eq!(rows_of(&store, &id(7), a(2)).await?, 4);
        assert_eq!(store.len(), 1);
        Ok(())
    }

    #[tokio::test]
    async fn a_reader_naming_another_attempt_gets_nothing_rather_than_that_attempts_rows()
    -> Result<()> {
        let dir = tempfile::tempdir()?;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(100_000_000));
        let store = store(&pool, dir.path(), usize::MAX);
        let mut writer =
            StoreSink::new(Arc::clone(&store), a(2)).open(id(8), batch(1).schema(), 1)?;
        writer.write(0, batch(6))?;
        writer.finish()?;
        // A reader resolved against attempt 1 (re-planned since) must fail
        // to fetch, and so be re-planned, not read attempt 2's rows.
        assert!(store.read(&id(8), a(1), 0).is_none());
        assert!(store.read(&id(8), OutputAttempt::new(2, 2), 0).is_none());
        assert_eq!(rows_of(&store, &id(8), a(2)).await?, 6);
        let held = store.held();
        assert_eq!(
            held[0].attempt,
            Some(a(2).into()),
            "held outputs name their attempt"
        );
        Ok(())
    }

    #[tokio::test]
    async fn a_restarted_schedulers_attempt_replaces_a_kept_output_and_a_late_writer_of_the_old_one_does_not()
    -> Result<()> {
        let dir = tempfile::tempdir()?;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(100_000_000));
        let store = store(&pool, dir.path(), usize::MAX);
        // Under scheduler epoch 1, stage attempt 3 wrote map 9; a task of
        // that attempt is still running when the scheduler dies.
        let kept = OutputAttempt::new(1, 3);
        let mut first =
            StoreSink::new(Arc::clone(&store), kept).open(id(9), batch(1).schema(), 1)?;
        first.write(0, batch(2))?;
        first.finish()?;
        let mut late =
            StoreSink::new(Arc::clone(&store), kept).open(id(9), batch(1).schema(), 1)?;
        late.write(0, batch(7))?;
        // The restarted scheduler (epoch 2) numbers attempts from 0 again,
        // and runs map 9 here once more.
        let restarted = OutputAttempt::new(2, 0);
        let mut again =
            StoreSink::new(Arc::clone(&store), restarted).open(id(9), batch(1).schema(), 1)?;
        again.write(0, batch(5))?;
        again.finish()?;
        late.finish()?;
        assert_eq!(rows_of(&store, &id(9), restarted).await?, 5);
        assert!(store.read(&id(9), kept, 0).is_none());
        assert_eq!(store.len(), 1);
        // Spill file names carry the attempt too.
        let spilling = store_at(&pool, dir.path());
        let mut spilled =
            StoreSink::new(Arc::clone(&spilling), restarted).open(id(9), batch(1).schema(), 1)?;
        spilled.write(0, batch(5))?;
        spilled.finish()?;
        let names: Vec<String> = walk(dir.path())
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        assert!(
            names.iter().any(|n| n.starts_with("map9-e2a0-out0-")),
            "{names:?}"
        );
        Ok(())
    }

    /// A store in `dir` that spills everything.
    fn store_at(pool: &Arc<dyn MemoryPool>, dir: &Path) -> Arc<ShuffleStore> {
        store(pool, dir, 0)
    }

    #[tokio::test]
    async fn an_unfinished_writer_leaves_nothing_behind() -> Result<()> {
        let dir = tempfile::tempdir()?;
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(10));
        let store = store(&pool, dir.path(), usize::MAX);
        let mut writer =
            StoreSink::new(Arc::clone(&store), a(0)).open(id(3), batch(1).schema(), 1)?;
        writer.write(0, batch(1000))?;
        drop(writer);
        assert!(store.read(&id(3), a(0), 0).is_none());
        let leftover: Vec<_> = walk(dir.path());
        assert!(leftover.is_empty(), "files left behind: {leftover:?}");
        Ok(())
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
        files
    }
}
