//! Writing query results in the formats `volley` offers.

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::Array;
use datafusion::arrow::csv::WriterBuilder;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::json::LineDelimitedWriter;
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

fn cell_text(column: &dyn Array, row: usize) -> Result<String> {
    let options = FormatOptions::default().with_null("NULL");
    Ok(ArrayFormatter::try_new(column, &options)?
        .value(row)
        .to_string())
}

fn write_markdown_header(out: &mut dyn Write, schema: &Schema) -> Result<()> {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    writeln!(out, "| {} |", names.join(" | "))?;
    writeln!(
        out,
        "|{}",
        names.iter().map(|_| " --- |").collect::<String>()
    )?;
    Ok(())
}

fn write_markdown_rows(out: &mut dyn Write, batch: &RecordBatch) -> Result<()> {
    for row in 0..batch.num_rows() {
        let cells = batch
            .columns()
            .iter()
            .map(|c| cell_text(c.as_ref(), row).map(|t| t.replace('|', "\\|")))
            .collect::<Result<Vec<_>>>()?;
        writeln!(out, "| {} |", cells.join(" | "))?;
    }
    Ok(())
}

/// Whether a result with this schema answers an EXPLAIN: the columns
/// `plan_type, plan`.
fn is_explain(schema: &Schema) -> bool {
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    names == ["plan_type", "plan"]
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

/// When a table is shown one row per block, a column per line (`\x`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expanded {
    /// Always rows across.
    Off,
    /// Always vertical.
    On,
    /// Vertical when a row does not fit the terminal.
    Auto,
}

/// How a table fits the screen: its layout and the terminal's width.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    pub(crate) expanded: Expanded,
    /// Columns of the terminal (`None`: not a terminal, never cut).
    pub(crate) width: Option<usize>,
}

impl Layout {
    /// Rows across, nothing cut: for files and pipes.
    pub(crate) const PLAIN: Layout = Layout {
        expanded: Expanded::Off,
        width: None,
    };
}

/// The terminal's width, if stdout is one.
pub(crate) fn terminal_width() -> Option<usize> {
    terminal_size::terminal_size_of(std::io::stdout()).map(|(w, _)| usize::from(w.0))
}

/// `text` cut to `width` characters, ending with `…` when cut.
fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// Each row as a block of `column | value` lines, as psql's `\x` and
/// DuckDB's `.mode line`: readable however many columns there are. Values
/// longer than the terminal are cut.
fn write_vertical(
    out: &mut dyn Write,
    batches: &[RecordBatch],
    width: Option<usize>,
    first_record: usize,
) -> Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let schema = first.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    let value_width = width.map(|w| w.saturating_sub(name_width + 3).max(8));
    let mut number = first_record;
    for batch in batches {
        for row in 0..batch.num_rows() {
            number += 1;
            let title = format!("-[ RECORD {number} ]");
            let rule = width
                .unwrap_or(40)
                .min(80)
                .saturating_sub(title.chars().count());
            writeln!(out, "{title}{}", "-".repeat(rule))?;
            for (name, column) in names.iter().zip(batch.columns()) {
                let text = cell_text(column.as_ref(), row)?.replace('\n', " ");
                let text = match value_width {
                    Some(w) => fit(&text, w),
                    None => text,
                };
                writeln!(out, "{name:<name_width$} | {text}")?;
            }
        }
    }
    Ok(())
}

/// Rows a table holds before it is printed: a result of any size is shown
/// as tables of at most this many rows, so memory stays bounded.
const TABLE_CHUNK_ROWS: usize = 1000;

/// Writes a result in a format as its batches arrive, holding at most one
/// table's worth of rows ([`TABLE_CHUNK_ROWS`]), whatever the size of the
/// result. With a row limit it asks for no more batches once it knows
/// there are rows it will not show, so the caller can drop the query (which
/// releases its job on the cluster).
pub(crate) struct ResultWriter {
    format: Format,
    schema: SchemaRef,
    /// Rows shown at most (0: all).
    max_rows: usize,
    layout: Layout,
    /// Rows written or held for the next table.
    rows: usize,
    /// Rows held for the next table (or an EXPLAIN's plans).
    held: Vec<RecordBatch>,
    held_rows: usize,
    /// The header (CSV, Markdown, `[` of JSON) is out.
    started: bool,
    /// Some rows beyond `max_rows` exist.
    cut: bool,
    explain: bool,
}

