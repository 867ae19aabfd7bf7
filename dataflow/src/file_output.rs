//! `FileOutputExec`: the root of a job's final stage when its result goes to
//! files instead of back to a client. Task `p` writes its partition as one
//! file, `part-<p>.<ext>`, straight into the output directory the scheduler
//! chose (a staging directory it moves into place when the job succeeds), so
//! the rows never pass through the client or the scheduler. Its own output
//! is the same per-partition statistics batch a [`ShuffleWriterExec`]
//! produces: one row with the rows and bytes written.
//!
//! [`ShuffleWriterExec`]: crate::ShuffleWriterExec

use std::fmt;
use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::csv::WriterBuilder as CsvWriterBuilder;
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

use crate::exchange_io::PartitionStats;
use crate::shuffle_writer::{STATS_SCHEMA, stats_batch, stats_properties};

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
        if dir.contains("://") && !dir.starts_with("file://") {
            return Err(DataFusionError::NotImplemented(format!(
                "Volley writes job output to local paths only, not {dir}"
            )));
        }
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

enum Writer {
    Parquet(ArrowWriter<File>),
    Csv(datafusion::arrow::csv::Writer<BufWriter<File>>),
    Json(LineDelimitedWriter<BufWriter<File>>),
}

impl Writer {
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
                w.close()?;
            }
            Writer::Csv(w) => {
                w.into_inner();
            }
            Writer::Json(mut w) => w.finish()?,
        }
        Ok(())
    }
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
            return Err(DataFusionError::Internal(
                "FileOutputExec takes one child".into(),
            ));
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
        let mut input = self.input.execute(partition, context)?;
        let schema = self.input.schema();
        let dir = PathBuf::from(&self.dir);
        let path = dir.join(format!("part-{partition:05}.{}", self.format.extension()));
        let format = self.format;
        let write = async move {
            let io = |e: std::io::Error| {
                DataFusionError::Execution(format!("cannot write {}: {e}", path.display()))
            };
            std::fs::create_dir_all(&dir).map_err(io)?;
            let file = File::create(&path).map_err(io)?;
            let mut writer = match format {
                OutputFormat::Parquet => {
                    let props = WriterProperties::builder()
                        .set_compression(Compression::ZSTD(ZstdLevel::default()))
                        .build();
                    Writer::Parquet(ArrowWriter::try_new(file, schema, Some(props))?)
                }
                OutputFormat::Csv => Writer::Csv(
                    CsvWriterBuilder::new()
                        .with_header(true)
                        .build(BufWriter::new(file)),
                ),
                OutputFormat::Json => Writer::Json(LineDelimitedWriter::new(BufWriter::new(file))),
            };
            let mut rows = 0u64;
            while let Some(batch) = input.next().await {
                let batch = batch?;
                // See ShuffleWriterExec: keep the executor responsive.
                tokio::task::consume_budget().await;
                rows += batch.num_rows() as u64;
                writer.write(&batch)?;
            }
            writer.finish()?;
            let bytes = std::fs::metadata(&path).map_err(io)?.len();
            stats_batch(&[PartitionStats { rows, bytes }])
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&STATS_SCHEMA),
            futures::stream::once(write),
        )))
    }
}
