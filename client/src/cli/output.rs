//! Writing query results in the formats `volley` offers.

use std::io::Write;

use datafusion::arrow::array::Array;
use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::json::{ArrayWriter, LineDelimitedWriter};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::error::Result;

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// An aligned table for people.
    Table,
    /// Comma-separated values with a header line.
    Csv,
    /// Tab-separated values with a header line.
    Tsv,
    /// One JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
    /// A Markdown table.
    Markdown,
}

impl std::str::FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        <Format as clap::ValueEnum>::from_str(s, true).map_err(|_| {
            format!("unknown format `{s}`: use table, csv, tsv, json, ndjson or markdown")
        })
    }
}

/// Keeps the first `max_rows` rows (0: all); returns them and how many were left out.
fn truncate(batches: &[RecordBatch], max_rows: usize) -> (Vec<RecordBatch>, usize) {
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    if max_rows == 0 || total <= max_rows {
        return (batches.to_vec(), 0);
    }
    let mut kept = Vec::new();
    let mut remaining = max_rows;
    for batch in batches {
        if remaining == 0 {
            break;
        }
        let take = remaining.min(batch.num_rows());
        kept.push(batch.slice(0, take));
        remaining -= take;
    }
    (kept, total - max_rows)
}

fn cell_text(column: &dyn Array, row: usize) -> Result<String> {
    let options = FormatOptions::default().with_null("NULL");
    Ok(ArrayFormatter::try_new(column, &options)?
        .value(row)
        .to_string())
}

fn write_markdown(out: &mut dyn Write, batches: &[RecordBatch]) -> Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let names: Vec<String> = first
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    writeln!(out, "| {} |", names.join(" | "))?;
    writeln!(
        out,
        "|{}",
        names.iter().map(|_| " --- |").collect::<String>()
    )?;
    for batch in batches {
        for row in 0..batch.num_rows() {
            let cells = batch
                .columns()
                .iter()
                .map(|c| cell_text(c.as_ref(), row).map(|t| t.replace('|', "\\|")))
                .collect::<Result<Vec<_>>>()?;
            writeln!(out, "| {} |", cells.join(" | "))?;
        }
    }
    Ok(())
}

/// Whether `batches` answer an EXPLAIN: the columns `plan_type, plan`.
fn is_explain(batches: &[RecordBatch]) -> bool {
    batches.first().is_some_and(|b| {
        let names: Vec<&str> = b
            .schema_ref()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect();
        names == ["plan_type", "plan"]
    })
}

/// An EXPLAIN answer as a person reads it: each plan under its name, its
/// lines indented as they are, never squeezed into a table cell.
fn write_explain(out: &mut dyn Write, batches: &[RecordBatch]) -> Result<()> {
    for batch in batches {
        for row in 0..batch.num_rows() {
            let plan_type = cell_text(batch.column(0).as_ref(), row)?;
            let plan = cell_text(batch.column(1).as_ref(), row)?;
            writeln!(out, "{plan_type}:")?;
            for line in plan.lines() {
                writeln!(out, "  {line}")?;
            }
        }
    }
    Ok(())
}

/// Writes `batches` in `format`; a table shows at most `max_rows` rows (0:
/// all) and says how many it left out.
pub(crate) fn write_batches(
    out: &mut dyn Write,
    format: Format,
    batches: &[RecordBatch],
    max_rows: usize,
) -> Result<()> {
    match format {
        Format::Table if is_explain(batches) => write_explain(out, batches)?,
        Format::Table => {
            let (shown, omitted) = truncate(batches, max_rows);
            if shown.iter().any(|b| b.num_rows() > 0) {
                writeln!(out, "{}", pretty_format_batches(&shown)?)?;
            } else if let Some(batch) = batches.first() {
                // Show the columns even when there are no rows.
                let empty = [batch.slice(0, 0)];
                writeln!(out, "{}", pretty_format_batches(&empty)?)?;
            }
            if omitted > 0 {
                writeln!(
                    out,
                    "({omitted} more rows not shown; use --max-rows 0 or \\format csv for all)"
                )?;
            }
        }
        Format::Csv | Format::Tsv => {
            let delimiter = if format == Format::Csv { b',' } else { b'\t' };
            let mut writer = WriterBuilder::new()
                .with_header(true)
                .with_delimiter(delimiter)
                .build(&mut *out);
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
        Format::Ndjson => {
            let mut writer = LineDelimitedWriter::new(&mut *out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
        }
        Format::Markdown => write_markdown(out, batches)?,
    }
    Ok(())
}