impl ResultWriter {
    pub(crate) fn new(format: Format, schema: SchemaRef, max_rows: usize, layout: Layout) -> Self {
        let explain = format == Format::Table && is_explain(&schema);
        Self {
            format,
            schema,
            max_rows,
            layout,
            rows: 0,
            held: Vec::new(),
            held_rows: 0,
            started: false,
            cut: false,
            explain,
        }
    }

    /// Whether rows were left out because of the row limit.
    pub(crate) fn cut(&self) -> bool {
        self.cut
    }

    /// Takes the next batch of the result; `false` once it wants no more
    /// (the row limit is reached and a row beyond it was seen).
    pub(crate) fn push(&mut self, out: &mut dyn Write, batch: RecordBatch) -> Result<bool> {
        let mut batch = batch;
        // Only a table for people is cut; CSV, JSON and the rest are for
        // programs and hold every row.
        if self.max_rows > 0 && self.format == Format::Table && !self.explain {
            let room = self.max_rows - self.rows;
            if batch.num_rows() > room {
                self.cut = true;
                batch = batch.slice(0, room);
            }
        }
        self.rows += batch.num_rows();
        if batch.num_rows() > 0 || self.explain {
            self.write(out, batch)?;
        }
        Ok(!self.cut)
    }

    fn write(&mut self, out: &mut dyn Write, batch: RecordBatch) -> Result<()> {
        match self.format {
            Format::Table => {
                self.held_rows += batch.num_rows();
                self.held.push(batch);
                if !self.explain && self.held_rows >= TABLE_CHUNK_ROWS {
                    self.write_table(out)?;
                }
            }
            Format::Csv | Format::Tsv => {
                let delimiter = if self.format == Format::Csv {
                    b','
                } else {
                    b'\t'
                };
                let mut writer = WriterBuilder::new()
                    .with_header(!self.started)
                    .with_delimiter(delimiter)
                    .build(&mut *out);
                writer.write(&batch)?;
            }
            Format::Json => {
                let mut lines = Vec::new();
                let mut writer = LineDelimitedWriter::new(&mut lines);
                writer.write(&batch)?;
                writer.finish()?;
                for line in lines.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    out.write_all(if self.started { b"," } else { b"[" })?;
                    out.write_all(line)?;
                    self.started = true;
                }
            }
            Format::Ndjson => {
                let mut writer = LineDelimitedWriter::new(&mut *out);
                writer.write(&batch)?;
                writer.finish()?;
            }
            Format::Markdown => {
                if !self.started {
                    write_markdown_header(out, &self.schema)?;
                }
                write_markdown_rows(out, &batch)?;
            }
        }
        if self.format != Format::Json {
            self.started = true;
        }
        Ok(())
    }

    /// Prints the rows held as one table, across or vertical.
    fn write_table(&mut self, out: &mut dyn Write) -> Result<()> {
        let held = std::mem::take(&mut self.held);
        self.held_rows = 0;
        if held.iter().all(|b| b.num_rows() == 0) {
            return Ok(());
        }
        let table = pretty_format_batches(&held)?.to_string();
        let too_wide = self
            .layout
            .width
            .is_some_and(|w| table.lines().map(|l| l.chars().count()).max().unwrap_or(0) > w);
        let vertical = match self.layout.expanded {
            Expanded::On => true,
            Expanded::Auto => too_wide,
            Expanded::Off => false,
        };
        if vertical {
            let first_record = self.rows - held.iter().map(|b| b.num_rows()).sum::<usize>();
            write_vertical(out, &held, self.layout.width, first_record)?;
        } else {
            writeln!(out, "{table}")?;
        }
        self.started = true;
        Ok(())
    }

    /// Writes what is held and the end of the format; returns the rows shown.
    pub(crate) fn finish(mut self, out: &mut dyn Write) -> Result<usize> {
        match self.format {
            Format::Table if self.explain => write_explain(out, &self.held)?,
            Format::Table => {
                self.write_table(out)?;
                if !self.started {
                    // Show the columns even when there are no rows.
                    let empty = [RecordBatch::new_empty(Arc::clone(&self.schema))];
                    writeln!(out, "{}", pretty_format_batches(&empty)?)?;
                }
                if self.cut {
                    writeln!(
                        out,
                        "(more rows not shown; use --max-rows 0, or \\max-rows 0 in the shell, for all)"
                    )?;
                }
            }
            Format::Csv | Format::Tsv if !self.started => {
                let delimiter = if self.format == Format::Csv {
                    b','
                } else {
                    b'\t'
                };
                let mut writer = WriterBuilder::new()
                    .with_header(true)
                    .with_delimiter(delimiter)
                    .build(&mut *out);
                writer.write(&RecordBatch::new_empty(Arc::clone(&self.schema)))?;
            }
            Format::Json => {
                out.write_all(if self.started { b"]\n" } else { b"[]\n" })?;
            }
            Format::Markdown if !self.started => write_markdown_header(out, &self.schema)?,
            Format::Csv | Format::Tsv | Format::Ndjson | Format::Markdown => {}
        }
        Ok(self.rows)
    }
}

