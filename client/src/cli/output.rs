//! Writing query results in the formats `volley` offers.

use std::io::Write;

use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::json::ArrayWriter;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::error::Result;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// An aligned table for people.
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// One JSON array of objects.
    Json,
}

pub(crate) fn write_batches(
    out: &mut dyn Write,
    format: Format,
    batches: &[RecordBatch],
) -> Result<()> {
    match format {
        Format::Table => {
            if batches.iter().any(|b| b.num_rows() > 0) {
                writeln!(out, "{}", pretty_format_batches(batches)?)?;
            } else if let Some(batch) = batches.first() {
                // Show the columns even when there are no rows.
                let header = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().clone())
                    .collect::<Vec<_>>()
                    .join(" | ");
                writeln!(out, "{header}")?;
            }
        }
        Format::Csv => {
            let mut writer = WriterBuilder::new().with_header(true).build(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = ArrayWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            if batches.iter().all(|b| b.num_rows() == 0) {
                write!(out, "[]")?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}
