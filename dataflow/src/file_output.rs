//! `FileOutputExec`: the root of a job's final stage when its result goes to
//! files instead of back to a client. Task `p` writes its partition as one
//! file, `part-<p>.<ext>`, straight into the output directory the scheduler
//! chose, so the rows never pass through the client or the scheduler. A
//! local directory is a staging directory the scheduler moves into place
//! when the job succeeds; an object-store prefix (`s3://bucket/path`) is
//! written in place, each file uploaded whole (multipart past 10 MiB) so a
//! reader never sees half a file. Its own output
//! is the same per-partition statistics batch a [`ShuffleWriterExec`]
//! produces: one row with the rows and bytes written.
//!
//! [`ShuffleWriterExec`]: crate::ShuffleWriterExec

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::ObjectStoreExt;
use object_store::buffered::BufWriter as ObjectWriter;
use object_store::path::Path as ObjectPath;
use tokio::io::AsyncWriteExt;

use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
use datafusion::arrow::datatypes::{DataType, FieldRef, Schema, SchemaRef};
use datafusion::arrow::json::LineDelimitedWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;

use crate::error::volley_internal;
use crate::exchange_io::PartitionStats;
use crate::session::volley_options;
use crate::shuffle_writer::{STATS_SCHEMA, stats_batch, stats_properties};
use crate::wire_types::from_wire;

/// File formats a job's output can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    /// Apache Parquet, ZSTD-compressed.
    Parquet,
    /// CSV with a header line.
    Csv,
    /// Newline-delimited JSON objects.
    Json,
}

impl OutputFormat {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Parquet => "parquet",
            OutputFormat::Csv => "csv",
            OutputFormat::Json => "json",
        }
    }
}

/// Writes each partition of its input as one file.
#[derive(Debug)]
pub struct FileOutputExec {
    input: Arc<dyn ExecutionPlan>,
    dir: String,
    format: OutputFormat,
    properties: Arc<PlanProperties>,
}

impl FileOutputExec {
    /// Writes `input`'s partitions under the local directory `dir`.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        dir: String,
        format: OutputFormat,
    ) -> Result<Self> {
        Destination::parse(&dir)?;
        let properties = stats_properties(&input);
        Ok(Self {
            input,
            dir: dir.trim_start_matches("file://").to_string(),
            format,
            properties,
        })
    }

    /// The directory written to.
    pub fn dir(&self) -> &str {
        &self.dir
    }

    /// The format written.
    pub fn format(&self) -> OutputFormat {
        self.format
    }

    /// The plan whose partitions are written.
    pub fn input(&self) -> &Arc<dyn ExecutionPlan> {
        &self.input
    }
}

impl DisplayAs for FileOutputExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "FileOutputExec: dir={}, format={:?}",
            self.dir, self.format
        )
    }
}

/// Where a job's files go.
#[derive(Debug)]
pub enum Destination {
    /// A local directory.
    Local(PathBuf),
    /// A prefix in an object store.
    Object {
        /// The store, e.g. `s3://bucket`.
        store: ObjectStoreUrl,
        /// The prefix inside it.
        prefix: ObjectPath,
    },
}

impl Destination {
    /// Parses a local path, `file://` URL or object-store URL.
    pub fn parse(dir: &str) -> Result<Self> {
        let Some((scheme, rest)) = dir.split_once("://") else {
            return Ok(Destination::Local(PathBuf::from(dir)));
        };
        if scheme == "file" {
            return Ok(Destination::Local(PathBuf::from(rest)));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(DataFusionError::Plan(format!("no bucket in {dir}")));
        }
        Ok(Destination::Object {
            store: ObjectStoreUrl::parse(format!("{scheme}://{bucket}"))?,
            prefix: ObjectPath::parse(prefix.trim_end_matches('/'))
                .map_err(|e| DataFusionError::Plan(format!("bad output path {dir}: {e}")))?,
        })
    }
}

/// An in-memory file tail the writers append to and uploads drain.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl SharedBuffer {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Bytes buffered before they are handed to an upload.
const UPLOAD_CHUNK_BYTES: usize = 8 * 1024 * 1024;

enum Writer<W: Write + Send> {
    Parquet(ArrowWriter<W>),
    Csv(datafusion::arrow::csv::Writer<W>),
    Json(LineDelimitedWriter<W>),
}