/// Writes `batches` in `format`, as [`ResultWriter`] does.
#[cfg(test)]
pub(crate) fn write_batches(
    out: &mut dyn Write,
    format: Format,
    batches: &[RecordBatch],
    max_rows: usize,
    layout: Layout,
) -> Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let mut writer = ResultWriter::new(format, first.schema(), max_rows, layout);
    for batch in batches {
        if !writer.push(out, batch.clone())? {
            break;
        }
    }
    writer.finish(out)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    fn wide_rows() -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("l_orderkey", DataType::Int64, false),
            Field::new("l_comment", DataType::Utf8, false),
        ]));
        let long = "a comment that goes on and on well past any terminal's edge ".repeat(3);
        vec![
            RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(Int64Array::from(vec![1, 2])),
                    Arc::new(StringArray::from(vec![long.as_str(), "short"])),
                ],
            )
            .unwrap(),
        ]
    }

    #[test]
    fn a_row_wider_than_the_terminal_is_shown_vertically_and_cut_to_fit() {
        let layout = Layout {
            expanded: Expanded::Auto,
            width: Some(80),
        };
        let mut out = Vec::new();
        write_batches(&mut out, Format::Table, &wide_rows(), 0, layout).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("-[ RECORD 1 ]"), "{text}");
        assert!(text.contains("l_orderkey | 1"), "{text}");
        assert!(text.contains("-[ RECORD 2 ]"), "{text}");
        assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
        assert!(text.contains('…'), "{text}");
    }

    #[test]
    fn a_row_limit_stops_asking_for_batches_once_a_row_beyond_it_was_seen() {
        let batch = wide_rows().remove(0);
        let mut out = Vec::new();
        let mut writer = ResultWriter::new(Format::Table, batch.schema(), 2, Layout::PLAIN);
        // Exactly the limit: it cannot know yet whether more rows exist.
        assert!(writer.push(&mut out, batch.clone()).unwrap());
        assert!(!writer.push(&mut out, batch.slice(0, 1)).unwrap());
        assert!(writer.cut());
        assert_eq!(writer.finish(&mut out).unwrap(), 2);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("more rows not shown"), "{text}");
        // CSV is for programs: never cut.
        let mut out = Vec::new();
        let mut writer = ResultWriter::new(Format::Csv, batch.schema(), 2, Layout::PLAIN);
        assert!(writer.push(&mut out, batch.clone()).unwrap());
        assert!(writer.push(&mut out, batch.clone()).unwrap());
        assert_eq!(writer.finish(&mut out).unwrap(), 4);
    }

    #[test]
    fn a_long_table_is_printed_in_chunks_as_it_arrives() {
        let batch = wide_rows().remove(0);
        let mut out = Vec::new();
        let mut writer = ResultWriter::new(Format::Table, batch.schema(), 0, Layout::PLAIN);
        for _ in 0..TABLE_CHUNK_ROWS / 2 {
            assert!(writer.push(&mut out, batch.clone()).unwrap());
        }
        assert!(!out.is_empty(), "the first chunk is out before the end");
        assert_eq!(writer.finish(&mut out).unwrap(), TABLE_CHUNK_ROWS);
    }

    #[test]
    fn a_table_that_fits_stays_across_and_a_pipe_is_never_cut() {
        let mut out = Vec::new();
        write_batches(&mut out, Format::Table, &wide_rows(), 0, Layout::PLAIN).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("+-"), "{text}");
        assert!(!text.contains('…'), "{text}");
        let mut out = Vec::new();
        let on = Layout {
            expanded: Expanded::On,
            width: None,
        };
        write_batches(&mut out, Format::Table, &wide_rows(), 0, on).unwrap();
        assert!(String::from_utf8(out).unwrap().starts_with("-[ RECORD 1 ]"));
    }
}