impl<W: Write + Send> Writer<W> {
    fn new(format: OutputFormat, out: W, schema: SchemaRef) -> Result<Self> {
        Ok(match format {
            OutputFormat::Parquet => {
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(ZstdLevel::default()))
                    .build();
                Writer::Parquet(ArrowWriter::try_new(out, schema, Some(props))?)
            }
            OutputFormat::Csv => Writer::Csv(CsvWriterBuilder::new().with_header(true).build(out)),
            OutputFormat::Json => Writer::Json(LineDelimitedWriter::new(out)),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        match self {
            Writer::Parquet(w) => w.write(batch)?,
            Writer::Csv(w) => w.write(batch)?,
            Writer::Json(w) => w.write(batch)?,
        }
        Ok(())
    }

    fn finish(self) -> Result<()> {
        match self {
            Writer::Parquet(w) => {
                let mut out = w.into_inner()?;
                out.flush()?;
            }
            Writer::Csv(w) => {
                let mut out = w.into_inner();
                out.flush()?;
            }
            Writer::Json(mut w) => {
                w.finish()?;
                w.into_inner().flush()?;
            }
        }
        Ok(())
    }
}

/// The file the scheduler puts in a local output's staging directory
/// before any task runs: an executor that does not see it does not share
/// the scheduler's filesystem, and its files would never be moved into
/// place.
pub const SHARED_MARKER: &str = ".volley-shared";

/// Fails unless the scheduler's [`SHARED_MARKER`] is in `dir` as this
/// executor sees it (read through the runtime's guarded `file://` store).
async fn check_shared(context: &TaskContext, dir: &std::path::Path) -> Result<()> {
    let marker = std::path::absolute(dir.join(SHARED_MARKER))
        .map_err(|e| DataFusionError::Execution(format!("cannot check {}: {e}", dir.display())))?;
    let path = ObjectPath::from_absolute_path(&marker)
        .map_err(|e| DataFusionError::Execution(format!("cannot check {}: {e}", dir.display())))?;
    let store = context
        .runtime_env()
        .object_store(ObjectStoreUrl::local_filesystem())?;
    match store.head(&path).await {
        Ok(_) => Ok(()),
        Err(object_store::Error::NotFound { .. }) => Err(DataFusionError::Execution(format!(
            "the output directory {} is not on a filesystem this executor shares with the \
             scheduler (the scheduler's marker is not there), so its files could never be \
             moved into place; write local output only to storage every node mounts, or to \
             s3://",
            dir.display()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// `schema` with Arrow's view types replaced by the plain ones (Utf8View
/// by Utf8, BinaryView by Binary), also inside lists and structs, so that
/// the files can be read by any Arrow or Parquet reader.
fn without_view_types(schema: &SchemaRef) -> SchemaRef {
    fn plain(data_type: &DataType) -> DataType {
        match data_type {
            DataType::Utf8View => DataType::Utf8,
            DataType::BinaryView => DataType::Binary,
            DataType::List(field) => DataType::List(plain_field(field)),
            DataType::LargeList(field) => DataType::LargeList(plain_field(field)),
            DataType::FixedSizeList(field, size) => {
                DataType::FixedSizeList(plain_field(field), *size)
            }
            DataType::Struct(fields) => DataType::Struct(fields.iter().map(plain_field).collect()),
            other => other.clone(),
        }
    }
    fn plain_field(field: &FieldRef) -> FieldRef {
        Arc::new(
            field
                .as_ref()
                .clone()
                .with_data_type(plain(field.data_type())),
        )
    }
    let fields: Vec<FieldRef> = schema.fields().iter().map(plain_field).collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// Writes `input` as one object; returns (rows, bytes). A failed write
/// aborts the upload, so no partial object is left.
async fn write_object(
    mut input: SendableRecordBatchStream,
    context: Arc<TaskContext>,
    store: ObjectStoreUrl,
    path: ObjectPath,
    format: OutputFormat,
) -> Result<(u64, u64)> {
    let object_store = context.runtime_env().object_store(&store)?;
    let mut upload = ObjectWriter::new(object_store, path.clone());
    let buffer = SharedBuffer::default();
    let mut bytes = 0u64;
    let mut rows = 0u64;
    let keep_views = volley_options(context.session_config()).output_view_types;
    let written = async {
        let plain = (!keep_views).then(|| without_view_types(&input.schema()));
        let schema = plain.clone().unwrap_or_else(|| input.schema());
        let mut writer = Writer::new(format, buffer.clone(), schema)?;
        while let Some(batch) = input.next().await {
            let mut batch = batch?;
            if let Some(plain) = &plain {
                batch = from_wire(batch, plain)?;
            }
            tokio::task::consume_budget().await;
            rows += batch.num_rows() as u64;
            writer.write(&batch)?;
            if buffer.len() >= UPLOAD_CHUNK_BYTES {
                let chunk = buffer.take();
                bytes += chunk.len() as u64;
                upload.put(Bytes::from(chunk)).await?;
            }
        }
        writer.finish()?;
        let chunk = buffer.take();
        bytes += chunk.len() as u64;
        upload.put(Bytes::from(chunk)).await?;
        upload.shutdown().await?;
        Ok::<_, DataFusionError>(())
    }
    .await;
    if let Err(e) = written {
        let _ = upload.abort().await;
        return Err(e.context(format!("writing {store}{path}")));
    }
    Ok((rows, bytes))
}

impl ExecutionPlan for FileOutputExec {
    fn name(&self) -> &str {
        "FileOutputExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return Err(volley_internal("FileOutputExec takes one child"));
        }
        Ok(Arc::new(Self::try_new(
            children.swap_remove(0),
            self.dir.clone(),
            self.format,
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let name = format!("part-{partition:05}.{}", self.format.extension());
        let destination = Destination::parse(&self.dir)?;
        let format = self.format;
        let write = async move {
            // Local files go through the runtime's `file://` store too, so
            // the executor's path policy sees every write.
            let (store, path) = match destination {
                Destination::Local(dir) => {
                    check_shared(&context, &dir).await?;
                    let file = std::path::absolute(dir.join(&name)).map_err(|e| {
                        DataFusionError::Execution(format!("cannot write {name}: {e}"))
                    })?;
                    let path = ObjectPath::from_absolute_path(&file).map_err(|e| {
                        DataFusionError::Execution(format!("cannot write {}: {e}", file.display()))
                    })?;
                    (ObjectStoreUrl::local_filesystem(), path)
                }
                Destination::Object { store, prefix } => {
                    (store, prefix.clone().join(name.as_str()))
                }
            };
            let (rows, bytes) = write_object(input, context, store, path, format).await?;
            stats_batch(&[PartitionStats { rows, bytes }])
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&STATS_SCHEMA),
            futures::stream::once(write),
        )))
    }
}
